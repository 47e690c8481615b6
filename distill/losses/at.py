"""Attention transfer.

CNNs: Zagoruyko & Komodakis 2017, "Paying More Attention to Attention"
(ICLR, arXiv:1612.03928). A block's spatial attention is
Q = normalize(mean_c |A_c|^p) over positions, and

    at = sum over block pairs of mean((Q_s - Q_t)^2)

Warning: the paper writes beta/2 * ||Q_s/||Q_s|| - Q_t/||Q_t|| ||_p with
beta = 1000; we follow the authors' code (and mdistiller and torchdistill):
mean of squared differences, p = 2, with the paper's beta left to the `mix`
weight. Maps of different sizes are average-pooled to the smaller one.

Transformers: attention-map distillation as in MiniLM (Wang et al. 2020,
arXiv:2002.10957): KL(A_t || A_s) per query row of the post-softmax maps,
averaged over rows, heads and batch; when head counts differ, the maps are
averaged over heads first.

Block pairs: each student block with the teacher block at the same relative
depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import check
from ..models import Outputs
from . import block_names, pair_blocks, register_loss


@dataclass(frozen=True)
class ATOptions:
    p: float = 2.0

    def __post_init__(self) -> None:
        check(self.p > 0, "p", f"must be > 0, got {self.p}")


def attention_map(a: Tensor, p: float) -> Tensor:
    return F.normalize(a.abs().pow(p).mean(1).flatten(1), dim=1)


def _match(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    if s.shape[2:] == t.shape[2:]:
        return s, t
    size = tuple(min(a, b) for a, b in zip(s.shape[2:], t.shape[2:]))
    pool = F.adaptive_avg_pool1d if s.dim() == 3 else F.adaptive_avg_pool2d
    return pool(s, size), pool(t, size)


def attention_kl(a_student: Tensor, a_teacher: Tensor) -> Tensor:
    if a_student.shape[1] != a_teacher.shape[1]:
        a_student, a_teacher = a_student.mean(1, keepdim=True), a_teacher.mean(1, keepdim=True)
    log_s = a_student.float().clamp_min(1e-8).log()
    a_teacher = a_teacher.detach()
    log_t = a_teacher.float().clamp_min(1e-8).log()
    return (a_teacher * (log_t - log_s)).sum(-1).mean()


@register_loss("at", ATOptions, reads=("features", "attentions"))  # feature maps of CNNs, attention maps of transformers
class AT(nn.Module):
    def __init__(self, opts: ATOptions, student: Outputs, teacher: Outputs):
        super().__init__()
        self.p = opts.p
        if student.attentions and teacher.attentions:
            self.kind = "attentions"
            s_names, t_names = list(student.attentions), list(teacher.attentions)
            for s, t in pair_blocks(s_names, t_names):
                ns, nt = student.attentions[s].shape[-1], teacher.attentions[t].shape[-1]
                if ns != nt:
                    raise ValueError(f"student and teacher attend over different token counts ({ns} vs {nt}); use the same patch size")
        else:
            self.kind = "features"
            s_names, t_names = block_names(student.features), block_names(teacher.features)
            ranks = {student.features[n].dim() for n in s_names} | {teacher.features[n].dim() for n in t_names}
            if student.attentions or teacher.attentions or len(ranks) != 1 or ranks.pop() not in (3, 4):
                raise ValueError("needs spatial feature maps of the same kind on both models (cnn with cnn) or attention maps on both (transformer with transformer)")
        self.pairs = pair_blocks(s_names, t_names)
        self.teacher_keys = tuple(f"{self.kind}.{t}" for _, t in self.pairs)

    def forward(self, student: Outputs, teacher: Outputs, target: Tensor) -> Tensor:
        if self.kind == "attentions":
            terms = [attention_kl(student.attentions[s], teacher.attentions[t]) for s, t in self.pairs]
        else:
            terms = []
            for s, t in self.pairs:
                fs, ft = _match(student.features[s], teacher.features[t].detach())
                terms.append((attention_map(fs, self.p) - attention_map(ft, self.p)).pow(2).mean())
        return torch.stack(terms).sum()
