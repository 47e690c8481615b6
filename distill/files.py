"""Datasets read from files: CIFAR-10/100 from the binary-version archive, and a
user's arrays from `.npy` / `.npz` files, memory-mapped when they are large.

Nothing here unpickles. The CIFAR "python version" archive (what torchvision
reads) is a pickle, and loading a pickle runs code from the data file; the
binary version holds the same images as plain bytes: one record per image,
the label byte(s) then 3072 pixel bytes, red plane, green, blue, row-major
(https://www.cs.toronto.edu/~kriz/cifar.html). User arrays load with
`allow_pickle=False`.

A `Mapped` array is a view on a `.npy` file: indexing it reads only the rows
asked for (a batch) and returns float32 tensors, so the training set can be
larger than memory. It pickles as its path and row numbers, so a Ray worker
on another node opens the file itself (put it on storage every node mounts)
instead of receiving the samples through the object store.
"""

from __future__ import annotations

import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .cache import cache_dir, fingerprint
from .data import Arrays, TokenInfo, register_dataset
from .errors import DataError, check

__all__ = ["Mapped", "read_cifar", "CIFAR_URL"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_PIXELS = 3 * 32 * 32


class Mapped:
    """Rows of a `.npy` file on disk; `x[i:j]` and `x[index_tensor]` read just those rows as float32."""

    def __init__(self, path: str | Path, rows: np.ndarray | None = None):
        self.path = str(path)
        self._array: np.ndarray | None = None
        self.rows = rows if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.array.shape[1:])

    def __len__(self) -> int:
        return len(self.array) if self.rows is None else len(self.rows)

    def subset(self, rows: np.ndarray) -> "Mapped":
        return Mapped(self.path, rows if self.rows is None else self.rows[rows])

    def __getitem__(self, idx: slice | Tensor | np.ndarray) -> Tensor:
        if isinstance(idx, Tensor):
            idx = idx.cpu().numpy()
        rows = idx if self.rows is None else self.rows[idx]
        return torch.from_numpy(np.array(self.array[rows], dtype=np.float32))  # a copy: the map stays read-only

    def __getstate__(self) -> dict:
        return {"path": self.path, "rows": self.rows}  # the path, not the samples: each node reads its own

    def __setstate__(self, state: dict) -> None:
        self.path, self.rows, self._array = state["path"], state["rows"], None


# --- CIFAR, binary version ------------------------------------------------------------


@dataclass(frozen=True)
class CifarOptions:
    root: str = ""  # a folder holding the binary-version archive (.tar.gz) or its extracted folder; default <KDX_CACHE>/cifar
    download: bool = False  # nothing downloads unless asked


_CIFAR = {  # archive, its folder, train files, test files, label bytes per record (cifar-100: coarse, then fine)
    "cifar10": ("cifar-10-binary.tar.gz", "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1),
    "cifar100": ("cifar-100-binary.tar.gz", "cifar-100-binary", ["train.bin"], ["test.bin"], 2),
}
_PICKLED = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"), "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python")}


def _records(raw: bytes, label_bytes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    width = label_bytes + _PIXELS
    if len(raw) == 0 or len(raw) % width:
        raise DataError(f"data.root: {name} is {len(raw)} bytes, not whole CIFAR records of {width} bytes")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
    return rec[:, label_bytes:].reshape(-1, 3, 32, 32), rec[:, label_bytes - 1].astype(np.int64)  # the fine label is the last label byte


def _read_parts(root: Path, which: str) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    archive, folder, train, test = _CIFAR[which][:4]
    if (root / folder).is_dir():
        read = lambda name: (name, (root / folder / name).read_bytes())  # noqa: E731
        missing = [n for n in train + test if not (root / folder / n).is_file()]
        if missing:
            raise DataError(f"data.root: {root / folder} has no {missing[0]}")
        return [read(n) for n in train], [read(n) for n in test]
    if (root / archive).is_file():
        with tarfile.open(root / archive, "r:gz") as tar:  # read members as bytes: nothing is extracted or executed
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in train + test if n not in members]
            if missing:
                raise DataError(f"data.root: {root / archive} has no {missing[0]}")
            read = lambda name: (name, tar.extractfile(members[name]).read())  # noqa: E731
            return [read(n) for n in train], [read(n) for n in test]
    pickled = [p for p in _PICKLED[which] if (root / p).exists()]
    if pickled:
        raise DataError(f"data.root: {root / pickled[0]} is CIFAR's python version, a pickle (loading it runs code from the file); "
                        f"kdx reads the binary version: put {archive} from {CIFAR_URL}cifar.html in {root}")
    raise DataError(f"data.root: no {which} files in {root}; put {archive} (the binary version, {CIFAR_URL}cifar.html) there, or set data.download=true")


def _download(root: Path, which: str) -> None:
    archive = _CIFAR[which][0]
    root.mkdir(parents=True, exist_ok=True)
    part = root / f".{archive}.{os.getpid()}.part"
    try:
        with urllib.request.urlopen(CIFAR_URL + archive, timeout=60) as r, open(part, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(part, root / archive)  # atomic: a cut download never looks complete
    except OSError as e:
        part.unlink(missing_ok=True)
        raise DataError(f"data.download: could not fetch {CIFAR_URL + archive} ({getattr(e, 'reason', e)})") from None


def read_cifar(root: str | Path, which: Literal["cifar10", "cifar100"]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8 (N, 3, 32, 32) images and int64 labels."""
    train, test = _read_parts(Path(root), which)
    label_bytes = _CIFAR[which][4]
    tr = [_records(raw, label_bytes, name) for name, raw in train]
    te = [_records(raw, label_bytes, name) for name, raw in test]
    return (np.concatenate([x for x, _ in tr]), np.concatenate([y for _, y in tr]),
            np.concatenate([x for x, _ in te]), np.concatenate([y for _, y in te]))


def _cifar(opts: CifarOptions, which: Literal["cifar10", "cifar100"]) -> Arrays:
    root = Path(opts.root) if opts.root else cache_dir("cifar")
    archive, folder = _CIFAR[which][:2]
    if opts.download and not (root / folder).is_dir() and not (root / archive).is_file():
        _download(root, which)
    x_train, y_train, x_test, y_test = read_cifar(root, which)
    # Per-channel statistics of the training images, the usual CIFAR normalisation
    # (RepDistiller hard-codes the same figures: 0.5071/0.4865/0.4409 for CIFAR-100).
    scaled = x_train.astype(np.float32) / 255.0
    mean = scaled.mean(axis=(0, 2, 3), keepdims=True)
    std = scaled.std(axis=(0, 2, 3), keepdims=True)
    norm = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)  # noqa: E731
    return Arrays(norm(x_train), y_train, norm(x_test), y_test)


@register_dataset("cifar10", CifarOptions)
def cifar10(opts: CifarOptions, seed: int) -> Arrays:
    return _cifar(opts, "cifar10")


@register_dataset("cifar100", CifarOptions)
def cifar100(opts: CifarOptions, seed: int) -> Arrays:
    return _cifar(opts, "cifar100")


# --- a user's arrays -------------------------------------------------------------------------

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


def as_samples(a: np.ndarray, rows: np.ndarray | None = None, ids: bool = False) -> Tensor | Mapped:
    """A split's samples: a Mapped view when `a` is a memory map (nothing read), else in memory:
    token ids (`ids`) as int64, anything else float32."""
    if isinstance(a, np.memmap):
        m = Mapped(a.filename)
        return m if rows is None else m.subset(rows)
    a = a if rows is None else a[rows]
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64 if ids else np.float32))

