"""CIFAR ResNets of the distillation literature: `resnet` (He et al.) and `wrn` (Zagoruyko & Komodakis).

`resnet`: He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image
Recognition" (arXiv:1512.03385), the CIFAR network of section 4.2. A 3x3 stem
conv, three stages of n BasicBlocks (3x3 conv, BN, ReLU, 3x3 conv, BN, + the
shortcut, ReLU) with strides 1, 2, 2 and channels 16w, 32w, 64w, global
average pooling, a linear head. `depth` = 6n+2 (8, 14, 20, 32, 44, 56, 110).
`width` w = 4 with depth 8 or 32 is RepDistiller's resnet8x4 / resnet32x4.

`wrn`: Zagoruyko & Komodakis 2016, "Wide Residual Networks" (arXiv:1605.07146),
WRN-d-k with d = `depth` = 6n+4 (16, 22, 28, 40) and k = `width`. A 16-channel
stem conv, three stages of n pre-activation blocks (BN, ReLU, 3x3 conv, BN,
ReLU, dropout, 3x3 conv) with channels 16k, 32k, 64k and strides 1, 2, 2, a
final BN + ReLU, global average pooling, a linear head.

These are the teachers and students of Tian, Krishnan & Isola 2020,
"Contrastive Representation Distillation" (arXiv:1910.10699; code:
HobbitLong/RepDistiller), whose models mdistiller reuses. Modules are named as
in RepDistiller's models/resnet.py and models/wrn.py (`conv1`, `bn1`,
`layer1..3`, `fc`; blocks `conv1, bn1, conv2, bn2, downsample`; WRN
`conv1`, `block1..3.layer`, blocks `bn1, conv1, bn2, conv2, convShortcut`,
then `bn1`, `fc`), so its published CIFAR-100 checkpoints load unchanged:
build with input shape (3, 32, 32) and 100 classes, then
`model.load_state_dict(torch.load(path)["model"])`.

Where the common code differs from the papers we follow RepDistiller, so its
checkpoints load and its numbers are comparable:

- Shortcuts. He et al. used zero-padding identity shortcuts for CIFAR
  (option A, no parameters); RepDistiller, like most distillation code, uses a
  1x1 conv + BN projection (option B, `downsample`) wherever the stride or the
  channels change. Our parameter counts are therefore a little above the
  paper's (resnet20: 0.28M here, 0.27M in the paper).
- Stem width. He et al.'s stem has as many channels as stage 1. RepDistiller's
  x4 networks use num_filters [32, 64, 128, 256]: a 32-channel stem, so the
  first block of stage 1 projects 32 -> 64 at stride 1. We use a stem of
  16 * min(width, 2) channels, which gives its num_filters for w = 1 and w = 4.
- WRN shortcut. As in the authors' code, when a block changes shape its 1x1
  projection reads the pre-activated input (after the block's BN + ReLU), not
  the raw one.
- Pooling. RepDistiller pools with AvgPool2d(8), global only on 32x32 inputs;
  we average over the whole map, the same on CIFAR and right for any size.

Both families take (C, H, W) inputs with Conv2d/BatchNorm2d and (C, L) or (L,)
inputs with Conv1d/BatchNorm1d, as `cnn` does. Features are "stage1",
"stage2", "stage3" (B, C, H, W) or (B, C, L), then "embedding" (B, C), the
pooled map the head reads. We expose post-activation maps: for `resnet` each
stage's output after its last ReLU (RepDistiller's default features; its
`preact=True` gives the sums before that ReLU). A pre-activation WRN has no
activation after a block's sum, so its "stage1" and "stage2" are the raw sums
(RepDistiller's default f1, f2) and "stage3" is taken after the final BN +
ReLU, the map that is pooled into the embedding (RepDistiller's f3 is before
it). Init follows RepDistiller: Kaiming normal (fan_out, relu) convs, BN
weight 1 and bias 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import check
from .base import Outputs, register_model


@dataclass(frozen=True)
class ResNetOptions:
    depth: int = 20  # 6n+2: 8, 14, 20, 32, 44, 56, 110
    width: int = 1  # channel multiplier: stages 16w, 32w, 64w (4 for resnet8x4, resnet32x4)

    def __post_init__(self) -> None:
        ok = self.depth >= 8 and (self.depth - 2) % 6 == 0
        check(ok, "depth", f"must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110), got {self.depth}")
        check(self.width >= 1, "width", f"must be >= 1, got {self.width}")


@dataclass(frozen=True)
class WRNOptions:
    depth: int = 16  # 6n+4: 16, 22, 28, 40
    width: int = 2  # the widen factor k of WRN-d-k: stages 16k, 32k, 64k
    dropout: float = 0.0  # between a block's two convs (the paper used 0.3 on CIFAR; RepDistiller 0)

    def __post_init__(self) -> None:
        ok = self.depth >= 10 and (self.depth - 4) % 6 == 0
        check(ok, "depth", f"must be 6n+4 with n >= 1 (10, 16, 22, 28, 40), got {self.depth}")
        check(self.width >= 1, "width", f"must be >= 1, got {self.width}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")


def _layers(family: str, input_shape: tuple[int, ...]) -> tuple[tuple[int, ...], type, type]:
    """The sample shape as (C, L) or (C, H, W), and the conv and BN classes for it."""
    shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"{family}: input shape {input_shape} is neither 1-D nor 2-D")
    if len(shape) == 2:
        return shape, nn.Conv1d, nn.BatchNorm1d
    return shape, nn.Conv2d, nn.BatchNorm2d


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _pool(h: Tensor) -> Tensor:
    return h.flatten(2).mean(-1)  # global average over L or H x W


# --- resnet ---------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, conv: type, bn: type, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = bn(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = bn(c_out)
        self.downsample = None  # option B: a 1x1 projection where the shape changes
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), bn(c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv1(x)).relu()
        h = self.bn2(self.conv2(h))
        shortcut = x if self.downsample is None else self.downsample(x)
        return (h + shortcut).relu()


class ResNet(nn.Module):
    def __init__(self, opts: ResNetOptions, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape, conv, bn = _layers("resnet", input_shape)
        self.sample_shape = shape
        n = (opts.depth - 2) // 6
        stem = 16 * min(opts.width, 2)  # RepDistiller's num_filters: [16, 16, 32, 64] for w=1, [32, 64, 128, 256] for w=4
        c1, c2, c3 = 16 * opts.width, 32 * opts.width, 64 * opts.width
        self.conv1 = conv(shape[0], stem, 3, padding=1, bias=False)
        self.bn1 = bn(stem)
        self.layer1 = self._stage(conv, bn, stem, c1, n, 1)
        self.layer2 = self._stage(conv, bn, c1, c2, n, 2)
        self.layer3 = self._stage(conv, bn, c2, c3, n, 2)
        self.fc = nn.Linear(c3, num_classes)
        _init(self)

    @staticmethod
    def _stage(conv: type, bn: type, c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*(BasicBlock(conv, bn, c_in if i == 0 else c_out, c_out, stride if i == 0 else 1) for i in range(n)))

    def forward(self, x: Tensor) -> Outputs:
        h = self.bn1(self.conv1(x.reshape(x.shape[0], *self.sample_shape))).relu()
        features = {}
        for i, stage in enumerate((self.layer1, self.layer2, self.layer3), 1):
            h = stage(h)
            features[f"stage{i}"] = h
        embedding = _pool(h)
        features["embedding"] = embedding
        return Outputs(self.fc(embedding), features, {})


@register_model("resnet", ResNetOptions)
def resnet(opts: ResNetOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ResNet(opts, input_shape, num_classes)


# --- wrn ------------------------------------------------------------------------


class WideBlock(nn.Module):
    """Pre-activation basic block; attribute names are RepDistiller's (convShortcut included)."""

    def __init__(self, conv: type, bn: type, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = bn(c_in)
        self.relu1 = nn.ReLU()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = bn(c_out)
        self.relu2 = nn.ReLU()
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.dropout = dropout
        self.convShortcut = None
        if stride != 1 or c_in != c_out:
            self.convShortcut = conv(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(a)  # the projection reads the activated input
        h = self.relu2(self.bn2(self.conv1(a)))
        if self.dropout > 0:
            h = F.dropout(h, p=self.dropout, training=self.training)
        return self.conv2(h) + shortcut


class WideStage(nn.Module):
    """RepDistiller's NetworkBlock: the blocks live in `.layer` (keys `blockN.layer.i.*`)."""

    def __init__(self, conv: type, bn: type, c_in: int, c_out: int, n: int, stride: int, dropout: float):
        super().__init__()
        self.layer = nn.Sequential(
            *(WideBlock(conv, bn, c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, dropout) for i in range(n))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, opts: WRNOptions, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        shape, conv, bn = _layers("wrn", input_shape)
        self.sample_shape = shape
        n = (opts.depth - 4) // 6
        c1, c2, c3 = 16 * opts.width, 32 * opts.width, 64 * opts.width
        self.conv1 = conv(shape[0], 16, 3, padding=1, bias=False)
        self.block1 = WideStage(conv, bn, 16, c1, n, 1, opts.dropout)
        self.block2 = WideStage(conv, bn, c1, c2, n, 2, opts.dropout)
        self.block3 = WideStage(conv, bn, c2, c3, n, 2, opts.dropout)
        self.bn1 = bn(c3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c3, num_classes)
        _init(self)
        nn.init.zeros_(self.fc.bias)  # as RepDistiller's wrn.py

    def forward(self, x: Tensor) -> Outputs:
        h = self.conv1(x.reshape(x.shape[0], *self.sample_shape))
        h1 = self.block1(h)
        h2 = self.block2(h1)
        h3 = self.relu(self.bn1(self.block3(h2)))  # stage3 after the final BN + ReLU: the map the embedding pools
        embedding = _pool(h3)
        features = {"stage1": h1, "stage2": h2, "stage3": h3, "embedding": embedding}
        return Outputs(self.fc(embedding), features, {})


@register_model("wrn", WRNOptions)
def wrn(opts: WRNOptions, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return WideResNet(opts, input_shape, num_classes)
