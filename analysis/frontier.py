"""The capacity-gap frontier: computed as an info object first, then drawn.

`frontier_info(exp)` gathers what the pictures show (the teacher, the
distilled students, their scratch twins, the Pareto front, the gains); the
`plot_*` functions only draw it, headless. Tests check the info, not pixels.

Two fronts: `front` is over the search's trials (the architectures the gain then
measures), `models.best` over every model the search trained, the gain's tuned arms
included (analysis/models.py): that one is what the report's table lists as P1, P2, ...
and what `kdx export` ships.

The y axes are validation accuracy (a language model's: validation cross-entropy in nats per
token, with the source's entropy floor where the data knows it): the front is chosen on it, and
picking anything on the test split would be cheating; the test score is in the front's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import schema
from .models import ModelsInfo, models_info
from .pareto import eligible, pareto_mask
from .runs import Experiment, column, seed_means, seed_stats, with_gains

__all__ = ["FrontierInfo", "frontier_info", "plot_frontier", "plot_gain_vs_ratio", "gain_by_arch"]


class FrontierInfo(NamedTuple):
    teacher: dict | None  # params, val_acc, test_acc of the teacher run
    students: pd.DataFrame  # finished full-budget students with twin accuracy, gain, ratio
    twins: pd.DataFrame  # finished scratch twins
    front: pd.DataFrame  # Pareto-optimal students, sorted by params
    excluded: pd.DataFrame  # failed and stopped-early students: never on the front
    objectives: dict[str, str]
    reference: dict[str, float]
    controls: pd.DataFrame  # dark-knowledge controls (shuffled non-target targets): drawn beside the gains, never on the front
    running: pd.DataFrame  # students still training (a search read while it runs): neither finished nor failed
    search_running: bool  # the search run itself is still RUNNING
    chance: pd.DataFrame  # finished students no better than chance (the reference's val_acc): among `students`, never on the front
    same_model: pd.DataFrame  # finished students whose config equals an earlier one's (kdx.config_key): counted once
    models: ModelsInfo | None = None  # every model the search trained and the front over them: what the export ships
    score: schema.Score = schema.ACCURACY  # what the y axes, the picks and the gains read: accuracy, or a language model's nats per token
    floors: tuple[dict, ...] = ()  # reference models made with no training (model2vec's table): drawn, never on a front


def frontier_info(exp: Experiment) -> FrontierInfo:
    objectives, reference, score = exp.search.objectives, exp.search.reference, exp.score
    students = with_gains(exp)
    # a trial repeated with other seeds (search.confirm, search.seeds) is ranked on its mean: one seed's score is as
    # noisy as the differences between neighbours on the front, and the luckiest seed is what a front of single runs keeps
    mean = seed_means(exp.runs, students, score.val)
    if score.val == schema.VAL_LOSS and schema.VAL_PPL in students:  # a perplexity follows the mean cross-entropy: a mean of perplexities is none
        students[schema.VAL_PPL] = students[schema.VAL_PPL].where(mean == students[score.val], np.exp(mean))
    students[score.val] = mean
    control = students.get("control", pd.Series("", index=students.index)).fillna("").astype(str) != ""
    running = students["status"] == "RUNNING"
    ok = eligible(students, objectives) & ~control
    # The same model twice (a space of fixed values, a choice sampled again before the duplicate
    # check saw it) is one point: the earliest run stands for it.
    key = column(students, "config_key").fillna("").astype(str)
    same = pd.Series(False, index=students.index)
    same[ok] = key[ok].duplicated(keep="first") & (key[ok] != "")
    # A student no better than chance (lr 1000: loss 4.7e7 but finite) is not a trade-off
    # worth shipping: the hypervolume's reference marks chance (a language model's: the uniform
    # distribution's log V nats per token).
    chance = reference.get(score.val)
    at_chance = ok & ~same & (score.sign * students[score.val] <= score.sign * chance) if chance is not None else ok & False
    candidates = ~control & ~same & ~at_chance
    on_front = pareto_mask(students[candidates], objectives).reindex(students.index, fill_value=False)
    front = students[on_front].sort_values([schema.PARAMS, score.val], ascending=[True, score.better == "min"])
    front = front.merge(seed_stats(exp, front), on="run_id", how="left").set_index(front.index)  # seeds behind each point
    runs = exp.runs
    twins = runs[(runs.role == schema.ROLE_TWIN) & (runs.status == "FINISHED") & (column(runs, "arm") == "") & (column(runs, "seed_of") == "")]
    teacher = exp.teacher
    t = None if teacher is None else {k: teacher.get(k) for k in (schema.PARAMS, schema.VAL_ACC, schema.TEST_ACC, score.val, score.test, schema.FLOOR, "run_id")}
    controls = students[control & eligible(students, objectives)]
    search = runs[runs.run_id == exp.parent_id] if exp.parent_id else runs.iloc[0:0]
    search_running = bool(len(search)) and search.iloc[0]["status"] == "RUNNING"
    keep = ok & ~same  # a student at chance is a finished student: counted, drawn, never on the front
    models = models_info(exp, students[ok & ~same & ~at_chance], objectives, chance)
    floors = tuple({"name": f["floor"], schema.PARAMS: f[schema.PARAMS], score.val: f.get(score.val), score.test: f.get(score.test),
                    "run_id": f["run_id"]} for f in exp.floors)
    return FrontierInfo(t, students[keep], twins, front, students[~ok & ~control & ~running], objectives, reference, controls,
                        students[running & ~control], search_running, students[at_chance], students[same], models, score, floors)


def gain_by_arch(students: pd.DataFrame) -> pd.DataFrame:
    """Gain per architecture: mean, std and count over its students (seeds, temperatures)."""
    have = students.dropna(subset=["gain"])
    grouped = have.groupby("arch").agg(ratio=("ratio", "first"), params=(schema.PARAMS, "first"),
                                       gain_mean=("gain", "mean"), gain_std=("gain", "std"), n=("gain", "size"))
    return grouped.reset_index().sort_values("ratio")


def _finite(x) -> bool:
    return x is not None and x == x


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> None:
    """Every picture of the report the same way: laid out, PNG at 110 dpi, closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")  # format given: atomic writes use a temporary name
    _pyplot().close(fig)


MARKERS = {"teacher": "^", "prune": "D"}  # a distilled model's start, where it was not random weights


def plot_frontier(info: FrontierInfo, path: str | Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    y = info.score.val
    if info.teacher and _finite(info.teacher.get(y)):
        ax.axhline(info.teacher[y], color="black", ls="--", lw=1, label=f"teacher ({int(info.teacher[schema.PARAMS]):,} params)")
    if info.teacher and _finite(info.teacher.get(schema.FLOOR)):  # the cross-entropy no model can beat on this source
        ax.axhline(info.teacher[schema.FLOOR], color="tab:green", ls=":", lw=1.2, label="entropy floor of the source (test split)")
    if info.models is not None:  # every model at the mean of its seeds: the values the fronts are chosen on
        every = info.models.models
        s, t = every[every.method == "kd"], every[every.method != "kd"]
        labels = ("labels-only models (twins, controls; mean over seeds)", "distilled models (mean over seeds)")
    else:
        s, t = info.students, info.twins
        labels = ("scratch twins", "distilled students")
    ax.scatter(t[schema.PARAMS], t[y], marker="x", color="tab:gray", label=labels[0], zorder=2)
    starts = s["start"].fillna("random") if "start" in s else pd.Series("random", index=s.index)
    marked = starts.isin(list(MARKERS))
    ax.scatter(s[schema.PARAMS][~marked], s[y][~marked], color="tab:blue", alpha=0.7, label=labels[1] if (~marked).any() else None, zorder=3)
    for start, marker in MARKERS.items():  # which start each distilled model had
        if (starts == start).any():
            ax.scatter(s[schema.PARAMS][starts == start], s[y][starts == start], color="tab:blue", alpha=0.7, marker=marker, zorder=3,
                       label=f"{labels[1]}, started from {schema.START_WORDS[start]}")
    c = info.chance
    if not c.empty:  # finished, never on a front: drawn so that a search where nothing learned still shows its students
        ax.scatter(c[schema.PARAMS], c[y], color="tab:blue", alpha=0.25, marker=".", label="students no better than chance", zorder=2)
    m = info.models
    if m is not None and schema.PARAMS in info.objectives:  # the gap between the two step lines is the capacity-gap frontier
        for front, color, label in ((m.kd, "tab:blue", "front of the distilled models"),
                                    (m.labels, "tab:gray", "front of the labels-only models (twins, controls)")):
            if not front.empty:
                ax.step(front[schema.PARAMS], front[y], where="post", color=color, lw=1.2, alpha=0.8, label=label, zorder=4)
    f = m.best if m is not None else info.front
    if not f.empty:
        ax.scatter(f[schema.PARAMS], f[y], s=70, facecolors="none", edgecolors="tab:red", lw=1.5,
                   label="Pareto front over every model (exported)", zorder=5)
        for k, (_, row) in enumerate(f.iterrows(), 1):
            ax.annotate(f"P{k}", (row[schema.PARAMS], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for f in info.floors:  # no training at all: what a trained student must beat to be worth its cost
        if _finite(f.get(y)):
            ax.scatter([f[schema.PARAMS]], [f[y]], marker="*", s=140, color="tab:green", zorder=5,
                       label=f"static floor, no training ({f['name'].split(' (')[0]})")
    sizes = pd.concat([s[schema.PARAMS], t[schema.PARAMS], c[schema.PARAMS], pd.Series([f[schema.PARAMS] for f in info.floors], dtype=float)]).astype(float)
    if (sizes > 0).any():  # a log axis needs a positive size; a search whose every student failed draws none
        ax.set_xscale("log")
    ax.set_xlabel("student parameters (log)")
    ax.set_ylabel(info.score.words + (" (nats per token)" if info.score.short == "nats/token" else ""))
    ax.set_title("capacity-gap frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)


def plot_gain_vs_ratio(info: FrontierInfo, path: str | Path) -> None:
    plt = _pyplot()
    g = gain_by_arch(info.students)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.axhline(0, color="black", lw=1)
    c = gain_by_arch(info.controls)
    k = info.score.scale
    if not c.empty:
        ax.errorbar(c["ratio"], k * c["gain_mean"], yerr=k * c["gain_std"].fillna(0), fmt="s", capsize=3, color="tab:orange",
                    alpha=0.8, label="control: non-target probabilities shuffled")
    if not g.empty:
        ax.errorbar(g["ratio"], k * g["gain_mean"], yerr=k * g["gain_std"].fillna(0), fmt="o", capsize=3,
                    color="tab:blue", label="KD gain over scratch twin (mean ± std over runs)")
        for _, row in g.iterrows():
            if row["n"] > 1:
                ax.annotate(f"n={row['n']}", (row["ratio"], k * row["gain_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no student has a finished scratch twin", ha="center", transform=ax.transAxes)
    ax.set_xlabel("teacher / student parameters (log)")
    ax.set_ylabel(f"distillation gain ({info.score.unit})")
    ax.set_title("what distillation buys, by capacity gap")
    ax.grid(alpha=0.3)
    save_figure(fig, path)

