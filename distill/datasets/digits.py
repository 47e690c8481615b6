"""sklearn's 8x8 handwritten digits (offline), and the same digits pasted at random places on a
larger canvas of noise (`shifted_digits`), a small image task where augmentation matters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check
from . import Arrays, register_dataset

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

