"""Model families. Every model maps a batch to `Outputs(logits, features, attentions)`.

`features` are named intermediate activations, channels first:
(B, C) for vectors, (B, C, L) for 1-D maps, (B, C, H, W) for images and
(B, D, N) for transformer tokens; the last entry, "embedding", is what the
classifier reads. `attentions` are post-softmax maps (B, heads, N, N), one per
transformer block, empty for other families.

Models over token ids (input a `TokenShape`) follow one contract, whether kdx's
own transformer or a Hugging Face model (`distill.models.hf`):
- features "block0" (the embedding output, TinyBERT's layer 0) .. "blockL"
  (each block's output), (B, D, N), then the pooled "embedding" (B, D);
- attentions "block1".."blockL", post-softmax (B, H, N, N), padded keys at 0;
- parts "q.block{i}", "k.block{i}", "v.block{i}": block i's queries, keys and
  values (B, H, N, D/H), from which pre-softmax scores (TinyBERT) and value
  relations (MiniLM) are computed;
- mask (B, N), True at real tokens (ids other than the pad id).
Attentions and parts cost time and memory: a model computes them only for the
kinds `expose(model, kinds)` asked for (what the run's losses read).

A language model (a `TokenShape` whose task is "lm") is causal: position t reads
positions 0..t only, the logits are (B, N, vocab), one next-token distribution per
position, and "embedding" is the last block's normed states (B, D, N), unpooled.

A family is one file: an options dataclass and a builder registered with
`@register_model(name, Options)`; the builder gets the options, the input shape
of one sample and the number of classes.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Outputs, TokenShape, MODELS, register_model, build_model, count_params, measure_latency, as_outputs, example_input, expose

__all__ = ["Outputs", "TokenShape", "MODELS", "register_model", "build_model", "count_params", "measure_latency", "as_outputs",
           "example_input", "expose"]


def _register_all() -> None:
    """Import every module of this package: each family registers itself, so a new family is one file here."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
