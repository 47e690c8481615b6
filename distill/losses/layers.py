"""Layer maps and token-model helpers shared by the intermediate-layer losses of
transformers over token ids (tinybert_attn, tinybert_hidden, pkd; cos and minilm
use the helpers). Registers no loss.

A layer map pairs student blocks with teacher blocks, as (student, teacher)
block indices counted as `distill.models` names them: block0 is the embedding
output, block1..blockL the blocks. With M student and N teacher blocks:

- "uniform" (TinyBERT, Jiao et al. 2020, arXiv:1909.10351): k = N / M, student
  block i (1..M) -> teacher block i*k (task_distill.py's 0-based i*k + k - 1);
  hidden states also pair the embeddings, m = 0..M -> k*m. N must be a
  multiple of M.
- "last" (PKD-Last, Sun et al. 2019): the teacher's last M blocks, i -> N - M + i.
- "skip" (PKD-Skip as the paper ran it, 6 of 12 blocks): every other teacher
  block, i -> 2i. (For other depths PKD's stride N / M is "uniform".)
- a list of teacher blocks, one per student block 1..M; a hidden map adds the
  embeddings 0 -> 0, unless the list has M + 1 entries, from the embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..errors import check
from ..models import Outputs

__all__ = ["LayerOptions", "layer_map", "depths", "tokens", "real_tokens", "same_length", "same_width", "need_features", "need_parts"]

MAPS = ("uniform", "last", "skip")
What = Literal["blocks", "hidden"]  # blocks 1..M (attention, block outputs), or hidden states 0..M (with the embeddings)


@dataclass(frozen=True)
class LayerOptions:
    """The `layers` option every intermediate loss carries: a map name or a list of teacher blocks."""

    layers: str | list[int] = "uniform"

    def __post_init__(self) -> None:
        spec = self.layers
        if isinstance(spec, str):
            check(spec in MAPS, "layers", f"unknown map {spec!r} (valid: {', '.join(MAPS)}, or a list of teacher blocks)")
        else:
            ok = isinstance(spec, (list, tuple)) and len(spec) > 0 and all(isinstance(i, int) and not isinstance(i, bool) for i in spec)
            check(ok, "layers", f"expected {' | '.join(MAPS)} or a non-empty list of teacher block indices, got {spec!r}")
            object.__setattr__(self, "layers", list(spec))  # a tuple given in code reads back as the list YAML gives


def layer_map(spec: str | list[int], student_depth: int, teacher_depth: int, what: What = "blocks",
              count: int | None = None) -> list[tuple[int, int]]:
    """(student block, teacher block) pairs for the map `spec` between models of these depths;
    `count`: pair only student blocks 1..count (a list then names `count` teacher blocks)."""
    m, n = student_depth, teacher_depth
    count = m if count is None else count
    if isinstance(spec, str):
        if spec == "uniform":
            if n % m:
                example = [round(i * n / m) for i in range(1, count + 1)]
                raise ValueError(f"layers: uniform needs the teacher's depth to be a multiple of the student's "
                                 f"(teacher {n} blocks, student {m}); give a list of {count} teacher blocks instead, e.g. {example}")
            teacher = [i * (n // m) for i in range(1, m + 1)]
        elif spec == "last":
            if m > n:
                raise ValueError(f"layers: last pairs the student's {m} blocks with the teacher's last {m}, and the teacher has {n}")
            teacher = [n - m + i for i in range(1, m + 1)]
        elif spec == "skip":
            teacher = [2 * i for i in range(1, m + 1)]
        else:
            raise ValueError(f"layers: unknown map {spec!r} (valid: {', '.join(MAPS)}, or a list of teacher blocks)")
        pairs = list(zip(range(1, count + 1), teacher))
    else:
        teacher = list(spec)
        first = 0 if what == "hidden" and len(teacher) == count + 1 else 1
        if len(teacher) != count + 1 - first:
            blocks = "one per student block" if count == m else f"one per student block 1..{count}"
            raise ValueError(f"layers: the student has {m} blocks, the list names {len(teacher)} teacher blocks ({blocks})")
        pairs = list(zip(range(first, count + 1), teacher))
    if what == "hidden" and pairs[0][0] == 1:
        pairs = [(0, 0), *pairs]  # the embeddings pair with the embeddings (TinyBERT's layer 0)
    low = 0 if what == "hidden" else 1
    for _, t in pairs:
        if not low <= t <= n:
            where = " (block0, the embeddings, pairs only in hidden-state maps)" if t == 0 else ""
            raise ValueError(f"layers: the teacher has {n} blocks, the map {spec!r} names block {t}{where}")
    return pairs


_BLOCK = re.compile(r"(?:[qkv]\.)?block(\d+)")  # features "block3", parts "q.block3"


def depths(student: Outputs, teacher: Outputs) -> tuple[int, int]:
    """The block counts (M, N) of a student and a teacher over token ids; other models are a
    ValueError. The student's outputs are whole (features block0..blockM); the teacher's may hold
    only what a loss reads (its `teacher_keys`, as a cache of those would), so its depth is that of
    the deepest block they name: the same wherever a map reaches the teacher's last block."""
    if "block0" not in student.features:
        raise ValueError(f"needs token models (a transformer over token ids, features block0..blockL); "
                         f"the student has features {', '.join(student.features) or 'none'}")
    named = [int(g.group(1)) for k in (*teacher.features, *teacher.parts) if (g := _BLOCK.fullmatch(k))]
    if not named:
        raise ValueError(f"needs token models (a transformer over token ids, features block0..blockL); "
                         f"the teacher has features {', '.join(teacher.features) or 'none'}")
    return sum(1 for k in student.features if _BLOCK.fullmatch(k)) - 1, max(named)


def tokens(feature: Tensor) -> Tensor:
    """A (B, D, N) channels-first hidden state as (B, N, D), in float32."""
    return feature.transpose(1, 2).float()


def real_tokens(student: Outputs, teacher: Outputs) -> Tensor:
    """(B, N) bool, True at real tokens: the student's mask (both models read the same ids), else the
    teacher's; none means every token is real."""
    mask = student.mask if student.mask is not None else teacher.mask
    if mask is not None:
        return mask
    b, _, n = student.features["block0"].shape
    return torch.ones(b, n, dtype=torch.bool, device=student.features["block0"].device)


def same_length(n_student: int, n_teacher: int) -> None:
    if n_student != n_teacher:
        raise ValueError(f"student and teacher read different token counts ({n_student} vs {n_teacher}); both must read the same ids")


def same_width(d_student: int, d_teacher: int, loss: str) -> None:
    if d_student != d_teacher:
        raise ValueError(f"hidden sizes differ (student {d_student}, teacher {d_teacher}): {loss} needs equal sizes; "
                         "use tinybert_hidden, which learns a projection")


def need_features(out: Outputs, blocks: list[int], who: str) -> None:
    missing = [f"block{i}" for i in blocks if f"block{i}" not in out.features]
    if missing:
        raise ValueError(f"the {who} has no features {', '.join(missing)}")


def need_parts(out: Outputs, blocks: list[int], who: str, loss: str, kinds: str = "qkv") -> None:
    """The q, k, v of these blocks must be there (a model computes them when `expose` asks for "parts")."""
    missing = [f"{p}.block{i}" for i in blocks for p in kinds if f"{p}.block{i}" not in out.parts]
    if missing:
        raise ValueError(f"{loss} needs the {who}'s queries, keys and values (parts {', '.join(missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}): a token model computes them when expose(model, {{'parts'}}) asks")
