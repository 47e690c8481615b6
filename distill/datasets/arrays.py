"""A user's arrays from `.npy` / `.npz` files (`arrays`), memory-mapped when they are large
(`distill.files.Mapped`). Arrays load with `allow_pickle=False`: unpickling runs code from the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..cache import fingerprint
from ..errors import DataError, check
from . import Arrays, TokenInfo, register_dataset

_SPLITS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class ArraysOptions:
    """`path`: a folder with x_train.npy, y_train.npy, x_test.npy and y_test.npy, or one
    .npz holding those four names. Relative paths are taken from the working directory."""

    path: str = ""
    mmap: Literal["auto", "always", "never"] = "auto"  # auto: map the x files when they exceed a quarter of the free memory
    vocab_size: int = 0  # 0: x are features (float32); > 0: x are (N, length) integer token ids 0..vocab_size-1, kept int64
    pad_id: int = 0  # token ids only: the id filling the tail of short samples (models mask it out)

    def __post_init__(self) -> None:
        check(bool(self.path), "path", "name a folder of .npy files or an .npz file")
        check(self.vocab_size >= 0, "vocab_size", f"must be >= 0 (0: the arrays are features), got {self.vocab_size}")
        if self.vocab_size:
            check(0 <= self.pad_id < self.vocab_size, "pad_id", f"must be in 0..{self.vocab_size - 1} (vocab_size {self.vocab_size}), got {self.pad_id}")
            check(self.mmap != "always", "mmap", "token ids (vocab_size > 0) are read into memory: a memory map reads float32; "
                  "leave mmap at auto")


def _free_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _load(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"data.path: no such file '{path}'")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "python objects" in str(e).lower():  # "Array can't be memory-mapped: Python objects in dtype"
            raise DataError(f"data.path: '{path}' holds pickled data, which kdx does not load (unpickling runs code from the file); "
                            "save plain arrays with numpy.save") from None
        raise DataError(f"data.path: '{path}' is not a .npy array ({e})") from None


@register_dataset("arrays", ArraysOptions)
def arrays(opts: ArraysOptions, seed: int) -> Arrays:
    root = Path(opts.path)
    if root.is_file() and root.suffix == ".npz":
        try:
            with np.load(root, allow_pickle=False) as z:  # an .npz is a zip: read whole, it cannot be mapped
                missing = [k for k in _SPLITS if k not in z.files]
                if missing:
                    raise DataError(f"data.path: '{root}' has no array '{missing[0]}' (it has {', '.join(z.files) or 'none'})")
                parts = [z[k] for k in _SPLITS]
        except ValueError as e:
            raise DataError(f"data.path: '{root}' holds pickled data, which kdx does not load; save plain arrays with numpy.savez ({e})") from None
        stamp = [root.stat().st_size, root.stat().st_mtime_ns]
    elif root.is_dir():
        files = [root / f"{k}.npy" for k in _SPLITS]
        for f in files:
            if not f.is_file():
                raise DataError(f"data.path: '{root}' has no {f.name}")
        big = files[0].stat().st_size + files[2].stat().st_size
        mmap = not opts.vocab_size and (opts.mmap == "always" or (opts.mmap == "auto" and big > _free_bytes() // 4))
        parts = [_load(f, mmap and k.startswith("x")) for f, k in zip(files, _SPLITS)]
        stamp = [[f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    else:
        raise DataError(f"data.path: no folder or .npz file '{root}'")
    x_train, y_train, x_test, y_test = parts  # shapes, labels and values: checked by load_data, as for every dataset
    if not opts.vocab_size:
        return Arrays(x_train, np.asarray(y_train), x_test, np.asarray(y_test), identity=fingerprint(stamp))
    x_train, x_test = _token_ids(x_train, "x_train", opts.vocab_size), _token_ids(x_test, "x_test", opts.vocab_size)
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(f"data.path: x_train holds {x_train.shape[1]} ids per sample, x_test {x_test.shape[1]}; pad both to one length")
    info = TokenInfo(vocab_size=opts.vocab_size, pad_id=opts.pad_id, max_len=x_train.shape[1], samples=len(x_train) + len(x_test))
    return Arrays(x_train, np.asarray(y_train), x_test, np.asarray(y_test), identity=fingerprint(stamp), tokens=info)


def _token_ids(x: np.ndarray, name: str, vocab_size: int) -> np.ndarray:
    """`x` as int64 token ids, checked: integers, (N, length), each in 0..vocab_size-1."""
    if x.dtype.kind not in "iu":
        raise DataError(f"data.path: {name} is {x.dtype}, but token ids (data.vocab_size > 0) must be integers; "
                        "leave vocab_size at 0 for features")
    if x.ndim != 2:
        raise DataError(f"data.path: {name} must be (samples, length) token ids, got shape {x.shape}")
    bad = (x < 0) | (x >= vocab_size)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"data.path: {name} sample {i} position {j} holds token id {x[i, j]}, outside 0..{vocab_size - 1} "
                        f"(data.vocab_size {vocab_size})")
    return x.astype(np.int64)

