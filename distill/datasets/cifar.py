"""CIFAR-10/100 from the binary-version archive.

Nothing here unpickles. The CIFAR "python version" archive (what torchvision
reads) is a pickle, and loading a pickle runs code from the data file; the
binary version holds the same images as plain bytes: one record per image,
the label byte(s) then 3072 pixel bytes, red plane, green, blue, row-major
(https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..cache import cache_dir
from ..errors import DataError
from . import Arrays, register_dataset

__all__ = ["read_cifar", "CIFAR_URL"]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_PIXELS = 3 * 32 * 32

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

