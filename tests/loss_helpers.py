"""Model outputs the loss tests share (tests/test_losses.py, tests/test_feature_losses.py): a small
student and a larger teacher of each family, on (1, 16) inputs with 5 classes; for each registered
loss the first pair of families it accepts (PAIR_ORDER), and `case(name)`: the loss built on them."""

import dataclasses

import pytest
import torch
from torch import nn

from distill.errors import ConfigError
from distill.losses import LOSSES, build_loss
from distill.models import MODELS, Outputs, build_model

INPUT_SHAPE, NUM_CLASSES, BATCH = (1, 16), 5, 6

# Small student and larger teacher shapes; a family missing here uses its defaults.
STUDENT = {"mlp": dict(width=8, depth=2), "cnn": dict(width=6, depth=2), "transformer": dict(dim=8, depth=2, heads=2, patch=4)}
TEACHER = {"mlp": dict(width=12, depth=3), "cnn": dict(width=8, depth=3), "transformer": dict(dim=16, depth=3, heads=4, patch=4)}


def model(family: str, sizes: dict, shape=INPUT_SHAPE, **kw) -> nn.Module:
    opts = MODELS.get(family, "model.family").options(**{**sizes.get(family, {}), **kw})
    return build_model(family, opts, shape, NUM_CLASSES)


def detach(out: Outputs) -> Outputs:
    return Outputs(out.logits.detach(), {k: v.detach() for k, v in out.features.items()}, {k: v.detach() for k, v in out.attentions.items()})


def clone(out: Outputs) -> Outputs:
    return Outputs(out.logits.clone(), {k: v.clone() for k, v in out.features.items()}, {k: v.clone() for k, v in out.attentions.items()})


LOSS_NAMES = LOSSES.names()
FAMILIES = MODELS.names()
PAIR_ORDER = [(f, f) for f in ("mlp", "cnn", "transformer")] + [(s, t) for s in FAMILIES for t in FAMILIES if s != t]
PAIR_ORDER += [p for p in ((f, f) for f in FAMILIES) if p not in PAIR_ORDER]


def options(loss: str, **kw):
    return LOSSES.get(loss, "losses").options(**kw)


def pair_for(loss: str) -> tuple[str, str]:
    """The first (student, teacher) pair of families that `loss` can be built for."""
    torch.manual_seed(0)
    x = torch.randn(2, *INPUT_SHAPE)
    with torch.no_grad():
        for s, t in PAIR_ORDER:
            try:
                build_loss(loss, options(loss), model(s, STUDENT)(x), model(t, TEACHER)(x))
            except ConfigError:
                continue
            return s, t
    pytest.fail(f"loss {loss!r} builds for no pair of model families")


PAIRS = {name: pair_for(name) for name in LOSS_NAMES}


@dataclasses.dataclass
class Case:
    loss: nn.Module
    student: nn.Module
    teacher: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    s_out: Outputs
    t_out: Outputs  # computed as train.run does: under no_grad, teacher params still requiring grad

    def value(self) -> torch.Tensor:
        return self.loss(self.s_out, self.t_out, self.y)


def case(name: str, seed: int = 0, opts=None, pair: tuple[str, str] | None = None) -> Case:
    s_fam, t_fam = pair or PAIRS[name]
    torch.manual_seed(seed)
    student = model(s_fam, STUDENT)
    teacher = model(t_fam, TEACHER).eval()
    x = torch.randn(BATCH, *INPUT_SHAPE)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    with torch.no_grad():
        t_out = teacher(x)
    s_out = student(x)
    loss = build_loss(name, opts if opts is not None else options(name), s_out, t_out)
    return Case(loss, student, teacher, x, y, s_out, t_out)


def num(v: torch.Tensor) -> float:
    return v.detach().item()


def assert_finite_scalar(v: torch.Tensor) -> None:
    assert isinstance(v, torch.Tensor) and v.dim() == 0, v
    assert v.dtype.is_floating_point and torch.isfinite(v), v
