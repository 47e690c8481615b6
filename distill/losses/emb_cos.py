"""The cosine form of embedding distillation: the student's sentence embedding points where the
teacher's does (sentence-transformers' CosineSimilarityLoss against the teacher's embedding).

    emb_cos = mean over the batch of 1 - cos(W s, t)

with s, t the pooled embeddings and W the learned projection of `emb_mse` when the widths differ
(dropped at export). Unlike `emb_mse` it ignores the embeddings' norms, which a cosine-similarity
search never reads.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Outputs
from . import NoOptions, register_loss
from .emb_mse import projection


@register_loss("emb_cos", NoOptions, reads=("logits",), tasks=("embed",))
class EmbCos(nn.Module):
    def __init__(self, opts: NoOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        self.project = projection(student, teacher)
        self.teacher_keys = ("logits",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        s, t = self.project(student.logits.float()), teacher.logits.detach().float()
        return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
