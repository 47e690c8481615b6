"""A static floor for a sentence encoder: model2vec's table, scored as any student is.

model2vec (Tulkens & van Dongen 2024, the `model2vec` package) distils a sentence encoder with no
training: it embeds every token of the teacher's vocabulary alone through the teacher, reduces the
vectors by PCA (256 dimensions by default), weights them by a Zipf estimate of frequency (SIF), and
encodes a sentence as the mean of its tokens' vectors. It is the zero-training point a trained
student must beat to be worth its cost (its authors: potion-base-8M 50.03 MTEB average against
all-MiniLM-L6-v2's 56.09).

`StaticEncoder` is that table as a torch module over kdx's token ids, so the floor is scored by the
task's own `evaluate` on the same held-out sentences, cut at the same max_len, as every student.
model2vec's `encode` reads text, tokenizes it without special tokens and drops its unknown token;
here each id of the data's tokenizer is mapped to model2vec's id of the same token string, and the
special, unknown and unmapped ones are left out of the mean alike. tests/test_embed_gold.py checks the
mapping on a stand-in table; tests/test_embed_real.py checks a search's logged floor against model2vec's
own `encode` of the same sentences.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigError

__all__ = ["StaticEncoder", "StaticFloor", "model2vec_floor", "have_model2vec"]

INSTALL = "pip install model2vec 'skeletoken>=0.6,<0.7'"  # its [distill] extra would pin transformers below 5.4; distill runs without it


class StaticEncoder(nn.Module):
    """One vector per token id; a sentence is the mean over its kept tokens (pooled, unnormalised, as a student's logits)."""

    def __init__(self, table: Tensor, keep: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.float(), requires_grad=False)
        self.register_buffer("keep", keep.bool())

    def forward(self, ids: Tensor) -> Tensor:
        mask = self.keep[ids].unsqueeze(-1).to(self.table.dtype)
        return (self.table[ids] * mask).sum(1) / mask.sum(1).clamp_min(1.0)


@dataclass(frozen=True)
class StaticFloor:
    module: StaticEncoder
    params: int  # model2vec's own table (its vocabulary x dimensions): what it ships, not the remapped copy
    seconds: float  # what distilling it took
    mapped: float  # the share of the data tokenizer's non-special tokens found in model2vec's vocabulary
    words: str  # what it is, in a phrase


def have_model2vec() -> bool:
    try:
        import model2vec.distill  # noqa: F401
    except ImportError:
        return False
    return True


def as_static(static: Any, tokenizer: Any) -> tuple[StaticEncoder, float]:
    """model2vec's `StaticModel` over the ids of `tokenizer` (a transformers tokenizer), and the share of its
    non-special tokens found in the static model's vocabulary."""
    if getattr(static, "token_mapping", None) is not None or getattr(static, "weights", None) is not None:
        raise ConfigError("a model2vec model with vocabulary quantization has no one vector per token; distil it without")
    embedding = np.asarray(static.embedding, dtype=np.float32)
    vocab = tokenizer.get_vocab()
    table, keep = np.zeros((len(tokenizer), embedding.shape[1]), dtype=np.float32), np.zeros(len(tokenizer), dtype=bool)
    special, unk = set(tokenizer.all_special_ids), getattr(static, "unk_token_id", None)
    found = 0
    for token, i in vocab.items():
        j = static.tokenizer.token_to_id(token)
        if i in special or i >= len(table):
            continue
        if j is not None and j != unk and j < len(embedding):
            table[i], keep[i] = embedding[j], True
            found += 1
    ordinary = sum(1 for i in vocab.values() if i not in special)
    return StaticEncoder(torch.from_numpy(table), torch.from_numpy(keep)), found / max(ordinary, 1)


def model2vec_floor(folder: str, tokenizer: Any) -> StaticFloor:
    """model2vec's `distill` of the sentence-transformers folder `folder` (local: nothing downloads), over `tokenizer`'s ids."""
    from model2vec.distill import distill

    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its per-token progress bar would flood a search's log
        static = distill(model_name=str(folder), device="cpu")
    seconds = time.perf_counter() - started
    module, mapped = as_static(static, tokenizer)
    version = importlib.metadata.version("model2vec")
    return StaticFloor(module.eval(), int(np.prod(static.embedding.shape)), seconds, mapped,
                       f"model2vec {version} distil of the teacher's folder ({static.embedding.shape[1]} dimensions, no training)")
