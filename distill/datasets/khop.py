"""Built-in token tasks, generated offline from a seed: `khop`, whose depth knob is `hops`.

Both variants ask for k hops of a lookup, a classification over A symbols
(the label is the symbol reached), and a transformer does one hop per
attention layer unless it learns to compose: shallower models fail.

- `table` (the default): a random function f on A symbols, written out as
  the sequence f(0), f(1), ..., f(A-1), followed by a query q; the label is
  f^k(q). Hop j is attention from the query's position to the position named
  by the symbol it holds (content to position), so k hops take about k
  layers (log k with pointer doubling). Measured here (A = 8, 4,000 samples,
  dim 32, 30 epochs, lr 3e-3, one thread): k = 2 is 34% at one layer and 100%
  at two and three, in 12-21 s a run.
- `induction`: k-hop induction heads (Sanford, Hsu & Telgarsky 2024,
  "Transformers, parallel computation, and logarithmic depth",
  arXiv:2402.09268): a sequence x_0..x_{L-1}; find(i) is the position right
  after the latest earlier occurrence of x_i (0 if none), and the label is x
  at find^k(L-1), the k-hop target of the last position. The paper's task
  exactly, but it learns slowly on a CPU budget: k = 2, 8,000 samples, 30
  epochs, dim 64, lr 1e-3: 39% at one layer and 35% at two (62-148 s a run),
  so the depth benchmark uses `table`.

Ids: symbol s is token s + 1; 0 is the pad id (never used: every sequence is
full length), so the vocabulary is A + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import Arrays, TokenInfo, register_dataset
from ..errors import check


@dataclass(frozen=True)
class KHopOptions:
    hops: int = 2  # the depth knob: k
    variant: Literal["table", "induction"] = "table"
    alphabet: int = 8
    length: int = 24  # induction only: a table's sequence is its A entries and the query
    train_samples: int = 4000
    test_samples: int = 2000

    def __post_init__(self) -> None:
        check(self.hops >= 1, "hops", f"must be >= 1, got {self.hops}")
        check(self.alphabet >= 2, "alphabet", f"must be >= 2, got {self.alphabet}")
        check(self.length >= 2, "length", f"must be >= 2, got {self.length}")
        check(self.train_samples >= 10 and self.test_samples >= 1, "train_samples", "needs >= 10 training and >= 1 test samples")


def find_next(x: np.ndarray) -> np.ndarray:
    """(N, L) symbols -> (N, L) find(i): 1 + the latest j < i with x[j] == x[i], else 0."""
    n, length = x.shape
    out = np.zeros((n, length), dtype=np.int64)
    last = np.full((n, int(x.max()) + 1), -1, dtype=np.int64)  # per row: where each symbol was seen last
    rows = np.arange(n)
    for i in range(length):
        prev = last[rows, x[:, i]]
        out[:, i] = np.where(prev >= 0, prev + 1, 0)
        last[rows, x[:, i]] = i
    return out


def khop_targets(x: np.ndarray, hops: int) -> np.ndarray:
    """The k-hop target of each sequence's last position."""
    nxt = find_next(x)
    rows = np.arange(len(x))
    pos = np.full(len(x), x.shape[1] - 1)
    for _ in range(hops):
        pos = nxt[rows, pos]
    return x[rows, pos]


@register_dataset("khop", KHopOptions)
def khop(opts: KHopOptions, seed: int) -> Arrays:
    rng = np.random.default_rng([seed, 7])

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        if opts.variant == "induction":
            x = rng.integers(0, opts.alphabet, (n, opts.length))
            return (x + 1).astype(np.int64), khop_targets(x, opts.hops).astype(np.int64)
        f = rng.integers(0, opts.alphabet, (n, opts.alphabet))
        at = rng.integers(0, opts.alphabet, n)
        x = np.concatenate([f, at[:, None]], 1)
        for _ in range(opts.hops):
            at = f[np.arange(n), at]
        return (x + 1).astype(np.int64), at.astype(np.int64)

    x_train, y_train = draw(opts.train_samples)
    x_test, y_test = draw(opts.test_samples)
    length = opts.length if opts.variant == "induction" else opts.alphabet + 1
    info = TokenInfo(vocab_size=opts.alphabet + 1, pad_id=0, max_len=length, samples=opts.train_samples + opts.test_samples)
    return Arrays(x_train, y_train, x_test, y_test, tokens=info)
