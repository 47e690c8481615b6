"""Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language Understanding"
(Findings of EMNLP, arXiv:1909.10351): the Transformer-layer losses, two terms
so that each gets its own `mix` weight (the paper weighs them equally).

tinybert_attn: MSE between the student's and the teacher's raw attention scores
(pre-softmax, q k^T / sqrt(d_head)) of each mapped block pair, summed over the
pairs; F.mse_loss's mean over all B*H*N*N entries, as task_distill.py's
MSELoss. TinyBERT's code adds -10000 to the scores of padded keys and then
zeroes every score <= -1e2; we zero the padded key columns in both models
directly (the same wherever a real score stays above -100), so padded keys add
0 to the sum and still count in the mean, and padded query rows count as in the
reference. Scores are compared head by head: the head counts must match.

tinybert_hidden: MSE(W h_s, h_t) over the mapped hidden states, the embeddings
included (m = 0..M -> k*m), summed over the pairs, with ONE learned linear map W
(d_s -> d_t, TinyBERT's `fit_dense`, a parameter of this loss trained with the
student) shared by every layer. Warning: TinyBERT's code averages over every
position, padding too; by default we average over real tokens only (padded
positions carry no input, and their states depend on the padding length and on
how each implementation treats them), which is the reference wherever a batch
has no padding. `include_padding: true` gives the reference's mean.

Layer maps: `layers` (`distill.losses.layers`), "uniform" by default (TinyBERT's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import Outputs
from . import register_loss
from .layers import LayerOptions, depths, layer_map, need_features, need_parts, real_tokens, same_length, tokens


def attention_scores(parts: dict[str, Tensor], block: int) -> Tensor:
    """Block `block`'s pre-softmax scores q k^T / sqrt(d_head), (B, H, N, N), before any mask."""
    q, k = parts[f"q.block{block}"].float(), parts[f"k.block{block}"].float()
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


@dataclass(frozen=True)
class TinyBERTAttnOptions(LayerOptions):
    pass


@register_loss("tinybert_attn", TinyBERTAttnOptions, reads=("parts",))
class TinyBERTAttn(nn.Module):
    def __init__(self, opts: TinyBERTAttnOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        self.pairs = layer_map(opts.layers, *depths(student, teacher), "blocks")
        need_parts(student, [s for s, _ in self.pairs], "student", "tinybert_attn", "qk")
        need_parts(teacher, [t for _, t in self.pairs], "teacher", "tinybert_attn", "qk")
        for s, t in self.pairs:
            qs, qt = student.parts[f"q.block{s}"], teacher.parts[f"q.block{t}"]  # (B, H, N, D/H)
            same_length(qs.shape[2], qt.shape[2])
            hs, ht = qs.shape[1], qt.shape[1]
            if hs != ht:
                raise ValueError(f"attention heads differ (student block{s} {hs}, teacher block{t} {ht}): tinybert_attn compares "
                                 "scores head by head; minilm with relation_heads (MiniLM v2) takes any head counts")
        self.teacher_keys = tuple(f"parts.{p}.block{t}" for _, t in self.pairs for p in "qk")

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        padded_key = ~real_tokens(student, teacher)[:, None, None, :]
        terms = []
        for s, t in self.pairs:
            a_s = attention_scores(student.parts, s).masked_fill(padded_key, 0.0)
            a_t = attention_scores(teacher.parts, t).detach().masked_fill(padded_key, 0.0)
            terms.append(F.mse_loss(a_s, a_t))
        return torch.stack(terms).sum()


@dataclass(frozen=True)
class TinyBERTHiddenOptions(LayerOptions):
    include_padding: bool = False  # true: TinyBERT's code, the mean over every position, padded ones too


@register_loss("tinybert_hidden", TinyBERTHiddenOptions, reads=("features",))
class TinyBERTHidden(nn.Module):
    def __init__(self, opts: TinyBERTHiddenOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        self.include_padding = opts.include_padding
        self.pairs = layer_map(opts.layers, *depths(student, teacher), "hidden")
        need_features(teacher, [t for _, t in self.pairs], "teacher")
        hs, ht = student.features["block0"], teacher.features[f"block{self.pairs[0][1]}"]  # (B, D, N)
        same_length(hs.shape[-1], ht.shape[-1])
        self.proj = nn.Linear(hs.shape[1], ht.shape[1])  # W, shared by all layers
        self.teacher_keys = tuple(f"features.block{t}" for _, t in self.pairs)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        real = None if self.include_padding else real_tokens(student, teacher)
        terms = []
        for s, t in self.pairs:
            diff = self.proj(tokens(student.features[f"block{s}"])) - tokens(teacher.features[f"block{t}"].detach())  # (B, N, d_t)
            terms.append((diff if real is None else diff[real]).pow(2).mean())
        return torch.stack(terms).sum()
