"""Model outputs the loss tests share (tests/test_losses.py, tests/test_feature_losses.py): a small
student and a larger teacher of each family, on (1, 16) inputs with 5 classes; for each registered
loss the first pair of families it accepts (PAIR_ORDER), and `case(name)`: the loss built on them.
A loss that builds for no pair on float inputs (the token-model losses) gets the token pair:
transformers over TokenShape(12, vocab=20) ids, some rows ending in padding; a loss that builds on
neither (the next-token losses) gets the language-model pair: causal transformers over the same ids,
its targets the next ids (IGNORE at the end and over padding). Models are asked for the output
kinds the loss reads (`expose`), as `train.run` asks."""

import dataclasses

import pytest
import torch
from torch import nn

from distill.data import next_token_labels
from distill.errors import ConfigError
from distill.losses import LOSSES, build_loss, teacher_reads
from distill.models import MODELS, Outputs, TokenShape, build_model, expose

INPUT_SHAPE, NUM_CLASSES, BATCH = (1, 16), 5, 6

# Small student and larger teacher shapes; a family missing here uses its defaults.
STUDENT = {"mlp": dict(width=8, depth=2), "cnn": dict(width=6, depth=2), "transformer": dict(dim=8, depth=2, heads=2, patch=4)}
TEACHER = {"mlp": dict(width=12, depth=3), "cnn": dict(width=8, depth=3), "transformer": dict(dim=16, depth=3, heads=4, patch=4)}

# The token pair: one width and head count, the teacher twice as deep and wider inside its blocks,
# so that every token loss builds (cos and pkd compare states as they are, tinybert_attn and
# minilm v1 head by head, and TinyBERT's uniform map needs a multiple of the student's depth).
TOKENS = TokenShape(12, vocab=20)
TOKEN_PAIR = ("transformer", "transformer")
TOKEN_STUDENT = {"transformer": dict(dim=16, depth=2, heads=4)}
TOKEN_TEACHER = {"transformer": dict(dim=16, depth=4, heads=4, mlp_ratio=4)}
LM_TOKENS = TokenShape(12, vocab=20, task="lm")


def model(family: str, sizes: dict, shape=INPUT_SHAPE, **kw) -> nn.Module:
    opts = MODELS.get(family, "model.family").options(**{**sizes.get(family, {}), **kw})
    lm = isinstance(shape, TokenShape) and shape.lm
    return build_model(family, opts, shape, shape.vocab if lm else NUM_CLASSES)  # a language model predicts ids


def sizes(shape) -> tuple[dict, dict]:
    """The student's and the teacher's sizes for inputs of `shape`."""
    return (TOKEN_STUDENT, TOKEN_TEACHER) if isinstance(shape, TokenShape) else (STUDENT, TEACHER)


def inputs(shape, batch: int) -> torch.Tensor:
    """A batch of `shape`: random floats, or random ids where every other row after the first ends
    in padding (so that masks change what token losses compare)."""
    if not isinstance(shape, TokenShape):
        return torch.randn(batch, *shape)
    ids = torch.randint(0, shape.vocab - 1, (batch, shape[0]))
    ids = ids + (ids >= shape.pad_id).long()  # never the pad id
    for row in range(1, batch, 2):
        ids[row, int(torch.randint(2, shape[0] - 1, ())):] = shape.pad_id
    return ids


def targets(shape, x: torch.Tensor) -> torch.Tensor:
    """Labels for the batch `x`: a class per sample, or a language model's next ids."""
    if isinstance(shape, TokenShape) and shape.lm:
        return torch.from_numpy(next_token_labels(x.numpy(), shape.pad_id))
    return torch.randint(0, NUM_CLASSES, (len(x),))


def kinds(loss: str) -> set[str]:
    """The output kinds a run with this loss asks the models for."""
    return {key.split(".", 1)[0] for key in teacher_reads([loss])}


def detach(out: Outputs) -> Outputs:
    return Outputs(out.logits.detach(), {k: v.detach() for k, v in out.features.items()}, {k: v.detach() for k, v in out.attentions.items()},
                   {k: v.detach() for k, v in out.parts.items()}, out.mask)


def clone(out: Outputs) -> Outputs:
    return Outputs(out.logits.clone(), {k: v.clone() for k, v in out.features.items()}, {k: v.clone() for k, v in out.attentions.items()},
                   {k: v.clone() for k, v in out.parts.items()}, None if out.mask is None else out.mask.clone())


LOSS_NAMES = LOSSES.names()
FAMILIES = MODELS.names()
PAIR_ORDER = [(f, f) for f in ("mlp", "cnn", "transformer")] + [(s, t) for s in FAMILIES for t in FAMILIES if s != t]
PAIR_ORDER += [p for p in ((f, f) for f in FAMILIES) if p not in PAIR_ORDER]


def options(loss: str, **kw):
    return LOSSES.get(loss, "losses").options(**kw)


def exposed(m: nn.Module, loss: str) -> nn.Module:
    expose(m, kinds(loss))
    return m


def pair_for(loss: str) -> tuple[tuple[str, str], tuple[int, ...]]:
    """The first (student, teacher) pair of families that `loss` can be built for, and its input shape:
    on float inputs, else the token pair on token ids."""
    for (s_sizes, t_sizes), shape, pairs in (((STUDENT, TEACHER), INPUT_SHAPE, PAIR_ORDER), ((TOKEN_STUDENT, TOKEN_TEACHER), TOKENS, [TOKEN_PAIR]),
                                             ((TOKEN_STUDENT, TOKEN_TEACHER), LM_TOKENS, [TOKEN_PAIR])):
        torch.manual_seed(0)
        x = inputs(shape, 2)
        with torch.no_grad():
            for s, t in pairs:
                try:
                    build_loss(loss, options(loss), exposed(model(s, s_sizes, shape), loss)(x), exposed(model(t, t_sizes, shape), loss)(x))
                except ConfigError:
                    continue
                return (s, t), shape
    pytest.fail(f"loss {loss!r} builds for no pair of model families, on float inputs, token ids or a language model's ids")


PAIRS, SHAPES = {}, {}  # loss -> (student family, teacher family), and the input shape of that pair
for _name in LOSS_NAMES:
    PAIRS[_name], SHAPES[_name] = pair_for(_name)


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


def case(name: str, seed: int = 0, opts=None, pair: tuple[str, str] | None = None, shape=None) -> Case:
    """`name` built on its pair (PAIRS, SHAPES) or on `pair` (float inputs unless `shape` says)."""
    if pair is None:
        pair, shape = PAIRS[name], SHAPES[name]
    shape = INPUT_SHAPE if shape is None else shape
    s_sizes, t_sizes = sizes(shape)
    torch.manual_seed(seed)
    student = exposed(model(pair[0], s_sizes, shape), name)
    teacher = exposed(model(pair[1], t_sizes, shape), name).eval()
    x = inputs(shape, BATCH)
    y = targets(shape, x)
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
