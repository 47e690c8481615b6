"""Datasets, one file each, in a registry: `build(options, seed) -> Arrays`, train and test
arrays from a fixed seed. `distill.data.load_data` checks them through the dataset's task
and carves the validation split out of the training set, so nothing is ever picked on the
test split.

Samples are float32 of shape `input_shape` (channels first: (1, 40) for MNIST-1D, (1, 8, 8)
for digits, (64,) for hgmm, (3, 32, 32) for CIFAR), labels int64; token data are int64 ids
(N, max_len) with a `TokenInfo`. A dataset registers with the task it serves
(`distill.tasks`), which the run config reads before any data is made.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..registry import Registry
from ..tasks.lm import IGNORE

__all__ = ["DATASETS", "Arrays", "TokenInfo", "Pairs", "register_dataset", "dataset_task", "is_custom", "next_token_labels", "IGNORE"]

DATASETS = Registry("dataset")


@dataclass(frozen=True)
class TokenInfo:
    """What token data carries beside its ids (int64, (N, max_len), the tail padded with `pad_id`)."""

    vocab_size: int
    pad_id: int
    max_len: int
    tokenizer: str = ""  # a folder that AutoTokenizer.from_pretrained loads ("" for built-in tasks, whose ids are their alphabet)
    labels: tuple[str, ...] = ()  # class names, id order ("" none: the labels were ids already)
    truncated: int = 0  # samples cut to max_len (train and test): counted and reported, never silent
    samples: int = 0  # samples in all (train and test), so the count reads as a fraction
    task: str = "classify"  # the task these ids serve (distill.tasks): "lm" makes models causal decoders
    # lm, built-in sources only: the true source's mean cross-entropy (nats) over the test split's predicted
    # tokens, the floor no model can beat on those tokens (distill/datasets/hmm.py states the estimator); None unknown.
    floor: float | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}


@dataclass(frozen=True)
class Pairs:
    """A labelled similarity set beside the data (STS-style: two texts and a human score per row), tokenized as
    the data is; the embed task scores a model's cosine similarities on it by Spearman's rho (`test_gold_spearman`)."""

    x1: np.ndarray  # (N, max_len) int64 ids, or a Tensor once loaded
    x2: np.ndarray
    score: np.ndarray  # (N,) float64, any scale: only its order counts
    source: str = ""  # the file, for the report


@dataclass(frozen=True)
class Arrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    identity: str = ""  # what the options do not say about the data (a file's size and time): part of the cache key
    tokens: TokenInfo | None = None  # token data: x are int64 ids
    pairs: Pairs | None = None  # a gold similarity set scored on test (the sentences dataset's `pairs:`)


def register_dataset(name: str, options: type, task: str = "classify") -> Callable[[Callable], Callable]:
    """Register `build(options, seed) -> Arrays` for the task it serves (a `distill.tasks` name): the
    run's task decides the objectives and the losses that fit before any data is made."""
    return DATASETS.register(name, options, (task,))


def is_custom(name: str) -> bool:
    """A user's function, "package.module:name", rather than a registered dataset."""
    return ":" in name


def dataset_task(name: str) -> str:
    """The task a dataset serves ("classify" for a user's function)."""
    return "classify" if is_custom(name) or name not in DATASETS else DATASETS.get(name, "data.name").reads[0]


def next_token_labels(ids: np.ndarray, pad_id: int) -> np.ndarray:
    """(N, L) ids, padded at the tail -> (N, L) labels: the next id at each position, IGNORE where there
    is none (the last position, and positions whose next id is padding)."""
    y = np.full(ids.shape, IGNORE, dtype=np.int64)
    y[:, :-1] = np.where(ids[:, 1:] != pad_id, ids[:, 1:], IGNORE)
    return y


def _register_all() -> None:
    """Import every module of this package: each registers its dataset, so a new dataset is one file here."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
