"""In-batch similarity distillation: the student's distribution over the other sentences of its
batch matches the teacher's (SEED, Fang et al. 2021, arXiv:2101.04731; CompRess, Abbasi Koohpayegani
et al. 2020, arXiv:2008.13000, against a memory bank instead of the batch).

    p_T(j | i) = softmax_{j != i}(cos(t_i, t_j) / tau),   q(j | i) likewise from the student's s
    sim_kl = mean over i of KL(p_T(. | i) || q(. | i))

Each sentence's own similarity (1) is left out of both softmaxes: it says nothing of the
neighbourhood. Relational, like RKD: the two widths may differ and nothing is projected. Unlike
Hinton's KD no tau^2 factor multiplies the KL: SEED and CompRess train on the plain divergence at
a small tau (0.05 to 0.1 here, their range), where tau^2 would shrink the term 400-fold.
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
class SimKLOptions:
    temperature: float = 0.05

    def __post_init__(self) -> None:
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


def log_neighbours(e: Tensor, temperature: float) -> Tensor:
    """(B, B) log-softmax over each row's cosine similarities to the other rows; the diagonal is -inf."""
    e = F.normalize(e.float(), dim=-1)
    sims = (e @ e.T / temperature).masked_fill(torch.eye(len(e), dtype=torch.bool, device=e.device), float("-inf"))
    return torch.log_softmax(sims, dim=-1)


@register_loss("sim_kl", SimKLOptions, reads=("logits",), tasks=("embed",))
def sim_kl(student: Outputs, teacher: Outputs, target: Tensor, *, temperature: float = 0.05) -> Tensor:
    if len(student.logits) < 2:
        return student.logits.sum() * 0.0  # a batch of one has no neighbours
    log_q = log_neighbours(student.logits, temperature)
    with torch.no_grad():
        log_p = log_neighbours(teacher.logits.detach(), temperature)
    off = ~torch.eye(len(log_p), dtype=torch.bool, device=log_p.device)
    return (log_p.exp() * (log_p - log_q))[off].sum() / len(log_p)
