"""On-policy batches for next-token distillation (GKD, Agarwal et al. 2024, "On-policy
distillation of language models: learning from self-generated mistakes"; TRL's GKDTrainer).

A student trained only on the data's sequences is never shown its own mistakes: at generation
time it conditions on what it sampled, not on the data. With `train.on_policy.fraction` lambda,
each training batch is, with probability lambda, replaced by the student's own continuations:
the first `prompt` ids of each sequence are kept, `max_new_tokens` ids are sampled from the
student (at its temperature 1, no top-k), and the teacher scores those sequences online. The
next-token losses then read only the sampled positions (every other label is IGNORE).

Cross-entropy takes no part in an on-policy batch: a sampled id is no label (TRL's GKD loss is
the divergence alone on such batches too). Its `loss/ce` per epoch is still the mean over every
batch, on-policy ones included, where it scores the student's own samples: read it with that in
mind. The batches are drawn from a generator of their own, so fraction 0 trains exactly as if
the option were not there.

Warning: TRL calls lambda `lmbda` and samples at the generation config's temperature; kdx
samples from the untempered student, since the losses' own temperature shapes the divergence,
not which sequences are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .data import IGNORE
from .errors import ConfigError, check
from .models import as_outputs

__all__ = ["OnPolicy", "OnPolicyBatches", "on_policy_batches", "sample_continuations"]


@dataclass(frozen=True)
class OnPolicy:
    fraction: float = 0.0  # GKD's lambda (TRL's lmbda): the share of batches the student writes itself
    prompt: int = 8  # ids of each data sequence kept as the prompt
    max_new_tokens: int = 16  # ids the student samples after it

    def __post_init__(self) -> None:
        check(0.0 <= self.fraction <= 1.0, "fraction", f"must be in [0, 1], got {self.fraction}")
        check(self.prompt >= 1, "prompt", f"must be >= 1: the student continues a prompt, got {self.prompt}")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")

    @property
    def active(self) -> bool:
        return self.fraction > 0


@torch.no_grad()
def sample_continuations(model: nn.Module, x: Tensor, prompt: int, new: int, pad_id: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(ids, labels), each (B, L) like `x`: x's first `prompt` ids, then `new` ids sampled from `model`
    one at a time, padding after; labels are the next ids at the sampled positions, IGNORE elsewhere."""
    was = model.training
    model.eval()
    ids = torch.full_like(x, pad_id)
    ids[:, :prompt] = x[:, :prompt]
    for t in range(prompt, prompt + new):
        logits = as_outputs(model(ids)).logits[:, t - 1].float()  # causal: the padding after t cannot be seen
        ids[:, t] = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
    model.train(was)
    labels = torch.full_like(x, IGNORE)
    labels[:, prompt - 1 : prompt + new - 1] = ids[:, prompt : prompt + new]
    return ids, labels


class OnPolicyBatches(NamedTuple):
    """What a run needs to make its on-policy batches."""

    options: OnPolicy
    pad_id: int
    draws: torch.Generator  # which batches are on-policy: apart from the data's order, so fraction 0 changes nothing
    samples: torch.Generator  # what the student samples, on its device
    no_ce: Tensor  # the mix's mask on an on-policy batch: cross-entropy off


def on_policy_batches(p: OnPolicy, data: Any, device: torch.device, terms: list[str], seed: int) -> OnPolicyBatches | None:
    """A run's on-policy batches, or None when off (`terms`: the run's weighted loss names, in its order;
    `data`: its Dataset). A prompt and continuation longer than the data's sequences is a one-line error."""
    if not p.active:
        return None
    length = int(data.x_train.shape[1])
    if p.prompt + p.max_new_tokens > length:
        raise ConfigError(f"train.on_policy: prompt {p.prompt} + max_new_tokens {p.max_new_tokens} is more than the data's "
                          f"{length} positions per sequence")
    no_ce = torch.tensor([0.0 if name == "ce" else 1.0 for name in terms], device=device)
    return OnPolicyBatches(p, data.tokens.pad_id, torch.Generator().manual_seed(seed),
                           torch.Generator(device=device).manual_seed(seed + 1), no_ce)
