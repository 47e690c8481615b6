"""One front over every model a search trained, whatever trained it.

A search trains far more than its trials: scratch twins of every architecture and, with
`search.twins: tuned`, per front architecture a KD winner, a tuned twin, a label-smoothing
control and a same-recipe twin, each over seeds. Those are the best-tuned models of the
whole search. A front over the trials alone ships students that models kdx itself trained
beat (issue 23: the demo's P1-P3 at 650-1,200 parameters scored 46-65% where twins of
the same sizes scored 74-79%). So the front a user exports ranges over every model:

- search trials (method `kd`), each on its own seed, or its mean where it was repeated
  (search.confirm), shipping its seed with the best validation score;
- base-recipe twins (`scratch`);
- the gain's arms (`kd`, `scratch` for the tuned and the same-recipe twin, `smoothing`):
  each arm's winner at the mean of its `search.seeds` seeds, shipping its seed with the best
  validation score. The arm's other candidates are not points of their own: each was beaten
  by the winner on equal seeds (at the base seed, or on the race's mean), and its one lucky
  seed against the winner's mean would be the winner's curse the race is there to avoid. A
  search trial that a candidate replayed (the front student's own recipe) goes the same way.

So no exported point is dominated by another model the search trained, compared on equal
seeds: a search trial or a base-recipe twin on its one seed, an arm by its winner. And as each
point ships one model, no shipped model is beaten on its own validation score by 2 points or
more by any model trained at no more parameters (`outvalidated`): such a point is left out of
the exported front, and the report says which and why.

The dark-knowledge control (non-target probabilities shuffled) is left out: its teacher is
corrupted on purpose, and it is a diagnostic, not a recipe anyone would ship.

Points are chosen on validation accuracy, a language model's on validation cross-entropy
(`front_objectives`: val_ppl read as val_loss, the same ranking), a mean over seeds where there are several: a
single-seed point can still be a lucky one, and its `n_seeds` says so. The KD front and the
labels-only front are computed apart too; the vertical gap between them is the
capacity-gap frontier the report describes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from . import schema
from .gains import GainInfo, gain_info
from .pareto import non_dominated
from .runs import Experiment, column, over_seeds

__all__ = ["ModelsInfo", "models_info", "METHODS", "ARM_METHODS", "LABELS_ONLY", "method_sentence", "method_label", "outvalidated", "beaten_lines", "within_noise", "close_lines"]

METHODS = ("kd", "scratch", "smoothing")
LABELS_ONLY = ("scratch", "smoothing")  # trained without the teacher
ARM_METHODS = {"kd": "kd", "twin": "scratch", "smooth": "smoothing", "same_recipe": "scratch", "random": "scratch", "kd_random": "kd"}
SOURCES = {"kd": "gain: KD winner", "twin": "gain: tuned twin", "smooth": "gain: label-smoothing control",
           "same_recipe": "gain: same-recipe twin", "random": "gain: random-start twin", "kd_random": "gain: KD from random weights"}


def columns(score: schema.Score) -> list[str]:
    """A models frame's columns: the score's validation metric is the mean over the point's seeds, its test metric the shipped run's."""
    return ["run_id", "method", "source", "start", "arch", schema.PARAMS, schema.LATENCY, score.val, "val_std", "n_seeds", score.test, "test_mean", "test_std"]


def front_objectives(objectives: dict[str, str], score: schema.Score) -> dict[str, str]:
    """The objectives with the quality one read as the score's validation metric: val_ppl becomes val_loss (min), the
    same ranking, so the front is the same, on the metric whose mean over seeds is kept."""
    return {(score.val if k in schema.QUALITY else k): (score.better if k in schema.QUALITY else d) for k, d in objectives.items()}


class ModelsInfo(NamedTuple):
    models: pd.DataFrame  # every point (`columns`): the score's val metric is the mean over its seeds, its test metric the shipped run's own
    best: pd.DataFrame  # the front over every model, by params
    kd: pd.DataFrame  # the front over the KD models only
    labels: pd.DataFrame  # the front over the labels-only models (scratch, smoothing)
    gains: GainInfo | None = None  # the gain's arms the points were read from, kept so the report does not read them again
    beaten: pd.DataFrame | None = None  # front points left out of `best`: a model at no more params validated 2+ points better (`outvalidated`)
    close: pd.DataFrame | None = None  # neighbours on `best` whose gap is within the noise of seeds and split (`within_noise`)


def _over_seeds(done: pd.DataFrame, run_id: str, score: schema.Score) -> dict:
    runs = over_seeds(done, run_id)
    val, test = runs[score.val].astype(float), runs[score.test].astype(float)
    return {score.val: float(val.mean()), "val_std": float(val.std(ddof=1)) if len(runs) > 1 else np.nan,
            "n_seeds": len(runs), "test_mean": float(test.mean()), "test_std": float(test.std(ddof=1)) if len(runs) > 1 else np.nan}


def _shipped(done: pd.DataFrame, run: pd.Series, score: schema.Score) -> pd.Series:
    """The run a repeated trial or twin ships: of its seeds, the one with the best validation score. The point is
    ranked on the mean (which config is good), and the model is picked on its own validation score, as any
    model is; its test score is its own, never seen in the pick."""
    runs = over_seeds(done, run.run_id)
    vals = score.sign * runs[score.val].astype(float)
    return run if len(runs) < 2 or vals.isna().all() else runs.loc[vals.idxmax()]


def _point(run: pd.Series, method: str, source: str, stats: dict, score: schema.Score) -> dict:
    return {"run_id": run.run_id, "method": method, "source": source, "start": run.get("start") or "random", "arch": run.get("arch"), schema.PARAMS: run.get(schema.PARAMS),
            schema.LATENCY: run.get(schema.LATENCY, np.nan), score.test: run.get(score.test), **stats}


def models_info(exp: Experiment, students: pd.DataFrame, objectives: dict[str, str], chance: float | None) -> ModelsInfo:
    """Every finished model of the search as a point, and the fronts over them (`students`: the
    frontier's eligible search trials, duplicates and controls already out; `chance`: the score's
    validation value of a model that learned nothing, never on a front)."""
    runs, score = exp.runs, exp.score
    objectives = front_objectives(objectives, score)
    done = runs[runs.status == "FINISHED"] if not runs.empty else runs
    by_id = done.set_index("run_id", drop=False) if not done.empty else done
    points: dict[str, dict] = {}
    for _, s in students.iterrows():
        points[s.run_id] = _point(_shipped(done, s, score), "kd", "search trial", _over_seeds(done, s.run_id, score), score)
    if not done.empty:
        original = (column(done, "seed_of") == "") & (column(done, "duplicate_of") == "") & (column(done, "arm") == "")
        for _, t in done[(done.role == schema.ROLE_TWIN) & original].iterrows():
            points[t.run_id] = _point(_shipped(done, t, score), "scratch", "base-recipe twin", _over_seeds(done, t.run_id, score), score)
    g = gain_info(exp)
    if g is not None:
        winners = {a.ships: a for a in g.arms[g.arms.arm.isin(list(ARM_METHODS))].itertuples()}
        arm, seed_of = column(done, "arm"), column(done, "seed_of")
        for _, c in done[arm.isin([a for a in ARM_METHODS if a != "same_recipe"]) & (seed_of == "")].iterrows():
            ships = str(c.get("duplicate_of") or "") or c.run_id
            points.pop(ships, None)  # a candidate that replayed a search trial: its arm's winner stands for it
        for run_id, a in winners.items():
            _add(points, by_id, run_id, ARM_METHODS[a.arm], SOURCES[a.arm],
                 {score.val: a.val_mean, "val_std": a.val_std, "n_seeds": a.n, "test_mean": a.test_mean, "test_std": a.test_std}, score)
    models = pd.DataFrame(list(points.values()), columns=columns(score))
    keep = np.isfinite(models[list(objectives)].to_numpy(dtype=float)).all(axis=1) if len(models) else np.array([], dtype=bool)
    if chance is not None and len(models):
        keep &= score.sign * models[score.val].to_numpy(dtype=float) > score.sign * chance
    models = models[keep].reset_index(drop=True)
    best = _front(models, objectives, score)
    # The front ranks configs at their mean over seeds, but each point ships one model: a point whose model a smaller
    # one beats on its own validation score (a repeated config's best seed, say) is not exported
    beaten = outvalidated(exp, best)
    best = best[~best.run_id.isin(beaten.run_id)].reset_index(drop=True)
    return ModelsInfo(models, best, _front(models[models.method == "kd"], objectives, score),
                      _front(models[models.method.isin(LABELS_ONLY)], objectives, score), g, beaten,
                      within_noise(best, score, exp.search.val_samples))


def within_noise(best: pd.DataFrame, score: schema.Score, val_samples: int | None) -> pd.DataFrame:
    """Each front point whose lead over the next smaller one is within the noise: smaller and larger (their
    positions on `best`, 0 the smallest), the lead and 2 std of it. The std adds the seeds' part (each mean's
    std / sqrt(n); unknown on one seed) and, for accuracy with a logged split size, the validation split's
    (McNemar's bound, as the gain's race: `analysis.gains.race_gap`). Both points stay on the front; the
    reader learns that this split cannot tell the larger model better than the smaller one (issue 38)."""
    rows = []
    best = best.sort_values(schema.PARAMS).reset_index(drop=True) if not best.empty else best
    for k in range(1, len(best)):
        lo, hi = best.iloc[k - 1], best.iloc[k]
        a, b = float(hi[score.val]), float(lo[score.val])
        var = sum(float(r["val_std"]) ** 2 / int(r["n_seeds"]) for r in (lo, hi) if int(r.get("n_seeds") or 1) > 1 and r["val_std"] == r["val_std"])
        if val_samples and score == schema.ACCURACY:
            var += max(0.0, min(1.0, (1 - a) + (1 - b)) - (a - b) ** 2) / val_samples
        lead, noise = score.sign * (a - b), 2 * float(np.sqrt(var))
        if var > 0 and lead < noise:
            rows.append({"smaller": k - 1, "larger": k, "lead": lead, "noise": noise})
    return pd.DataFrame(rows, columns=["smaller", "larger", "lead", "noise"])


def close_lines(info: ModelsInfo | None, score: schema.Score) -> list[str]:
    """One line per front point that leads its smaller neighbour by less than the noise."""
    if info is None or info.close is None:
        return []
    best = info.best.sort_values(schema.PARAMS).reset_index(drop=True)
    return [f"P{c.larger + 1} ({int(best.iloc[c.larger][schema.PARAMS]):,} params) leads P{c.smaller + 1} "
            f"({int(best.iloc[c.smaller][schema.PARAMS]):,} params) by {score.diff(c.lead)} {score.short} of {score.val}, within the noise "
            f"(2 std {score.size(c.noise)}: seeds and validation split): this split cannot tell the larger model better"
            for c in info.close.itertuples()]


def _add(points: dict, by_id: pd.DataFrame, run_id: str, method: str, source: str, stats: dict, score: schema.Score) -> None:
    """A gain run as a point; a replay logged no weights, so the run it replayed ships, and the replay's
    point (over more seeds) stands for that model instead of the earlier single-seed one."""
    ships = str(by_id.loc[run_id].get("duplicate_of") or "") or run_id
    if ships in by_id.index:
        points.pop(ships, None)
        points[f"gain/{run_id}"] = _point(by_id.loc[ships], method, source, stats, score)


def outvalidated(exp: Experiment, shipped: pd.DataFrame, margin: float = 0.02) -> pd.DataFrame:
    """Shipped models that some model the search trained, at no more parameters, beats on its own validation score by
    `margin` or more (2 points of accuracy; a language model's nats): run_id, better_run, params, better_params, val, better_val.

    Every seed of every student and twin counts, the gain's candidates too; the dark-knowledge control does not (its
    teacher is corrupted on purpose). Empty when every shipped model is the best that kdx knew at its size."""
    score = exp.score
    runs = exp.runs
    done = runs[(runs.status == "FINISHED") & runs.role.isin([schema.ROLE_STUDENT, schema.ROLE_TWIN])]
    done = done[column(done, "arm") != "shuffled"]
    own = done.set_index("run_id")[score.val].astype(float) if not done.empty else pd.Series(dtype=float)
    rows = []
    for _, s in shipped.iterrows():
        mine = own.get(s.run_id, np.nan)
        if mine != mine:
            continue
        rivals = done[(done[schema.PARAMS].astype(float) <= float(s[schema.PARAMS])) & (done.run_id != s.run_id)]
        if rivals.empty:
            continue
        gaps = score.sign * (rivals[score.val].astype(float) - mine)
        if gaps.max() >= margin:
            r = rivals.loc[gaps.idxmax()]
            rows.append({"run_id": s.run_id, "better_run": r.run_id, schema.PARAMS: float(s[schema.PARAMS]),
                         "better_params": float(r[schema.PARAMS]), "val": mine, "better_val": float(r[score.val])})
    return pd.DataFrame(rows, columns=["run_id", "better_run", schema.PARAMS, "better_params", "val", "better_val"])


def beaten_lines(info: ModelsInfo | None, score: schema.Score) -> list[str]:
    """One line per front point left out of the export because a model at no more parameters validated better."""
    if info is None or info.beaten is None:
        return []
    return [f"not exported: run {b.run_id} ({int(b[schema.PARAMS]):,} params, {score.val} {b.val:.4g}): run {b.better_run} at "
            f"{int(b.better_params):,} params validated {score.diff(score.sign * (b.better_val - b.val))} {score.short} better"
            for _, b in info.beaten.iterrows()]


def _front(models: pd.DataFrame, objectives: dict[str, str], score: schema.Score) -> pd.DataFrame:
    if models.empty:
        return models
    front = models[non_dominated(models, objectives)]
    # the same point twice (a model and its replay): the one with more seeds behind it
    front = front.sort_values([schema.PARAMS, score.val, "n_seeds"], ascending=[True, score.better == "min", False])
    return front.drop_duplicates(subset=list(objectives), keep="first").reset_index(drop=True)


def method_label(row: pd.Series | dict) -> str:
    """A front point's method as a table shows it: 'kd', or 'kd, teacher start' (or 'pruned start') for a student that started from its teacher."""
    method = str(row.get("method", "kd"))
    short = schema.START_SHORT.get(str(row.get("start")))
    return f"{method}, {short}" if short else method


def method_sentence(row: pd.Series | dict, score: schema.Score = schema.ACCURACY) -> str:
    """What trained a front point, in words, for the report and the export's card."""
    params, method = int(row[schema.PARAMS]), row["method"]
    how = {"kd": "distilled from the teacher", "scratch": "trained without the teacher (labels only)",
           "smoothing": "trained without the teacher (labels only, with label smoothing)"}[method]
    how += f", started from {schema.START_WORDS[row['start']]}" if row.get("start") in schema.START_SHORT else ""
    seeds = int(row.get("n_seeds") or 1)
    on = f"mean {score.words} over {seeds} seeds" if seeds > 1 else f"one seed's {score.words}"
    return f"at {params:,} parameters the best model was {how} ({row['source']}; chosen on {on})"
