"""Reimers & Gurevych 2020, "Making Monolingual Sentence Embeddings Multilingual using Knowledge
Distillation" (EMNLP, arXiv:2004.09813): the student's sentence embedding regresses the teacher's.

    emb_mse = mean over the batch and the D_t dimensions of (W s - t)^2

with s the student's pooled embedding (B, D_s), t the teacher's (B, D_t), as each model outputs
it, and W a learned projection (no bias) when D_s != D_t, identity otherwise; sentence-transformers'
MSELoss, as its model_distillation example trains a smaller encoder. W is part of the loss, not the
student: it is dropped at export, and the student ships its own D_s-wide embeddings, whose
similarity structure is what the task scores (distill/tasks/embed.py).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..models import Outputs
from . import NoOptions, register_loss


def projection(student: Outputs, teacher: Outputs) -> nn.Module:
    """A learned map from the student's embedding width to the teacher's; identity when they agree."""
    ds, dt = student.logits.shape[-1], teacher.logits.shape[-1]
    if student.logits.dim() != 2 or teacher.logits.dim() != 2:
        raise ValueError("compares pooled sentence embeddings, (batch, width) outputs: use it on data of the embed task")
    return nn.Identity() if ds == dt else nn.Linear(ds, dt, bias=False)


@register_loss("emb_mse", NoOptions, reads=("logits",), tasks=("embed",))
class EmbMSE(nn.Module):
    def __init__(self, opts: NoOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        self.project = projection(student, teacher)
        self.teacher_keys = ("logits",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        return ((self.project(student.logits.float()) - teacher.logits.detach().float()) ** 2).mean()
