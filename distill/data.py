"""A run's data: the dataset a `DataConfig` names (a registered one, `distill.datasets`, or a
user's function "package.module:name"), its labels checked by its task (`distill.tasks`),
and the validation split carved out of the training set, so nothing is ever picked on
the test split.

The built-in datasets live in memory: batching by slicing tensors is far faster than a
per-sample DataLoader (benchmarks/bench_step.py). A user's `.npy` files larger than memory
stay on disk as `distill.files.Mapped` views whose batches are read as they are asked for.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .cache import fingerprint
from .datasets import DATASETS, IGNORE, Arrays, Pairs, TokenInfo, dataset_task, is_custom, next_token_labels, register_dataset
from .errors import ConfigError, DataError
from .files import as_samples
from .models import TokenShape
from .tasks import Task, task_named

__all__ = ["Dataset", "DATASETS", "Arrays", "TokenInfo", "register_dataset", "load_data", "is_custom", "dataset_task", "IGNORE",
           "next_token_labels", "small_split_line", "check_arrays"]


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: Tensor | Any  # or a `distill.files.Mapped` view on a .npy file: indexing reads the rows asked for
    y_train: Tensor
    x_val: Tensor | Any
    y_val: Tensor
    x_test: Tensor | Any
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]  # a `distill.models.TokenShape` for token ids
    key: str  # fingerprint of the data config: names caches built from this data
    tokens: TokenInfo | None = None  # token data: its vocabulary, tokenizer, label names and truncation count
    pairs: Pairs | None = None  # a gold similarity set scored on test (its ids and scores as tensors)

    @property
    def task(self) -> str:
        """The task it serves (distill.tasks): token data carry it; features are a classifier's."""
        return self.tokens.task if self.tokens is not None else "classify"

    @property
    def task_type(self) -> Task:
        """What its task decides: checks, scores, recipes (`distill.tasks`)."""
        return task_named(self.task)




def small_split_line(data: Dataset) -> str:
    """One line naming a validation split too small to rank recipes, and the data.val_fraction
    that would fix it; '' otherwise (the task says what small is)."""
    return data.task_type.split_line(data)


# --- a user's own dataset --------------------------------------------------------------


def import_object(spec: str, key: str) -> Any:
    """Import "package.module:name"; a failure is a ConfigError naming `key`."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ConfigError(f"{key}: cannot import module '{module_name}' ({e.__class__.__name__}: {e})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: module '{module_name}' has no '{attr}'") from None


def _as_array(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def _custom(name: str, options: dict, seed: int) -> Arrays:
    fn = import_object(name, "data.name")
    kwargs = dict(options)
    if "seed" in inspect.signature(fn).parameters:
        kwargs["seed"] = seed
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"data: options do not fit {name} ({e})") from None
    out = fn(**kwargs)
    if isinstance(out, dict):
        parts = [out.get(k) for k in ("x_train", "y_train", "x_test", "y_test")]
    elif isinstance(out, (tuple, list)) and len(out) == 2:  # (train, test) torch-style datasets
        parts = []
        for split in out:
            xs, ys = zip(*(split[i] for i in range(len(split))))
            parts += [np.stack([_as_array(x) for x in xs]), np.asarray([int(y) for y in ys])]
    elif isinstance(out, (tuple, list)) and len(out) == 4:
        parts = list(out)
    else:
        raise DataError(f"data.name: {name} must return (x_train, y_train, x_test, y_test), a dict of those, or (train_dataset, test_dataset)")
    if any(p is None for p in parts):
        raise DataError(f"data.name: {name} returned a dict without x_train, y_train, x_test and y_test")
    x_train, y_train, x_test, y_test = (_as_array(p) for p in parts)
    return Arrays(x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test)


# --- loading ----------------------------------------------------------------------------------


def check_arrays(arrays: Arrays, task: str = "classify") -> tuple[np.ndarray, np.ndarray, int]:
    """Checked labels (int64) and the output count, by the task the data serves (`Task.check_labels`)."""
    return task_named(arrays.tokens.task if arrays.tokens is not None else task).check_labels(arrays)


def load_data(cfg: Any) -> Dataset:
    """Build the dataset a `DataConfig` names, with its train/val split."""
    if is_custom(cfg.name):
        arrays = _custom(cfg.name, cfg.options or {}, cfg.seed)
    else:
        arrays = DATASETS.get(cfg.name, "data.name").build(cfg.options, cfg.seed)
    task = arrays.tokens.task if arrays.tokens is not None else dataset_task(cfg.name)
    y_train, y_test, num_classes = check_arrays(arrays, task)
    order = np.random.default_rng([cfg.seed, 2]).permutation(len(y_train))
    n_val = max(1, int(round(len(order) * cfg.val_fraction)))
    val, train = order[:n_val], order[n_val:]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    opts = cfg.options if isinstance(cfg.options, dict) else asdict(cfg.options)
    tokens = arrays.tokens
    ids = tokens is not None
    shape = tuple(arrays.x_train.shape[1:])
    if tokens is not None:
        shape = TokenShape(shape[0], tokens.vocab_size, tokens.pad_id, tokens.task)
        if tokens.truncated:
            print(f"note: data: {tokens.truncated} of {tokens.samples} samples were longer than max_len {tokens.max_len} "
                  "and were cut to it", file=sys.stderr)

    return Dataset(
        name=cfg.name,
        x_train=as_samples(arrays.x_train, train, ids),
        y_train=t(y_train[train]),
        x_val=as_samples(arrays.x_train, val, ids),
        y_val=t(y_train[val]),
        x_test=as_samples(arrays.x_test, None, ids),
        y_test=t(y_test),
        num_classes=num_classes,
        input_shape=shape,
        key=fingerprint([cfg.name, cfg.val_fraction, cfg.seed, opts] + ([arrays.identity] if arrays.identity else [])),
        tokens=tokens,
        pairs=None if arrays.pairs is None else Pairs(t(arrays.pairs.x1), t(arrays.pairs.x2), t(arrays.pairs.score), arrays.pairs.source),
    )


