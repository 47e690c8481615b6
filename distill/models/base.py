"""What every model family shares: `Outputs`, `TokenShape`, the registry and building (`distill.models`)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..registry import Registry
from ..tasks import task_named

__all__ = ["Outputs", "TokenShape", "MODELS", "register_model", "build_model", "count_params", "measure_latency", "as_outputs",
           "example_input", "expose"]


class Outputs(NamedTuple):
    logits: Tensor
    features: dict[str, Tensor]
    attentions: dict[str, Tensor]
    parts: dict[str, Tensor] = {}  # token models: per-block q, k, v (see the module docstring); never mutated
    mask: Tensor | None = None  # token models: (B, N), True at real tokens


class TokenShape(tuple):
    """The shape of one token sample, (max_len,), that also says the inputs are int64 ids:
    `vocab` ids in all, `pad_id` filling the tail of short samples. A tuple, so code that
    only needs the shape reads it as one. `task` "lm": the model predicts the next id at every
    position (a causal decoder, logits (B, L, vocab)); "classify": one label per sample."""

    vocab: int
    pad_id: int
    task: str

    def __new__(cls, length: int, vocab: int, pad_id: int = 0, task: str = "classify") -> "TokenShape":
        shape = super().__new__(cls, (int(length),))
        shape.vocab, shape.pad_id, shape.task = int(vocab), int(pad_id), task
        return shape

    @property
    def lm(self) -> bool:
        """A causal decoder's ids: the model predicts at every position (its task says so, distill.tasks)."""
        return task_named(self.task).causal

    def __reduce__(self):  # pickles (Ray ships datasets) with its vocabulary
        return (TokenShape, (self[0], self.vocab, self.pad_id, self.task))

    def __repr__(self) -> str:
        return f"TokenShape({self[0]}, vocab={self.vocab}, pad_id={self.pad_id}" + (f", task={self.task!r})" if self.lm else ")")


def example_input(input_shape: tuple[int, ...], batch: int = 1) -> Tensor:
    """A batch the model takes: random features, or random non-pad token ids for a `TokenShape`."""
    if isinstance(input_shape, TokenShape):
        ids = torch.randint(0, max(1, input_shape.vocab - 1), (batch, input_shape[0]))
        return ids + (ids >= input_shape.pad_id).long()  # never the pad id
    return torch.randn(batch, *input_shape)


def expose(model: nn.Module, kinds: set[str] | frozenset[str]) -> frozenset[str]:
    """Ask a transformer to compute the output kinds `kinds` ("attentions", "parts") on every
    forward from now on; other models (and factories) ignore it. Returns what it computed
    before, so a caller that borrows a model gives it back as it was: `expose(m, expose(m, k))`."""
    before = frozenset()
    for module in model.modules():
        if hasattr(module, "kdx_expose"):
            before = module.kdx_expose
            module.kdx_expose = frozenset(kinds) & {"attentions", "parts"}
    return before


MODELS = Registry("model family")


def register_model(name: str, options: type, inputs: tuple[str, ...] = ("features",)) -> Callable[[Callable], Callable]:
    """`inputs`: what the family takes, "features" (float samples), "tokens" (ids, a `TokenShape`) and/or
    the `model_input` of a task beyond classification (distill.tasks; "lm": the family builds a causal
    decoder, logits (B, N, vocab))."""
    return MODELS.register(name, options, inputs)


def build_model(family: str, options: object, input_shape: tuple[int, ...], num_classes: int, path: str = "model") -> nn.Module:
    """Build a registered family; a shape the data cannot take is a ConfigError on `path`."""
    try:
        entry = MODELS.get(family, f"{path}.family")
        tokens = isinstance(input_shape, TokenShape)
        need = task_named(input_shape.task).model_input if tokens else "features"
        if tokens and need != "tokens" and need not in entry.reads:
            takes = [name for name in MODELS.names() if need in MODELS.get(name, "").reads]
            task = task_named(input_shape.task)
            raise ValueError(f"{family} is not {task.model_words}, and this data is {task.words}: use {', '.join(takes)}")
        if tokens and "tokens" not in entry.reads:
            takes = [name for name in MODELS.names() if "tokens" in MODELS.get(name, "").reads]
            raise ValueError(f"{family} takes features, and this data is token ids: use a family with an embedding ({', '.join(takes)})")
        if not tokens and "features" not in entry.reads:
            raise ValueError(f"{family} takes token ids, and this data gives features (use data.name: text, khop, or token arrays)")
        return entry.build(options, input_shape if tokens else tuple(input_shape), num_classes)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def as_outputs(out: object) -> Outputs:
    """Models from a user's factory may return bare logits."""
    if isinstance(out, Outputs):
        return out
    if isinstance(out, Tensor):
        return Outputs(out, {}, {})
    if isinstance(out, tuple) and len(out) in (3, 4, 5):
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
    x = example_input(input_shape)
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


