"""Sanh et al. 2019, "DistilBERT, a distilled version of BERT" (arXiv:1910.01108): the cosine loss.

    cos = mean over real tokens t of (1 - cos(h_s[t], h_t[t]))

with h the last block's hidden states (features "blockL") of each model. The
paper says only "a cosine embedding loss" aligning the directions of the hidden
states; we follow Hugging Face's distillation/distiller.py: CosineEmbeddingLoss
(target 1, reduction "mean") over the tokens the attention mask keeps, so padded
tokens take no part and each real token weighs the same whatever its sample's
length. The states are compared as they are, without a projection: both models
need one hidden size (DistilBERT's student keeps BERT's width).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Outputs
from . import NoOptions, register_loss
from .layers import depths, need_features, real_tokens, same_length, same_width, tokens


@register_loss("cos", NoOptions, reads=("features",))
class Cos(nn.Module):
    def __init__(self, opts: NoOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        m, n = depths(student, teacher)
        need_features(teacher, [n], "teacher")
        self.student_layer, self.teacher_layer = f"block{m}", f"block{n}"
        hs, ht = student.features[self.student_layer], teacher.features[self.teacher_layer]  # (B, D, N)
        same_length(hs.shape[-1], ht.shape[-1])
        same_width(hs.shape[1], ht.shape[1], "cos")
        self.teacher_keys = (f"features.{self.teacher_layer}",)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        hs = tokens(student.features[self.student_layer])
        ht = tokens(teacher.features[self.teacher_layer].detach())
        real = real_tokens(student, teacher)
        return (1.0 - F.cosine_similarity(hs[real], ht[real], dim=-1)).mean()
