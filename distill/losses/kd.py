"""Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"
(arXiv:1503.02531).

    kd = T^2 * mean_batch KL(p_T || q_T),  p_T = softmax(z_t / T), q_T = softmax(z_s / T)

The T^2 factor keeps the gradient's size independent of T (the gradient of the
KL term scales as 1/T^2), so the `mix` weight means the same at every T. We
take the batch mean of the per-sample KL ("batchmean"), as the paper's
per-case objective does; `F.kl_div(..., reduction="mean")` averages over
classes too and silently divides the loss by the number of classes.

Dark-knowledge control (`shuffle_nontarget: true`): each sample's teacher
probabilities over the non-target classes are permuted at random, keeping the
target probability (the teacher's confidence) and the set of values, but not
which wrong class is likely. A gain that survives the control is not dark
knowledge (the question of Hinton et al.; the control as in Muller et al. 2019
and Yuan et al. 2020, "Revisiting KD via label smoothing regularization").
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
    shuffle_nontarget: bool = False  # the dark-knowledge control; runs with it are tagged controls

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


def shuffle_nontarget(log_p: Tensor, target: Tensor) -> Tensor:
    """Permute each row's entries outside column `target` at random; the target entry stays."""
    n, c = log_p.shape
    is_target = F.one_hot(target, c).bool()
    # non-target columns in ascending order, and the same columns in a random order (target sorted last, dropped)
    ordered = torch.where(is_target, c, torch.arange(c, device=log_p.device)).sort(dim=1).values[:, : c - 1]
    shuffled = torch.where(is_target, 2.0, torch.rand(n, c, device=log_p.device)).argsort(dim=1)[:, : c - 1]
    return log_p.scatter(1, shuffled, log_p.gather(1, ordered))


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float, target: Tensor | None = None) -> Tensor:
    """KD; with `target`, against the teacher's probabilities with their non-target part shuffled."""
    log_q = F.log_softmax(logits_student / temperature, dim=-1)
    with torch.no_grad():  # the teacher's side is a constant: no gradient, fewer autograd nodes
        log_p = F.log_softmax(logits_teacher / temperature, dim=-1)
        if target is not None:
            log_p = shuffle_nontarget(log_p, target)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature**2


@register_loss("kd", KDOptions)
def kd(student: Outputs, teacher: Outputs, target: Tensor, *, temperature: float = 4.0, shuffle_nontarget: bool = False) -> Tensor:
    return kd_loss(student.logits, teacher.logits, temperature, target if shuffle_nontarget else None)
