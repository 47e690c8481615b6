"""The distillation gain measured with both arms tuned (`search.twins: tuned`).

A gain over a scratch twin that kept the KD run's recipe is a gain over a
handicapped baseline: a learning rate that suits KD may not suit plain
cross-entropy (Stanton et al. 2021; Sultan et al. 2024: configuration alone
moves KD results by up to 4.3 points). So, after the search, for every
architecture on the Pareto front:

1. recipes, at the base seed, the same budget for each arm
   (`search.recipe_trials` = k runs of the search's epochs):
   - `kd`: k KD recipes (temperature, kd weight with ce = 1 - kd, lr): the front
     student's own, then the textbook ones (T 4 with kd 0.9; Hinton's high T 20;
     the config's base), then random draws;
   - `twin`: k labels-only recipes (lr, weight decay; hard labels);
   - `smooth`: k labels-only recipes with label smoothing searched too (the
     control of Yuan et al. 2020: KD as learned label smoothing);
   each arm's best on validation is its winner;
2. seeds (`search.seeds` = S): the three winners again with seeds seed+1 ..
   seed+S-1, and two controls of the KD winner at every seed: `shuffled` (its
   teacher's non-target probabilities shuffled: the dark-knowledge control)
   and `same_recipe` (its own recipe on labels only: the cheap twin).

Runs pair by seed (same init and batch order). Every run carries `kdx.arm` and
`kdx.gain_arch`; analysis.gains reads them back. The random draws come from a
generator seeded by the search seed, so a resumed search asks for the same
candidates, and a candidate equal to a run already made (the front student's
own recipe; a same-recipe control equal to the architecture's base-recipe twin) is replayed, not trained again (trial.py).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from analysis import schema
from analysis.store import FINISHED, Store, params_of

from .experiment import ExperimentConfig
from .trial import Job

__all__ = ["recipe_jobs", "seed_jobs", "warm_start", "SEARCHED_ARMS", "TEXTBOOK"]

Log = Callable[[str], None]
SEARCHED_ARMS = {"kd": schema.ROLE_STUDENT, "twin": schema.ROLE_TWIN, "smooth": schema.ROLE_TWIN}
CONTROL_ARMS = {"shuffled": schema.ROLE_STUDENT, "same_recipe": schema.ROLE_TWIN}
TEXTBOOK = ({"losses.kd.temperature": 4.0, "mix.kd": 0.9, "mix.ce": 0.1},  # Hinton et al. 2015 as most code runs it
            {"losses.kd.temperature": 20.0, "mix.kd": 0.9, "mix.ce": 0.1})  # Hinton's high-temperature regime


def warm_start(exp: ExperimentConfig) -> list[dict]:
    """The textbook recipes and the config's own as the search's first trials, on the keys
    the space samples (numbers clipped into its ranges; T 20 becomes the space's highest)."""
    space = {p.key: p for p in exp.space if p.kind in ("int", "float") and not p.when}
    kd = exp.run.losses.get("kd")
    base = {"losses.kd.temperature": kd.temperature if kd else 4.0, "mix.kd": exp.run.mix.get("kd", 0.0),
            "mix.ce": exp.run.mix.get("ce", 0.0), "train.lr": exp.run.train.lr}
    points: list[dict] = []
    for recipe in (*TEXTBOOK, base):
        point = {k: min(max(v, space[k].low), space[k].high) for k, v in (base | recipe).items() if k in space}
        if {"losses.kd.temperature", "mix.kd"} & set(point) and point not in points:
            points.append({k: int(v) if space[k].kind == "int" else v for k, v in point.items()})
    return points


def _front_archs(exp: ExperimentConfig, store: Store) -> list[tuple[str, dict, dict]]:
    """(arch id, student.* params, the front student's sampled params) per distinct front architecture,
    smallest first; with `search.gain_archs` N, N of them spread evenly from the smallest to the largest."""
    from analysis.frontier import frontier_info
    from analysis.runs import load_runs

    seen, out = set(), []
    for _, row in frontier_info(load_runs(exp.tracking_uri, exp.name)).front.iterrows():
        if row["arch"] in seen:
            continue
        seen.add(row["arch"])
        params = params_of(store.get(row["run_id"]))
        out.append((row["arch"], {k: v for k, v in params.items() if k.startswith("student.")},
                    {k: params[k] for k in row["sampled"] if k in params}))
    n = exp.search.gain_archs
    if n and len(out) > n:
        out = [out[i] for i in sorted({round(j * (len(out) - 1) / max(1, n - 1)) for j in range(n)})]
    return out


def _draw(rng: np.random.Generator, low: float, high: float, log: bool = True) -> float:
    x = rng.uniform(math.log10(low), math.log10(high)) if log else rng.uniform(low, high)
    return float(f"{10 ** x if log else x:.4g}")


def _candidates(exp: ExperimentConfig, arm: str, own: dict, k: int, rng: np.random.Generator) -> list[dict]:
    """k recipes of one arm, the known-good ones first; each a dict of dotted keys."""
    base = exp.run
    lr, wd = base.train.lr, base.train.weight_decay
    kd = base.losses.get("kd")
    if arm == "kd":
        defaults = {"losses.kd.temperature": kd.temperature if kd else 4.0, "mix.kd": base.mix.get("kd", 0.9),
                    "mix.ce": base.mix.get("ce", 0.1), "train.lr": lr}
        fixed = [own, *({**t, "train.lr": lr} for t in TEXTBOOK), defaults]
    elif arm == "twin":
        defaults = {"train.lr": lr, "train.weight_decay": wd, "losses.ce.label_smoothing": 0.0}
        fixed = [defaults]
    else:
        defaults = {"train.lr": lr, "train.weight_decay": wd, "losses.ce.label_smoothing": 0.1}  # Szegedy et al. 2016's 0.1
        fixed = [defaults]
    out, seen = [], []
    for c in fixed:  # the front student's recipe is often a textbook one: the same recipe is not run twice
        recipe = {k: c.get(k, v) for k, v in defaults.items()}
        if recipe not in seen:
            seen.append(recipe)
            out.append(c)
    while len(out) < k:
        recipe = {"train.lr": _draw(rng, lr / 10, lr * 10)}
        if arm == "kd":
            w = round(_draw(rng, 0.1, 0.95, log=False), 3)
            recipe |= {"losses.kd.temperature": _draw(rng, 1.0, 20.0), "mix.kd": w, "mix.ce": round(1 - w, 3)}
        else:
            recipe |= {"train.weight_decay": _draw(rng, 1e-5, 1e-2),
                       "losses.ce.label_smoothing": 0.0 if arm == "twin" else _draw(rng, 0.05, 0.3, log=False)}
        out.append(recipe)
    return out[:k]


def _tags(arm: str, arch: str) -> dict:
    return {schema.TAG_ARM: arm, schema.TAG_GAIN_ARCH: arch}


def recipe_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Phase 1: every front architecture's k candidates per searched arm, minus those finished."""
    done = {(r.data.tags.get(schema.TAG_GAIN_ARCH), r.data.tags.get(schema.TAG_ARM), r.data.tags.get(schema.TAG_CANDIDATE))
            for r in store.keep_finished(_arm_runs(store, experiment_id, parent_id, repeats=False))}
    rng = np.random.default_rng(exp.search.seed)
    jobs = []
    for arch, shape, own in _front_archs(exp, store):
        for arm, role in SEARCHED_ARMS.items():
            for i, recipe in enumerate(_candidates(exp, arm, own, exp.search.recipe_trials, rng), 1):
                if (arch, arm, str(i)) not in done:
                    jobs.append(Job(role, {**shape, **recipe}, tags=_tags(arm, arch) | {schema.TAG_CANDIDATE: str(i)}, name=f"{arm} {arch} #{i}"))
    return jobs


def _arm_runs(store: Store, experiment_id: str, parent_id: str, repeats: bool) -> list:
    """Arm runs under the search: the candidates at the base seed (repeats=False) or the seeded ones."""
    return [r for r in store.runs(experiment_id, parent=parent_id) if r.data.tags.get(schema.TAG_ARM)
            and bool(r.data.tags.get(schema.TAG_SEED_OF) or r.data.tags.get(schema.TAG_ARM) in CONTROL_ARMS) == repeats]


def winners(runs: list) -> dict[tuple[str, str], object]:
    """(arch, arm) -> the finished candidate with the best val_acc (the earlier one on a tie)."""
    best: dict = {}
    for r in runs:
        if r.info.status != FINISHED:
            continue
        key = (r.data.tags[schema.TAG_GAIN_ARCH], r.data.tags[schema.TAG_ARM])
        score = (r.data.metrics.get(schema.VAL_ACC, -1.0), -r.info.start_time)
        if key not in best or score > best[key][0]:
            best[key] = (score, r)
    return {k: v[1] for k, v in best.items()}


def seed_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Phase 2: the winners at the other seeds, and the KD winner's two controls at every seed, minus those done."""
    won = winners(_arm_runs(store, experiment_id, parent_id, repeats=False))
    repeated = store.repeats_done(experiment_id, parent_id)
    controls = {(r.data.tags.get(schema.TAG_CONTROL_OF), r.data.tags[schema.TAG_ARM], int(params_of(r)["seed"]))
                for r in store.keep_finished([r for r in _arm_runs(store, experiment_id, parent_id, repeats=True)
                                              if r.data.tags[schema.TAG_ARM] in CONTROL_ARMS])}
    seeds = range(exp.run.seed, exp.run.seed + exp.search.seeds)
    jobs = []
    for (arch, arm), run in sorted(won.items(), key=lambda kv: kv[0]):
        recipe = {k: v for k, v in params_of(run).items() if k in run.data.tags.get(schema.TAG_SAMPLED, "").split(",")}
        for seed in seeds[1:]:
            if (run.info.run_id, seed) not in repeated:
                jobs.append(Job(SEARCHED_ARMS[arm], recipe, seed=seed, repeat_of=run.info.run_id, tags=_tags(arm, arch),
                                name=f"{arm} {arch} seed {seed}"))
        if arm != "kd":
            continue
        for control, role in CONTROL_ARMS.items():
            extra = {"losses.kd.shuffle_nontarget": True} if control == "shuffled" else {}
            for seed in seeds:  # keyed by the winner: should it change on a resume, its controls follow
                if (run.info.run_id, control, seed) not in controls:
                    jobs.append(Job(role, recipe | extra, seed=seed, tags=_tags(control, arch) | {schema.TAG_CONTROL_OF: run.info.run_id},
                                    name=f"{control} {arch} seed {seed}"))
    return jobs
