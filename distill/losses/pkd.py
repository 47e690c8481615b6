"""Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression"
(EMNLP, arXiv:1908.09355): the patient-teacher term.

    pkd = sum over pairs (i, j) of mean((h_s^i / ||h_s^i|| - h_t^j / ||h_t^j||)^2)

with h^i the [CLS] vector (position 0) of block i's output, for the student's
intermediate blocks 1..M-1 (the last block is left to KD on the logits, as in
the paper) and the teacher blocks the map `layers` pairs them with: "skip" by
default (PKD-Skip; "last" is PKD-Last; `distill.losses.layers`): the map of
all M blocks, less the last pair. A list names M-1 teacher blocks. The vectors are compared as they are: both models need one
hidden size. Warning: the paper sums squared distances over the layers (and
weighs the term with beta, which lives in the `mix` here); its code takes
F.mse_loss over the stacked (B, layers, D) vectors, a mean over the layers
too. We sum the per-pair means (the code's value times M-1) so that the term
grows with the pairs as the paper's and as tinybert's terms do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Outputs
from . import register_loss
from .layers import LayerOptions, depths, layer_map, need_features, same_length, same_width


@dataclass(frozen=True)
class PKDOptions(LayerOptions):
    layers: str | list[int] = "skip"


def cls_vector(feature: Tensor) -> Tensor:
    """Position 0 of a (B, D, N) hidden state, L2-normalised, (B, D)."""
    return F.normalize(feature[:, :, 0].float(), dim=-1)


@register_loss("pkd", PKDOptions, reads=("features",))
class PKD(nn.Module):
    def __init__(self, opts: PKDOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        m, n = depths(student, teacher)
        if m < 2:
            raise ValueError("pkd distils the student's intermediate blocks 1..M-1, and the student has 1 block")
        self.pairs = layer_map(opts.layers, m, n, count=m - 1)  # the last block is left to KD
        need_features(teacher, [t for _, t in self.pairs], "teacher")
        for s, t in self.pairs:
            hs, ht = student.features[f"block{s}"], teacher.features[f"block{t}"]  # (B, D, N)
            same_length(hs.shape[-1], ht.shape[-1])
            same_width(hs.shape[1], ht.shape[1], "pkd")
        self.teacher_keys = tuple(f"features.block{t}" for _, t in self.pairs)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        terms = [F.mse_loss(cls_vector(student.features[f"block{s}"]), cls_vector(teacher.features[f"block{t}"].detach()))
                 for s, t in self.pairs]
        return torch.stack(terms).sum()
