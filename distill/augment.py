"""Batch-wise data augmentation: pad-crop, flip, noise, mixup and cutmix.

- Pad-crop and flip: zero-pad each spatial side by `crop`, take a random window
  of the original size, reverse the last axis with probability 0.5.
  Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep
  Convolutional Neural Networks" (random crops and horizontal reflections);
  He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition"
  (arXiv:1512.03385), whose CIFAR recipe is a 4-pixel pad and a random 32x32
  crop (torchvision's `RandomCrop(32, padding=4)` is `crop: 4`). On 1-D
  samples the crop is a random shift by up to `crop` steps.
- Mixup: Zhang, Cisse, Dauphin & Lopez-Paz 2018, "mixup: Beyond Empirical Risk
  Minimization" (arXiv:1710.09412).

      lam ~ Beta(a, a),  x = lam * x + (1 - lam) * x[perm],
      loss = lam * loss(y) + (1 - lam) * loss(y[perm])

- CutMix: Yun, Han, Oh, Chun, Choe & Yoo 2019, "CutMix: Regularization
  Strategy to Train Strong Classifiers with Localizable Features"
  (arXiv:1905.04899). A box whose sides are sqrt(1 - lam) of the image's
  (on 1-D samples a segment of 1 - lam of the length), centred at a uniform
  point, is pasted from the partner sample x[perm]; one box for the batch.
  With both mixup and cutmix on, each batch picks one with probability 0.5
  (timm's `Mixup(switch_prob=0.5)`).

Warning: the box is clipped to the sample, so cutmix's lam is recomputed from
the clipped box, lam = 1 - box area / sample area, as the reference code
(clovaai/CutMix-PyTorch) does; the drawn lam is not what is returned. Mixup and
cutmix draw one lam per batch, as both papers' code does, not one per sample.

All of it is batched tensor work on the trial's device (no per-sample Python
loops), seeded by the run seed: an `Augmenter` owns a torch generator on the
device for the tensor draws (offsets, flips, noise, permutations) and a CPU
numpy generator for the per-batch scalars (the mixup/cutmix switch, lam, the
cutmix box), which must be host numbers anyway (lam is a float and the box is
a slice), so nothing waits on the device.

A crop-flip view is stored as `View` (each sample's window start and flip) so
that it can be replayed bit for bit by `apply_view`: the pre-computed teacher
outputs of FKD (Shen & Xing 2022, "A Fast Knowledge Distillation Framework for
Visual Recognition", arXiv:2112.01528) rest on that. Noise and mixing are not
stored, so only a crop-flip config is `replayable`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import check

__all__ = ["AugmentConfig", "View", "Batch", "Augmenter", "spatial_axes", "apply_view"]


@dataclass(frozen=True)
class AugmentConfig:
    """The config section `data.augment`; every field's default is off."""

    crop: int = 0  # pad each spatial side by `crop`, take a random window of the original size; 1-D: shift by <= crop
    flip: bool = False  # reverse the last axis with probability 0.5 (horizontal flip of an image)
    noise: float = 0.0  # std of Gaussian noise added to every input value
    mixup: float = 0.0  # alpha of Beta(alpha, alpha); 0 is off
    cutmix: float = 0.0  # alpha of Beta(alpha, alpha); 0 is off; with mixup on too, each batch picks one (p 0.5)

    def __post_init__(self) -> None:
        check(self.crop >= 0, "crop", f"must be >= 0, got {self.crop}")
        for key in ("noise", "mixup", "cutmix"):
            value = getattr(self, key)
            check(math.isfinite(value) and value >= 0, key, f"must be a finite number >= 0, got {value}")

    @property
    def active(self) -> bool:
        """Any augmentation at all."""
        return self.crop > 0 or self.flip or self.noise > 0 or self.mixup > 0 or self.cutmix > 0

    @property
    def replayable(self) -> bool:
        """Only crop and flip, what a stored `View` replays (noise and mixing are not stored).
        True also when inactive: the identity is the all-zero, unflipped view."""
        return self.noise == 0 and self.mixup == 0 and self.cutmix == 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (== on tensors is elementwise)
class View:
    """One augmented view of N samples: each sample's window start per spatial
    axis and its flip. Stored so the view can be replayed exactly (FKD, Shen &
    Xing 2022)."""

    offsets: Tensor  # (N, S) int64, each in [0, 2*crop]; S = 1 for (D,) or (C, L) samples, 2 for (C, H, W)
    flip: Tensor  # (N,) bool

    def __post_init__(self) -> None:
        if self.offsets.ndim != 2 or self.flip.shape != self.offsets.shape[:1]:
            raise ValueError(f"view: offsets {tuple(self.offsets.shape)} must be (N, S) and flip {tuple(self.flip.shape)} (N,)")

    def __len__(self) -> int:
        return self.offsets.shape[0]

    def index(self, idx: Tensor | slice) -> View:
        """The rows `idx` of both tensors."""
        return View(self.offsets[idx], self.flip[idx])

    def to(self, device: torch.device | str) -> View:
        return View(self.offsets.to(device), self.flip.to(device))


@dataclass(frozen=True, eq=False)
class Batch:
    """One augmented batch and how to weigh its two label sets."""

    x: Tensor  # the augmented inputs
    y: Tensor  # labels of x (the first of each mixed pair)
    y_mixed: Tensor | None  # labels of the partner samples when mixed, else None
    lam: float  # weight of y: a loss is lam * loss(y) + (1 - lam) * loss(y_mixed); 1.0 when not mixed
    view: View | None = None  # the crop-flip view applied (before noise and mixing); None when crop and flip are off


def spatial_axes(sample_shape: tuple[int, ...]) -> int:
    """1 for (D,) or (C, L) samples, 2 for (C, H, W)."""
    if len(sample_shape) in (1, 2):
        return 1
    if len(sample_shape) == 3:
        return 2
    raise ValueError(f"augment: sample shape {tuple(sample_shape)} is neither (D,), (C, L) nor (C, H, W)")


# How the windows are taken, timed on a (128, 3, 32, 32) float32 batch, crop 4,
# random flips, CPU (2 threads, torch 2.13; best of 9 x 50 runs, noisy machine):
#   unfold the padded tensor into its (2c+1)^2 windows (a view), pick each
#   sample's by advanced indexing, then torch.where for the flips     ~0.65 ms
#   (the pick alone ~0.46 ms; F.pad alone ~0.14 ms; the flip where ~0.23 ms)
#   one gather with the flip folded into the column index:
#     four broadcast index tensors                                    ~1.6 ms
#     channel axis sliced, (B, H, W, C) result permuted back          ~1.6 ms
#     one flat int64 index of B*C*H*W into the padded tensor          ~0.9 ms
#   two torch.gather passes (rows, then columns)                      ~1.1 ms
#   gather from the unpadded input with clamped indices and a mask    ~0.8 ms
# so the unfold pick is kept; the flip where is skipped when a CPU view has no
# flip (a view on an accelerator is not read back: that would wait on it).
def apply_view(x: Tensor, view: View, crop: int) -> Tensor:
    """Deterministic: pad x (B, *sample_shape) by `crop` with zeros on each
    spatial axis, take each sample's window at view.offsets, flip where
    view.flip. Flat (B, D) input is treated as (B, 1, D) and returned as
    (B, D). Bit-identical for the same inputs (it is pure gathering).

    Offsets outside [0, 2*crop] are an indexing error (on CUDA a device-side
    assert); they are not checked here, which would read the view back."""
    if crop < 0:
        raise ValueError(f"augment: crop must be >= 0, got {crop}")
    flat = x.ndim == 2
    h = x.unsqueeze(1) if flat else x
    s = spatial_axes(tuple(x.shape[1:]))
    if view.offsets.shape != (x.shape[0], s):
        raise ValueError(f"augment: view offsets {tuple(view.offsets.shape)} do not fit a batch {tuple(x.shape)} ({s} spatial axes)")
    view = view.to(x.device)
    flips = view.flip.device.type != "cpu" or bool(view.flip.any())
    if crop == 0 and not flips:
        return x  # the identity view: x itself, not a copy
    if crop > 0:
        size = h.shape[2:]
        windows = F.pad(h, (crop, crop) * s)
        for axis, n in enumerate(size):  # a view of every window: (B, C, 2c+1, [2c+1,] *size)
            windows = windows.unfold(2 + axis, n, 1)
        rows = torch.arange(h.shape[0], device=x.device)
        h = windows[(rows, slice(None), *view.offsets.unbind(1))]  # advanced indices around a slice: (B, C, *size)
    if flips:
        h = torch.where(view.flip.view(-1, *(1,) * (h.ndim - 1)), h.flip(-1), h)
    return h.squeeze(1) if flat else h


def _same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` matches `cuda:0` (a generator made for "cuda" may not name its index)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class Augmenter:
    """Draws and applies the augmentation of `cfg`, one batch per call, seeded by `seed`.

    x and y must live on `device`, the device of the tensor generator."""

    def __init__(self, cfg: AugmentConfig, seed: int, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)  # offsets, flips, noise, permutations
        self.generator.manual_seed(seed)
        self.rng = np.random.default_rng(seed)  # per-batch host scalars: the switch, lam, the cutmix box

    def draw_view(self, n: int, sample_shape: tuple[int, ...]) -> View:
        """Offsets uniform in [0, 2*crop], flips with p 0.5 when cfg.flip, else none."""
        s, device = spatial_axes(tuple(sample_shape)), self.device
        crop = self.cfg.crop
        if crop > 0:
            offsets = torch.randint(0, 2 * crop + 1, (n, s), generator=self.generator, device=device)
        else:
            offsets = torch.zeros(n, s, dtype=torch.int64, device=device)
        if self.cfg.flip:
            flip = torch.rand(n, generator=self.generator, device=device) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=device)
        return View(offsets, flip)

    def __call__(self, x: Tensor, y: Tensor) -> Batch:
        """A fresh view (draw_view + apply_view), then noise, then mixup or
        cutmix (pairs with a random permutation of the batch)."""
        cfg = self.cfg
        if not cfg.active:
            return Batch(x, y, None, 1.0)
        if not _same_device(x.device, self.device):
            raise ValueError(f"augment: inputs on {x.device}, but the augmenter draws on {self.device}")
        view, fresh = None, False  # fresh: x is our own tensor, safe to write in place
        if cfg.crop > 0 or cfg.flip:
            view = self.draw_view(x.shape[0], tuple(x.shape[1:]))
            out = apply_view(x, view, cfg.crop)
            x, fresh = out, out is not x  # x itself only for the identity view
        if cfg.noise > 0:
            x, fresh = x + cfg.noise * torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype), True
        if cfg.mixup == 0 and cfg.cutmix == 0:
            return Batch(x, y, None, 1.0, view)
        use_cutmix = cfg.cutmix > 0 and (cfg.mixup == 0 or self.rng.random() < 0.5)
        alpha = cfg.cutmix if use_cutmix else cfg.mixup
        lam = float(self.rng.beta(alpha, alpha))
        perm = torch.randperm(x.shape[0], generator=self.generator, device=x.device)
        if use_cutmix:
            box, lam = self._box(tuple(x.shape[1:]), lam)
            x = x if fresh else x.clone()
            x[box] = x[box][perm]  # the right side is a copy, so writing in place is safe
        else:
            x = lam * x + (1 - lam) * x[perm]
        return Batch(x, y, y[perm], lam, view)

    def _box(self, sample_shape: tuple[int, ...], lam: float) -> tuple[tuple[slice, ...], float]:
        """CutMix's box (Yun et al.'s `rand_bbox`), as an index of x, and lam recomputed from it once clipped."""
        size = sample_shape[-spatial_axes(sample_shape):]
        frac = math.sqrt(1.0 - lam) if len(size) == 2 else 1.0 - lam
        box = []
        for n in size:
            cut, centre = int(n * frac), int(self.rng.integers(n))
            box.append(slice(min(max(centre - cut // 2, 0), n), min(max(centre + cut // 2, 0), n)))
        area = math.prod(b.stop - b.start for b in box)
        return (Ellipsis, *box), 1.0 - area / math.prod(size)
