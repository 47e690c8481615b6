"""Park et al. 2019, "Relational Knowledge Distillation" (CVPR, arXiv:1904.05068).

On the embeddings e (the features the classifier reads; a sentence encoder's pooled output), per batch:

    distance: psi_D(i, j) = ||e_i - e_j|| / mu,  mu = mean of the nonzero distances
    angle:    psi_A(i, j, k) = <(e_i - e_j)/||.||, (e_k - e_j)/||.||>
    rkd = distance * huber(psi_D^s, psi_D^t) + angle * huber(psi_A^s, psi_A^t)

Default weights 25 and 50 are the paper's (and its code's). The relations are
compared, never the embeddings themselves, so the two models' embedding sizes
may differ and no regressor is needed. The angle term is O(B^3) in memory.
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
class RKDOptions:
    distance: float = 25.0
    angle: float = 50.0

    def __post_init__(self) -> None:
        check(self.distance >= 0, "distance", f"must be >= 0, got {self.distance}")
        check(self.angle >= 0, "angle", f"must be >= 0, got {self.angle}")
        check(self.distance + self.angle > 0, "distance", "distance and angle weights are both zero")


def _distances(e: Tensor) -> Tensor:
    # Exact differences, not cdist's default: above 25 rows it switches to the
    # ||a||^2 + ||b||^2 - 2ab formula, whose diagonal is rounding noise instead of
    # 0, and that noise entered mu's "nonzero" count and mean (0.2-1.4% off the
    # reference implementations at batch 26-128).
    d = torch.cdist(e, e, compute_mode="donot_use_mm_for_euclid_dist")
    # mu over the nonzero distances; a batch of one (or of equal points) has none
    mu = d.sum() / (d > 0).sum().clamp_min(1)
    return d / mu.clamp_min(1e-12)


def _angles(e: Tensor) -> Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


def rkd_loss(emb_student: Tensor, emb_teacher: Tensor, distance: float, angle: float) -> Tensor:
    s, t = emb_student.flatten(1).float(), emb_teacher.detach().flatten(1).float()
    loss = s.new_zeros(())
    if distance:
        with torch.no_grad():
            dt = _distances(t)
        loss = loss + distance * F.smooth_l1_loss(_distances(s), dt)
    if angle:
        with torch.no_grad():
            at = _angles(t)
        loss = loss + angle * F.smooth_l1_loss(_angles(s), at)
    return loss


@register_loss("rkd", RKDOptions, reads=("features.embedding",), tasks=("classify", "embed"))
def rkd(student: Outputs, teacher: Outputs, target: Tensor, *, distance: float = 25.0, angle: float = 50.0) -> Tensor:
    return rkd_loss(student.features["embedding"], teacher.features["embedding"], distance, angle)
