"""Which searched parameters mattered: Optuna's fANOVA over the search's finished trials.

`importance_info(info)` rebuilds the search as an in-memory Optuna study (one
COMPLETE trial per finished student run, its sampled params and objective values)
and asks `optuna.importance.get_param_importances` for each objective; the
`plot_importance` function only draws the result, headless.

fANOVA (Hutter, Hoos & Leyton-Brown 2014, PMLR 32(1):754) fits a random forest to
the trials and splits the variance of its prediction over the space into each
parameter's main effect; Optuna normalises those to sum to 1 per objective
(interactions are not shown). It answers "how much of val_acc's spread does lr
explain", the question the report asks. We pass it explicitly: Optuna 5's
default evaluator is PED-ANOVA (Watanabe et al. 2023), which answers another
one, "what does it take to reach the top 10% of trials": on a 20-trial search
that is 2 trials, and Optuna asks for at least 5 there, so it is not added as a
second column.

Which trials: `FrontierInfo.students`, the search's own finished full-budget
students (failed, stopped-early, running, dark-knowledge controls, seed
repeats, equal-budget gain arms and same-model reruns are already set apart
there), less a chain search's direct control run. Students at chance stay:
an lr that sends a student to chance is exactly what importance should see.

Which params: those each run tagged as sampled (`kdx.sampled`). A run that did
not sample a key (a conditional key whose condition did not hold) lacks it, even
where its config holds the base value. Optuna's fANOVA uses only params present
in every trial, so a conditional param is left out, and so is one that took a
single value (it carries no information); `ImportanceInfo.left_out` says which
and why. Distributions are inferred from the values: bools and text are
categorical, integers int, other numbers float, each over the observed range.
The space's log flag is not read: Optuna's fANOVA fits on the raw values
(`transform_log=False`), so it would not change the numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import schema
from .frontier import FrontierInfo, _pyplot, save_figure
from .runs import column

__all__ = ["ImportanceInfo", "importance_info", "plot_importance", "EVALUATOR", "MIN_TRIALS", "FEW_TRIALS"]

EVALUATOR = "fANOVA"
MIN_TRIALS = 4  # below this a forest has next to nothing to split
FEW_TRIALS = 20  # below this the report says the numbers are noisy
_DIRECTIONS = {"max": "maximize", "min": "minimize"}


class ImportanceInfo(NamedTuple):
    evaluator: str  # "fANOVA"
    n_trials: int  # finished search trials the study was built from
    params: tuple[str, ...]  # searched params that varied and are present in every trial: the table's rows
    table: pd.DataFrame | None  # params x objectives, each column summing to 1, rows by importance; None with `why`
    left_out: dict[str, str]  # searched params (and objectives) not in the table: name -> why
    why: str = ""  # why nothing was computed; "" when `table` is set


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _show(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)  # 5, not 5.0 from a float column


def _sampled(row) -> list[str]:
    keys = row.get("sampled")
    return list(keys) if isinstance(keys, (list, tuple)) else []


def _distribution(values: list):
    """An Optuna distribution over the observed values, and the values as it wants them."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(isinstance(v, (bool, np.bool_)) for v in values):
        values = [bool(v) for v in values]
        return CategoricalDistribution(sorted(set(values))), values
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values):
        if all(float(v).is_integer() for v in values):  # 16 read back as 16.0 where other runs lack the key
            values = [int(v) for v in values]
            return IntDistribution(min(values), max(values)), values
        values = [float(v) for v in values]
        return FloatDistribution(min(values), max(values)), values
    values = [str(v) for v in values]  # text, lists, mixed kinds: a choice
    return CategoricalDistribution(sorted(set(values))), values


def _search_trials(info: FrontierInfo) -> pd.DataFrame:
    """The finished trials the search itself sampled (see the module docstring)."""
    s = info.students
    return s[column(s, "chain") != schema.CHAIN_DIRECT]


def importance_info(info: FrontierInfo) -> ImportanceInfo:
    trials = _search_trials(info)
    n = len(trials)
    searched = sorted({k for _, r in trials.iterrows() for k in _sampled(r)})
    present = {k: [r[k] for _, r in trials.iterrows() if k in _sampled(r) and k in r and not _missing(r[k])] for k in searched}
    left_out: dict[str, str] = {}
    params = []
    for key, values in present.items():
        if len(values) < n:
            left_out[key] = f"sampled in {len(values)} of {n} trials only, a conditional parameter: fANOVA needs a value in every trial"
        elif len({str(v) for v in values}) < 2:
            left_out[key] = f"the same value, {_show(values[0])}, in every trial: it carries no information"
        else:
            params.append(key)
    objectives = {}
    for name, direction in info.objectives.items():
        y = pd.to_numeric(trials.get(name, pd.Series(np.nan, index=trials.index)), errors="coerce")
        if not n:
            continue
        if not np.isfinite(y).all():
            left_out[name] = f"not every trial reported {name}"
        elif y.nunique() < 2:
            left_out[name] = f"{name} was the same in every trial: nothing to explain"
        else:
            objectives[name] = direction
    why = ""
    if n < MIN_TRIALS:
        why = f"importance needs at least {MIN_TRIALS} finished search trials, and this search has {n}"
    elif len(params) < 2:
        why = (f"fewer than two searched parameters varied across the {n} finished trials "
               f"({', '.join(params) or 'none'} did)")
    elif not objectives:
        why = f"no objective varied across the {n} finished trials"
    if why:
        return ImportanceInfo(EVALUATOR, n, tuple(params), None, left_out, why)
    table = _fanova(trials, params, objectives)
    return ImportanceInfo(EVALUATOR, n, tuple(table.index), table, left_out)


def _fanova(trials: pd.DataFrame, params: list[str], objectives: dict[str, str]) -> pd.DataFrame:
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created" per call
    try:
        inferred = {k: _distribution(trials[k].tolist()) for k in params}
        distributions = {k: d for k, (d, _) in inferred.items()}
        study = optuna.create_study(directions=[_DIRECTIONS[d] for d in objectives.values()])
        for i, (_, row) in enumerate(trials.iterrows()):
            study.add_trial(optuna.trial.create_trial(
                params={k: values[i] for k, (_, values) in inferred.items()}, distributions=distributions,
                values=[float(row[name]) for name in objectives]))
        columns = {}
        for i, name in enumerate(objectives):
            columns[name] = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=params,
                target=lambda t, i=i: t.values[i])
    finally:
        optuna.logging.set_verbosity(verbosity)
    table = pd.DataFrame(columns, index=params, dtype=float)
    table.index.name = "param"
    return table.sort_values(list(objectives)[0], ascending=False)


def plot_importance(info: ImportanceInfo, path: str | Path) -> None:
    """Horizontal bars: one group per parameter, one bar per objective."""
    plt = _pyplot()
    t = info.table
    rows = 0 if t is None else len(t)
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.3 * max(rows, 2) * (1 if t is None else len(t.columns))))
    if t is None:
        ax.text(0.5, 0.5, info.why, ha="center", va="center", wrap=True, transform=ax.transAxes)
        ax.set_axis_off()
    else:
        k = len(t.columns)
        height = 0.8 / k
        y = np.arange(rows)[::-1]  # the most important on top
        for j, name in enumerate(t.columns):
            ax.barh(y + (k - 1 - 2 * j) * height / 2, t[name], height=height, label=name)
        ax.set_yticks(y, t.index)
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (share of each objective's explained variance)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over one
    ax.set_title(f"parameter importance ({info.evaluator}, {info.n_trials} finished trials)")
    save_figure(fig, path)
