"""Token-level forward KL (Hinton et al. 2015 applied per position; Kim & Rush 2016, "Sequence-Level
Knowledge Distillation", word-level KD; torchtune's KD recipe, DistillKit, TRL's GKD at beta = 0):

    token_kd = T^2 * mean_tokens KL(p_T || q_T)

Mean-seeking: the student spreads its mass to cover every continuation the teacher gives some.
Warning: torchtune's `ForwardKLLoss` and DistiLLM's FKL are -sum p log q, this plus the teacher's
entropy (same gradient, a minimum at H(p_T), not 0); see distill/losses/next_token.py for the
cache, the tail bucket and the other tools' conventions.
"""

from __future__ import annotations

from torch import Tensor

from . import register_loss
from .next_token import NextTokenLoss, TemperatureOptions, kl


@register_loss("token_kd", TemperatureOptions)
class TokenKD(NextTokenLoss):
    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl(log_p, log_q)
