"""Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR, arXiv:2203.08679).

KD splits into a target part and a non-target part:

    TCKD = KL(b_t || b_s),  b = [p_target, 1 - p_target] at temperature T
    NCKD = KL(p~_t || p~_s), p~ = softmax over the non-target classes only
    dkd  = T^2 * (tckd * TCKD + nckd * NCKD)

Defaults are the paper's CIFAR-100 values (alpha=1, beta=8, T=4); we name the
weights `tckd` and `nckd` instead of alpha and beta. Warning: the official code
also ramps the whole loss in linearly over the first 20 epochs; kdx does not
(a loss has no notion of epoch here), which matters most with large `nckd`.
The binary part is computed in log space (logsumexp over the non-target
classes) rather than as log of a probability, which can underflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import check
from ..models import Outputs
from . import register_loss


@dataclass(frozen=True)
class DKDOptions:
    temperature: float = 4.0
    tckd: float = 1.0
    nckd: float = 8.0

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.tckd >= 0, "tckd", f"must be >= 0, got {self.tckd}")
        check(self.nckd >= 0, "nckd", f"must be >= 0, got {self.nckd}")


def _binary_log_probs(log_p: Tensor, mask: Tensor) -> Tensor:
    target = log_p.masked_fill(~mask, float("-inf")).logsumexp(-1)
    other = log_p.masked_fill(mask, float("-inf")).logsumexp(-1)
    return torch.stack([target, other], dim=-1)


def dkd_loss(logits_student: Tensor, logits_teacher: Tensor, target: Tensor, temperature: float, tckd: float, nckd: float) -> Tensor:
    mask = F.one_hot(target, logits_student.shape[-1]).bool()
    zs, zt = logits_student / temperature, logits_teacher.detach() / temperature
    bs = _binary_log_probs(F.log_softmax(zs, -1), mask)
    bt = _binary_log_probs(F.log_softmax(zt, -1), mask)
    tckd_term = (bt.exp() * (bt - bs)).sum(-1).mean()
    # As the official code: push the target logit far down rather than to -inf,
    # so no inf - inf appears in the backward pass.
    ns = F.log_softmax(zs - 1000.0 * mask, -1)
    nt = F.log_softmax(zt - 1000.0 * mask, -1)
    nckd_term = (nt.exp() * (nt - ns)).sum(-1).mean()
    return temperature**2 * (tckd * tckd_term + nckd * nckd_term)


@register_loss("dkd", DKDOptions)
def dkd(student: Outputs, teacher: Outputs, target: Tensor, *, temperature: float = 4.0, tckd: float = 1.0, nckd: float = 8.0) -> Tensor:
    return dkd_loss(student.logits, teacher.logits, target, temperature, tckd, nckd)
