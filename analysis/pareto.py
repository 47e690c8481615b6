"""Pareto fronts and hypervolumes over a search's runs, one row per MLflow run.

Pure functions over the runs frame (`analysis.runs`): no MLflow, no Ray.
Objectives are a mapping such as {"val_acc": "max", "params": "min"}; inside
this module every point is in minimisation form (max objectives negated).

Only students that FINISHED, were not stopped early, and report every
objective as a finite number are eligible for the front. Failed runs have no
trustworthy values. Stopped-early runs are left out because ASHA hands a
trial's partial-epoch values to Optuna as a COMPLETE trial: a student
stopped after two epochs would otherwise sit on the front with the accuracy
of an unfinished model (or, being cheap, knock finished students off it).
Ineligible rows are never on the front and never dominate anyone.

The hypervolume's reference point is fixed before the search starts (chance
accuracy, the size and latency of the largest student the space can make;
see `workflows.search.reference_point`) and logged on the parent run, so the
hypervolumes of different searches over the same task compare. It is given in
the objectives' own units and directions and converted here.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from . import schema

__all__ = [
    "eligible", "pareto_mask", "non_dominated", "to_min_form", "reference_to_min_form",
    "hypervolume", "front_hypervolume", "hypervolume_history",
]

DIRECTIONS = {"min": 1.0, "max": -1.0}  # sign that turns an objective into one to minimise


def _signs(objectives: Mapping[str, str]) -> np.ndarray:
    if not objectives:
        raise ValueError("objectives: name at least one, e.g. {'val_acc': 'max'}")
    bad = {k: d for k, d in objectives.items() if d not in DIRECTIONS}
    if bad:
        raise ValueError(f"objectives: direction must be 'max' or 'min', got {bad}")
    return np.array([DIRECTIONS[d] for d in objectives.values()])


def to_min_form(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """The objective columns as an (n, k) float array, max objectives negated."""
    values = df[list(objectives)].to_numpy(dtype=float).reshape(len(df), len(objectives))
    return values * _signs(objectives)


def reference_to_min_form(reference: Mapping[str, float], objectives: Mapping[str, str]) -> np.ndarray:
    """A reference point given in the objectives' own units, as a (k,) array in minimisation form."""
    missing = [k for k in objectives if k not in reference]
    if missing:
        raise KeyError(f"reference: no value for objective(s) {missing}")
    return np.array([float(reference[k]) for k in objectives]) * _signs(objectives)


def eligible(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """Rows that may enter the front: finished, full-budget students with every objective finite."""
    if df.empty:  # an experiment with no runs may come as a frame without columns
        return pd.Series(False, index=df.index, dtype=bool, name="eligible")
    finite = np.isfinite(to_min_form(df, objectives)).all(axis=1)
    # eq(True), not astype(bool): a missing tag read back as NaN would cast to True
    ok = (df["role"] == schema.ROLE_STUDENT) & (df["status"] == "FINISHED") & ~df["stopped_early"].eq(True) & finite
    return ok.astype(bool).rename("eligible")


def _non_dominated(points: np.ndarray) -> np.ndarray:
    """(n,) bool: rows of an (n, k) minimisation-form array that no other row dominates.

    a dominates b iff a <= b everywhere and a < b somewhere, so exact
    duplicates do not dominate each other and all stay. O(n^2 k) memory;
    searches have tens to hundreds of trials.
    """
    a, b = points[:, None, :], points[None, :, :]
    dominates = (a <= b).all(axis=2) & (a < b).any(axis=2)  # [i, j]: row i dominates row j
    return ~dominates.any(axis=0)


def non_dominated(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """(n,) bool: rows of df that no other row dominates, eligibility not checked (every row counts)."""
    return _non_dominated(to_min_form(df, objectives)) if len(df) else np.zeros(0, dtype=bool)


def pareto_mask(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.Series:
    """True for eligible rows that no other eligible row dominates; index aligned to df."""
    ok = eligible(df, objectives)
    mask = pd.Series(False, index=df.index, dtype=bool, name="pareto")
    if ok.any():
        mask[ok] = _non_dominated(to_min_form(df[ok], objectives))
    return mask


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by minimisation-form points (n, k) and bounded by the reference (k,).

    Points that do not strictly beat the reference in every coordinate (NaN
    included) add nothing and are dropped; 0.0 when none remain. A 1-D
    `points` is one point when k > 1 and n values when k == 1.
    """
    reference = np.atleast_1d(np.asarray(reference, dtype=float))
    if reference.ndim != 1 or not np.isfinite(reference).all():
        raise ValueError(f"reference: want a finite 1-D point, got {reference}")
    points = np.asarray(points, dtype=float)
    if points.ndim == 1:
        points = points.reshape(-1, 1) if reference.size == 1 else points.reshape(1, -1)
    if points.size == 0:
        return 0.0
    if points.ndim != 2 or points.shape[1] != reference.size:
        raise ValueError(f"points: want shape (n, {reference.size}), got {points.shape}")
    inside = points[(points < reference).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    if reference.size == 1:  # one objective: the hypervolume is a length
        return float(reference[0] - inside[:, 0].min())
    if reference.size == 2:
        return _sweep_2d(inside, reference)
    return _wfg(inside, reference)


def _sweep_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """The exact 2-D hypervolume: sort by the first coordinate, add each rectangle that a
    point's second coordinate improves on the best so far (O(n log n))."""
    pts = points[np.lexsort((points[:, 1], points[:, 0]))]
    volume, best = 0.0, reference[1]
    for x, y in pts:
        if y < best:
            volume += (reference[0] - x) * (best - y)
            best = y
    return float(volume)


def _wfg(points: np.ndarray, reference: np.ndarray) -> float:
    # three or more objectives: optuna's exact WFG implementation (a 2-D sweep and a 3-D special case
    # inside), the one its plot_hypervolume_history uses. It is private API,
    # so it is called from this one place; it raises unless every point is
    # <= the reference, which hypervolume() guarantees.
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(points, reference, assume_pareto=False))


def front_hypervolume(df: pd.DataFrame, objectives: Mapping[str, str], reference: Mapping[str, float]) -> float:
    """Hypervolume of the eligible rows' front against a reference in the objectives' own units."""
    ref = reference_to_min_form(reference, objectives)
    mask = pareto_mask(df, objectives)
    if not mask.any():  # also covers an empty frame without the objective columns
        return 0.0
    return hypervolume(to_min_form(df[mask], objectives), ref)


def hypervolume_history(df: pd.DataFrame, objectives: Mapping[str, str], reference: Mapping[str, float]) -> pd.DataFrame:
    """Hypervolume of the front after each student run: columns `trial` (1..n) and `hypervolume`.

    Runs are the student rows in start_time order; failed and stopped-early
    runs count (they spent budget) but leave the hypervolume unchanged. A
    repeat with another seed (`seed_of`, search.confirm) spends budget as a run
    and is no point of its own: its trial counts at the mean of the seeds
    finished by then, so the curve can drop when a lucky seed is averaged away.
    """
    ref = reference_to_min_form(reference, objectives)
    if df.empty:
        return pd.DataFrame({"trial": pd.Series(dtype=int), "hypervolume": pd.Series(dtype=float)})
    students = df[df["role"] == schema.ROLE_STUDENT].sort_values("start_time", kind="stable")
    ok = eligible(students, objectives).to_numpy()
    points = to_min_form(students, objectives)
    of = students["seed_of"].fillna("").astype(str).to_numpy() if "seed_of" in students else np.full(len(students), "")
    row_of = {r: i for i, r in enumerate(students["run_id"].astype(str))}
    owner = [row_of.get(o, -1) if o else i for i, o in enumerate(of)]  # the trial each run counts toward
    logs = [i for i, k in enumerate(objectives) if k == schema.VAL_PPL] if of.any() else []  # perplexities average as cross-entropies
    points[:, logs] = np.log(points[:, logs])
    sums, counts, volumes, current = {}, {}, [], 0.0
    for i, o in enumerate(owner):
        if ok[i] and o >= 0 and ok[o]:  # an ineligible run, or a repeat of an ineligible trial, cannot change the front
            sums[o], counts[o] = sums.get(o, 0.0) + points[i], counts.get(o, 0) + 1
            means = np.array([sums[k] / counts[k] for k in sums])
            means[:, logs] = np.exp(means[:, logs])
            current = hypervolume(means, ref)
        volumes.append(current)
    if not of.any():  # without repeats the front only grows: the running max irons out round-off from recomputing it
        volumes = np.maximum.accumulate(np.asarray(volumes, dtype=float))
    return pd.DataFrame({"trial": np.arange(1, len(students) + 1), "hypervolume": np.asarray(volumes, dtype=float)})
