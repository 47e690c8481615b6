"""Early stopping that keeps small students: multi-objective ASHA (`search.scheduler: asha`
with more than one objective).

ASHA stops a trial at a rung (epoch grace_period * reduction_factor^k) unless its val_acc is
in the top 1/reduction_factor of those recorded at that rung. In a search with `params: min`
that removes the small students first: a small student always has a lower val_acc than a big
one at the same epoch, so the scheduler cuts the very part of the front the user searched for.

kdx's rungs rank by non-dominated sorting over every objective known at that epoch instead
(MO-ASHA, Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving"; params and
latency are known before training, val_acc at each epoch). A trial goes on when it is on the
rung's first front (nobody recorded there is at least as good in every objective and better in
one), or when it is among the top ceil(n / reduction_factor) of the n recorded in
(front, crowding distance) order, NSGA-II's ranking. The first-front rule is the point: a
trade-off the user asked for is never stopped for being small. Size buckets with val_acc
inside each were the other option, but buckets need edges the user would have to choose, and
a bucket with one trial keeps a bad trial forever; sorting needs neither.

With one objective, Ray's ASHAScheduler runs as before (workflows/tune.py).
"""

from __future__ import annotations

import math

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

__all__ = ["MOASHA", "rung_decision", "front_ranks", "rungs"]


def front_ranks(points: np.ndarray) -> np.ndarray:
    """(n,) non-dominated sorting of minimisation-form points: 0 for the first front, 1 for the next ..."""
    n = len(points)
    ranks = np.full(n, -1)
    left, rank = np.arange(n), 0
    while len(left):
        p = points[left]
        dominated = ((p[:, None, :] <= p[None, :, :]).all(axis=2) & (p[:, None, :] < p[None, :, :]).any(axis=2)).any(axis=0)
        ranks[left[~dominated]] = rank
        left, rank = left[dominated], rank + 1
    return ranks


def _crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance within one front: points at the ends of any objective are infinitely far."""
    n, k = points.shape
    out = np.zeros(n)
    for j in range(k):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        out[order[0]] = out[order[-1]] = np.inf
        if span > 0 and n > 2:
            out[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return out


def rung_decision(recorded: dict[str, np.ndarray], trial: str, reduction_factor: int) -> bool:
    """True when `trial` goes on from a rung where `recorded` (trial id -> minimisation-form
    objectives, the trial's own included) stand: on the first front, or in the top ceil(n / rf)."""
    ids = list(recorded)
    points = np.array([recorded[i] for i in ids], dtype=float)
    ranks = front_ranks(points)
    me = ids.index(trial)
    if ranks[me] == 0:
        return True
    crowd = np.zeros(len(ids))
    for r in np.unique(ranks):
        crowd[ranks == r] = _crowding(points[ranks == r])
    order = sorted(range(len(ids)), key=lambda i: (ranks[i], -crowd[i], i))
    return order.index(me) < math.ceil(len(ids) / reduction_factor)


def rungs(grace_period: int, reduction_factor: int, max_t: int) -> list[int]:
    """The epochs at which trials are judged: grace_period * rf^k below max_t."""
    out, t = [], grace_period
    while t < max_t:
        out.append(t)
        t *= reduction_factor
    return out


class MOASHA(FIFOScheduler):
    """Asynchronous successive halving whose rungs rank by non-dominated sorting (module doc).

    `objectives` maps a result key to "max" or "min"; every one must be in each epoch's result."""

    def __init__(self, objectives: dict[str, str], time_attr: str, max_t: int, grace_period: int, reduction_factor: int):
        super().__init__()
        self.objectives, self.time_attr, self.rf, self.max_t = dict(objectives), time_attr, reduction_factor, max_t
        self.rungs = rungs(grace_period, reduction_factor, max_t)
        self.recorded: dict[int, dict[str, np.ndarray]] = {r: {} for r in self.rungs}
        self.stopped = 0

    def _point(self, result: dict) -> np.ndarray | None:
        values = [result.get(k) for k in self.objectives]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            return None
        return np.array([-float(v) if self.objectives[k] == "max" else float(v) for k, v in zip(self.objectives, values)])

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        t = result.get(self.time_attr)
        if t is not None and t >= self.max_t:
            return TrialScheduler.STOP  # its budget is spent, as Ray's ASHA says at max_t
        point = self._point(result)
        if t is None or point is None:
            return TrialScheduler.CONTINUE
        for rung in reversed(self.rungs):
            if t >= rung and trial.trial_id not in self.recorded[rung]:
                self.recorded[rung][trial.trial_id] = point
                if not rung_decision(self.recorded[rung], trial.trial_id, self.rf):
                    self.stopped += 1
                    return TrialScheduler.STOP
                break
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"MO-ASHA: rungs at {self.rungs}, {self.stopped} trial(s) stopped"
