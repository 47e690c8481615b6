"""Token-level reverse KL (Gu et al. 2024, "MiniLLM: Knowledge Distillation of Large Language
Models"; TRL's GKD at beta = 1):

    rkl = T^2 * mean_tokens KL(q_T || p_T)

Mode-seeking: the student may drop continuations the teacher finds unlikely and is punished for
mass where the teacher has little, which suits a small student that cannot cover them all.
MiniLLM optimises the sequence-level reverse KL with a policy gradient on the student's own
samples; this is its token-level form on the data's sequences (off-policy), as TRL computes it.
"""

from __future__ import annotations

from torch import Tensor

from . import register_loss
from .next_token import NextTokenLoss, TemperatureOptions, kl


@register_loss("rkl", TemperatureOptions)
class ReverseKL(NextTokenLoss):
    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl(log_q, log_p)
