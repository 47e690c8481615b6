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

The teacher's side (log p_T and p_T) is `prepare`d apart from the student's: with
cached teacher outputs, `train.run` computes it once per run and a step computes
only log q_T. The control still draws its permutation on every step, from the
prepared log p_T. Without the control KD is also a `SoftTerm`, a cross-entropy
against T^2 p_T at temperature T plus the constant T^2 sum p_T log p_T (the KL
is the cross-entropy less the teacher's entropy), which `train.run` fuses with CE.
Fused, the logged KD carries float32's error on T^2 H (~1e-7 of it, absolute),
not on the KL alone; the gradient is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import check
from ..models import Outputs
from . import SoftTerm, register_loss


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


class SoftTargets(NamedTuple):
    """The teacher's side of KD at one temperature, one row per sample."""

    log_p: Tensor  # log p_T
    p: Tensor  # p_T


@torch.no_grad()  # the teacher's side is a constant: no gradient, no autograd nodes
def soft_targets(logits_teacher: Tensor, temperature: float) -> SoftTargets:
    log_p = F.log_softmax(logits_teacher / temperature, dim=-1)
    return SoftTargets(log_p, log_p.exp())


def kd_from_targets(logits_student: Tensor, teacher: SoftTargets, temperature: float, target: Tensor | None = None) -> Tensor:
    """KD against prepared soft targets; with `target`, their non-target part shuffled first."""
    log_p, p = teacher
    if target is not None:
        with torch.no_grad():
            log_p = shuffle_nontarget(log_p, target)
            p = log_p.exp()
    log_q = F.log_softmax(logits_student / temperature, dim=-1)
    return (p * (log_p - log_q)).sum(-1).mean() * temperature**2


def kd_loss(logits_student: Tensor, logits_teacher: Tensor, temperature: float, target: Tensor | None = None) -> Tensor:
    """KD; with `target`, against the teacher's probabilities with their non-target part shuffled."""
    return kd_from_targets(logits_student, soft_targets(logits_teacher, temperature), temperature, target)


def _prepare(teacher: Outputs, *, temperature: float, shuffle_nontarget: bool) -> SoftTargets:
    return soft_targets(teacher.logits, temperature)  # unshuffled: the control draws anew on every step


def _soft(teacher: SoftTargets, target: Tensor, num_classes: int, *, temperature: float, shuffle_nontarget: bool) -> SoftTerm | None:
    if shuffle_nontarget:
        return None  # the control draws a new permutation on every step: its targets are not fixed
    t2 = temperature**2
    return SoftTerm(temperature, teacher.p * t2, (teacher.p * teacher.log_p).sum(-1) * t2)


@register_loss("kd", KDOptions, prepare=_prepare, soft=_soft)
def kd(student: Outputs, teacher: SoftTargets, target: Tensor, *, temperature: float = 4.0, shuffle_nontarget: bool = False) -> Tensor:
    return kd_from_targets(student.logits, teacher, temperature, target if shuffle_nontarget else None)
