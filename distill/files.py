"""A split's samples in memory or on disk.

A `Mapped` array is a view on a `.npy` file: indexing it reads only the rows
asked for (a batch) and returns float32 tensors, so the training set can be
larger than memory. It pickles as its path and row numbers, so a Ray worker
on another node opens the file itself (put it on storage every node mounts)
instead of receiving the samples through the object store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["Mapped", "as_samples"]


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



def as_samples(a: np.ndarray, rows: np.ndarray | None = None, ids: bool = False) -> Tensor | Mapped:
    """A split's samples: a Mapped view when `a` is a memory map (nothing read), else in memory:
    token ids (`ids`) as int64, anything else float32."""
    if isinstance(a, np.memmap):
        m = Mapped(a.filename)
        return m if rows is None else m.subset(rows)
    a = a if rows is None else a[rows]
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64 if ids else np.float32))

