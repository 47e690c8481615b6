"""Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression
of Pre-Trained Transformers" (NeurIPS, arXiv:2002.10957), and MiniLMv2 (Wang et al. 2021,
"Multi-Head Self-Attention Relation Distillation", Findings of ACL, arXiv:2012.15828).

v1 (`relation_heads: 0`), on the student's last block and the teacher's `teacher_layer`:

    minilm = KL(A_t || A_s) + KL(VR_t || VR_s),  A = softmax(q k^T / sqrt(d_h)), VR = softmax(v v^T / sqrt(d_h))

per attention head. v2 (`relation_heads: R`): each model's q, k and v, heads
concatenated to (B, N, D), are split anew into R relation heads of D / R, and

    minilm = sum over x in (q, k, v) of KL(softmax(x_t x_t^T / sqrt(D_t/R)) || softmax(x_s x_s^T / sqrt(D_s/R)))

so the two models' head counts and widths may differ (v1 needs equal head
counts; the widths may differ in both). Every KL is that of one query row over
the keys, averaged as the papers write it: over a sample's real query rows
(1/|x|), then over heads and the batch. Padded keys are masked out of every
softmax (-inf), and padded query rows take no part. The terms are summed, as
both papers sum them (v2's weights alpha are all 1); averaging v2's three
terms instead is a factor 3 that the `mix` weight absorbs, and the sum keeps
v1 and v2 alike.
v2 distils an upper-middle teacher block for large teachers (e.g. block 21 of
24): `teacher_layer` picks it (default: the teacher's last block, v1's choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import check
from ..models import Outputs
from . import register_loss
from .layers import depths, need_parts, real_tokens, same_length


@dataclass(frozen=True)
class MiniLMOptions:
    relation_heads: int = 0  # 0: MiniLM v1 (attention and value relations per attention head); R > 0: v2, R relation heads
    teacher_layer: int | None = None  # the teacher block distilled (1..N); None: its last block

    def __post_init__(self) -> None:
        check(self.relation_heads >= 0, "relation_heads", f"must be >= 0 (0: MiniLM v1), got {self.relation_heads}")
        check(self.teacher_layer is None or self.teacher_layer >= 1, "teacher_layer", f"must be a block, >= 1, got {self.teacher_layer}")


def relation_heads(x: Tensor, r: int) -> Tensor:
    """(B, H, N, D/H) heads concatenated to (B, N, D) and split into r heads, (B, r, N, D/r)."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, r, h * dh // r).transpose(1, 2)


def log_relation(a: Tensor, b: Tensor, keep: Tensor) -> Tensor:
    """log softmax(a b^T / sqrt(d)) over the kept keys, (B, H, N, N); 0 at the others, so
    0 * log 0 terms never make a NaN (their probability is 0 on both sides)."""
    scores = (a.float() @ b.float().transpose(-2, -1) / math.sqrt(a.shape[-1])).masked_fill(~keep, float("-inf"))
    return scores.log_softmax(-1).masked_fill(~keep, 0.0)


def relation_kl(log_t: Tensor, log_s: Tensor, real: Tensor) -> Tensor:
    """KL(t || s) per query row, averaged over each sample's real rows, then heads and batch."""
    rows = (log_t.exp() * (log_t - log_s)).sum(-1)  # (B, H, N)
    w = real[:, None, :].to(rows.dtype)
    return ((rows * w).sum(-1) / w.sum(-1).clamp_min(1.0)).mean()


@register_loss("minilm", MiniLMOptions, reads=("parts",))
class MiniLM(nn.Module):
    def __init__(self, opts: MiniLMOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        m, n = depths(student, teacher)
        self.relation_heads = opts.relation_heads
        self.student_layer, self.teacher_layer = m, n if opts.teacher_layer is None else opts.teacher_layer
        if self.teacher_layer > n:
            raise ValueError(f"teacher_layer: the teacher has {n} blocks, teacher_layer names block {self.teacher_layer}")
        need_parts(student, [m], "student", "minilm")
        need_parts(teacher, [self.teacher_layer], "teacher", "minilm")
        qs, qt = student.parts[f"q.block{m}"], teacher.parts[f"q.block{self.teacher_layer}"]  # (B, H, N, D/H)
        same_length(qs.shape[2], qt.shape[2])
        if self.relation_heads == 0 and qs.shape[1] != qt.shape[1]:
            raise ValueError(f"attention heads differ (student {qs.shape[1]}, teacher {qt.shape[1]}): MiniLM v1 compares attention "
                             "maps head by head; set relation_heads (MiniLM v2) to compare relations of any head count")
        for who, q in (("student", qs), ("teacher", qt)):
            width = q.shape[1] * q.shape[-1]
            if self.relation_heads and width % self.relation_heads:
                raise ValueError(f"relation_heads: {self.relation_heads} relation heads do not divide the {who}'s hidden size {width}")
        self.teacher_keys = tuple(f"parts.{p}.block{self.teacher_layer}" for p in "qkv")

    def _relations(self, out: Outputs, block: int, keep: Tensor, teacher: bool) -> list[Tensor]:
        q, k, v = (out.parts[f"{p}.block{block}"] for p in "qkv")
        if teacher:
            q, k, v = q.detach(), k.detach(), v.detach()
        if self.relation_heads == 0:
            return [log_relation(q, k, keep), log_relation(v, v, keep)]
        q, k, v = (relation_heads(x, self.relation_heads) for x in (q, k, v))
        return [log_relation(q, q, keep), log_relation(k, k, keep), log_relation(v, v, keep)]

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        real = real_tokens(student, teacher)
        keep = real[:, None, None, :]
        s = self._relations(student, self.student_layer, keep, teacher=False)
        t = self._relations(teacher, self.teacher_layer, keep, teacher=True)
        return torch.stack([relation_kl(lt, ls, real) for lt, ls in zip(t, s)]).sum()
