"""The front a search buys for its compute: kdx's default sampler against plain Optuna's (issue 23).

On two tasks (hgmm and mnist1d), the same space (student family x width x depth x
temperature x kd weight x lr) and the same budget of trial epochs (every trial runs the
full epochs, no scheduler), over several search seeds, for each sampler:

  kdx     : kdx's defaults: `search.sampler: auto` (workflows/sampling.py) after its warm start
            (the textbook recipes and a size ladder, workflows/warm.py)
  kdx-c3  : the same with its front confirmed on 3 seeds (`search.confirm: 3`, workflows/confirm.py):
            the ablation that says whether confirming the front pays for its runs
  random  : Optuna's RandomSampler
  nsga2   : NSGA-II at Optuna's defaults (population 50)
  tpe     : plain multi-objective TPE (Optuna's defaults)

Every contender runs through `kdx search`; the plain samplers with `search.warm_start: false`,
so they run as plain Optuna does. `search.baselines: false`: the student runs only, so the
compute is their training seconds plus the teacher's. The budget is counted in student runs of
the same epochs: kdx-c3's confirmation repeats spend it as trials do, so per search seed kdx-c3
runs first with `--trials` trials, and every other contender then gets as many trials as it
made runs (trials plus repeats). kdx-c3's front stands on means over seeds, the others' on one
seed each: a front of single runs keeps its luckiest seeds, so its validation hypervolume
flatters it; the test hypervolume of the exported front is the figure that does not, and
validation minus test says how far each front's own figures can be trusted.

It prints, from one run:
- the hypervolume of the validation front (params min, val_acc max; the reference fixed
  before the first trial: chance accuracy and the largest student's size; exact in 2-D) at
  1/4, 1/2 and the whole budget, mean +- std over the search seeds;
- the compute kdx needed to reach random search's final hypervolume, as a fraction of
  random's, teacher included (goal <= 1/3), beside the teacher's own share of random's compute
  (a floor no sampler goes below) and the same fraction over the trials alone; and kdx against
  the best plain Optuna sampler at each budget, paired over search seeds (goal: at least equal
  at every budget, ahead at the full one);
- the test-set hypervolume of the exported front, validation minus test, and kdx's test
  hypervolume against every other contender's, paired over search seeds.

    KDX_CACHE=/tmp/benchcache .venv/bin/python benchmarks/bench_front.py [--seeds 3] [--trials 24] [--tasks hgmm,mnist1d]
    .venv/bin/python benchmarks/bench_front.py --reprint /tmp/bench-front-XXXX   # the figures of a finished run again
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Ray on loopback only: a local Ray started with this variable at 0 binds every port to 127.0.0.1 (with
# Ray 2.60 on Linux it otherwise listens on all interfaces, and rewrites --node-ip-address 127.0.0.1 to the
# machine's network address). Joining a multi-node cluster needs it unset (docs/cluster.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLERS = ("kdx-c3", "kdx", "random", "nsga2", "tpe")
KDX = ("kdx", "kdx-c3")
CONFIRMED = "kdx-c3"  # runs first: its runs (trials and repeats) are every other contender's trials
TASKS = {
    # 200 samples a class and a fifth held out: 800 validation samples (binomial std about 1.6 points at 30%);
    # hgmm's default 20 a class left 40, where one sample is 2.5 points and the front is noise
    "hgmm": dict(data="{name: hgmm, classes: 20, superclasses: 4, dim: 16, train_per_class: 200, val_fraction: 0.2}",
                 teacher="{family: mlp, width: 128, depth: 2, epochs: 20}", epochs=10),
    "mnist1d": dict(data="{name: mnist1d, num_samples: 4000, val_fraction: 0.2}", teacher="{family: cnn, width: 64, depth: 3, epochs: 30}",
                    epochs=10),
}
SPACE = """  student.family: {choice: [mlp, cnn]}
  student.width: {int: [4, 64], log: true}
  student.depth: {int: [1, 3]}
  losses.kd.temperature: {float: [1.0, 16.0], log: true}
  mix.kd: {float: [0.1, 1.0]}
  train.lr: {float: [1.0e-3, 3.0e-2], log: true}"""


def _space() -> list:
    import yaml

    from search_spaces.space import parse_space

    return parse_space(yaml.safe_load(SPACE))


def config(folder: Path, task: str, sampler: str, seed: int, trials: int) -> Path:
    t = TASKS[task]
    name = f"{task}-{sampler}-{seed}"
    path = folder / f"{name}.yaml"
    path.write_text(f"""experiment: {name}
data: {t['data']}
teacher: {t['teacher']}
student: {{family: mlp, width: 32, depth: 2}}
train: {{epochs: {t['epochs']}, batch_size: 128, lr: 0.01}}
losses: {{kd: {{temperature: 4.0}}}}
mix: {{ce: 0.1, kd: 0.9}}
space:
{SPACE}
search:
  num_samples: {trials}
  max_concurrent: 2
  sampler: {"auto" if sampler in KDX else sampler}
  warm_start: {"true" if sampler in KDX else "false"}
  seed: {seed}
  objectives: {{val_acc: max, params: min}}
  scheduler: none
  baselines: false
  seeds: 1
  confirm: {3 if sampler == CONFIRMED else 1}
resources: {{cpu: 1, gpu: 0}}
""")
    return path


def run_search(folder: Path, path: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "workflows.cli", "search", str(path), "--report-dir", f"report-{path.stem}"], cwd=folder, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{path.name}: kdx search failed\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return time.monotonic() - t0


def curve(folder: Path, name: str) -> dict:
    """Hypervolume after each trial (in start order), the compute spent by then, and the exported front's test hypervolume."""
    from analysis import schema
    from analysis.frontier import frontier_info
    from analysis.pareto import front_hypervolume, hypervolume_history
    from analysis.runs import load_runs

    exp = load_runs(f"sqlite:///{folder / 'mlflow.db'}", name)
    objectives, reference = exp.search.objectives, exp.search.reference
    hv = hypervolume_history(exp.runs, objectives, reference)  # after each student run, a repeat counting at its trial's mean
    box = float(np.prod([abs(reference[k] - (1.0 if objectives[k] == "max" else 0.0)) for k in objectives]))  # the volume a perfect front would have
    students = exp.runs[exp.runs.role == schema.ROLE_STUDENT].sort_values("start_time", kind="stable")
    teacher_s = float(np.nan_to_num(students.get(schema.TEACHER_TRAIN_S, np.zeros(1)).astype(float).max()))
    compute = teacher_s + np.cumsum(students[schema.TRAIN_S].astype(float).fillna(0.0).to_numpy())
    best = frontier_info(exp).models.best
    test = best.assign(**{schema.VAL_ACC: best[schema.TEST_ACC], "role": schema.ROLE_STUDENT, "status": "FINISHED", "stopped_early": False})
    return {"hv": hv.hypervolume.to_numpy() / box, "compute": compute, "teacher": teacher_s,
            "test_hv": front_hypervolume(test, objectives, reference) / box}


def at(values: np.ndarray, fraction: float, budget: int | None = None) -> float:
    """The value after `fraction` of the budget (in runs; default the curve's own length)."""
    n = budget or len(values)
    return float(values[min(len(values), max(1, int(round(fraction * n)))) - 1])


def paired_t(d: np.ndarray) -> tuple[float, str]:
    """The paired t over search seeds of differences d, and the verdict in words at the 95% two-sided critical t."""
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 and d.std(ddof=1) > 0 else float("nan")
    crit = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(len(d), 2.26)
    word = ("identical on every seed" if not d.any() else
            f"{'ahead' if d.mean() > 0 else 'behind'}, distinguishable" if t == t and abs(t) >= crit else "within the noise")
    return t, word


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--tasks", default="hgmm,mnist1d")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--reprint", help="a folder an earlier run left: print its figures again, training nothing")
    args = ap.parse_args()
    folder = Path(args.reprint) if args.reprint else Path(tempfile.mkdtemp(prefix="bench-front-"))
    samplers = args.samplers.split(",")
    print(f"bench_front: {args.trials} trials x {args.seeds} search seeds per sampler, in {folder}")
    if "kdx" in samplers:
        from workflows.sampling import choose_sampler

        print("kdx's sampler here: " + choose_sampler("auto", _space(), args.trials, 2, 2).describe())
    for task in args.tasks.split(","):
        res: dict[str, list[dict]] = {s: [] for s in samplers}
        wall: dict[str, float] = {s: 0.0 for s in samplers}
        budgets = []
        for seed in range(args.seeds):
            budget = args.trials
            for s in sorted(samplers, key=lambda s: s != CONFIRMED):  # interleaved by seed: the machine's drift falls on all alike
                path = folder / f"{task}-{s}-{seed}.yaml" if args.reprint else config(folder, task, s, seed, budget)
                wall[s] += 0.0 if args.reprint else run_search(folder, path)
                res[s].append(curve(folder, path.stem))
                if s == CONFIRMED:
                    budget = len(res[s][-1]["hv"])
            budgets.append(budget)
        first = f"{CONFIRMED} {args.trials} trials and its repeats, {', '.join(map(str, budgets))} runs per search seed, the others as many trials" \
            if CONFIRMED in samplers else f"{args.trials} trials"
        print(f"\n## {task}: {TASKS[task]['epochs']} epochs a run; {first}; hypervolume of the validation "
              f"front as a fraction of the reference box (mean +- std over {args.seeds} search seeds)")
        print(f"{'sampler':<8} {'1/4 budget':>16} {'1/2 budget':>16} {'full':>16} {'test hv (export)':>18} {'val - test':>11} {'wall s':>8}")
        summary = {}
        for s in samplers:
            rows = [[at(r["hv"], f, b) for f in (0.25, 0.5, 1.0)] for r, b in zip(res[s], budgets)]
            mean, std = np.mean(rows, axis=0), np.std(rows, axis=0, ddof=1) if len(rows) > 1 else np.zeros(3)
            test = [r["test_hv"] for r in res[s]]
            summary[s] = mean
            cells = " ".join(f"{m:>9.4f} +- {d:<4.3f}" for m, d in zip(mean, std))
            gap = np.mean([r["hv"][-1] - r["test_hv"] for r in res[s]])  # what the front's own figures promise beyond what ships
            print(f"{s:<8} {cells} {np.mean(test):>11.4f} +- {np.std(test):.3f} {gap:>+11.4f} "
                  + ("      -" if args.reprint else f"{wall[s] / args.seeds:>7.0f}"))
        if "kdx" in res and "random" in res:
            fractions, trials_only, floor = [], [], []
            for k, r in zip(res["kdx"], res["random"]):
                target = r["hv"][-1]
                reached = np.nonzero(k["hv"] >= target - 1e-12)[0]
                fractions.append(k["compute"][reached[0]] / r["compute"][-1] if len(reached) else float("nan"))
                trials_only.append((k["compute"][reached[0]] - k["teacher"]) / (r["compute"][-1] - r["teacher"]) if len(reached) else float("nan"))
                floor.append(r["teacher"] / r["compute"][-1])
            ok = [f for f in fractions if f == f]
            show = lambda fs: ", ".join("not reached" if f != f else f"{f:.2f}x" for f in fs)  # noqa: E731
            print(f"compute kdx needed to reach random search's final hypervolume: {show(fractions)} of random's, teacher included "
                  f"(per seed; goal <= 0.33); reached in {len(ok)} of {len(fractions)}. The teacher alone is "
                  f"{show(floor)} of random's compute, a floor no sampler goes below; the trials alone: {show(trials_only)}")
        plain = [s for s in samplers if s not in KDX]
        if "kdx" in summary and plain:
            for i, label in enumerate(("1/4", "1/2", "full")):
                top = max(plain, key=lambda s: summary[s][i])
                diff = summary["kdx"][i] - summary[top][i]
                f = (0.25, 0.5, 1.0)[i]
                d = np.array([at(k["hv"], f, b) - at(o["hv"], f, b) for k, o, b in zip(res["kdx"], res[top], budgets)])
                t, word = paired_t(d)
                print(f"  at {label} budget: kdx {summary['kdx'][i]:.4f} against the best plain sampler ({top}) {summary[top][i]:.4f}: "
                      f"{diff:+.4f}, paired over search seeds t {t:.2f} ({word})")
        if "kdx" in res and len(samplers) > 1:
            print("  the exported front on test (no lucky validation seed in it), kdx minus each, paired over search seeds:")
            for s in [s for s in samplers if s != "kdx"]:  # kdx-c3 too: whether confirming the front paid for its runs
                d = np.array([k["test_hv"] - o["test_hv"] for k, o in zip(res["kdx"], res[s])])
                t, word = paired_t(d)
                print(f"    {s:<7} {d.mean():+.4f} +- {d.std(ddof=1) if len(d) > 1 else 0.0:.4f}, t {t:.2f} ({word})")


if __name__ == "__main__":
    main()
