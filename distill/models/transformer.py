"""Transformer encoder over token ids, sequence positions or image patches.

Token ids (a `TokenShape` input, int64): an embedding of the vocabulary plus
learned positions, the padding mask from the pad id (padded keys take no part
in attention), pooled by [CLS] (position 0, BERT), the mean over real tokens,
or the last real token. Float input (L,) or (C, L): tokens are `patch`
consecutive positions (all channels); (C, H, W): `patch` x `patch` squares,
mean-pooled (a ViT without [CLS]). Pre-norm blocks either way.

A language model (a `TokenShape` whose task is "lm") is a causal decoder shaped
as GPT-2 is (pre-norm blocks, learned positions, a final norm, a bias-free head
over the vocabulary at every position, exact GELU), so that `kdx export` writes
it as a `GPT2LMHeadModel` with the same weights and the same outputs. Position t
attends to 0..t only; padding sits at the tail, after every real token, so the
causal mask alone keeps it out of what a real position reads (GPT-2 without an
attention mask does the same). The logits are (B, N, vocab).

What a block exposes follows the contract in `distill.models`: hidden states
always (they are computed anyway), post-softmax attention maps and the q, k, v
of every block only when `expose` asked for them; otherwise attention runs as
one fused `scaled_dot_product_attention` call. Patch models expose their maps
by default, as they always have (attention transfer reads them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import check
from ..tasks import task_named
from .base import Outputs, TokenShape, register_model


@dataclass(frozen=True)
class TransformerOptions:
    dim: int = 32
    depth: int = 2
    heads: int = 4
    patch: int = 4  # positions per token (1-D) or patch side (2-D); token ids ignore it
    mlp_ratio: int = 2
    pool: Literal["cls", "mean", "last"] = "mean"  # token ids: what the classifier reads (cls: position 0, as BERT)
    dropout: float = 0.0  # on each block's attention and MLP outputs while training (BERT's 0.1); SimCSE's two views need it

    def __post_init__(self) -> None:
        check(self.dim >= 1, "dim", f"must be >= 1, got {self.dim}")
        check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
        check(self.heads >= 1, "heads", f"must be >= 1, got {self.heads}")
        check(self.dim % self.heads == 0, "heads", f"{self.heads} heads do not divide dim {self.dim}")
        check(self.patch >= 1, "patch", f"must be >= 1, got {self.patch}")
        check(self.mlp_ratio >= 1, "mlp_ratio", f"must be >= 1, got {self.mlp_ratio}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, keep: Tensor | None, explicit: bool) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:
        """`keep` (B, 1, 1, N): True at keys that take part. Returns the output, the post-softmax
        map (explicit only) and (q, k, v), each (B, H, N, D/H)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if explicit:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            attn = scores.softmax(-1)
            out = attn @ v
        else:
            attn, out = None, F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attn, (q, k, v)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)  # no parameters: a state dict is the same with or without it
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, keep: Tensor | None = None, explicit: bool = True) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:
        a, attn, qkv = self.attn(self.norm1(x), keep, explicit)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.norm2(x))), attn, qkv


class Transformer(nn.Module):
    def __init__(self, opts: TransformerOptions, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.pool = opts.pool
        self.lm = isinstance(input_shape, TokenShape) and input_shape.lm
        if isinstance(input_shape, TokenShape):
            self.pad_id, tokens = input_shape.pad_id, input_shape[0]
            self.embed = nn.Embedding(input_shape.vocab, opts.dim)
            self.kdx_expose: frozenset[str] = frozenset()
        else:
            self.pad_id, (tokens, token_size) = None, self._patches(opts.patch, input_shape)
            self.embed = nn.Linear(token_size, opts.dim)
            self.kdx_expose = frozenset({"attentions"})
        self.pos = nn.Parameter(torch.randn(1, tokens, opts.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(opts.dim, opts.heads, opts.mlp_ratio, opts.dropout) for _ in range(opts.depth))
        self.norm = nn.LayerNorm(opts.dim)
        # an embedding's model is its pooled hidden state (distill/tasks/embed.py): no head
        headless = isinstance(input_shape, TokenShape) and task_named(input_shape.task).head == "none"
        self.head = nn.Identity() if headless else nn.Linear(opts.dim, num_classes, bias=not self.lm)  # GPT-2's lm_head has no bias

    def _patches(self, p: int, input_shape: tuple[int, ...]) -> tuple[int, int]:
        shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)
        self.sample_shape, self.patch = shape, p
        if len(shape) == 2:
            if shape[1] % p:
                raise ValueError(f"transformer: patch {p} does not divide the sequence length {shape[1]}")
            return shape[1] // p, shape[0] * p
        if len(shape) == 3:
            if shape[1] % p or shape[2] % p:
                raise ValueError(f"transformer: patch {p} does not divide the image size {shape[1:]}")
            return (shape[1] // p) * (shape[2] // p), shape[0] * p * p
        raise ValueError(f"transformer: input shape {input_shape} is neither 1-D nor 2-D")

    def tokenize(self, x: Tensor) -> Tensor:
        b, p = x.shape[0], self.patch
        x = x.reshape(b, *self.sample_shape)
        if x.dim() == 3:  # (B, C, L) -> (B, L/p, C*p)
            c, n = x.shape[1], x.shape[2] // p
            return x.reshape(b, c, n, p).permute(0, 2, 1, 3).reshape(b, n, c * p)
        c, h, w = x.shape[1:]  # (B, C, H, W) -> (B, HW/p^2, C*p*p)
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def forward(self, x: Tensor) -> Outputs:
        mask = keep = None
        if self.pad_id is None:
            h = self.embed(self.tokenize(x)) + self.pos
        else:
            mask = x != self.pad_id
            n = x.shape[1]
            keep = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()[None, None] if self.lm else mask[:, None, None, :]
            h = self.embed(x) + self.pos[:, :n]
        explicit = "attentions" in self.kdx_expose
        features, attentions, parts = ({"block0": h.transpose(1, 2)} if mask is not None else {}), {}, {}
        for i, block in enumerate(self.blocks, 1):
            h, attn, (q, k, v) = block(h, keep, explicit)
            features[f"block{i}"] = h.transpose(1, 2)  # channels first, like the other families
            if explicit:
                attentions[f"block{i}"] = attn
            if "parts" in self.kdx_expose:
                parts |= {f"q.block{i}": q, f"k.block{i}": k, f"v.block{i}": v}
        h = self.norm(h)
        if self.lm:  # every position predicts the next token: nothing is pooled
            features["embedding"] = h.transpose(1, 2)
            return Outputs(self.head(h), features, attentions, parts, mask)
        features["embedding"] = embedding = self._pooled(h, mask)
        return Outputs(self.head(embedding), features, attentions, parts, mask)

    def _pooled(self, h: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return h.mean(1)
        if self.pool == "cls":
            return h[:, 0]
        if self.pool == "last":
            last = (mask.long().sum(1).clamp_min(1) - 1)[:, None, None].expand(-1, 1, h.shape[-1])
            return h.gather(1, last).squeeze(1)  # a gather, not indexing by arange(B): torch.export keeps the batch dynamic
        w = mask.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


@register_model("transformer", TransformerOptions, inputs=("features", "tokens", "lm", "embed"))
def transformer(opts: TransformerOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return Transformer(opts, input_shape, num_classes)
