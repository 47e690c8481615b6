"""Datasets: a registry of builders, each giving train and test arrays from a
fixed seed; `load_data` carves the validation split out of the training set,
so nothing is ever picked on the test split.

Samples are float32 of shape `input_shape` (channels first: (1, 40) for
MNIST-1D, (1, 8, 8) for digits, (64,) for hgmm, (3, 32, 32) for CIFAR),
labels int64. The built-in datasets live in memory: batching by slicing
tensors is far faster than a per-sample DataLoader (benchmarks/bench_step.py). A user's
`.npy` files larger than memory stay on disk as `distill.files.Mapped` views
whose batches are read as they are asked for.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .cache import cache_dir, fingerprint, load_checked, save_checked
from .errors import ConfigError, DataError, check
from .models import TokenShape
from .registry import Registry

__all__ = ["Dataset", "DATASETS", "Arrays", "TokenInfo", "register_dataset", "load_data", "is_custom", "IGNORE", "next_token_labels", "small_split_line"]

IGNORE = -100  # a language model's label at positions with no next token (padding, the last): torch's ignore_index

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
    # "lm": next-token prediction. y is then (N, max_len): y[:, t] = x[:, t + 1], IGNORE where no next token is
    # (`next_token_labels`), and a model's logits are (B, max_len, vocab_size).
    task: str = "classify"
    # lm, built-in sources only: the true source's mean cross-entropy (nats) over the test split's predicted
    # tokens, the floor no model can beat on those tokens (distill/lm.py states the estimator); None unknown.
    floor: float | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "labels": list(self.labels)}


@dataclass(frozen=True)
class Arrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    identity: str = ""  # what the options do not say about the data (a file's size and time): part of the cache key
    tokens: TokenInfo | None = None  # token data: x are int64 ids


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

    @property
    def task(self) -> str:
        return self.tokens.task if self.tokens is not None else "classify"


def register_dataset(name: str, options: type, task: str = "classify") -> Callable[[Callable], Callable]:
    """Register `build(options, seed) -> Arrays`; `task` "lm" for a language-modelling source (the run's
    `task` must say so: it decides the objectives before any data is made)."""
    return DATASETS.register(name, options, (task,))


def dataset_task(name: str) -> str:
    """The task a registered dataset serves ("classify" for a user's function)."""
    return "classify" if is_custom(name) or name not in DATASETS else DATASETS.get(name, "data.name").reads[0]


# A validation split this small cannot rank recipes: below 625 samples an accuracy's binomial std reaches 2 points
# (at 50%), and below 10 samples a class a few samples decide a class's share. The split's error is shared by every
# seed of a search (data.seed is fixed), so racing over seeds never averages it away.
SMALL_SPLIT, PER_CLASS = 625, 10


def small_split_line(data: Dataset) -> str:
    """One line naming a classifier's small validation split and the data.val_fraction that would fix it; '' otherwise."""
    n, classes = len(data.y_val), data.num_classes
    if data.task != "classify" or (n >= SMALL_SPLIT and n >= PER_CLASS * classes):
        return ""
    pool, need = n + len(data.y_train), max(SMALL_SPLIT, PER_CLASS * classes)
    std = 100 * (0.25 / n) ** 0.5
    fix = (f"data.val_fraction: {math.ceil(100 * need / pool) / 100:g} would give {need:,}" if need <= pool / 2 else
           f"even data.val_fraction: 0.5 would give only {pool // 2:,}: more data would fix it")
    return (f"data: the validation split has {n:,} samples ({n / classes:.3g} per class): an accuracy on it is off by up to "
            f"{std:.1f} points (binomial std) on every seed alike, as much as good recipes differ; {fix}")


def next_token_labels(ids: np.ndarray, pad_id: int) -> np.ndarray:
    """(N, L) ids, padded at the tail -> (N, L) labels: the next id at each position, IGNORE where there
    is none (the last position, and positions whose next id is padding)."""
    y = np.full(ids.shape, IGNORE, dtype=np.int64)
    y[:, :-1] = np.where(ids[:, 1:] != pad_id, ids[:, 1:], IGNORE)
    return y


def is_custom(name: str) -> bool:
    return ":" in name


# --- built-in datasets ----------------------------------------------------------


@dataclass(frozen=True)
class Mnist1dOptions:
    num_samples: int = 10000  # 80% train (mnist1d's split), 20% test

    def __post_init__(self) -> None:
        check(self.num_samples >= 10, "num_samples", f"must be >= 10, got {self.num_samples}")


def _savez(path: Any, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)


@register_dataset("mnist1d", Mnist1dOptions)
def mnist1d(opts: Mnist1dOptions, seed: int) -> Arrays:
    path = cache_dir("data") / f"mnist1d-{fingerprint([opts.num_samples, seed])}.npz"
    cached = load_checked(path, lambda p: dict(np.load(p)))
    if cached is None:
        from mnist1d.data import get_dataset_args, make_dataset  # generates offline; get_dataset downloads

        args = get_dataset_args()
        args.num_samples, args.seed = opts.num_samples, seed
        state = np.random.get_state()  # make_dataset reseeds numpy's global generator
        try:
            d = make_dataset(args)
        finally:
            np.random.set_state(state)
        cached = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
        save_checked(path, lambda p: _savez(p, cached))
    as_x = lambda a: a.astype(np.float32)[:, None, :]  # noqa: E731  (N, 1, 40): one channel
    return Arrays(as_x(cached["x"]), cached["y"], as_x(cached["x_test"]), cached["y_test"])


@dataclass(frozen=True)
class DigitsOptions:
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")


@register_dataset("digits", DigitsOptions)
def digits(opts: DigitsOptions, seed: int) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * opts.test_fraction))
    test, train = order[:n_test], order[n_test:]
    return Arrays(x[train], d.target[train], x[test], d.target[test])


@dataclass(frozen=True)
class ShiftedDigitsOptions:
    """sklearn's 8x8 digits, each pasted at a random place on a larger canvas of noise.

    A small image task that runs offline in seconds and where augmentation
    matters: every training digit is seen at one position only, so a network
    that reads positions (cnn's flattened head) must learn each digit at each
    place from few samples, unless random crops shift them around."""

    canvas: int = 16  # side of the square canvas; the digit is 8x8
    noise: float = 0.1  # std of the Gaussian background (digit pixels are 0..1)
    test_fraction: float = 0.2
    copies: int = 1  # each digit pasted this many times (at independent places): a larger training set

    def __post_init__(self) -> None:
        check(self.canvas >= 8, "canvas", f"must be >= 8 (the digits are 8x8), got {self.canvas}")
        check(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")
        check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        check(self.copies >= 1, "copies", f"must be >= 1, got {self.copies}")


@register_dataset("shifted_digits", ShiftedDigitsOptions)
def shifted_digits(opts: ShiftedDigitsOptions, seed: int) -> Arrays:
    from sklearn.datasets import load_digits

    d = load_digits()
    digits8 = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(digits8))
    n_test = int(round(len(order) * opts.test_fraction))
    rng = np.random.default_rng([seed, 3])

    def paste(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.repeat(idx, opts.copies)
        n, room = len(idx), opts.canvas - 8 + 1
        x = rng.normal(0.0, opts.noise, (n, opts.canvas, opts.canvas)).astype(np.float32)
        top, left = rng.integers(0, room, n), rng.integers(0, room, n)
        rows = top[:, None, None] + np.arange(8)[None, :, None]
        cols = left[:, None, None] + np.arange(8)[None, None, :]
        x[np.arange(n)[:, None, None], rows, cols] += digits8[idx]
        return x[:, None], d.target[idx]

    x_test, y_test = paste(order[:n_test])
    x_train, y_train = paste(order[n_test:])
    return Arrays(x_train, y_train, x_test, y_test)


@dataclass(frozen=True)
class HGMMOptions:
    """Hierarchical Gaussian mixture: classes of one superclass share a centre,
    so a teacher's wrong-class probabilities carry structure (dark knowledge)."""

    classes: int = 100
    superclasses: int = 20
    dim: int = 64
    noise: float = 4.0  # with 4, an MLP teacher reaches about 56% and KD gains +3 to +7 points (measured on a 2-core CPU machine, 2026-11)
    superclass_spread: float = 3.0
    class_spread: float = 1.0
    train_per_class: int = 20
    test_per_class: int = 50

    def __post_init__(self) -> None:
        for key in ("classes", "superclasses", "dim", "train_per_class", "test_per_class"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.classes % self.superclasses == 0, "classes", f"{self.classes} classes do not split into {self.superclasses} superclasses")
        check(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")


def hgmm_centres(opts: HGMMOptions, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    supers = rng.normal(0.0, opts.superclass_spread, (opts.superclasses, opts.dim))
    per_super = opts.classes // opts.superclasses
    return np.repeat(supers, per_super, axis=0) + rng.normal(0.0, opts.class_spread, (opts.classes, opts.dim))


@register_dataset("hgmm", HGMMOptions)
def hgmm(opts: HGMMOptions, seed: int) -> Arrays:
    centres = hgmm_centres(opts, seed)
    rng = np.random.default_rng([seed, 1])

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(opts.classes), per_class)
        x = centres[y] + rng.normal(0.0, opts.noise, (len(y), opts.dim))
        return (x / np.sqrt(opts.dim)).astype(np.float32), y

    x_train, y_train = draw(opts.train_per_class)
    x_test, y_test = draw(opts.test_per_class)
    return Arrays(x_train, y_train, x_test, y_test)


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


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"data: {name} must be one integer label per sample, got shape {y.shape}")
    if y.dtype.kind not in "iub":
        whole = np.isfinite(y) & (y == np.round(y)) if y.dtype.kind == "f" else np.zeros(len(y), bool)
        if not whole.all():
            raise DataError(f"data: {name} must hold integer class labels 0..C-1, got {', '.join(map(str, y[~whole][:3]))}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"data: labels must be integers 0..C-1; {name} has {', '.join(map(str, np.unique(y[y < 0])[:3]))} "
                        f"(its labels run {y.min()}..{y.max()})")
    return y


def _finite(x: Any, name: str, chunk: int = 4096) -> None:
    """Every input value finite, checked in chunks (a memory-mapped file is read once, never whole)."""
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start : start + chunk])
        if part.dtype.kind in "fc" and not np.isfinite(part).all():
            bad = int(np.argwhere(~np.isfinite(part.reshape(len(part), -1)).all(axis=1))[0, 0]) + start
            raise DataError(f"data: {name} has NaN or infinite values (the first in sample {bad})")


def _lm_labels(arrays: Arrays) -> tuple[np.ndarray, np.ndarray, int]:
    """A language model's labels checked: (N, L) like the ids, ids inside the vocabulary, and every
    sequence at least two tokens long (one to read, one to predict)."""
    vocab = arrays.tokens.vocab_size
    out = []
    for split, x, y in (("train", arrays.x_train, arrays.y_train), ("test", arrays.x_test, arrays.y_test)):
        x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
        if len(x) == 0:
            raise DataError(f"data: the {split} split is empty")
        if y.shape != x.shape:
            raise DataError(f"data: y_{split} must be the next-token labels, shaped like x_{split} {x.shape}, got {y.shape}")
        if x.min() < 0 or x.max() >= vocab:
            raise DataError(f"data: x_{split} holds ids outside the vocabulary 0..{vocab - 1} ({x.min()}..{x.max()})")
        short = np.flatnonzero((y != IGNORE).sum(1) == 0)
        if len(short):
            raise DataError(f"data: {split} sequence {short[0]} is shorter than two tokens: a language model reads one and predicts the next "
                            f"({len(short)} such)")
        out.append(y)
    return out[0], out[1], vocab


def check_arrays(arrays: Arrays) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked labels (int64) and the class count: labels 0..C-1 and at least two classes,
    inputs finite, as many labels as samples. Classes no label uses are a warning line.
    A language model's labels are next tokens: their checks are `_lm_labels`, the count the vocabulary."""
    if arrays.tokens is not None and arrays.tokens.task == "lm":
        return _lm_labels(arrays)
    y_train, y_test = _labels(arrays.y_train, "y_train"), _labels(arrays.y_test, "y_test")
    for split, x, y in (("train", arrays.x_train, y_train), ("test", arrays.x_test, y_test)):
        if len(x) != len(y):
            raise DataError(f"data: x_{split} has {len(x)} samples, y_{split} {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"data: the {split} split is empty")
        _finite(x, f"x_{split}")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise DataError(f"data: y_train has one class only ({classes[0]}): there is nothing to classify")
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    unused = sorted(set(range(num_classes)) - set(classes.tolist()))
    if unused:
        print(f"warning: data: classes {', '.join(map(str, unused[:10]))}{' ...' if len(unused) > 10 else ''} of 0..{num_classes - 1} "
              "have no training sample; the model still has an output for each", file=sys.stderr)
    return y_train, y_test, num_classes


def load_data(cfg: Any) -> Dataset:
    """Build the dataset a `DataConfig` names, with its train/val split."""
    if is_custom(cfg.name):
        arrays = _custom(cfg.name, cfg.options or {}, cfg.seed)
    else:
        arrays = DATASETS.get(cfg.name, "data.name").build(cfg.options, cfg.seed)
    y_train, y_test, num_classes = check_arrays(arrays)
    order = np.random.default_rng([cfg.seed, 2]).permutation(len(y_train))
    n_val = max(1, int(round(len(order) * cfg.val_fraction)))
    val, train = order[:n_val], order[n_val:]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    opts = cfg.options if isinstance(cfg.options, dict) else asdict(cfg.options)
    from .files import as_samples

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
    )


from . import files, tokens, text, lm, corpus  # noqa: E402,F401  (register cifar10, cifar100 and arrays; khop; text files; hmm; text corpora)
