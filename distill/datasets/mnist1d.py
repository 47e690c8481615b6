"""MNIST-1D (Greydanus 2020): 40-sample 1-D signals of ten digit templates, shifted, scaled and
noised; generated offline from the seed by the `mnist1d` package (its `get_dataset` downloads,
`make_dataset` does not)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cache import cache_dir, fingerprint, load_checked, save_checked
from ..errors import check
from . import Arrays, register_dataset

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

