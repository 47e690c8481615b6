"""What distillation bought, per front architecture, with both arms tuned (workflows/gain.py).

`gain_info(exp)` reads the arm runs (`kdx.arm`, `kdx.gain_arch`): each searched
arm's winner is its best candidate on validation, followed over its seeds; the
controls are the KD winner's. Every comparison is a paired difference of test
accuracy over the seeds both arms have, with t = mean / (std / sqrt n), and is
called distinguishable from zero only when |t| reaches the two-sided 95%
critical value of Student's t with n - 1 degrees of freedom; otherwise the
report says the difference is within the noise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from . import schema
from .runs import Experiment, column, paired

__all__ = ["GainInfo", "gain_info", "no_gain_reason", "ARMS", "PROTOCOL", "verdict_line", "t_critical"]

ARMS = {
    "kd": "KD, recipe searched",
    "twin": "tuned twin (labels only, lr and weight decay searched)",
    "smooth": "label-smoothing control (smoothing searched too)",
    "shuffled": "dark-knowledge control (KD winner, non-target probabilities shuffled)",
    "same_recipe": "same-recipe twin (KD winner's recipe, labels only)",
}
SEARCHED = ("kd", "twin", "smooth")
CONTROLS = ("twin", "smooth", "shuffled")  # what KD must beat: the best of them

PROTOCOL = (
    "Equal-budget protocol: for every architecture on the Pareto front, KD and two labels-only arms each get "
    "{k} recipe run(s) of the search's epochs at the base seed: KD over temperature, kd weight (ce = 1 - kd) and lr, "
    "starting from the front student's own recipe and the textbook ones (T 4 with kd 0.9; T 20; the base config); the "
    "tuned twin over lr and weight decay; the label-smoothing control over lr, weight decay and smoothing. Each arm's "
    "best on validation is repeated over {s} seed(s), beside two controls of the KD winner at the same seeds (its "
    "teacher's non-target probabilities shuffled; its recipe on labels only). Differences are of test accuracy, "
    "paired by seed (same init and batch order)."
)


class GainInfo(NamedTuple):
    arms: pd.DataFrame  # arch, params, arm, run_id, recipe, n, test_mean, test_std, val_std
    pairs: pd.DataFrame  # arch, comparison, n, mean, std, t, distinguishable
    verdicts: pd.DataFrame  # one row per front architecture: the gain, the best control, the compute behind it
    noise: float  # the objective's noise: median std of val_acc over seeds of one config (NaN with one seed)
    recipe_trials: int
    seeds: int


def t_critical(n: int) -> float:
    """The two-sided 95% critical value of Student's t with n - 1 degrees of freedom."""
    if n < 2:
        return float("inf")
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def _recipe(row: pd.Series, arm: str) -> str:
    def g(key: str) -> float:
        v = row.get(key)
        return float(v) if v is not None and v == v else float("nan")

    if arm in ("kd", "shuffled"):
        return f"T {g('losses.kd.temperature'):.3g}, kd {g('mix.kd'):.3g}, ce {g('mix.ce'):.3g}, lr {g('train.lr'):.3g}"
    smooth = g("losses.ce.label_smoothing")
    return f"lr {g('train.lr'):.3g}, wd {g('train.weight_decay'):.3g}" + (f", smoothing {smooth:.3g}" if smooth > 0 else "")


def _by_seed(runs: pd.DataFrame, metric: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in zip(runs["seed"], runs[metric])}


def _arm_runs(df: pd.DataFrame, arch: str, arm: str) -> pd.DataFrame:
    """The arm's runs over seeds: a searched arm's winner and its repeats; a control's runs
    (those of the current KD winner)."""
    mine = df[(df.gain_arch == arch) & (df.arm == arm)]
    if arm not in SEARCHED:
        kd = _arm_runs(df, arch, "kd")
        winner = kd.run_id.iloc[0] if not kd.empty else None
        return mine[column(mine, "control_of") == winner].drop_duplicates("seed", keep="last")
    candidates = mine[column(mine, "seed_of") == ""]
    if candidates.empty:
        return candidates
    best = candidates.sort_values([schema.VAL_ACC, "start_time"], ascending=[False, True]).iloc[0]
    return pd.concat([candidates[candidates.run_id == best.run_id], mine[column(mine, "seed_of") == best.run_id]])


def gain_info(exp: Experiment) -> GainInfo | None:
    """None when the search measured no gain this way (see `no_gain_reason`)."""
    df = exp.runs
    if "arm" not in df or (column(df, "arm") == "").all():
        return None
    done = df[(column(df, "arm") != "") & (df.status == "FINISHED")]
    arms, pairs, verdicts, noise = [], [], [], []
    for arch in dict.fromkeys(done.gain_arch):
        test: dict[str, dict[int, float]] = {}
        for arm in ARMS:
            runs = _arm_runs(done, arch, arm)
            if runs.empty:
                continue
            test[arm] = _by_seed(runs, schema.TEST_ACC)
            acc, val = runs[schema.TEST_ACC].astype(float), runs[schema.VAL_ACC].astype(float)
            if len(runs) > 1:
                noise.append(float(val.std(ddof=1)))
            arms.append({"arch": arch, "params": float(runs[schema.PARAMS].iloc[0]), "arm": arm, "run_id": runs.run_id.iloc[0],
                         "recipe": _recipe(runs.iloc[0], arm), "n": len(runs), "test_mean": float(acc.mean()),
                         "test_std": float(acc.std(ddof=1)) if len(runs) > 1 else np.nan,
                         "val_std": float(val.std(ddof=1)) if len(runs) > 1 else np.nan})
        if "kd" not in test:
            continue
        for other in ARMS:
            if other != "kd" and other in test:
                p = paired(test["kd"], test[other])
                pairs.append({"arch": arch, "comparison": f"kd - {other}", **p,
                              "distinguishable": bool(p["n"] >= 2 and abs(p["t"]) >= t_critical(p["n"]))})
        mine = pd.DataFrame([a for a in arms if a["arch"] == arch]).set_index("arm")
        present = [c for c in CONTROLS if c in test]
        best = max(present, key=lambda c: mine.loc[c, "test_mean"]) if present else None
        trained = df[((df.arch == arch) | (column(df, "gain_arch") == arch)) & (column(df, "duplicate_of") == "")]  # a replay cost nothing
        compute = float(trained[schema.TRAIN_S].fillna(0).sum()) if schema.TRAIN_S in trained else 0.0
        teacher_s = float(np.nan_to_num(df.get(schema.TEACHER_TRAIN_S, pd.Series([0.0])).max()))
        gain = paired(test["kd"], test.get("twin", {}))
        vs = paired(test["kd"], test[best]) if best else paired({}, {})
        verdicts.append({"arch": arch, "params": mine.loc["kd", "params"], "kd_recipe": mine.loc["kd", "recipe"],
                         "gain_n": gain["n"], "gain_mean": gain["mean"], "gain_std": gain["std"], "gain_t": gain["t"],
                         "gain_distinguishable": bool(gain["n"] >= 2 and abs(gain["t"]) >= t_critical(gain["n"])),
                         "best_control": best, "vs_control_mean": vs["mean"], "vs_control_std": vs["std"], "vs_control_t": vs["t"],
                         "vs_control_distinguishable": bool(vs["n"] >= 2 and abs(vs["t"]) >= t_critical(vs["n"])),
                         "compute_s": compute + teacher_s})
    if not verdicts:
        return None
    settings = exp.search.settings
    return GainInfo(pd.DataFrame(arms), pd.DataFrame(pairs), pd.DataFrame(verdicts).sort_values("params").reset_index(drop=True),
                    float(np.median(noise)) if noise else float("nan"), int(settings.get("recipe_trials", 0) or 0),
                    int(settings.get("seeds", 1) or 1))


def no_gain_reason(settings: dict) -> str:
    """Why a search has no tuned gain to report, in words."""
    if settings.get("twins", "base_recipe") != "tuned":
        return ("measured against base-recipe twins only (search.twins: base_recipe): one twin per architecture with the "
                "base config's settings on labels only, while the student's recipe was searched; this favours KD")
    if str(settings.get("baselines", "True")) == "False":
        return "no gain was measured: search.baselines is false, so no scratch arm ran"
    return "no gain was measured: no front architecture has a finished KD arm (its runs failed or have not run yet)"


def _points(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:+.2f}"


def verdict_line(v) -> str:
    """One line a person reads: the gain over the tuned twin, then against the best control."""
    if v.gain_n >= 2:
        gain = (f"KD {_points(v.gain_mean)} ± {100 * v.gain_std:.2f} points over the tuned twin (t {v.gain_t:.1f}, {v.gain_n} seeds): "
                + ("distinguishable from zero" if v.gain_distinguishable else f"within the noise (|t| < {t_critical(v.gain_n):.2f})"))
    else:
        gain = f"KD {_points(v.gain_mean)} points over the tuned twin (one seed: no spread, so no verdict)"
    if v.best_control is None:
        return gain
    if v.gain_n >= 2:
        ctrl = (f"against the best control ({v.best_control}) {_points(v.vs_control_mean)} (t {v.vs_control_t:.1f}): "
                + ("KD beats it" if v.vs_control_distinguishable and v.vs_control_mean > 0
                   else "the control wins" if v.vs_control_distinguishable else "within the noise"))
    else:
        ctrl = f"against the best control ({v.best_control}) {_points(v.vs_control_mean)}"
    return f"{gain}; {ctrl}"
