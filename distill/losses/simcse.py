"""Gao, Yao & Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings" (EMNLP,
arXiv:2104.08821), unsupervised: what a sentence encoder learns from text alone, the embedding
task's twin (distill/tasks/embed.py).

Every sentence of a batch is encoded twice; dropout makes the two views differ. Each view's
positive is its sentence's other view, its negatives the other sentences' second views:

    simcse = mean over i of -log( exp(cos(z1_i, z2_i)/tau) / sum_j exp(cos(z1_i, z2_j)/tau) )

with tau 0.05, the paper's. Like the paper's code, the batch goes through the model once with
every sentence twice (`views = 2`: `distill.train.run` stacks [x; x], so the dropout masks are
drawn independently); the other terms of a mix read the first copy. With dropout 0 the views are
equal and the loss only spreads the sentences apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import check
from ..models import Outputs
from . import register_loss


@dataclass(frozen=True)
class SimCSEOptions:
    temperature: float = 0.05

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


def simcse_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    sims = F.normalize(z1.float(), dim=-1) @ F.normalize(z2.float(), dim=-1).T / temperature
    return F.cross_entropy(sims, torch.arange(len(z1), device=z1.device))


@register_loss("simcse", SimCSEOptions, reads=(), tasks=("embed",))
class SimCSE(nn.Module):
    views = 2  # the student's batch arrives twice over: [x; x]

    def __init__(self, opts: SimCSEOptions, student: Outputs, teacher: Outputs | None):
        super().__init__()
        self.temperature = opts.temperature
        self.teacher_keys = ()

    def forward(self, student: Outputs, teacher: None, target: Tensor) -> Tensor:
        z = student.logits
        half = len(z) // 2
        return simcse_loss(z[:half], z[half:], self.temperature)
