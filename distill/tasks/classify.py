"""Classification: one label per sample, scored by accuracy.

Labels are integers 0..C-1; a model's logits are (B, C). Picks are made on
validation accuracy and differences read in points of test accuracy. The
textbook recipe is Hinton et al. 2015's KD at T 4 (kd 0.9, ce 0.1) as most
code runs it, beside their high-temperature regime (T 20).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from ..errors import DataError
from . import Score, Task, register_task

# A validation split this small cannot rank recipes: below 625 samples an accuracy's binomial std reaches 2 points
# (at 50%), and below 10 samples a class a few samples decide a class's share. The split's error is shared by every
# seed of a search (data.seed is fixed), so racing over seeds never averages it away.
SMALL_SPLIT, PER_CLASS = 625, 10


@register_task
class Classify(Task):
    name = "classify"
    score = Score("val_acc", "test_acc", "max", "points of test accuracy", 100.0, "points", "validation accuracy")
    words = "classification"
    model_words = "a classifier"
    objectives = {"val_acc": "max"}
    objective_names = ("val_acc", "val_loss", "params", "latency_ms", "test_agreement", "test_kl")
    refused = {"val_ppl": "val_ppl is a language model's"}
    shown_test = "test_acc"
    model_input = "tokens"
    recipes = ((4.0, 0.9, 0.1),  # Hinton et al. 2015 as most code runs it
               (20.0, 0.9, 0.1))  # Hinton's high-temperature regime
    temperatures = (1.0, 20.0)
    controls = ("shuffled", "same_recipe")

    def kd_loss(self, mix: dict[str, float], spaced: list[str]) -> str:
        return "kd"

    def check_labels(self, arrays: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """Labels 0..C-1 and at least two classes, inputs finite, as many labels as samples.
        Classes no label uses are a warning line."""
        y_train, y_test = _labels(arrays.y_train, "y_train"), _labels(arrays.y_test, "y_test")
        for split, x, y in (("train", arrays.x_train, y_train), ("test", arrays.x_test, y_test)):
            if len(x) != len(y):
                raise DataError(f"data: x_{split} has {len(x)} samples, y_{split} {len(y)} labels")
            if len(y) == 0:
                raise DataError(f"data: the {split} split is empty")
            _finite(x, f"x_{split}")
        classes = np.unique(y_train)
        if len(classes) < 2:
            raise DataError(f"data: y_train has one class only ({classes[0]}): there is nothing to classify")
        num_classes = int(max(y_train.max(), y_test.max())) + 1
        unused = sorted(set(range(num_classes)) - set(classes.tolist()))
        if unused:
            print(f"warning: data: classes {', '.join(map(str, unused[:10]))}{' ...' if len(unused) > 10 else ''} of 0..{num_classes - 1} "
                  "have no training sample; the model still has an output for each", file=sys.stderr)
        return y_train, y_test, num_classes

    def reference(self, data: Any) -> dict[str, float]:
        return {"val_acc": 1.0 / data.num_classes}

    def chance_warning(self, val_acc: float, val_loss: float | None, data: Any) -> str | None:
        """Always answering the commonest class, within two binomial standard errors, is chance."""
        import torch

        y = data.y_val
        n = len(y)
        if n == 0:
            return None
        common = float(torch.bincount(y.long()).max()) / n
        if val_acc <= common + 2 * math.sqrt(max(common * (1 - common), 1e-12) / n):
            return (f"WARNING: the teacher scores val_acc {val_acc:.4f}, where always answering the commonest class scores {common:.4f}: "
                    f"nothing to distil (train it longer, check its labels, or use another teacher)")
        return None

    def split_line(self, data: Any) -> str:
        n, classes = len(data.y_val), data.num_classes
        if n >= SMALL_SPLIT and n >= PER_CLASS * classes:
            return ""
        pool, need = n + len(data.y_train), max(SMALL_SPLIT, PER_CLASS * classes)
        std = 100 * (0.25 / n) ** 0.5
        fix = (f"data.val_fraction: {math.ceil(100 * need / pool) / 100:g} would give {need:,}" if need <= pool / 2 else
               f"even data.val_fraction: 0.5 would give only {pool // 2:,}: more data would fix it")
        return (f"data: the validation split has {n:,} samples ({n / classes:.3g} per class): an accuracy on it is off by up to "
                f"{std:.1f} points (binomial std) on every seed alike, as much as good recipes differ; {fix}")

    def gain_line(self, gains: dict[str, float], what: str, start: bool) -> str:
        line = f"\ndistillation gain (student - {what}, test): {100 * gains['gain']:+.2f} points"
        if start:
            line += f"\nwhat the start bought (same-start twin - random-start twin, test): {100 * gains['start_gain']:+.2f} points"
        return line


def _labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"data: {name} must be one integer label per sample, got shape {y.shape}")
    if y.dtype.kind not in "iub":
        whole = np.isfinite(y) & (y == np.round(y)) if y.dtype.kind == "f" else np.zeros(len(y), bool)
        if not whole.all():
            raise DataError(f"data: {name} must hold integer class labels 0..C-1, got {', '.join(map(str, y[~whole][:3]))}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"data: labels must be integers 0..C-1; {name} has {', '.join(map(str, np.unique(y[y < 0])[:3]))} "
                        f"(its labels run {y.min()}..{y.max()})")
    return y


def _finite(x: Any, name: str, chunk: int = 4096) -> None:
    """Every input value finite, checked in chunks (a memory-mapped file is read once, never whole)."""
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start : start + chunk])
        if part.dtype.kind in "fc" and not np.isfinite(part).all():
            bad = int(np.argwhere(~np.isfinite(part.reshape(len(part), -1)).all(axis=1))[0, 0]) + start
            raise DataError(f"data: {name} has NaN or infinite values (the first in sample {bad})")
