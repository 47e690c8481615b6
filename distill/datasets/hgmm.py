"""A hierarchical Gaussian mixture (`hgmm`): vectors whose classes of one superclass share a centre."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check
from . import Arrays, register_dataset

@dataclass(frozen=True)
class HGMMOptions:
    """Hierarchical Gaussian mixture: classes of one superclass share a centre,
    so a teacher's wrong-class probabilities carry structure (dark knowledge)."""

    classes: int = 100
    superclasses: int = 20
    dim: int = 64
    noise: float = 4.0  # with 4, an MLP teacher reaches about 56% and KD gains +3 to +7 points (measured on a 2-core CPU machine, 2026-11)
    superclass_spread: float = 3.0
    class_spread: float = 1.0
    train_per_class: int = 20
    test_per_class: int = 50

    def __post_init__(self) -> None:
        for key in ("classes", "superclasses", "dim", "train_per_class", "test_per_class"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.classes % self.superclasses == 0, "classes", f"{self.classes} classes do not split into {self.superclasses} superclasses")
        check(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")


def hgmm_centres(opts: HGMMOptions, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    supers = rng.normal(0.0, opts.superclass_spread, (opts.superclasses, opts.dim))
    per_super = opts.classes // opts.superclasses
    return np.repeat(supers, per_super, axis=0) + rng.normal(0.0, opts.class_spread, (opts.classes, opts.dim))


@register_dataset("hgmm", HGMMOptions)
def hgmm(opts: HGMMOptions, seed: int) -> Arrays:
    centres = hgmm_centres(opts, seed)
    rng = np.random.default_rng([seed, 1])

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(opts.classes), per_class)
        x = centres[y] + rng.normal(0.0, opts.noise, (len(y), opts.dim))
        return (x / np.sqrt(opts.dim)).astype(np.float32), y

    x_train, y_train = draw(opts.train_per_class)
    x_test, y_test = draw(opts.test_per_class)
    return Arrays(x_train, y_train, x_test, y_test)

