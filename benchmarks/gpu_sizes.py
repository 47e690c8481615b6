"""benchmarks/gpu_check.py's sizes and the pieces its sections share: the synthetic CIFAR-shaped
data (`cifar_like`, named in the configs as `gpu_sizes:cifar_like`), the GPU and CPU-smoke sizes,
the run config of sections 1-2 and a run timed epoch by epoch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


def cifar_like(n: int = 10000, classes: int = 100, seed: int = 0):
    """n CIFAR-shaped training samples (3x32x32 float32) and n/5 test samples: Gaussian
    noise around one random template per class, so a network can learn something."""
    rng = np.random.default_rng([seed, 7])
    templates = rng.standard_normal((classes, 3, 32, 32), dtype=np.float32)

    def draw(m: int):
        y = rng.integers(0, classes, m)
        x = rng.standard_normal((m, 3, 32, 32), dtype=np.float32)
        x += 0.5 * templates[y]
        return x, y

    x_train, y_train = draw(n)
    x_test, y_test = draw(max(classes, n // 5))
    return x_train, y_train, x_test, y_test


@dataclass
class Sizes:
    device: str
    n: int  # training samples of sections 1 and 3 (before the 10% validation split)
    n_views: int  # section 2's, smaller: K views of every sample are made before it trains
    classes: int
    epochs: int  # per run in sections 1 and 2; the first is dropped
    student: dict
    teacher: dict
    widths: list  # section 3's student.width choices, one trial each
    search_epochs: int
    serial: tuple  # (max_concurrent, resources) of section 3's first search
    packed: tuple  # ... and of its second
    batch_size: int = 128
    views: int = 4
    search_timeout: int = 240  # seconds per `kdx search` command
    tokens: dict = field(default_factory=dict)  # section 4: khop size, kdx transformer and BERT shapes
    notes: list = field(default_factory=list)


GPU = Sizes(device="cuda", n=10000, n_views=3000, classes=100, epochs=3,
            student={"family": "resnet", "depth": 8, "width": 4}, teacher={"family": "resnet", "depth": 32, "width": 4},
            widths=[1, 2, 3, 4], search_epochs=2, serial=(1, {"cpu": 1, "gpu": 1}), packed=(4, {"cpu": 1, "gpu": 0.25}),
            tokens={"samples": 20000, "length": 128, "dim": 256, "heads": 8, "depth": 6, "batch": 64})
SMOKE = Sizes(device="cpu", n=256, n_views=128, classes=10, epochs=2,
              student={"family": "resnet", "depth": 8, "width": 1}, teacher={"family": "resnet", "depth": 14, "width": 1},
              widths=[1, 2], search_epochs=1, serial=(1, {"cpu": 1}), packed=(2, {"cpu": 0.5}), search_timeout=300,
              tokens={"samples": 200, "length": 16, "dim": 16, "heads": 2, "depth": 2, "batch": 32})


def arch(m: dict) -> str:
    return f"{m['family']}{m['depth']}x{m['width']}"


def data_section(sz: Sizes, n: int) -> dict:
    return {"name": "gpu_sizes:cifar_like", "n": n, "classes": sz.classes, "augment": {"crop": 4, "flip": True}}


def run_config(sz: Sizes, n: int, outputs: str = "online", bf16: bool = False, epochs: int | None = None) -> dict:
    return {
        "data": data_section(sz, n),
        "teacher": {**sz.teacher, "epochs": 1, "outputs": outputs, "views": sz.views},
        "student": dict(sz.student),
        "train": {"epochs": epochs or sz.epochs, "batch_size": sz.batch_size, "device": sz.device, "bf16": bf16},
        "mix": {"ce": 0.1, "kd": 0.9},
    }


def quiet(_: str) -> None:
    pass


def timed_run(config, data, teacher):
    """(seconds of each epoch, the RunResult): a stamp at the start and after every epoch's report.
    kdx syncs with the device each epoch (the loss and the validation accuracy become floats)."""
    from distill.train import run

    stamps = [time.perf_counter()]
    result = run(config, data, teacher, report=lambda e: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])], result


def describe_epochs(label: str, times: list[float], result) -> float:
    """Print one run's epochs; return the mean of those after the first (the warm-up)."""
    rest = times[1:]
    mean = sum(rest) / len(rest)
    last = result.history[-1]
    print(f"    {label:<7} epoch 1 (warm-up, dropped) {times[0]:6.2f} s; epochs 2-{len(times)}: "
          f"{' '.join(f'{t:.2f}' for t in rest)} s -> mean {mean:.3f} s   last train_loss {last.train_loss:.4f}, val_acc {last.val_acc:.3f}",
          flush=True)
    return mean
