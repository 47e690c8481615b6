"""Generalized Jensen-Shannon divergence (Agarwal et al. 2024, "On-Policy Distillation of Language
Models: Learning from Self-Generated Mistakes", GKD, eq. 1; TRL's `generalized_jsd_loss`):

    m = beta * p_T + (1 - beta) * q_T
    gjsd = T^2 * mean_tokens [ beta * KL(p_T || m) + (1 - beta) * KL(q_T || m) ]

and, as TRL defines the ends, beta = 0 is the forward KL(p_T || q_T) and beta = 1 the reverse
KL(q_T || p_T). beta = 0.5 is the usual (symmetric, bounded by log 2) JSD.

Warning: the ends are a convention, not a limit. As beta -> 0 the formula goes to 0 like
beta * KL(p || q), so gjsd at beta = 0.01 is about a hundredth of gjsd at beta = 0: a mix weight
tuned at one beta does not carry over to another, and a search over beta should search the mix
weight with it. TRL's GKD also mixes in sequences sampled from the student (lambda); kdx's
gjsd is computed on the data's sequences (off-policy).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..errors import check
from . import register_loss
from .next_token import NextTokenLoss, kl, log_mix


@dataclass(frozen=True)
class GJSDOptions:
    beta: float = 0.5  # TRL's and GKD's default
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check(0.0 <= self.beta <= 1.0, "beta", f"must be in [0, 1], got {self.beta}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")


@register_loss("gjsd", GJSDOptions)
class GeneralizedJSD(NextTokenLoss):
    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        beta = self.options.beta
        if beta == 0.0:
            return kl(log_p, log_q)
        if beta == 1.0:
            return kl(log_q, log_p)
        log_m = log_mix(log_p, log_q, beta)
        return beta * kl(log_p, log_m) + (1.0 - beta) * kl(log_q, log_m)
