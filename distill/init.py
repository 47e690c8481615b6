"""Initialising a student from its teacher's layers (`train.init: teacher`).

DistilBERT (Sanh et al. 2019, "DistilBERT, a distilled version of BERT") built
its 6-layer student from the 12-layer BERT by taking one layer out of two,
with the same hidden size, then distilled. Here the student's layer i (of S)
takes the teacher's layer floor(i * T / S) (of T): with S = T/2 that is every
other layer, 0, 2, 4, ...; tensors outside the layer stacks (embeddings,
positions, norms, the head) are taken by name. A tensor is copied only where
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

_STACK = re.compile(r"^(layers|blocks|layer\d+|block\d+\.layer)\.(\d+)\.(.+)$")  # the layer lists of our families (a resnet has one per stage)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer takes: every other one when the student has half the depth."""
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def _depth(state: dict, stack: str) -> int:
    idx = {int(m.group(2)) for k in state if (m := _STACK.match(k)) and m.group(1) == stack}
    return max(idx) + 1 if idx else 0


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy the teacher's tensors into the student where they fit; returns the student keys copied.
    Fails unless at least one layer of the stack fits (same family, same width)."""
    s_state, t_state = student.state_dict(), teacher.state_dict()
    copied = []
    for key, value in s_state.items():
        m = _STACK.match(key)
        if m:
            stack, i, rest = m.group(1), int(m.group(2)), m.group(3)
            j = layer_map(_depth(s_state, stack), max(1, _depth(t_state, stack)))[i]
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
