"""What distillation buys: paired KD students vs their scratch twins, over seeds.

For each dataset and student width, each seed trains a KD student and its
from-scratch twin with the same initialisation and batch order (the run seed),
so the gain is a paired difference; we print its mean, std and paired t.
Recipe: T=4, mix {ce: 0.1, kd: 0.9}, student lr 1e-2 (KD needs the larger
lr: at 1e-3 it lost 1-4 points on hgmm), Adam, last epoch.

    .venv/bin/python benchmarks/bench_kd_gain.py [--seeds 5] [--only hgmm]
"""

from __future__ import annotations

import argparse
import statistics
import time

from distill.config import RunConfig
from distill.data import load_data
from distill.teacher import prepare_teacher
from distill.train import run

SETUPS = {
    # measured: an MLP teacher 64-512-512-100 reaches about 56%; gains +3 to +7 points over 5 seeds (t 15-26)
    "hgmm": {
        "data": {"name": "hgmm", "classes": 100, "superclasses": 20, "noise": 4.0},
        "teacher": {"family": "mlp", "width": 512, "depth": 2, "epochs": 30, "lr": 1e-3, "batch_size": 64},
        "train": {"epochs": 30, "batch_size": 64},
        "student": {"family": "mlp", "depth": 1},
        "widths": [8, 16, 32, 64],
    },
    "mnist1d": {
        "data": {"name": "mnist1d", "num_samples": 10000},
        "teacher": {"family": "cnn", "width": 64, "depth": 3, "epochs": 60},
        "train": {"epochs": 40, "batch_size": 128},
        "student": {"family": "mlp", "depth": 2},
        "widths": [8, 32, 128],
    },
    "digits": {
        "data": {"name": "digits"},
        "teacher": {"family": "cnn", "width": 64, "depth": 3, "epochs": 60},
        "train": {"epochs": 40, "batch_size": 64},
        "student": {"family": "mlp", "depth": 1},
        "widths": [4, 8, 16, 32],
    },
}


def paired(gains: list[float]) -> tuple[float, float, float]:
    mean = statistics.mean(gains)
    sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
    t = mean / (sd / len(gains) ** 0.5) if sd > 0 else float("inf") * (1 if mean > 0 else -1 if mean < 0 else 0)
    return mean, sd, t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--only", choices=sorted(SETUPS))
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args()
    started = time.perf_counter()
    for name, setup in SETUPS.items():
        if args.only and name != args.only:
            continue
        base = {
            "data": setup["data"], "teacher": setup["teacher"],
            "train": {**setup["train"], "lr": args.lr, "threads": 1, "device": "cpu"},
            "losses": {"kd": {"temperature": 4.0}}, "mix": {"ce": 0.1, "kd": 0.9},
        }
        config = RunConfig.from_dict(base)
        data = load_data(config.data)
        outputs = prepare_teacher(config, data, log=lambda s: None)
        info = outputs.info
        print(f"\n{name}: teacher {config.teacher.model.family} {info.params:,} params, test_acc {100 * info.test_acc:.1f}%; "
              f"{len(data.y_train)} train samples, {data.num_classes} classes, student lr {args.lr:g}, {args.seeds} seeds")
        print(f"  {'student':<16} {'params':>7} {'scratch %':>12} {'KD %':>12} {'gain (points)':>15} {'t':>6}")
        for width in setup["widths"]:
            kd_accs, twin_accs = [], []
            for seed in range(args.seeds):
                c = RunConfig.from_dict({**base, "seed": seed, "student": {**setup["student"], "width": width}})
                kd = run(c, data, outputs)
                twin = run(c.scratch_twin(), data, None)
                kd_accs.append(100 * kd.test_acc)
                twin_accs.append(100 * twin.test_acc)
            mean, sd, t = paired([a - b for a, b in zip(kd_accs, twin_accs)])
            desc = f"{setup['student']['family']} w{width} d{setup['student']['depth']}"
            print(f"  {desc:<16} {kd.params:>7,} {statistics.mean(twin_accs):6.1f} ± {statistics.stdev(twin_accs):3.1f} "
                  f"{statistics.mean(kd_accs):6.1f} ± {statistics.stdev(kd_accs):3.1f} {mean:+7.2f} ± {sd:4.2f} {t:6.1f}", flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
