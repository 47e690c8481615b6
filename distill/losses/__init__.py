"""Distillation losses, one file per method, in a registry.

A loss is either a function `fn(student, teacher, target, **options) -> Tensor`
or an `nn.Module` class built as `cls(options, student_sample, teacher_sample)`
from one batch of each model's `Outputs` (so learned parts such as a FitNet
regressor get the right shapes). Either way it is registered with what it
reads of the teacher (`reads`): that is all the search and the teacher cache
need to know, so a new loss is one file. A class also names the exact layers
it picked in `self.teacher_keys`. Each loss's weight lives in the run config's
`mix`, never in the loss.

Teacher keys are "logits", "features.<name>", "attentions.<name>" or
"parts.<name>" (a token model's q, k, v; `distill.models`); `reads` may also
name a whole kind ("features", "attentions", "parts") when the layer is picked
at build time. The padding mask of token inputs is the student's
(`Outputs.mask`): both models read the same ids.

A loss may also `prepare` the teacher's outputs into what it reads per step
(KD: the teacher's probabilities at its temperature). With cached outputs the
teacher never changes within a run, so `train.run` prepares the whole training
set once (`teacher_side`) and hands each step its rows: the step then computes
only the student's side. A prepared side is a NamedTuple of tensors with one
row per sample, and preparing must be row-wise (a sample's rows depend on its
own outputs only), so that the rows of the prepared set are the prepared rows.
A loss called with plain `Outputs` (an online teacher, a test) prepares them
itself; one without `prepare` gets the outputs it reads (`teacher_keys`).

A function loss whose term is a cross-entropy against targets fixed within a run
(CE: the labels; KD: the teacher's p_T) may also say so (`soft`, a `SoftTerm`):
when every term of a mix can, `train.run` computes them all in one soft-target
cross-entropy per step instead of one graph per term (cached KD beside CE went
from 1.3-1.4x to 1.1-1.16x a CE epoch for a 32-wide MLP; `distill.train.fuse_terms`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

from torch import Tensor, nn

from ..errors import ConfigError
from ..models import Outputs
from ..registry import Registry

__all__ = ["LOSSES", "register_loss", "build_loss", "teacher_reads", "teacher_side", "TeacherSide", "SoftTerm", "soft_term",
           "NoOptions", "block_names", "pair_blocks", "is_next_token", "next_token_losses", "loss_tasks"]

LOSSES = Registry("loss")


@dataclass(frozen=True)
class NoOptions:
    pass


# What a loss reads of the teacher per step: `Outputs`, what its `prepare` made of
# them (a NamedTuple of tensors, one row per sample), or None (it reads nothing).
TeacherSide = Outputs | tuple[Tensor, ...] | None


class SoftTerm(NamedTuple):
    """A loss term as a cross-entropy against soft targets, one row per sample:

        term = mean_batch( -sum_c weights[:, c] * log_softmax(z / temperature)[:, c] + const )

    with z the student's logits. `weights` need not sum to one (KD's carry its T^2);
    `const` makes the value the loss's own (KD: T^2 * sum_c p log p, so the term is the KL)."""

    temperature: float
    weights: Tensor  # (N, C)
    const: Tensor  # (N,)


class FunctionLoss(nn.Module):
    """Wraps a loss function, its options, and its `prepare` and `soft`, if any; holds no parameters."""

    def __init__(self, fn: Callable[..., Tensor], options: object, teacher_keys: tuple[str, ...],
                 prepare: Callable[..., TeacherSide] | None = None, soft: Callable[..., SoftTerm | None] | None = None):
        super().__init__()
        self.fn, self.kwargs, self.teacher_keys, self._prepare, self._soft = fn, dataclasses.asdict(options), teacher_keys, prepare, soft

    def prepare(self, teacher: Outputs) -> TeacherSide:
        return _read_part(teacher, self.teacher_keys) if self._prepare is None else self._prepare(teacher, **self.kwargs)

    def soft_term(self, teacher: TeacherSide, target: Tensor, num_classes: int) -> SoftTerm | None:
        return None if self._soft is None else self._soft(teacher, target, num_classes, **self.kwargs)

    def forward(self, student: Outputs, teacher: TeacherSide, target: Tensor) -> Tensor:
        if self._prepare is not None and isinstance(teacher, Outputs):  # plain outputs: prepare them here
            teacher = self._prepare(teacher, **self.kwargs)
        return self.fn(student, teacher, target, **self.kwargs)


def register_loss(name: str, options: type = NoOptions, reads: tuple[str, ...] = ("logits",),
                  prepare: Callable[..., TeacherSide] | None = None, soft: Callable[..., SoftTerm | None] | None = None,
                  tasks: tuple[str, ...] | None = None) -> Callable:
    """Register a loss function or an nn.Module class that reads `reads` of the teacher. A function
    loss may name `prepare(teacher: Outputs, **options)`, which makes what it reads per step
    (row-wise, see the module docstring); a class defines `prepare(self, teacher)` instead. It may
    also name `soft(side, target, num_classes, **options) -> SoftTerm | None`: its term as a
    soft-target cross-entropy on the rows of `side` (its prepared teacher side) and labels `target`,
    or None where these options make it something else. `tasks`: the tasks (distill.tasks) whose models
    it teaches, a classifier's where unsaid (a class may say `tasks` itself; a next-token loss is a language model's)."""

    def decorate(obj: Callable) -> Callable:
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            build = obj
        else:
            def build(opts: object, student: Outputs, teacher: Outputs | None) -> nn.Module:
                return FunctionLoss(obj, opts, reads, prepare, soft)
        if tasks is not None:
            build.tasks = tasks
        LOSSES.register(name, options, reads)(build)
        return obj

    return decorate


def is_next_token(name: str) -> bool:
    """A language model's loss: it compares next-token distributions, (B, L, vocab) logits, position
    by position (its class says `next_token = True`; distill/losses/next_token.py)."""
    return name in LOSSES and bool(getattr(LOSSES.get(name, "mix").build, "next_token", False))


def loss_tasks(name: str) -> tuple[str, ...]:
    """The tasks whose models the loss `name` teaches (`register_loss`'s `tasks`)."""
    build = LOSSES.get(name, f"mix.{name}").build
    return ("lm",) if getattr(build, "next_token", False) else tuple(getattr(build, "tasks", ("classify",)))


def next_token_losses() -> list[str]:
    return [name for name in LOSSES.names() if is_next_token(name)]


def teacher_reads(names) -> list[str]:
    """What the teacher must provide for the loss terms `names`: their `reads`, plus the logits
    (every cache keeps them), as teacher keys or kinds ("features": every feature map)."""
    return sorted({"logits", *(k for name in names for k in LOSSES.get(name, f"mix.{name}").reads)})


def _read_part(teacher: Outputs, keys: tuple[str, ...]) -> Outputs | None:
    """The teacher outputs named by teacher `keys` (a kind names all its maps), None for no keys."""
    if not keys:
        return None
    return Outputs(teacher.logits,
                   {k: v for k, v in teacher.features.items() if "features" in keys or f"features.{k}" in keys},
                   {k: v for k, v in teacher.attentions.items() if "attentions" in keys or f"attentions.{k}" in keys},
                   {k: v for k, v in teacher.parts.items() if "parts" in keys or f"parts.{k}" in keys},
                   teacher.mask)


def teacher_side(loss: nn.Module, teacher: Outputs) -> TeacherSide:
    """What `loss` reads per step of the teacher outputs `teacher`: its `prepare(teacher)`, or
    the outputs it reads. Row-wise: rows of the side of a set are the side of those rows."""
    prepare = getattr(loss, "prepare", None)
    return prepare(teacher) if prepare is not None else _read_part(teacher, tuple(loss.teacher_keys))


def soft_term(loss: nn.Module, teacher: TeacherSide, target: Tensor, num_classes: int) -> SoftTerm | None:
    """`loss`'s term on these rows as a `SoftTerm`, or None if it cannot be written as one."""
    soft = getattr(loss, "soft_term", None)
    return soft(teacher, target, num_classes) if soft is not None else None


def build_loss(name: str, options: object, student: Outputs, teacher: Outputs | None) -> nn.Module:
    """Build loss `name` for these models; a pairing they cannot make is a ConfigError."""
    try:
        return LOSSES.get(name, f"mix.{name}").build(options, student, teacher)
    except ValueError as e:
        raise ConfigError(f"losses.{name}: {e}") from None


def block_names(features: dict[str, Tensor]) -> list[str]:
    """The intermediate blocks of a model, shallow to deep (not the embedding)."""
    return [k for k in features if k != "embedding"]


def pick_block(names: list[str], layer: float | str, what: str) -> str:
    """A block by name, or by relative depth in (0, 1] (1.0 is the last block)."""
    if isinstance(layer, str):
        if layer not in names and layer != "embedding":
            raise ValueError(f"{what} has no layer '{layer}' (it has {', '.join(names + ['embedding'])})")
        return layer
    if not 0.0 < layer <= 1.0:
        raise ValueError(f"relative depth must be in (0, 1], got {layer}")
    return names[max(1, math.floor(layer * len(names) + 0.5)) - 1]  # halves round up: 0.5 of 5 is block3


def pair_blocks(student: list[str], teacher: list[str]) -> list[tuple[str, str]]:
    """Each student block with the teacher block at the same relative depth."""
    return [(s, teacher[max(1, math.floor((i + 1) * len(teacher) / len(student) + 0.5)) - 1]) for i, s in enumerate(student)]


def _register_all() -> None:
    """Import every module of this package: each registers its loss, so a new loss is one file here."""
    import importlib
    import pkgutil

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
