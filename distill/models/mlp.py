"""Multi-layer perceptron: `depth` hidden layers of `width` units, ReLU."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import check
from .base import Outputs, register_model


@dataclass(frozen=True)
class MLPOptions:
    width: int = 32
    depth: int = 2  # hidden layers

    def __post_init__(self) -> None:
        check(self.width >= 1, "width", f"must be >= 1, got {self.width}")
        check(self.depth >= 1, "depth", f"must be >= 1, got {self.depth}")


class MLP(nn.Module):
    def __init__(self, opts: MLPOptions, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        sizes = [math.prod(input_shape)] + [opts.width] * opts.depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(opts.width, num_classes)

    def forward(self, x: Tensor) -> Outputs:
        h = x.flatten(1)
        features = {}
        for i, layer in enumerate(self.layers, 1):
            h = layer(h).relu()
            features[f"layer{i}"] = h
        features["embedding"] = h
        return Outputs(self.head(h), features, {})


@register_model("mlp", MLPOptions)
def mlp(opts: MLPOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(opts, input_shape, num_classes)
