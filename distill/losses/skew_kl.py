"""Skew KL (Ko et al. 2024, "DistiLLM: Towards Streamlined Distillation for Large Language
Models", eq. 3):

    skew_kl = T^2 * mean_tokens KL(p_T || alpha * p_T + (1 - alpha) * q_T)

alpha = 0 is the forward KL; alpha > 0 keeps the student's side of the divergence away from 0
where the teacher has mass, so the gradient stays bounded (by -log alpha per token) where the
forward KL's explodes on tokens the student gives almost nothing. DistiLLM's default alpha is 0.1.
Warning: DistiLLM's code computes it as a cross-entropy to the mixture (plus the teacher's
entropy, the same gradient); ours is the divergence, 0 when the student equals the teacher.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..errors import check
from . import register_loss
from .next_token import NextTokenLoss, kl, log_mix


@dataclass(frozen=True)
class SkewKLOptions:
    alpha: float = 0.1  # DistiLLM's default
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check(0.0 <= self.alpha < 1.0, "alpha", f"must be in [0, 1), got {self.alpha}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@register_loss("skew_kl", SkewKLOptions)
class SkewKL(NextTokenLoss):
    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl(log_p, log_mix(log_p, log_q, self.options.alpha))
