"""GPU check: what bf16, stored teacher views and packed trials buy on one GPU, as ratios from one run.

Four sections, each timed and reported on its own (a failing section prints one
line `SECTION n FAILED: ...` and the next one runs; the exit code is 1 if any failed):

  1. Epoch time, fp32 against `train.bf16: true` (bf16 autocast), for a resnet8x4
     student distilled from an online resnet32x4 teacher (`teacher.outputs: online`,
     `data.augment: {crop: 4, flip: true}`). 3 epochs per run, the first dropped as
     warm-up; the mean of the last 2 and the bf16/fp32 ratio. The bf16 run's loss must
     be finite. "fp32" means kdx's default: whatever TF32 setting torch has (printed).
  2. Stored views against online: the same student with `teacher.outputs: views`
     (K = 4 crop/flip views per sample, FKD) against the online teacher. The one-off
     cost of making the views (`prepare_teacher`, the teacher already trained and
     cached), the epoch time of each, their ratio and after how many epochs the views
     pay for themselves. kdx makes the views on the GPU when there is one
     (distill/teacher.py); this section still uses a smaller training set (--n-views).
  3. Trials per minute of `kdx search` run the way a user runs it (a subprocess of
     `python -m workflows.cli search`, CUDA_VISIBLE_DEVICES as it is): 4 trials of a
     student.width choice (resnet8xw, w = 1..4, online resnet32x4 teacher, 2 epochs
     each, fp32), once with `max_concurrent: 1, resources.gpu: 1` and once packed,
     `max_concurrent: 4, resources.gpu: 0.25`. Throughput over the command's wall time
     (Ray start-up, teacher load and report included) and over the trial phase (first
     student run's start to the last one's end, read from the MLflow store). The serial
     search runs first, so it alone pays for cold file caches of Ray's and MLflow's imports.
  4. Transformers on token ids, fp32 against bf16 autocast: kdx's `transformer` and a
     Hugging Face BERT (`family: hf`, built from a config), each a half-depth student
     distilled from an online teacher of its family with KD + cos (DistilBERT's
     losses) on the built-in `khop` task (longer sequences than the CPU benchmark:
     `length` tokens of the induction variant). Epoch times as in section 1, tokens
     per second, and whether the bf16 loss stays finite.

The data are synthetic CIFAR-shaped samples (3x32x32, 100 classes: noise around
a random template per class) from `gpu_sizes.cifar_like`, named in the configs as
`gpu_sizes:cifar_like` (this folder goes on sys.path / PYTHONPATH): no dataset
files are needed, nothing is downloaded. Teachers train for 1 epoch only: their
accuracy does not matter for timing. Every file (KDX_CACHE, the MLflow store,
Ray's and Tune's folders) goes to a temporary folder that is removed at the end.

Every figure comes from one run of each contender (no repeats): read the ratios,
not the absolute seconds, and rerun a section (`--sections 2`) if one looks off.

On a GPU machine (an estimated 3 minutes on one H200, under 5 expected; not yet
measured on one: the sections print their elapsed time, and --n / --n-views /
--epochs / --sections trim a rerun; section 3 reuses the teacher that section 1
trained, and trains its own when section 1 is skipped):

    .venv/bin/python benchmarks/gpu_check.py [--sections 1,2,3] [--n 10000] [--n-views 3000]

On a CPU, to check that the script works (tiny sizes, about 90 s on 2 cores, most
of it Ray's start-up; bf16 is a no-op there, since kdx's autocast is CUDA-only):

    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):  # `distill` and `gpu_sizes:cifar_like` importable when run as a script
    if _p not in sys.path:
        sys.path.insert(0, _p)

from gpu_sizes import GPU, SMOKE, Sizes, arch, data_section, describe_epochs, quiet, run_config, timed_run  # noqa: E402


# --- section 1: fp32 against bf16 ---------------------------------------------------------------


def section_bf16(sz: Sizes) -> None:
    from distill.config import RunConfig
    from distill.data import load_data
    from distill.teacher import prepare_teacher

    fp32 = RunConfig.from_dict(run_config(sz, sz.n, bf16=False))
    bf16 = RunConfig.from_dict(run_config(sz, sz.n, bf16=True))
    data = load_data(fp32.data)
    print(f"\n[1] epoch time, fp32 vs bf16 autocast (train.bf16): student {arch(sz.student)}, online teacher {arch(sz.teacher)}, "
          f"cifar_like 3x32x32, {len(data.y_train)} training samples, batch {sz.batch_size}, augment crop 4 + flip", flush=True)
    if sz.device != "cuda":
        print("    (CPU: kdx's autocast is CUDA-only, so the bf16 run is fp32 too; run only to check the path)")
    t0 = time.perf_counter()
    teacher = prepare_teacher(fp32, data, log=quiet)  # online: the frozen module, trained once and cached (KDX_CACHE)
    print(f"    teacher trained 1 epoch in {time.perf_counter() - t0:.1f} s ({teacher.info.params:,} params; "
          f"its accuracy, {teacher.info.val_acc:.3f}, does not matter for timing)", flush=True)
    t_fp32, r_fp32 = timed_run(fp32, data, teacher)
    m_fp32 = describe_epochs("fp32", t_fp32, r_fp32)
    t_bf16, r_bf16 = timed_run(bf16, data, teacher)
    m_bf16 = describe_epochs("bf16", t_bf16, r_bf16)
    losses = [e.train_loss for e in r_bf16.history] + [v for e in r_bf16.history for v in e.losses.values()]
    finite = all(math.isfinite(v) for v in losses)
    print(f"    student {r_fp32.params:,} params; bf16/fp32 epoch time: {m_bf16 / m_fp32:.2f}x   "
          f"(bf16 loss finite: {'yes' if finite else 'NO'})", flush=True)
    if not finite:
        raise RuntimeError(f"the bf16 run's loss is not finite: {losses}")


# --- section 2: stored views against the online teacher -----------------------------------------------


def section_views(sz: Sizes) -> None:
    import torch

    from distill.config import RunConfig
    from distill.data import load_data
    from distill.teacher import Teacher, get_teacher, prepare_teacher

    views = RunConfig.from_dict(run_config(sz, sz.n_views, outputs="views"))
    online = RunConfig.from_dict(run_config(sz, sz.n_views, outputs="online"))
    data = load_data(views.data)
    n = len(data.y_train)
    print(f"\n[2] teacher views (K = {sz.views}) vs online: student {arch(sz.student)}, teacher {arch(sz.teacher)}, "
          f"{n} training samples (fewer than in [1]: kdx makes the views with the teacher on the CPU), batch {sz.batch_size}", flush=True)
    t0 = time.perf_counter()
    module, info = get_teacher(views, data, log=quiet)  # trained here (1 epoch) or loaded: not part of the views' cost
    print(f"    teacher trained 1 epoch in {time.perf_counter() - t0:.1f} s (not counted below)", flush=True)
    t0 = time.perf_counter()
    with_views = prepare_teacher(views, data, log=quiet)  # loads the cached teacher, makes the views and their outputs, caches them
    t_make = time.perf_counter() - t0
    print(f"    making the views (prepare_teacher, teacher.outputs: views): {t_make:.1f} s one-off = "
          f"{1000 * t_make / (sz.views * n):.2f} ms per view, {sz.views} x {n} views, {torch.get_num_threads()} torch threads", flush=True)
    t_views, r_views = timed_run(views, data, with_views)
    m_views = describe_epochs("views", t_views, r_views)
    t_online, r_online = timed_run(online, data, Teacher(module, info))
    m_online = describe_epochs("online", t_online, r_online)
    saved = m_online - m_views
    payoff = f"the views pay for themselves after {t_make / saved:.1f} epochs" if saved > 0 else "views save nothing per epoch here"
    print(f"    views/online epoch time: {m_views / m_online:.2f}x; {payoff} of one run "
          f"(a search makes them once for all its trials)", flush=True)


# --- section 3: trials packed on one device ----------------------------------------------------------


def experiment_yaml(folder: Path, sz: Sizes, name: str, concurrent: int, resources: dict) -> Path:
    points = "\n".join(f"    - {{student.width: {w}}}" for w in sz.widths)
    res = ", ".join(f"{k}: {v}" for k, v in resources.items())
    d = data_section(sz, sz.n)
    text = f"""experiment: {name}
data: {{name: "{d['name']}", n: {d['n']}, classes: {d['classes']}, augment: {{crop: 4, flip: true}}}}
teacher: {{family: {sz.teacher['family']}, depth: {sz.teacher['depth']}, width: {sz.teacher['width']}, epochs: 1, outputs: online}}
student: {{family: {sz.student['family']}, depth: {sz.student['depth']}, width: 1}}
train: {{epochs: {sz.search_epochs}, batch_size: {sz.batch_size}}}
mix: {{ce: 0.1, kd: 0.9}}
space:
  student.width: {{choice: [{', '.join(str(w) for w in sz.widths)}]}}
search:
  num_samples: {len(sz.widths)}
  max_concurrent: {concurrent}
  sampler: random
  seed: 0
  objectives: {{val_acc: max}}
  scheduler: none
  baselines: false
  seeds: 1
  twins: base_recipe
  storage: {folder / 'tune'}
  enqueue:
{points}
resources: {{{res}}}
"""
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def one_search(folder: Path, sz: Sizes, name: str, concurrent: int, resources: dict) -> tuple[float, float, str]:
    """(wall seconds of the `kdx search` command, seconds from the first student run's start to the last
    one's end, where its teacher came from: "cache" when section 1 trained it)."""
    from mlflow import MlflowClient

    from analysis import schema

    path = experiment_yaml(folder, sz, name, concurrent, resources)
    db = folder / "mlflow.db"
    ray_tmp = tempfile.mkdtemp(prefix="r", dir=folder)  # Ray's socket paths must stay short: folder is under /tmp
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "RAY_TMPDIR": ray_tmp, "MLFLOW_TRACKING_URI": ""}
    cmd = [sys.executable, "-m", "workflows.cli", "search", str(path), "--tracking-uri", f"sqlite:///{db}",
           "--report-dir", str(folder / f"report-{name}")]
    t0 = time.perf_counter()
    # Its own process group, so that a search past its time goes with everything it started (Ray's processes).
    child = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=sz.search_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        tail = " | ".join((stderr.strip() or stdout.strip()).splitlines()[-3:])[-300:] or "(no output)"
        raise RuntimeError(f"kdx search '{name}' ran past {sz.search_timeout} s (--search-timeout); output tail: {tail}") from None
    wall = time.perf_counter() - t0
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout, stderr)
    done = re.search(r"done in \d+ s: (\d+) finished.*?(\d+) failed", proc.stdout)
    if proc.returncode != 0 or done is None or int(done.group(1)) != len(sz.widths):
        tail = " | ".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-4:])[-400:]
        raise RuntimeError(f"kdx search '{name}' exit {proc.returncode}, {done.group(0) if done else 'no summary line'}; tail: {tail}")
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDENT and r.info.status == "FINISHED"]
    if len(runs) != len(sz.widths):
        raise RuntimeError(f"kdx search '{name}': {len(runs)} finished student runs in MLflow, expected {len(sz.widths)}")
    span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    source = re.search(r"^teacher: (\w+)", proc.stdout, re.M)
    return wall, span, source.group(1) if source else "?"


def section_packing(sz: Sizes, folder: Path) -> None:
    k = len(sz.widths)
    unit = "GPU" if sz.device == "cuda" else "CPU"
    (c1, r1), (c2, r2) = sz.serial, sz.packed
    print(f"\n[3] kdx search throughput on one {unit}: {k} trials (student {sz.student['family']}{sz.student['depth']}x w, "
          f"w in {sz.widths}, online teacher {arch(sz.teacher)}, {sz.search_epochs} epoch(s) each, {sz.n} samples), "
          f"{c1} at a time with resources {r1} vs {c2} at a time with {r2}", flush=True)
    results = {}
    for label, name, concurrent, resources in (("serial", "pack-serial", c1, r1), ("packed", "pack-packed", c2, r2)):
        wall, span, source = one_search(folder, sz, name, concurrent, resources)
        results[label] = (wall, span)
        print(f"    {label:<6} ({concurrent} at a time, {resources}): command {wall:6.1f} s -> {60 * k / wall:5.2f} trials/min; "
              f"trial phase {span:6.1f} s -> {60 * k / span:5.2f} trials/min   (teacher: {source})", flush=True)
    (w1, s1), (w2, s2) = results["serial"], results["packed"]
    print(f"    throughput packed/serial: {w1 / w2:.2f}x over the whole command (Ray start-up, teacher load and report included), "
          f"{s1 / s2:.2f}x over the trial phase (first student run's start to the last one's end, from MLflow)", flush=True)


# --- the run ----------------------------------------------------------------------------------------


def header(sz: Sizes, smoke: bool) -> None:
    import platform

    import ray
    import torch

    if smoke:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), smoke mode: tiny sizes, figures mean nothing"
        cuda = torch.version.cuda or "none (CPU build)"
    else:
        device = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), {os.cpu_count()} CPU cores"
        cuda = f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    print(f"kdx gpu_check on {device}")
    print(f"torch {torch.__version__}, CUDA {cuda}, Ray {ray.__version__}, python {platform.python_version()}")
    if not smoke:
        print(f"fp32 here means torch's defaults: TF32 convolutions (cudnn.allow_tf32) {torch.backends.cudnn.allow_tf32}, "
              f"TF32 matmuls {torch.backends.cuda.matmul.allow_tf32}")
    print("every figure is from one run of each contender: read the ratios; epoch times are wall seconds per epoch, "
          "validation included", flush=True)


# --- section 4: transformers on token ids, fp32 against bf16 ------------------------------------------


def token_config(sz: Sizes, family: str, bf16: bool) -> dict:
    t = sz.tokens
    if family == "hf":
        shape = {"family": "hf", "model_type": "bert", "hidden_size": t["dim"], "num_attention_heads": t["heads"],
                 "intermediate_size": 4 * t["dim"]}
        depth_key = "num_hidden_layers"
    else:
        shape, depth_key = {"family": "transformer", "dim": t["dim"], "heads": t["heads"], "pool": "cls"}, "depth"
    return {
        "data": {"name": "khop", "variant": "induction", "hops": 1, "length": t["length"], "train_samples": t["samples"],
                 "test_samples": max(10, t["samples"] // 10)},
        "teacher": {**shape, depth_key: t["depth"], "epochs": 1, "outputs": "online", "batch_size": t["batch"]},
        "student": {**shape, depth_key: t["depth"] // 2},
        "train": {"epochs": sz.epochs, "batch_size": t["batch"], "device": sz.device, "bf16": bf16, "init": "teacher"},
        "losses": {"kd": {"temperature": 2.0}},
        "mix": {"ce": 2.0, "kd": 5.0, "cos": 1.0},
    }


def section_tokens(sz: Sizes) -> None:
    from distill.config import RunConfig
    from distill.data import load_data
    from distill.teacher import prepare_teacher

    t = sz.tokens
    print(f"\n[4] transformers on token ids, fp32 vs bf16 autocast: khop (induction, {t['length']} tokens), {t['samples']} samples, "
          f"batch {t['batch']}; teacher {t['depth']} layers x {t['dim']} ({t['heads']} heads), student {t['depth'] // 2} layers "
          "(init every other teacher layer), online teacher, KD + cos", flush=True)
    if sz.device != "cuda":
        print("    (CPU: kdx's autocast is CUDA-only, so the bf16 run is fp32 too; run only to check the path)")
    for family in ("transformer", "hf"):
        fp32, bf16 = (RunConfig.from_dict(token_config(sz, family, b)) for b in (False, True))
        data = load_data(fp32.data)
        teacher = prepare_teacher(fp32, data, log=quiet)
        t_fp32, r_fp32 = timed_run(fp32, data, teacher)
        m_fp32 = describe_epochs("fp32", t_fp32, r_fp32)
        t_bf16, r_bf16 = timed_run(bf16, data, teacher)
        m_bf16 = describe_epochs("bf16", t_bf16, r_bf16)
        finite = all(math.isfinite(v) for e in r_bf16.history for v in [e.train_loss, *e.losses.values()])
        tokens = len(data.y_train) * t["length"]
        print(f"    {family}: student {r_fp32.params:,} params; {tokens / m_fp32:,.0f} tok/s fp32, {tokens / m_bf16:,.0f} tok/s bf16 "
              f"(epochs with validation); bf16/fp32 epoch time {m_bf16 / m_fp32:.2f}x (bf16 loss finite: {'yes' if finite else 'NO'})",
              flush=True)
        if not finite:
            raise RuntimeError(f"{family}: the bf16 run's loss is not finite")


def one_line(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    where = ""
    if frames:
        f = frames[-1]
        path = Path(f.filename)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        where = f" (at {shown}:{f.lineno} in {f.name})"
    text = " | ".join(f"{type(e).__name__}: {e}".strip().splitlines())
    return text[:600] + where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing")
    ap.add_argument("--sections", default="1,2,3,4", help="which sections to run, e.g. 1,3")
    ap.add_argument("--n", type=int, help="training samples of sections 1 and 3")
    ap.add_argument("--n-views", type=int, help="training samples of section 2")
    ap.add_argument("--epochs", type=int, help="epochs per run in sections 1 and 2 (the first is dropped; >= 2)")
    ap.add_argument("--search-timeout", type=int, help="seconds each `kdx search` of section 3 may take")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = ap.parse_args()
    sz = SMOKE if args.cpu_smoke else GPU
    for key in ("n", "n_views", "epochs", "search_timeout"):
        if getattr(args, key) is not None:
            setattr(sz, key, getattr(args, key))
    if sz.epochs < 2:
        ap.error("--epochs must be >= 2: the first epoch is dropped as warm-up")
    sections = {int(s) for s in args.sections.split(",") if s.strip()}

    folder = Path(tempfile.mkdtemp(prefix="kdxgpu", dir="/tmp"))  # short: Ray's socket paths live under it
    os.environ["KDX_CACHE"] = str(folder / "cache")  # distill/cache.py; the search subprocesses inherit it
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    started = time.perf_counter()
    failed = []
    try:
        import torch

        if not args.cpu_smoke and not torch.cuda.is_available():
            print("gpu_check: torch sees no CUDA device; on a machine without one run it with --cpu-smoke", file=sys.stderr)
            return 2
        header(sz, args.cpu_smoke)
        print(f"temporary folder: {folder}" + ("" if args.keep else " (removed at the end)"), flush=True)
        for number, section in ((1, lambda: section_bf16(sz)), (2, lambda: section_views(sz)), (3, lambda: section_packing(sz, folder)),
                                (4, lambda: section_tokens(sz))):
            if number not in sections:
                continue
            t0 = time.perf_counter()
            try:
                section()
            except Exception as e:  # one line, then the next section
                failed.append(number)
                print(f"SECTION {number} FAILED: {one_line(e)}", flush=True)
            print(f"    section {number}: {time.perf_counter() - t0:.1f} s", flush=True)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # section 3's trials share the GPU with this process
        print(f"\ntotal {time.perf_counter() - started:.1f} s; "
              + (f"FAILED sections: {', '.join(map(str, failed))}" if failed else "all sections passed"), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
