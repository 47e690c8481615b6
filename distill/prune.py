"""Students cut from their teacher (`train.init: prune`): the teacher's weights, pruned to the student's shape.

Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation", arXiv 2407.14679) ranks each prunable unit by the size
of its activations on a small calibration set, keeps the top ones, then
distils. The units and their scores, per block stack i:
- `hidden` (embedding channels, shared by every block through the residual
  stream): sum over every LayerNorm / RMSNorm of mean |output| per channel;
- `heads.i` (attention heads; for grouped-query attention `kv.i`, one unit per
  key/value head with its query heads): mean over tokens of the L2 norm of
  each head's output, read at the input of the attention's output projection;
- `mlp.i` (MLP neurons): mean |activation| at the input of the down projection;
- kdx's MLPs and CNNs, which have no residual stream: every layer's (block's)
  output units, mean |activation| over samples (and positions).
Means run over real tokens only (the pad id's positions are left out).

Depth (`train.prune.layers: importance`, the default) keeps the blocks that
change their input most: ShortGPT's block influence (Men et al. 2024, "ShortGPT:
Layers in Large Language Models are More Redundant Than You Expect"),
1 - cos(block input, block output) averaged over tokens; or the rule or list of
`train.prune.layers` (`distill.init.layer_map`). Depth is cut only where
blocks sit on a residual stream (kdx's transformer, Hugging Face encoders and
decoders): dropping a layer of a plain MLP or CNN feeds the next layer units it
never saw, so those keep their depth and lose width.

The cut is a plain model of the student's family and shape: every student
tensor is its teacher tensor (through the layer map) with each prunable
dimension indexed by the kept units, kept in their original order. With the
teacher's own shape every unit is kept and the student is the teacher exactly.

Warning: Minitron aggregates scores over the batch and sequence with mean and
L2 norms in several combinations and found (batch L2, sequence mean) best for
its LLMs; kdx uses plain means for neurons and channels and the per-token L2
norm for heads. Minitron also prunes heads and then re-initialises the cut
model's residual attention channels; kdx keeps each kept head's weights as
they are. Width-pruning a post-LN model (BERT) changes what every LayerNorm
normalises over, so even the kept channels shift: the start is an
approximation of the teacher, which is why it is trained afterwards.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch import Tensor, nn

from .cache import cache_dir, fingerprint, load_checked, save_checked
from .errors import ConfigError, check
from .init import _STACK, _depth, layer_map

if TYPE_CHECKING:
    from .data import Dataset

__all__ = ["PruneOptions", "Cut", "Plan", "plan_for", "importance", "prune_from_teacher", "teacher_importance", "importance_path", "PRUNABLE"]

PRUNABLE = ("mlp", "cnn", "transformer", "hf (bert, llama)")


@dataclass(frozen=True)
class PruneOptions:
    """`train.prune`: how a pruned start is cut (with `train.init: prune`)."""

    # Model Optimizer's Minitron pruning calibrates on 512 to 1024 samples; the first samples of the training split
    calibration: int = 512
    # importance: the blocks of highest influence (ShortGPT); or a rule or list as train.init_layers takes
    layers: Literal["importance", "every_other", "distilbert", "first"] | list[int] = "importance"

    def __post_init__(self) -> None:
        check(self.calibration >= 1, "calibration", f"must be >= 1 sample, got {self.calibration}")
        check(not isinstance(self.layers, list) or all(isinstance(j, int) and j >= 0 for j in self.layers),
              "layers", f"a list names teacher blocks 0, 1, ..., got {self.layers}")


@dataclass(frozen=True)
class Cut:
    """How one dimension of a tensor is cut: by the kept units of `axis`, each unit `unit` consecutive
    indices (a head's channels; a flattened map's positions), the axis laid out `repeat` times along the
    dimension (a fused q, k, v projection: 3)."""

    axis: str
    unit: int = 1
    repeat: int = 1


Dims = tuple["Cut | None", ...]


@dataclass
class Plan:
    """A model's prunable units: which dimensions of which tensors each axis cuts, the block stack whose
    depth may be cut (None: depth stays), and the hooks that measure the units' importance."""

    dims: Callable[[str], Dims]  # a teacher state-dict key -> the cut of each dimension (missing: not cut)
    stack: str | None
    hooks: Callable[["_Meter"], list] = field(repr=False)  # registers the measuring hooks; returns their handles
    head_size: int | None = None  # attention: channels per head, which a cut keeps (it drops whole heads)
    group: int = 1  # query heads per key/value head (grouped-query attention): a cut keeps whole groups


class _Meter:
    """Running sums of |activation| per unit, averaged over real tokens (or samples)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, float] = {}
        self.mask: Tensor | None = None  # (B, N) True at real tokens, for the current batch

    def add(self, axis: str, per_unit: Tensor) -> None:
        """`per_unit` (..., units): one row per sample or token; masked by the batch's real tokens."""
        x = per_unit.detach().float()
        if self.mask is not None and x.dim() == 3 and x.shape[:2] == self.mask.shape:
            w = self.mask.to(x.dtype).unsqueeze(-1)
            total, count = (x * w).sum((0, 1)), float(w.sum())
        else:
            total, count = x.reshape(-1, x.shape[-1]).sum(0), float(math.prod(x.shape[:-1]))
        self.sums[axis] = self.sums.get(axis, 0) + total
        self.counts[axis] = self.counts.get(axis, 0.0) + count

    def scores(self) -> dict[str, Tensor]:
        return {axis: s / max(self.counts[axis], 1.0) for axis, s in self.sums.items()}


def _pre(meter: _Meter, axis: str, heads: int = 0, group: int = 1) -> Callable:
    """A forward pre-hook on a down or output projection: its input's units (or heads' output norms)."""

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        if heads:
            per_head = x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads).norm(dim=-1)
            meter.add(axis, per_head.reshape(*per_head.shape[:-1], heads // group, group).sum(-1))
        else:
            meter.add(axis, x.abs())

    return hook


def _out(meter: _Meter, axis: str, channels_first: bool = False) -> Callable:
    """A forward hook: its output's units; a conv map is channels first and averaged over positions."""

    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        y = output[0] if isinstance(output, tuple) else output
        meter.add(axis, y.abs().flatten(2).mean(-1) if channels_first and y.dim() > 2 else y.abs())

    return hook


def _influence(meter: _Meter, axis: str) -> Callable:
    """ShortGPT's block influence: 1 - cos(input, output) per token."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        meter.add(axis, (1 - torch.cosine_similarity(x.float(), y.float(), dim=-1)).unsqueeze(-1))

    return hook


def _norms(model: nn.Module, width: int) -> list[nn.Module]:
    return [m for m in model.modules() if (isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm"))
            and getattr(m, "weight", None) is not None and m.weight.shape == (width,)]


def _stack_hooks(meter: _Meter, stack: nn.ModuleList) -> list:
    return [block.register_forward_hook(_influence(meter, f"block.{i}"), with_kwargs=True) for i, block in enumerate(stack)]


def _layer(key: str) -> int:
    m = _STACK.match(key)
    return int(m.group(2)) if m else -1


# --- kdx's families ------------------------------------------------------------------------------------------


def _mlp(model: nn.Module) -> Plan:
    depth = len(model.layers)

    def dims(key: str) -> Dims:
        if key.startswith("layers."):
            i = _layer(key)
            return (Cut(f"n.{i}"), Cut(f"n.{i - 1}") if i else None) if key.endswith("weight") else (Cut(f"n.{i}"),)
        return (None, Cut(f"n.{depth - 1}")) if key == "head.weight" else ()

    def hooks(meter: _Meter) -> list:  # the ReLU comes after each Linear: the next layer's (or the head's) input
        after = [*model.layers[1:], model.head]
        return [m.register_forward_pre_hook(_pre(meter, f"n.{i}")) for i, m in enumerate(after)]

    return Plan(dims, None, hooks)


def _cnn(model: nn.Module) -> Plan:
    blocks = model.blocks
    out, inner = [], []  # each block's output axis (an identity skip ties it to the block before) and its inner one
    for i, b in enumerate(blocks):
        residual = b.conv2 is not None
        identity = residual and b.skip is None
        out.append((out[-1] if i else "input") if identity else f"out.{i}")
        inner.append(f"in.{i}" if residual else out[-1])
    spatial = model.head.in_features // blocks[-1].conv1.out_channels

    def dims(key: str) -> Dims:
        if key == "head.weight":
            return (None, Cut(out[-1], unit=spatial))
        if not key.startswith("blocks."):
            return ()
        i, part = _layer(key), key.split(".")[2]
        before = Cut(out[i - 1]) if i else None
        if part == "conv1":
            return (Cut(inner[i]), before) if key.endswith("weight") else (Cut(inner[i]),)
        if part == "conv2":
            return (Cut(out[i]), Cut(inner[i])) if key.endswith("weight") else (Cut(out[i]),)
        return (Cut(out[i]), before) if key.endswith("weight") else (Cut(out[i]),)  # the skip's 1x1 projection

    def hooks(meter: _Meter) -> list:
        handles = []
        for i, b in enumerate(blocks):
            if out[i] != "input":
                handles.append(b.register_forward_hook(_out(meter, out[i], channels_first=True)))
            if b.conv2 is not None:
                handles.append(b.conv2.register_forward_pre_hook(lambda m, a, i=i: meter.add(inner[i], a[0].abs().flatten(2).mean(-1))))
        return handles

    return Plan(dims, None, hooks)


def _transformer(model: nn.Module) -> Plan:
    dim, heads = model.norm.weight.shape[0], model.blocks[0].attn.heads
    hd = dim // heads
    hidden = Cut("hidden")

    def dims(key: str) -> Dims:
        if key == "embed.weight":
            return (None, hidden) if isinstance(model.embed, nn.Embedding) else (hidden, None)
        if key in ("embed.bias", "norm.weight", "norm.bias"):
            return (hidden,)
        if key == "pos":
            return (None, None, hidden)
        if key == "head.weight":
            return (None, hidden)
        if not key.startswith("blocks."):
            return ()
        i, name = _layer(key), key.split(".", 2)[2]
        qkv, mlp = Cut(f"heads.{i}", unit=hd, repeat=3), Cut(f"mlp.{i}")
        return {"norm1.weight": (hidden,), "norm1.bias": (hidden,), "norm2.weight": (hidden,), "norm2.bias": (hidden,),
                "attn.qkv.weight": (qkv, hidden), "attn.qkv.bias": (qkv,),
                "attn.proj.weight": (hidden, Cut(f"heads.{i}", unit=hd)), "attn.proj.bias": (hidden,),
                "mlp.0.weight": (mlp, hidden), "mlp.0.bias": (mlp,), "mlp.2.weight": (hidden, mlp), "mlp.2.bias": (hidden,)}.get(name, ())

    def hooks(meter: _Meter) -> list:
        handles = [m.register_forward_hook(_out(meter, "hidden")) for m in _norms(model, dim)]
        for i, b in enumerate(model.blocks):
            handles.append(b.attn.proj.register_forward_pre_hook(_pre(meter, f"heads.{i}", heads=heads)))
            handles.append(b.mlp[2].register_forward_pre_hook(_pre(meter, f"mlp.{i}")))
        return handles + _stack_hooks(meter, model.blocks)

    return Plan(dims, "blocks", hooks, hd)


# --- Hugging Face -----------------------------------------------------------------------------------------------

_BERT = [  # (key pattern, cut of each dimension, with {i} the layer); first match wins
    (r"embeddings\.\w+_embeddings\.weight$", (None, "hidden")),
    (r"LayerNorm\.(weight|bias)$", ("hidden",)),
    (r"attention\.self\.(query|key|value)\.weight$", ("q", "hidden")),
    (r"attention\.self\.(query|key|value)\.bias$", ("q",)),
    (r"attention\.output\.dense\.weight$", ("hidden", "q")),
    (r"intermediate\.dense\.weight$", ("mlp", "hidden")),
    (r"intermediate\.dense\.bias$", ("mlp",)),
    (r"\d+\.output\.dense\.weight$", ("hidden", "mlp")),
    (r"output\.dense\.bias$", ("hidden",)),
    (r"pooler\.dense\.weight$", ("hidden", "hidden")),
    (r"pooler\.dense\.bias$", ("hidden",)),
    (r"(classifier|score|lm_head)\.weight$", (None, "hidden")),
]
_LLAMA = [
    (r"embed_tokens\.weight$", (None, "hidden")),
    (r"norm\.weight$", ("hidden",)),
    (r"q_proj\.weight$", ("q", "hidden")),
    (r"q_proj\.bias$", ("q",)),
    (r"[kv]_proj\.weight$", ("kv", "hidden")),
    (r"[kv]_proj\.bias$", ("kv",)),
    (r"o_proj\.weight$", ("hidden", "q")),
    (r"o_proj\.bias$", ("hidden",)),
    (r"(gate|up)_proj\.weight$", ("mlp", "hidden")),
    (r"(gate|up)_proj\.bias$", ("mlp",)),
    (r"down_proj\.weight$", ("hidden", "mlp")),
    (r"down_proj\.bias$", ("hidden",)),
    (r"(lm_head|score)\.weight$", (None, "hidden")),
]


def _hf(model: nn.Module) -> Plan:
    cfg = model.hf.config
    kind = cfg.model_type
    if kind not in ("bert", "llama"):
        raise ConfigError(f"train.init: prune cuts Hugging Face models of type bert and llama, not {kind}: start it from the "
                          "teacher's layers (train.init: teacher) or at random")
    if kind == "bert" and model.lm:
        raise ConfigError("train.init: prune cuts a Hugging Face bert classifier; for a language model prune a llama")
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    hd = getattr(cfg, "head_dim", None) or hidden // heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    group = heads // kv  # query heads per key/value head: pruned together
    table = [(re.compile(p), c) for p, c in (_BERT if kind == "bert" else _LLAMA)]
    # a classifier's or causal LM's body sits under its head's wrapper; a bare encoder (a sentence encoder, AutoModel) is the body
    stack = ("hf.bert." if hasattr(model.hf, "bert") else "hf.") + "encoder.layer" if kind == "bert" else \
        ("hf.model." if hasattr(model.hf, "model") else "hf.") + "layers"

    def dims(key: str) -> Dims:
        i = _layer(key)
        for pattern, cuts in table:
            if pattern.search(key):
                return tuple(None if c is None else Cut("hidden") if c == "hidden" else Cut(f"mlp.{i}") if c == "mlp"
                             else Cut(f"heads.{i}", unit=hd * (group if c == "q" else 1)) for c in cuts)
        return ()

    def hooks(meter: _Meter) -> list:
        handles = [m.register_forward_hook(_out(meter, "hidden")) for m in _norms(model, hidden)]
        for i, layer in enumerate(model.get_submodule(stack)):
            if kind == "bert":
                o, down = layer.attention.output.dense, layer.output.dense
            else:
                o, down = layer.self_attn.o_proj, layer.mlp.down_proj
            handles.append(o.register_forward_pre_hook(_pre(meter, f"heads.{i}", heads=heads, group=group)))
            handles.append(down.register_forward_pre_hook(_pre(meter, f"mlp.{i}")))
        return handles + _stack_hooks(meter, model.get_submodule(stack))

    return Plan(dims, stack, hooks, hd, group)


def plan_for(model: nn.Module) -> Plan:
    """The prunable units of a kdx model (its family's plan), or one line saying it has none."""
    from .models.cnn import CNN
    from .models.hf import HFModel
    from .models.mlp import MLP
    from .models.transformer import Transformer

    for cls, plan in ((MLP, _mlp), (CNN, _cnn), (Transformer, _transformer), (HFModel, _hf)):
        if isinstance(model, cls):
            return plan(model)
    raise ConfigError(f"train.init: prune cuts the families {', '.join(PRUNABLE)}; the teacher is a {type(model).__name__}: "
                      "start the student from the teacher's layers (train.init: teacher) or at random")


@torch.no_grad()
def importance(teacher: nn.Module, x: Tensor, batch_size: int = 64) -> dict[str, Tensor]:
    """Every prunable unit's score on the calibration samples `x` (see the module docstring), by axis;
    "block.i" holds block i's influence (one value)."""
    plan = plan_for(teacher)
    meter = _Meter()
    handles = plan.hooks(meter)
    was_training = teacher.training
    teacher.eval()
    pad = getattr(teacher, "pad_id", None)
    device = next(teacher.parameters()).device
    try:
        for first in range(0, len(x), batch_size):
            xb = x[first:first + batch_size].to(device)
            meter.mask = (xb != pad) if pad is not None and not xb.is_floating_point() else None
            teacher(xb)
    finally:
        for h in handles:
            h.remove()
        teacher.train(was_training)
    return {k: v.cpu() for k, v in meter.scores().items()}


def teacher_importance(teacher: nn.Module, key: str | None, data: "Dataset", calibration: int) -> dict[str, Tensor]:
    """`importance` on the first `calibration` training samples, computed once per teacher (its cache key,
    None: not cached), data and count, and cached beside the teacher's outputs: every trial that prunes
    the same teacher to another shape reads the same scores."""
    x = data.x_train[:min(calibration, len(data.y_train))]
    x = x if isinstance(x, Tensor) else torch.as_tensor(x)
    if key is None:
        return importance(teacher, x)
    path = importance_path(key, data.key, calibration)
    scores = load_checked(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if scores is None:
        scores = importance(teacher, x)
        save_checked(path, lambda p: torch.save(scores, p))
    return scores


def importance_path(teacher_key: str, data_key: str, calibration: int) -> Path:
    return cache_dir("outputs") / f"importance-{fingerprint([teacher_key, data_key, calibration])}.pt"


def _indices(kept: Tensor, cut: Cut, units: int) -> Tensor:
    per = (kept[:, None] * cut.unit + torch.arange(cut.unit)).reshape(-1)
    return torch.cat([r * units * cut.unit + per for r in range(cut.repeat)])


def _keep_layers(s: int, t: int, layers: str | list[int], scores: dict[str, Tensor]) -> list[int]:
    if s > t:
        raise ConfigError(f"train.init: prune cuts a teacher of {t} blocks; the student asks for {s}")
    if layers != "importance" or any(f"block.{j}" not in scores for j in range(t)):  # no scores: a shape check only
        return layer_map(s, t, "every_other" if layers == "importance" else layers)
    influence = torch.tensor([float(scores[f"block.{j}"].reshape(-1)[0]) for j in range(t)])
    return sorted(torch.argsort(influence, descending=True, stable=True)[:s].tolist())


@torch.no_grad()
def prune_from_teacher(student: nn.Module, teacher: nn.Module, scores: dict[str, Tensor],
                       layers: str | list[int] = "importance") -> dict[str, list[int]]:
    """Load into `student` the teacher's weights cut to the student's shape; returns the kept units per
    axis ("layers": the teacher blocks kept). Scores: `importance(teacher, ...)`; a missing axis keeps its
    first units. Fails in one line where the student is not a cut of the teacher (another family, a
    dimension wider than the teacher's, a head size that differs)."""
    plan = plan_for(teacher)
    if type(student) is not type(teacher) or _hf_type(student) != _hf_type(teacher):
        raise ConfigError(f"train.init: prune cuts the teacher to the student's shape: the student ({type(student).__name__}) "
                          f"must be of the teacher's family ({type(teacher).__name__})")
    s_plan = plan_for(student)
    head = s_plan.head_size
    if head != plan.head_size:
        raise ConfigError(f"train.init: prune keeps whole attention heads, so the student's head size (width / heads: {head}) must be "
                          f"the teacher's ({plan.head_size}): give it {plan.head_size} channels per head")
    group = s_plan.group
    if group != plan.group:
        raise ConfigError(f"train.init: prune keeps whole key/value groups: the teacher has {plan.group} query heads per key/value head, "
                          f"the student {group}; give the student num_key_value_heads = num_attention_heads / {plan.group} "
                          "(student.config.num_key_value_heads)")
    s_state, t_state = student.state_dict(), teacher.state_dict()
    kept: dict[str, Tensor] = {}
    order = None
    if plan.stack is not None:
        order = _keep_layers(_depth(s_state, plan.stack), _depth(t_state, plan.stack), layers, scores)
    elif _depths(s_state) != _depths(t_state):
        raise ConfigError(f"train.init: prune cuts the width of a {type(teacher).__name__} and keeps its depth: give the student "
                          f"the teacher's depth ({max(_depths(t_state).values())}); its layers do not sit on a residual stream, so none can be dropped")
    new = {}
    for key, target in s_state.items():
        m = _STACK.match(key)
        source = f"{m.group(1)}.{order[int(m.group(2))]}.{m.group(3)}" if m and order is not None and m.group(1) == plan.stack else key
        if source not in t_state:
            raise ConfigError(f"train.init: prune: the teacher has no tensor {source} for the student's {key}")
        value = t_state[source]
        for d, cut in enumerate(plan.dims(source)):
            if cut is None:
                continue
            units = value.shape[d] // (cut.unit * cut.repeat)
            want = target.shape[d] // (cut.unit * cut.repeat)
            if want > units:
                raise ConfigError(f"train.init: prune: the student is wider than its teacher ({want} {_words(cut.axis)}, the teacher has "
                                  f"{units}; tensor {key}): a pruned student is at most as wide as its teacher")
            if cut.axis not in kept:
                score = scores.get(cut.axis)
                kept[cut.axis] = (torch.arange(want) if score is None or want == units else
                                  torch.argsort(score.reshape(-1), descending=True, stable=True)[:want].sort().values)
            elif len(kept[cut.axis]) != want:
                raise ConfigError(f"train.init: prune: the student's {key} keeps {want} units of {cut.axis}, another of its "
                                  f"tensors {len(kept[cut.axis])}")
            value = value.index_select(d, _indices(kept[cut.axis], cut, units))
        if value.shape != target.shape:
            raise ConfigError(f"train.init: prune: the teacher's {source} cut to the student's sizes is {tuple(value.shape)}, "
                              f"the student's {key} is {tuple(target.shape)}: keep the teacher's head size and kernel sizes")
        new[key] = value
    student.load_state_dict(new)
    return {k: v.tolist() for k, v in kept.items()} | ({"layers": order} if order is not None else {})


def _words(axis: str) -> str:
    kind, _, i = axis.partition(".")
    return {"hidden": "hidden channels", "heads": f"attention heads in block {i}", "mlp": f"MLP neurons in block {i}",
            "n": f"units in layer {i}", "out": f"channels out of block {i}", "in": f"channels inside block {i}"}.get(kind, axis)


def _hf_type(model: nn.Module) -> str | None:
    return getattr(getattr(getattr(model, "hf", None), "config", None), "model_type", None)


def _depths(state: dict) -> dict[str, int]:
    found: dict[str, set] = {}
    for k in state:
        if m := _STACK.match(k):
            found.setdefault(m.group(1), set()).add(int(m.group(2)))
    return {k: len(v) for k, v in found.items()}
