"""Initialising a student from its teacher's layers (`train.init: teacher`).

DistilBERT (Sanh et al. 2019, "DistilBERT, a distilled version of BERT") built
its 6-layer student from the 12-layer BERT by taking one layer out of two,
with the same hidden size, then distilled. Which teacher layer the student's
layer i (of S, from T) takes is `train.init_layers`:
- every_other: floor(i * T / S), every other layer at half depth (0, 2, 4, ...);
- distilbert: the layers DistilBERT's extraction script took from BERT-base,
  0, 2, 4, 7, 9, 11: every other one in the lower half, shifted up by one in
  the upper half so the top layer is kept (for S = T/2 at any depth);
- first: 0 .. S-1;
- a list of teacher layers, one per student layer.
Tensors outside the layer stacks (embeddings, positions, norms, the head) are
taken by name. Layer stacks are found by their names in the state dict: kdx's
families (`blocks.3.`, `layers.3.`, a resnet's `layer2.0.`) and Hugging Face
models (`bert.encoder.layer.3.`, `model.layers.3.`, `transformer.h.3.`). A tensor is copied only where
its shape matches, so a student narrower than its teacher gets nothing from
the layers (DistilBERT kept the width for this reason) and the run says so.

Warning: DistilBERT's student also kept the teacher's token-type embeddings
and dropped them later; we copy whatever matches and leave the rest at its
random initialisation, which is the common code's behaviour, not the paper's
exact recipe.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["init_from_teacher", "layer_map"]

# A layer list: ours (a resnet has one per stage) and Hugging Face's, under any prefix.
_STACK = re.compile(r"^((?:.*\.)?(?:layers|blocks|layer|h|layer\d+|block\d+\.layer))\.(\d+)\.(.+)$")


def layer_map(student_layers: int, teacher_layers: int, how: str | list[int] = "every_other") -> list[int]:
    """The teacher layer each student layer takes (see the module docstring)."""
    s, t = student_layers, teacher_layers
    if isinstance(how, list):
        if len(how) != s:
            raise ConfigError(f"train.init_layers: the student has {s} layers, the list names {len(how)}")
        bad = [j for j in how if not 0 <= j < t]
        if bad:
            raise ConfigError(f"train.init_layers: the teacher has layers 0..{t - 1}, the list names {bad[0]}")
        return list(how)
    if how == "first":
        return list(range(min(s, t))) + [t - 1] * max(0, s - t)
    if how == "distilbert":
        if t != 2 * s:
            raise ConfigError(f"train.init_layers: distilbert takes half the teacher's layers ({t} -> {t // 2}); "
                              f"this student has {s}: give every_other or a list")
        half = (s + 1) // 2
        return [2 * i for i in range(half)] + [2 * i + 1 for i in range(half, s)]
    return [i * t // s for i in range(s)]


def _depth(state: dict, stack: str) -> int:
    idx = {int(m.group(2)) for k in state if (m := _STACK.match(k)) and m.group(1) == stack}
    return max(idx) + 1 if idx else 0


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module, how: str | list[int] = "every_other") -> list[str]:
    """Copy the teacher's tensors into the student where they fit; returns the student keys copied.
    Fails unless at least one layer of the stack fits (same family, same width)."""
    s_state, t_state = student.state_dict(), teacher.state_dict()
    copied = []
    maps: dict[str, list[int]] = {}
    for key, value in s_state.items():
        m = _STACK.match(key)
        if m:
            stack, i, rest = m.group(1), int(m.group(2)), m.group(3)
            if stack not in maps:
                maps[stack] = layer_map(_depth(s_state, stack), max(1, _depth(t_state, stack)), how)
            j = maps[stack][i]
            source = f"{stack}.{j}.{rest}"
        else:
            source = key
        if source in t_state and t_state[source].shape == value.shape:
            value.copy_(t_state[source])
            copied.append(key)
    if not any(_STACK.match(k) for k in copied):  # a head bias always fits; the layers are the point
        raise ConfigError("train.init: 'teacher' copies layers of the same shape, but no teacher tensor fits this student "
                          "(give it the teacher's family and width, fewer layers)")
    return copied
