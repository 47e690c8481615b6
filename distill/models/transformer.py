"""Vision-transformer-style encoder over sequence positions or image patches.

Input (L,) or (C, L): tokens are `patch` consecutive positions (all channels);
(C, H, W): tokens are `patch` x `patch` squares. Pre-norm blocks, learned
positional embeddings, mean-pooled tokens into the classifier. Attention is
written out (not `nn.MultiheadAttention`) so every block exposes its
post-softmax map (B, heads, N, N) for attention distillation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import check
from . import Outputs, register_model


@dataclass(frozen=True)
class TransformerOptions:
    dim: int = 32
    depth: int = 2
    heads: int = 4
    patch: int = 4  # positions per token (1-D) or patch side (2-D)
    mlp_ratio: int = 2

    def __post_init__(self) -> None:
        check(self.dim >= 1, "dim", f"must be >= 1, got {self.dim}")
        check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
        check(self.heads >= 1, "heads", f"must be >= 1, got {self.heads}")
        check(self.dim % self.heads == 0, "heads", f"{self.heads} heads do not divide dim {self.dim}")
        check(self.patch >= 1, "patch", f"must be >= 1, got {self.patch}")
        check(self.mlp_ratio >= 1, "mlp_ratio", f"must be >= 1, got {self.mlp_ratio}")


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out), attn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, attn = self.attn(self.norm1(x))
        x = x + a
        return x + self.mlp(self.norm2(x)), attn


class Transformer(nn.Module):
    def __init__(self, opts: TransformerOptions, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)
        p = opts.patch
        if len(shape) == 2:
            if shape[1] % p:
                raise ValueError(f"transformer: patch {p} does not divide the sequence length {shape[1]}")
            tokens, token_size = shape[1] // p, shape[0] * p
        elif len(shape) == 3:
            if shape[1] % p or shape[2] % p:
                raise ValueError(f"transformer: patch {p} does not divide the image size {shape[1:]}")
            tokens, token_size = (shape[1] // p) * (shape[2] // p), shape[0] * p * p
        else:
            raise ValueError(f"transformer: input shape {input_shape} is neither 1-D nor 2-D")
        self.sample_shape, self.patch = shape, p
        self.embed = nn.Linear(token_size, opts.dim)
        self.pos = nn.Parameter(torch.randn(1, tokens, opts.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(opts.dim, opts.heads, opts.mlp_ratio) for _ in range(opts.depth))
        self.norm = nn.LayerNorm(opts.dim)
        self.head = nn.Linear(opts.dim, num_classes)

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
        h = self.embed(self.tokenize(x)) + self.pos
        features, attentions = {}, {}
        for i, block in enumerate(self.blocks, 1):
            h, attn = block(h)
            features[f"block{i}"] = h.transpose(1, 2)  # channels first, like the other families
            attentions[f"block{i}"] = attn
        embedding = self.norm(h).mean(1)
        features["embedding"] = embedding
        return Outputs(self.head(embedding), features, attentions)


@register_model("transformer", TransformerOptions)
def transformer(opts: TransformerOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return Transformer(opts, input_shape, num_classes)
