"""Cross-entropy on the hard labels."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..errors import check
from ..models import Outputs
from . import register_loss


@dataclass(frozen=True)
class CEOptions:
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")


@register_loss("ce", CEOptions, reads=())
def ce(student: Outputs, teacher: Outputs | None, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    return F.cross_entropy(student.logits, target, label_smoothing=label_smoothing)
