"""On-policy batches (train.on_policy, GKD) against the same forward-KL run without them, on hmm.

An ablation of one option, not a tuned comparison: the recipe is forward KL's (bench_lm's shared
draws, picked for the off-policy arm on mean validation cross-entropy over selection seeds 100,
101, which favours it), and both arms run it with the online teacher on `--seeds` seeds, paired
by seed; the on-policy arm replaces `--fraction` of its batches with the student's continuations
(`--prompt` data ids, then `--new` sampled ones) that the teacher scores. Prints test
cross-entropy in nats per token against the floor, the paired difference (off - on: > 0 means
on-policy is better) with t and a verdict, and the seconds per run of each arm as a ratio.

    .venv/bin/python benchmarks/bench_on_policy.py [--seeds 5] [--epochs 20] [--fraction 0.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time

import bench_lm
from bench_lm import SELECTION_SEEDS, STUDENTS, TEACHER, candidates, config, fmt, paired, run_all, verdict
from distill.data import load_data
from distill.datasets.hmm import HMMOptions, hmm_floor
from distill.teacher import prepare_teacher


def with_policy(cfg, fraction: float, prompt: int, new: int):
    policy = dataclasses.replace(cfg.train.on_policy, fraction=fraction, prompt=prompt, max_new_tokens=new)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, on_policy=policy))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--prompt", type=int, default=8)
    ap.add_argument("--new", type=int, default=16)
    args = ap.parse_args()
    started = time.perf_counter()
    student = STUDENTS[0]
    cands = candidates(args.trials, random.Random(0))
    base = config(student, cands[0], 0, args.epochs, "token_kd", outputs="online")
    bench_lm._DATA = load_data(base.data)
    bench_lm._TEACHERS["online"] = prepare_teacher(base, bench_lm._DATA, log=lambda s: None)
    floor = hmm_floor(HMMOptions(), base.data.seed).nats
    jobs = [((i, s), config(student, c, s, args.epochs, "token_kd", outputs="online"), "online") for i, c in enumerate(cands) for s in SELECTION_SEEDS]
    sel = run_all(jobs, args.workers)
    pick = min(range(len(cands)), key=lambda i: statistics.mean(sel[(i, s)][0] for s in SELECTION_SEEDS))
    recipe = cands[pick]
    seeds = list(range(args.seeds))
    times: dict[str, list[float]] = {"off": [], "on": []}
    res = {}
    for arm, fraction in (("off", 0.0), ("on", args.fraction)):
        jobs = [((arm, s), with_policy(config(student, recipe, s, args.epochs, "token_kd", outputs="online"), fraction, args.prompt, args.new),
                 "online") for s in seeds]
        t0 = time.perf_counter()
        res |= run_all(jobs, args.workers)
        times[arm].append(time.perf_counter() - t0)
    off, on = [res[("off", s)][1] for s in seeds], [res[("on", s)][1] for s in seeds]
    m, sd, t = paired(off, on)
    print(f"hmm, student dim {student['dim']} depth {student['depth']}, teacher dim {TEACHER['dim']} depth {TEACHER['depth']} online, "
          f"{args.epochs} epochs, {args.seeds} seeds; recipe (forward KL, picked off-policy): lr {recipe['lr']:.3g} wd {recipe['wd']:.3g} "
          f"T {recipe['temperature']:.3g} kd {recipe['kd']:.3g}")
    print(f"  floor {floor:.4f} nats/token")
    print(f"  off-policy          test {fmt(off)}  (+{statistics.mean(off) - floor:.4f} over the floor)")
    print(f"  on-policy {args.fraction:<4g}     test {fmt(on)}  (+{statistics.mean(on) - floor:.4f} over the floor); prompt {args.prompt}, "
          f"{args.new} sampled ids")
    print(f"  off - on {m:+.4f} ± {sd:.4f} (t {t:5.1f}): {verdict(m, sd, t, len(seeds)).replace('KD', 'on-policy')}")
    print(f"  time: on-policy runs took {times['on'][0] / times['off'][0]:.2f}x the off-policy ones (same workers, one after the other)")
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
