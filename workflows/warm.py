"""The search's first trials (`search.warm_start`, on by default): known-good points before the sampler's own.

- The textbook KD recipes and the base config's own, on the recipe keys the space samples
  (numbers clipped into its ranges; T 20 becomes the space's highest). The sampler picks their
  architecture.
- With a size objective minimised (params or latency_ms) and a student size key searched, a
  **size ladder**: the first of those recipes at `n` sizes (a sixth of the budget, 2 to 4), its
  widest-ranging size key (student.width here) at geometric steps from the low end of its range
  (8, 13, 23, 38 for width 8..64), each step on the next choice of the student's categorical keys
  (mlp, cnn, mlp, cnn: from the space's first choice) and the student's other searched numeric keys
  at the base config's values (on the space's step grid, as every warm-start value is). The search is for
  a front over size, and a random start leaves its small end to chance. The top of the range is
  left to the sampler: on a linear size axis a point near the largest size adds almost nothing to
  the front's hypervolume. Cycling the family matters: a ladder on the base family alone taught
  TPE that family, and it sampled no other (bench_front, mnist1d, where the CNN is the better
  small student).

A model-based sampler reads these points as its first observations, so it needs fewer random
start-up trials of its own (`startup_trials`).
"""

from __future__ import annotations

import math

from analysis import schema
from search_spaces.space import flatten

from .experiment import ExperimentConfig
from .gain import base_recipe, textbook_recipes
from .sampling import OPTUNA_STARTUP

__all__ = ["warm_start", "size_ladder", "startup_trials", "describe", "SIZE_OBJECTIVES"]

SIZE_OBJECTIVES = (schema.PARAMS, schema.LATENCY)
LADDER_MAX = 4


def warm_start(exp: ExperimentConfig) -> list[dict]:
    """The search's first points (the module doc): recipes, then the size ladder; [] with `search.warm_start: false`."""
    if not exp.search.warm_start:
        return []
    recipes = _recipes(exp)
    return recipes + size_ladder(exp, recipes[0] if recipes else {})


def _recipes(exp: ExperimentConfig) -> list[dict]:
    space = {p.key: p for p in exp.space if p.kind in ("int", "float") and not p.when}
    base = base_recipe(exp, 0.0, 0.0) | {"train.lr": exp.run.train.lr}
    kd_keys = {k for k in base if k.startswith(("losses.", "mix.")) and k != "mix.ce"}
    points: list[dict] = []
    for recipe in (*textbook_recipes(exp), base):
        point = {k: _clip(space[k], v) for k, v in (base | recipe).items() if k in space}
        if kd_keys & set(point) and point not in points:
            points.append(point)
    return points


def size_ladder(exp: ExperimentConfig, recipe: dict) -> list[dict]:
    """`recipe` at sizes from the low end of the student's size key's range, the base student's other
    numeric keys, the family cycling from the space's first choice (the module doc);
    [] without a size objective to minimise, a searched student size key, or room in the budget."""
    if not any(exp.search.objectives.get(k) == "min" for k in SIZE_OBJECTIVES):
        return []
    student = [p for p in exp.space if p.key.startswith("student.") and not p.when and p.kind != "fixed"]
    sizes = [p for p in student if p.kind == "int" and p.low > 0 and p.high > p.low]
    n = min(LADDER_MAX, exp.search.num_samples // 6)  # a sixth of the budget: the sampler keeps the rest
    if not sizes or n < 2:
        return []
    size = max(sizes, key=lambda p: p.high / p.low)
    base = flatten(exp.base)
    shape = {p.key: _clip(p, p.low if base.get(p.key) is None else base[p.key]) for p in student if p is not size and p.kind != "choice"}
    choices = [p for p in student if p.kind == "choice"]
    steps = sorted({_clip(size, size.low * (size.high / size.low) ** (i / n)) for i in range(n)})
    # each step takes the next choice of the student's categorical keys (family): a ladder on one family
    # alone taught TPE that family and it sampled no other (issue 23's bench_front, mnist1d)
    return [recipe | shape | {p.key: p.choices[i % len(p.choices)] for p in choices} | {size.key: v} for i, v in enumerate(steps)]


def _clip(p, value):
    """A number the space allows: inside a numeric key's range, on its step grid, an int for an int key
    (a point off the grid would train a student the user did not search)."""
    value = min(max(value, p.low), p.high)
    if p.step:  # the nearest grid point, or the last one where the range ends between two
        last = math.floor((p.high - p.low) / p.step + 1e-9)
        value = round(p.low + min(round((value - p.low) / p.step), last) * p.step, 12)
    return int(round(value)) if p.kind == "int" else float(value)


def startup_trials(known: int) -> int:
    """Random trials a model-based sampler draws before it models: Optuna's 10 without a warm start,
    else 3 beyond the `known` warm-start points (they are observations already), at most Optuna's 10.
    A user's `search.enqueue` points do not count: with `warm_start: false` the sampler runs as Optuna's."""
    return OPTUNA_STARTUP if known == 0 else min(OPTUNA_STARTUP, known + 3)


def describe(points: list[dict]) -> str:
    """The points as the search log shows them: 'key value, ...; key value, ...'."""
    return "; ".join(", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items()) for p in points)
