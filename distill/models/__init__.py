"""Model families. Every model maps a batch to `Outputs(logits, features, attentions)`.

`features` are named intermediate activations, channels first:
(B, C) for vectors, (B, C, L) for 1-D maps, (B, C, H, W) for images and
(B, D, N) for transformer tokens; the last entry, "embedding", is what the
classifier reads. `attentions` are post-softmax maps (B, heads, N, N), one per
transformer block, empty for other families.

A family is one file: an options dataclass and a builder registered with
`@register_model(name, Options)`; the builder gets the options, the input shape
of one sample and the number of classes.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["Outputs", "MODELS", "register_model", "build_model", "count_params", "measure_latency", "as_outputs"]


class Outputs(NamedTuple):
    logits: Tensor
    features: dict[str, Tensor]
    attentions: dict[str, Tensor]


MODELS = Registry("model family")


def register_model(name: str, options: type) -> Callable[[Callable], Callable]:
    return MODELS.register(name, options)


def build_model(family: str, options: object, input_shape: tuple[int, ...], num_classes: int, path: str = "model") -> nn.Module:
    """Build a registered family; a shape the data cannot take is a ConfigError on `path`."""
    try:
        return MODELS.get(family, f"{path}.family").build(options, tuple(input_shape), num_classes)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def as_outputs(out: object) -> Outputs:
    """Models from a user's factory may return bare logits."""
    if isinstance(out, Outputs):
        return out
    if isinstance(out, Tensor):
        return Outputs(out, {}, {})
    if isinstance(out, tuple) and len(out) == 3:
        return Outputs(*out)
    raise TypeError(f"a model must return logits or Outputs, got {type(out).__name__}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time in milliseconds of one batch-1 forward on the CPU, one thread."""
    was_training = model.training
    device = next(model.parameters()).device
    model = model.to("cpu").eval()
    x = torch.randn(1, *input_shape)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # comparable across runs whatever the trial's thread budget
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
        model.to(device).train(was_training)
    return 1000.0 * statistics.median(times)


from . import cnn, mlp, resnet, transformer  # noqa: E402,F401  (registers the families)
