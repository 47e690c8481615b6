"""What the next-token losses share: a language model's distributions, position by position.

A teacher language model gives, at every position t, p_T(. | x<t) over the vocabulary; a
next-token loss compares it with the student's q(. | x<t) at every position whose label is
not IGNORE (-100: the last position, padding) and averages over those tokens, not over
sequences or vocabulary entries. Each loss is a true divergence D(p_T, q_T), 0 when the
student equals the teacher, times T^2 (Hinton et al. 2015), at temperature T:
p_T = softmax(z_t / T). Its files (token_kd, rkl, gjsd, skew_kl) give D; this one the rest.

Conventions differ between the tools, and the same name means different numbers:
- torchtune's `ForwardKLLoss` and DistiLLM's FKL are the cross-entropy to the teacher,
  -sum p log q, whose minimum is the teacher's entropy; ours is the KL (CE less that entropy):
  the same gradient, a value that reads as a distance.
- TRL's GKD applies no T^2 and trains at T = 1; DistillKit multiplies by T^2, as we do. At the
  default T = 1 the factor is 1 and every tool agrees on the gradient.
- TRL without labels averages per sequence in the batch; we average per predicted token.

The top-k cache (`teacher.topk: k`, DistillKit's offline logits) stores, per position, the
teacher's k largest log-probabilities at T = 1 and their ids, plus one tail bucket holding the
rest of the mass, log(1 - sum_topk p) (DistillKit's `symmetric_uniform` and TRL's tail bucket,
not its `zero` mode, which renormalises over the k and so overstates every one of them). The
student is projected onto the same k + 1 buckets (its own tail is the mass it puts outside the
teacher's k), and both sides are tempered as buckets: log_softmax(bucket log-probs / T). At T = 1
that is the exact divergence between the two bucketed distributions, a lower bound on the
full-vocabulary one; at T != 1 the tail is tempered as one id would be, which is an
approximation (the full vocabulary, `k` unset, tempers every id). The student's projection is
exact, so a student that equals the teacher still scores 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import IGNORE
from ..errors import check
from ..models import Outputs

__all__ = ["TokenTargets", "TemperatureOptions", "topk_outputs", "NextTokenLoss", "token_mean"]

# A tail with no mass left (float32 underflow) is stored as this log-probability, not -inf, so the
# divergences stay finite; e^-1e4 is 0 in every float type, so the bucket still holds no mass.
_EMPTY_TAIL = -1.0e4


@dataclass(frozen=True)
class TemperatureOptions:
    """The options of a next-token loss that has no other knob (token_kd, rkl)."""

    temperature: float = 1.0  # the LM tools' default; T^2 keeps the gradient's size at other T

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


class TokenTargets(NamedTuple):
    """The teacher's side at one temperature, one row per sequence."""

    log_p: Tensor  # (N, L, K) tempered log-probabilities over the vocabulary, or over the top-k buckets and the tail
    index: Tensor  # (N, L, k) the ids of the top-k buckets (int64); (N, L, 0) for the full vocabulary


def topk_outputs(logits: Tensor, k: int) -> Outputs:
    """A language model's (B, L, V) logits as what the top-k cache stores: (B, L, k + 1)
    log-probabilities at T = 1 (the k largest, then the tail bucket) and their ids as
    `parts["topk.index"]`; k >= V keeps the whole vocabulary's log-probabilities, ids unneeded."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    if k >= logits.shape[-1]:
        return Outputs(log_p, {}, {}, {"topk.index": log_p.new_zeros(*log_p.shape[:-1], 0, dtype=torch.long)})
    top, index = log_p.topk(k, dim=-1)
    return Outputs(torch.cat([top, _tail(log_p, index)], dim=-1), {}, {}, {"topk.index": index})


def _tail(log_p: Tensor, index: Tensor) -> Tensor:
    """log of the mass outside `index`, (B, L, 1): a logsumexp over the rest, exact where 1 - sum
    of the top-k would cancel to 0 in float32."""
    rest = log_p.scatter(-1, index, float("-inf")).logsumexp(-1, keepdim=True)
    return rest.clamp(min=_EMPTY_TAIL)


def bucketed(log_q: Tensor, index: Tensor) -> Tensor:
    """Log-probabilities over the vocabulary projected onto the buckets of `index` (its ids, then
    the tail); unchanged for the full vocabulary (`index` with no ids)."""
    if index.shape[-1] == 0:
        return log_q
    return torch.cat([log_q.gather(-1, index), _tail(log_q, index)], dim=-1)


def token_mean(per_token: Tensor, target: Tensor) -> Tensor:
    """The mean of (B, L) values over predicted tokens (label != IGNORE); 0, with its graph, when
    the batch predicts none."""
    valid = (target != IGNORE).to(per_token.dtype)
    return (per_token * valid).sum() / valid.sum().clamp(min=1.0)


class NextTokenLoss(nn.Module):
    """A next-token divergence: `divergence(log_p, log_q)` per position, over the last axis,
    with log_p the teacher's and log_q the student's tempered log-probabilities. A file defines
    the divergence and its options; this class does the cache, the temperature, the T^2 and
    the token mean."""

    next_token = True  # a language model's loss (distill.losses.is_next_token)

    def __init__(self, options, student: Outputs, teacher: Outputs | None):
        super().__init__()
        self.options, self.teacher_keys = options, ("logits",)
        if student.logits.dim() != 3:
            raise ValueError("compares next-token distributions, (batch, length, vocab) logits: the student is not a language model")
        if teacher is not None:
            cached = "topk.index" in teacher.parts
            if teacher.logits.dim() != 3:
                raise ValueError("compares next-token distributions: the teacher is not a language model")
            if not cached and teacher.logits.shape[-1] != student.logits.shape[-1]:
                raise ValueError(f"the teacher's vocabulary has {teacher.logits.shape[-1]} ids and the student's "
                                 f"{student.logits.shape[-1]}: use one tokenizer (teacher.vocab: slice for a teacher padded past it)")

    @property
    def temperature(self) -> float:
        return self.options.temperature

    @torch.no_grad()  # the teacher's side is a constant
    def prepare(self, teacher: Outputs) -> TokenTargets:
        index = teacher.parts.get("topk.index")
        if index is None:
            index = teacher.logits.new_zeros(*teacher.logits.shape[:-1], 0, dtype=torch.long)
        return TokenTargets(F.log_softmax(teacher.logits.float() / self.temperature, dim=-1), index.long())

    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: TokenTargets | Outputs, target: Tensor) -> Tensor:
        if isinstance(teacher, Outputs):
            teacher = self.prepare(teacher)
        t = self.temperature
        z = student.logits.float()
        if teacher.index.shape[-1] == 0:
            log_q = F.log_softmax(z / t, dim=-1)
        else:  # buckets at T = 1, then tempered, as the teacher's were
            log_q = F.log_softmax(bucketed(F.log_softmax(z, dim=-1), teacher.index) / t, dim=-1)
        return token_mean(self.divergence(teacher.log_p, log_q), target) * t**2


def kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) over the last axis from log-probabilities; 0 * log 0 is 0."""
    return torch.where(log_a > float("-inf"), log_a.exp() * (log_a - log_b), 0.0).sum(-1)


def log_mix(log_a: Tensor, log_b: Tensor, weight: float) -> Tensor:
    """log(weight * a + (1 - weight) * b), for weight in [0, 1]."""
    if weight == 0.0:
        return log_b
    if weight == 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight), log_b + math.log1p(-weight))
