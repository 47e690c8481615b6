"""Convolutional network, 1-D or 2-D from the input shape.

Input (L,) or (C, L) gives Conv1d, (C, H, W) gives Conv2d. Each of `depth`
blocks halves the spatial size while it is at least 4; with `residual` a block
is two convolutions plus a skip (a 1x1 projection when the shape changes).
The classifier reads the flattened last map (position matters on MNIST-1D:
global pooling cost accuracy there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import check
from .base import Outputs, register_model


@dataclass(frozen=True)
class CNNOptions:
    width: int = 32  # channels of every block
    depth: int = 3
    kernel_size: int = 3
    residual: bool = False

    def __post_init__(self) -> None:
        check(self.width >= 1, "width", f"must be >= 1, got {self.width}")
        check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")
        check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "kernel_size", f"must be odd and >= 1, got {self.kernel_size}")


def _out_size(n: int, k: int, stride: int) -> int:
    return (n + 2 * (k // 2) - k) // stride + 1


class Block(nn.Module):
    def __init__(self, conv: type, c_in: int, c_out: int, k: int, stride: int, residual: bool):
        super().__init__()
        self.conv1 = conv(c_in, c_out, k, stride=stride, padding=k // 2)
        self.conv2 = conv(c_out, c_out, k, padding=k // 2) if residual else None
        self.skip = None
        if residual and (stride != 1 or c_in != c_out):
            self.skip = conv(c_in, c_out, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x).relu()
        if self.conv2 is None:
            return h
        shortcut = x if self.skip is None else self.skip(x)
        return (self.conv2(h) + shortcut).relu()


class CNN(nn.Module):
    def __init__(self, opts: CNNOptions, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"cnn: input shape {input_shape} is neither 1-D nor 2-D")
        self.sample_shape = shape
        conv = nn.Conv1d if len(shape) == 2 else nn.Conv2d
        channels, spatial = shape[0], list(shape[1:])
        blocks = []
        for _ in range(opts.depth):
            stride = 2 if min(spatial) >= 4 else 1
            blocks.append(Block(conv, channels, opts.width, opts.kernel_size, stride, opts.residual))
            spatial = [_out_size(n, opts.kernel_size, stride) for n in spatial]
            channels = opts.width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(opts.width * math.prod(spatial), num_classes)

    def forward(self, x: Tensor) -> Outputs:
        h = x.reshape(x.shape[0], *self.sample_shape)
        features = {}
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            features[f"block{i}"] = h
        embedding = h.flatten(1)
        features["embedding"] = embedding
        return Outputs(self.head(embedding), features, {})


@register_model("cnn", CNNOptions)
def cnn(opts: CNNOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CNN(opts, input_shape, num_classes)
