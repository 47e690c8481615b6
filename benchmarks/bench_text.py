"""Transformers on tokens: the capacity gap by depth, the DistilBERT recipe, and kdx's step speed.

On the built-in depth task (`khop`, table variant: k hops of a lookup, one
per attention layer unless the model composes them; distill/datasets/khop.py):

1. Depth. A 6-layer teacher; students of 1..4 layers at the teacher's width.
   Both arms tuned alike (issue 11's protocol, with issue 23's shared draws):
   k recipes per arm at seed 0 from the SAME lr / weight-decay draws, KD adding
   temperature and kd weight (ce = 1 - kd); each arm's best on validation then
   runs over S seeds; KD minus tuned twin on test, paired by seed, with t and
   the verdict at the 95% critical value.
2. The DistilBERT recipe (Sanh et al. 2019): half the teacher's layers,
   initialised from every other teacher layer, KD + cos at T 2 with
   DistilBERT's weights (kd 5, cos 1, the task's CE in MLM's place at 2),
   over S seeds: its share of the teacher's accuracy, and two paired
   differences, init-from-teacher against random init and cos on against off.
3. Speed: tokens per second of kdx's training step (train.run, CE and cached
   KD) against a bare PyTorch loop on the same model, batch and data, as
   ratios measured in one run (interleaved rounds, medians).

    .venv/bin/python benchmarks/bench_text.py [--seeds 5] [--recipes 3] [--workers 2] [--only depth|distilbert|speed]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import random
import statistics
import time

import torch
import torch.nn.functional as F
from scipy import stats

from distill.config import RunConfig
from distill.data import load_data
from distill.models import as_outputs
from distill.teacher import prepare_teacher
from distill.train import run

DATA = {"name": "khop", "hops": 4, "train_samples": 4000, "test_samples": 2000}
WIDTH = {"family": "transformer", "dim": 32, "heads": 2, "pool": "last"}
TEACHER = {**WIDTH, "depth": 6, "epochs": 40, "lr": 3e-3, "batch_size": 64}
TRAIN = {"epochs": 25, "batch_size": 64, "threads": 1, "device": "cpu"}
DEPTHS = [1, 2, 3, 4]

_DATA = _TEACHER = None


def config(student_depth: int, recipe: dict, seed: int, scratch: bool = False, extra: dict | None = None) -> RunConfig:
    extra = extra or {}
    kd = recipe.get("kd", 0.9)
    mix = extra.get("mix", {"ce": round(1.0 - kd, 6), "kd": kd})
    c = RunConfig.from_dict({
        "seed": seed, "data": DATA, "teacher": TEACHER, "student": {**WIDTH, "depth": student_depth},
        "train": {**TRAIN, "lr": recipe["lr"], "weight_decay": recipe.get("wd", 0.0), **extra.get("train", {})},
        "losses": {"kd": {"temperature": recipe.get("temperature", 4.0)}}, "mix": mix,
    })
    return c.scratch_twin() if scratch else c


def _job(job: tuple) -> tuple:
    key, cfg = job
    torch.set_num_threads(1)
    r = run(cfg, _DATA, _TEACHER if cfg.needs_teacher else None)
    return key, r.val_acc, r.test_acc


def run_all(jobs: list[tuple], workers: int) -> dict:
    if workers <= 1:
        return {k: (v, t) for k, v, t in map(_job, jobs)}
    with mp.get_context("fork").Pool(workers) as pool:
        return {k: (v, t) for k, v, t in pool.imap_unordered(_job, jobs)}


def draws(k: int, seed: int = 0) -> list[dict]:
    """k shared lr / weight-decay draws, the base recipe first; KD crosses them with its own T and kd."""
    rng = random.Random(seed)
    out = [{"lr": 3e-3, "wd": 0.0}]
    while len(out) < k:
        out.append({"lr": float(f"{10 ** rng.uniform(-3.3, -2.0):.3g}"), "wd": float(f"{10 ** rng.uniform(-5, -2):.3g}")})
    kd = [{"temperature": 4.0, "kd": 0.9}, {"temperature": 2.0, "kd": 0.5}]
    while len(kd) < k:
        kd.append({"temperature": float(f"{10 ** rng.uniform(0, 1):.3g}"), "kd": round(rng.uniform(0.1, 0.95), 3)})
    return [{**d, **t} for d, t in zip(out, kd)]


def paired(a: list[float], b: list[float]) -> tuple[float, float, float, str]:
    d = [x - y for x, y in zip(a, b)]
    mean, sd = statistics.mean(d), statistics.stdev(d) if len(d) > 1 else float("nan")
    t = mean / (sd / math.sqrt(len(d))) if len(d) > 1 and sd > 0 else float("nan")
    crit = stats.t.ppf(0.975, len(d) - 1) if len(d) > 1 else float("inf")
    verdict = "distinguishable" if abs(t) >= crit else "within the noise"
    if not math.isfinite(t):
        verdict = "identical on every seed" if sd == 0 and mean == 0 else "same difference on every seed"
    return mean, sd, t, verdict


def fmt(xs: list[float]) -> str:
    return f"{100 * statistics.mean(xs):5.1f} ± {100 * statistics.stdev(xs):3.1f}" if len(xs) > 1 else f"{100 * xs[0]:5.1f}"


def depth_study(seeds: int, k: int, workers: int) -> None:
    recipes = draws(k)
    jobs = [((d, arm, i), config(d, r, 0, scratch=arm == "twin")) for d in DEPTHS for arm in ("kd", "twin") for i, r in enumerate(recipes)]
    t0 = time.time()
    picked = run_all(jobs, workers)
    best = {(d, arm): max(range(k), key=lambda i: (picked[(d, arm, i)][0], -i)) for d in DEPTHS for arm in ("kd", "twin")}
    jobs = [((d, arm, s), config(d, recipes[best[(d, arm)]], s, scratch=arm == "twin")) for d in DEPTHS for arm in ("kd", "twin")
            for s in range(seeds)]
    done = run_all(jobs, workers)
    print(f"\n1. depth ({len(DEPTHS) * 2 * (k + seeds)} runs, {time.time() - t0:.0f} s): test accuracy %, mean ± std over {seeds} seeds, "
          f"each arm's recipe the best of {k} on validation (seed 0), KD - tuned twin paired by seed")
    print(f"   {'layers':>6}  {'KD':>12}  {'tuned twin':>12}  {'KD - twin':>16}  {'t':>6}  verdict            recipes (KD | twin)")
    teacher_acc = _TEACHER.info.test_acc
    for d in DEPTHS:
        kd = [done[(d, "kd", s)][1] for s in range(seeds)]
        tw = [done[(d, "twin", s)][1] for s in range(seeds)]
        mean, sd, t, verdict = paired(kd, tw)
        rk, rt = recipes[best[(d, "kd")]], recipes[best[(d, "twin")]]
        print(f"   {d:>6}  {fmt(kd):>12}  {fmt(tw):>12}  {100 * mean:+6.1f} ± {100 * sd:4.1f}  {t:6.2f}  {verdict:<17}  "
              f"T {rk['temperature']:g} kd {rk['kd']:g} lr {rk['lr']:g} wd {rk['wd']:g} | lr {rt['lr']:g} wd {rt['wd']:g}")
    enough = [d for d in DEPTHS if max(statistics.mean([done[(d, a, s)][1] for s in range(seeds)]) for a in ("kd", "twin")) >= 0.9 * teacher_acc]
    if enough and enough[0] > DEPTHS[0]:
        print(f"   below {enough[0]} layers the student fails whatever it is taught (best arm under 90% of the teacher's {100 * teacher_acc:.1f}%)")
    elif enough:
        print(f"   every depth reaches 90% of the teacher's {100 * teacher_acc:.1f}%")
    else:
        print(f"   no depth tried reaches 90% of the teacher's {100 * teacher_acc:.1f}%")


def distilbert_study(seeds: int, workers: int) -> None:
    half = TEACHER["depth"] // 2
    recipe = {"lr": 3e-3, "temperature": 2.0}
    mix_cos, mix_plain = {"ce": 2.0, "kd": 5.0, "cos": 1.0}, {"ce": 2.0, "kd": 5.0}
    init = {"init": "teacher", "init_layers": "every_other"}
    variants = {
        "recipe": {"mix": mix_cos, "train": init},
        "random init": {"mix": mix_cos},
        "no cos": {"mix": mix_plain, "train": init},
    }
    jobs = [((name, s), config(half, recipe, s, extra=v)) for name, v in variants.items() for s in range(seeds)]
    t0 = time.time()
    done = run_all(jobs, workers)
    acc = {name: [done[(name, s)][1] for s in range(seeds)] for name in variants}
    teacher_acc = _TEACHER.info.test_acc
    share = statistics.mean(acc["recipe"]) / teacher_acc
    print(f"\n2. the DistilBERT recipe ({len(jobs)} runs, {time.time() - t0:.0f} s): {half}-layer student of the {TEACHER['depth']}-layer teacher "
          f"(every other layer), mix {mix_cos}, T 2, {seeds} seeds, test accuracy %")
    print(f"   teacher {100 * teacher_acc:.1f}; student {fmt(acc['recipe'])} = {100 * share:.1f}% of the teacher's "
          f"({'keeps' if share >= 0.97 else 'does not keep'} 97%)")
    for name, label in (("random init", "init from teacher - random init"), ("no cos", "cos on - cos off")):
        mean, sd, t, verdict = paired(acc["recipe"], acc[name])
        print(f"   {label:<32} {100 * mean:+6.1f} ± {100 * sd:4.1f} points, t {t:6.2f}: {verdict}   ({name}: {fmt(acc[name])})")


def _bare_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None, batch: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    order = torch.randperm(len(x))
    x, y = x[order], y[order]
    t_logits = None if t_logits is None else t_logits[order]
    for i in range(0, len(x), batch):
        logits = as_outputs(model(x[i : i + batch])).logits
        if t_logits is None:
            loss = F.cross_entropy(logits, y[i : i + batch])
        else:
            temp = 4.0
            soft = F.kl_div(F.log_softmax(logits / temp, -1), F.log_softmax(t_logits[i : i + batch] / temp, -1), log_target=True,
                            reduction="batchmean") * temp**2
            loss = 0.1 * F.cross_entropy(logits, y[i : i + batch]) + 0.9 * soft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def speed_study(rounds: int = 5, epochs: int = 4) -> None:
    """kdx's epochs timed between its per-epoch reports (the first epoch, the build and the test
    evaluation left out), less its per-epoch validation, timed apart: the training step alone."""
    from distill.train import evaluate

    torch.set_num_threads(1)
    tokens = len(_DATA.x_train) * _DATA.input_shape[0] * (epochs - 1)
    print(f"\n3. speed: tokens per second of training, {len(_DATA.x_train)} samples x {_DATA.input_shape[0]} tokens, "
          f"3-layer student, batch {TRAIN['batch_size']}, one thread, epochs 2..{epochs}, median of {rounds} interleaved rounds")
    for label, kd in (("CE", False), ("cached KD", True)):
        recipe = {"lr": 3e-3, "kd": 0.9, "temperature": 4.0}
        cfg = config(3, recipe, 0, scratch=not kd, extra={"train": {"epochs": epochs}})
        kdx_t, bare_t = [], []
        for _ in range(rounds):
            stamps: list[float] = []
            r = run(cfg, _DATA, _TEACHER if kd else None, report=lambda e: stamps.append(time.perf_counter()))
            t0 = time.perf_counter()
            evaluate(r.model, _DATA.x_val, _DATA.y_val)
            val_s = time.perf_counter() - t0
            kdx_t.append(stamps[-1] - stamps[0] - (epochs - 1) * val_s)
            model = cfg.student.build(_DATA.input_shape, _DATA.num_classes, "student")
            _bare_epoch(model, _DATA.x_train, _DATA.y_train, _TEACHER.outputs.logits if kd else None, TRAIN["batch_size"], 3e-3)  # warm-up
            t0 = time.perf_counter()
            for _ in range(epochs - 1):
                _bare_epoch(model, _DATA.x_train, _DATA.y_train, _TEACHER.outputs.logits if kd else None, TRAIN["batch_size"], 3e-3)
            bare_t.append(time.perf_counter() - t0)
        k, b = statistics.median(kdx_t), statistics.median(bare_t)
        print(f"   {label:<10} kdx {tokens / k:9.0f} tok/s, bare loop {tokens / b:9.0f} tok/s: kdx/bare {b / k:.2f}x")


def main() -> None:
    global _DATA, _TEACHER
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--recipes", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["depth", "distilbert", "speed"])
    args = ap.parse_args()
    # cos in the mix: the cached teacher outputs then hold the hidden states the DistilBERT recipe reads
    base = config(TEACHER["depth"] // 2, {"lr": 3e-3}, 0, extra={"mix": {"ce": 0.1, "kd": 0.9, "cos": 0.1}})
    _DATA = load_data(base.data)
    t0 = time.time()
    _TEACHER = prepare_teacher(base, _DATA, log=lambda s: None)
    i = _TEACHER.info
    print(f"khop (table, {DATA['hops']} hops, alphabet 8): {len(_DATA.y_train)} train / {len(_DATA.y_val)} val / {len(_DATA.y_test)} test; "
          f"teacher {TEACHER['depth']} layers x dim {TEACHER['dim']}: test {100 * i.test_acc:.1f}%, val {100 * i.val_acc:.1f}%, "
          f"{i.params:,} params ({i.source}, {time.time() - t0:.0f} s)")
    if args.only in (None, "depth"):
        depth_study(args.seeds, args.recipes, args.workers)
    if args.only in (None, "distilbert"):
        distilbert_study(args.seeds, args.workers)
    if args.only in (None, "speed"):
        speed_study()


if __name__ == "__main__":
    main()
