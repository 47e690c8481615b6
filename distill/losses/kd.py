"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"
(arXiv:1503.02531).

    kd = T^2 * mean_batch KL(p_T || q_T),  p_T = softmax(z_t / T), q_T = softmax(z_s / T)

The T^2 factor keeps the gradient's size independent of T (the gradient of the
KL term scales as 1/T^2), so the `mix` weight means the same at every T. We
take the batch mean of the per-sample KL ("batchmean"), as the paper's
per-case objective does; `F.kl_div(..., reduction="mean")` averages over
classes too and silently divides the loss by the number of classes.
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
class KDOptions:
    temperature: float = 4.0

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float) -> Tensor:
    log_q = F.log_softmax(logits_student / temperature, dim=-1)
    with torch.no_grad():  # the teacher's side is a constant: no gradient, fewer autograd nodes
        log_p = F.log_softmax(logits_teacher / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature**2


@register_loss("kd", KDOptions)
def kd(student: Outputs, teacher: Outputs, target: Tensor, *, temperature: float = 4.0) -> Tensor:
    return kd_loss(student.logits, teacher.logits, temperature)
