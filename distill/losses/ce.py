"""Cross-entropy on the hard labels; as a `SoftTerm`, against the one-hot labels smoothed the
way `F.cross_entropy(label_smoothing=eps)` smooths them: (1 - eps) * one_hot + eps / C.

A language model's labels are next tokens, (B, L) against logits (B, L, vocab): the mean over
predicted tokens (positions labelled IGNORE, -100, take no part). Its soft-term form is not
offered (one row per token would be (N, L, vocab) targets): such a mix is not fused."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import IGNORE
from ..errors import check
from ..models import Outputs
from . import SoftTerm, register_loss


@dataclass(frozen=True)
class CEOptions:
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")


def _soft(teacher: None, target: Tensor, num_classes: int, *, label_smoothing: float) -> SoftTerm | None:
    if target.dim() != 1:
        return None
    weights = F.one_hot(target, num_classes).float() * (1.0 - label_smoothing) + label_smoothing / num_classes
    return SoftTerm(1.0, weights, torch.zeros(len(target), device=target.device))


@register_loss("ce", CEOptions, reads=(), soft=_soft)
def ce(student: Outputs, teacher: Outputs | None, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    if target.dim() == 2:  # next tokens
        return F.cross_entropy(student.logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE, label_smoothing=label_smoothing)
    return F.cross_entropy(student.logits, target, label_smoothing=label_smoothing)
