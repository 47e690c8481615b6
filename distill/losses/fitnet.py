"""Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (ICLR, arXiv:1412.6550).

A learned regressor r maps the student's guided layer v to the shape of the
teacher's hint layer u:

    fitnet = mean((u - r(v))^2)

Layers pair by name ("block2") or relative depth (0.5 = the middle block, the
paper's choice). r is a 1x1 convolution when both layers are maps of the same
kind (the student map is average-pooled to the teacher's size when they
differ), otherwise a linear layer on spatially averaged features. Warnings: the
paper trains the hint in a separate first stage with 1/2 * ||.||^2; kdx, like
most code since, adds it to the other terms from the start and averages over
elements, so its `mix` weight is not the paper's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import check
from ..models import Outputs
from . import block_names, pick_block, register_loss


@dataclass(frozen=True)
class FitNetOptions:
    student_layer: float | str = 0.5  # a layer name, or a relative depth in (0, 1]
    teacher_layer: float | str = 0.5

    def __post_init__(self) -> None:
        for key in ("student_layer", "teacher_layer"):
            value = getattr(self, key)
            check(isinstance(value, str) or 0.0 < value <= 1.0, key, f"relative depth must be in (0, 1], got {value}")


def _pool(x: Tensor) -> Tensor:
    return x.flatten(2).mean(-1) if x.dim() > 2 else x


@register_loss("fitnet", FitNetOptions, reads=("features",))
class FitNet(nn.Module):
    def __init__(self, opts: FitNetOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        self.student_layer = pick_block(block_names(student.features), opts.student_layer, "the student")
        self.teacher_layer = pick_block(block_names(teacher.features), opts.teacher_layer, "the teacher")
        self.teacher_keys = (f"features.{self.teacher_layer}",)
        s, t = student.features[self.student_layer], teacher.features[self.teacher_layer]
        self.as_map = s.dim() == t.dim() and s.dim() in (3, 4)
        if self.as_map:
            conv = nn.Conv1d if s.dim() == 3 else nn.Conv2d
            self.regressor = conv(s.shape[1], t.shape[1], kernel_size=1)
            self.size = tuple(t.shape[2:])
        else:
            self.regressor = nn.Linear(s.shape[1], t.shape[1])

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        s, t = student.features[self.student_layer], teacher.features[self.teacher_layer].detach()
        if self.as_map:
            v = self.regressor(s)
            if tuple(v.shape[2:]) != self.size:
                pool = F.adaptive_avg_pool1d if v.dim() == 3 else F.adaptive_avg_pool2d
                v = pool(v, self.size)
            return F.mse_loss(v, t)
        return F.mse_loss(self.regressor(_pool(s)), _pool(t))
