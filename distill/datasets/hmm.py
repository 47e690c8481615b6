"""The built-in language-modelling source, `hmm`: sequences from a random hidden Markov model
drawn from the data seed, with the floor no model can beat computed exactly.

A hidden chain over S states (transition rows ~ Dirichlet(transition_alpha), the first
state ~ the chain's stationary distribution) emits one of A symbols per step (emission
rows ~ Dirichlet(emission_alpha)). Small alphas make sparse rows: a source with structure
to learn (a state is inferred from the recent symbols), whose best predictor needs memory
of the past, so student depth and width matter.

The floor: a language model is scored on -log q(x_{t+1} | x_0..x_t) over the predicted
positions (t = 0..L-2). The true model's predictive p(x_{t+1} | x_0..x_t) is computed
exactly by the forward algorithm, and the floor is its mean cross-entropy over the test
split's predicted tokens: the Bayes-optimal score on exactly the tokens every model is
scored on (no model beats it in expectation; on a finite test set only by its stderr,
given). It is not the entropy rate, the limit as t grows: early positions know less of the
state, so the floor sits above the rate; `HMMFloor.last` (the final position's mean) is the
closest estimate of the rate.

Ids: symbol s is token s + 1; 0 is the pad id, unused (every sequence is full length),
so the vocabulary is A + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import Arrays, TokenInfo, next_token_labels, register_dataset
from ..errors import check

__all__ = ["HMMOptions", "HMMFloor", "hmm_source", "hmm_floor"]


@dataclass(frozen=True)
class HMMOptions:
    # At these defaults (data seed 0): floor 2.550 nats, the last position 2.488; a unigram model of
    # the training split scores 3.332 on the test split and a bigram 2.748, so about 0.2 nats are
    # left for a model that infers the hidden state from more than one symbol back.
    states: int = 8
    symbols: int = 64
    length: int = 32
    transition_alpha: float = 0.1  # sparse: each state leads to one or two others
    emission_alpha: float = 0.05  # sparse: each state emits a few symbols, which is what reveals it
    train_samples: int = 4000
    test_samples: int = 1000

    def __post_init__(self) -> None:
        check(self.states >= 1, "states", f"must be >= 1, got {self.states}")
        check(self.symbols >= 2, "symbols", f"must be >= 2, got {self.symbols}")
        check(self.length >= 2, "length", f"must be >= 2: a language model reads one token and predicts the next, got {self.length}")
        check(self.transition_alpha > 0, "transition_alpha", f"must be > 0, got {self.transition_alpha}")
        check(self.emission_alpha > 0, "emission_alpha", f"must be > 0, got {self.emission_alpha}")
        check(self.train_samples >= 10 and self.test_samples >= 1, "train_samples", "needs >= 10 training and >= 1 test samples")


@dataclass(frozen=True)
class HMMSource:
    start: np.ndarray  # (S,)
    transition: np.ndarray  # (S, S): row i is p(next state | state i)
    emission: np.ndarray  # (S, A): row i is p(symbol | state i)


@dataclass(frozen=True)
class HMMFloor:
    nats: float  # the true model's mean cross-entropy over the test split's predicted tokens
    stderr: float  # its standard error over test sequences
    last: float  # the same at the final position only: the closest estimate of the entropy rate


def hmm_source(opts: HMMOptions, seed: int) -> HMMSource:
    rng = np.random.default_rng([seed, 11])
    transition = rng.dirichlet(np.full(opts.states, opts.transition_alpha), opts.states)
    emission = rng.dirichlet(np.full(opts.symbols, opts.emission_alpha), opts.states)
    # the stationary distribution: the chain starts where it would be after a long run
    w, v = np.linalg.eig(transition.T)
    start = np.abs(np.real(v[:, np.argmin(np.abs(w - 1))]))
    start = start / start.sum() if start.sum() > 0 else np.full(opts.states, 1 / opts.states)
    return HMMSource(start, transition, emission)


def _draw(src: HMMSource, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """(n, length) symbols 0..A-1, all chains at once: inverse-CDF draws from each row."""
    def pick(cdf_rows: np.ndarray) -> np.ndarray:
        return np.minimum((cdf_rows < rng.random((len(cdf_rows), 1))).sum(1), cdf_rows.shape[1] - 1)

    t_cdf, e_cdf = np.cumsum(src.transition, 1), np.cumsum(src.emission, 1)
    z = pick(np.broadcast_to(np.cumsum(src.start), (n, len(src.start))))
    out = np.empty((n, length), dtype=np.int64)
    for t in range(length):
        if t:
            z = pick(t_cdf[z])
        out[:, t] = pick(e_cdf[z])
    return out


def predictive_nll(src: HMMSource, x: np.ndarray) -> np.ndarray:
    """(N, L) symbols -> (N, L-1): -log p(x_{t+1} | x_0..x_t) under the true source, by the
    forward algorithm (normalised each step, so long sequences do not underflow)."""
    belief = np.broadcast_to(src.start, (len(x), len(src.start)))  # p(z_t | x_<t)
    nll = np.empty((len(x), x.shape[1] - 1))
    for t in range(x.shape[1]):
        joint = belief * src.emission[:, x[:, t]].T  # p(z_t, x_t | x_<t)
        p_x = joint.sum(1)
        if t:
            nll[:, t - 1] = -np.log(p_x)
        belief = (joint / p_x[:, None]) @ src.transition  # p(z_{t+1} | x_<=t)
    return nll


def hmm_floor(opts: HMMOptions, seed: int) -> HMMFloor:
    """The floor of the `hmm` data that `data.seed: seed` and these options make (module docstring)."""
    src = hmm_source(opts, seed)
    _, x_test = _splits(src, opts, seed)
    nll = predictive_nll(src, x_test)
    per_seq = nll.mean(1)
    stderr = float(per_seq.std(ddof=1) / np.sqrt(len(per_seq))) if len(per_seq) > 1 else float("nan")
    return HMMFloor(float(nll.mean()), stderr, float(nll[:, -1].mean()))


def _splits(src: HMMSource, opts: HMMOptions, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 12])
    return _draw(src, opts.train_samples, opts.length, rng), _draw(src, opts.test_samples, opts.length, rng)


@register_dataset("hmm", HMMOptions, task="lm")
def hmm(opts: HMMOptions, seed: int) -> Arrays:
    src = hmm_source(opts, seed)
    x_train, x_test = _splits(src, opts, seed)
    floor = float(predictive_nll(src, x_test).mean())
    x_train, x_test = x_train + 1, x_test + 1
    info = TokenInfo(vocab_size=opts.symbols + 1, pad_id=0, max_len=opts.length, samples=opts.train_samples + opts.test_samples,
                     task="lm", floor=floor)
    return Arrays(x_train, next_token_labels(x_train, 0), x_test, next_token_labels(x_test, 0), tokens=info)
