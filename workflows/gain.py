"""The distillation gain measured with both arms tuned (`search.twins: tuned`).

A gain over a scratch twin that kept the KD run's recipe is a gain over a
handicapped baseline: a learning rate that suits KD may not suit plain
cross-entropy (Stanton et al. 2021; Sultan et al. 2024: configuration alone
moves KD results by up to 4.3 points). So, after the search, for every
architecture on the Pareto front:

1. recipes, at the base seed, the same budget for each arm
   (`search.recipe_trials` = k runs of the search's epochs), on the same k
   (lr, weight decay) draws: the front student's own lr, the config's, then draws;
   - `kd`: each draw with a KD recipe (temperature, kd weight with ce = 1 - kd):
     the front student's own, then the textbook ones (T 4 with kd 0.9; Hinton's
     high T 20; the config's base), then random draws;
   - `twin`: each draw on hard labels;
   - `smooth`: each draw with label smoothing (the control of Yuan et al. 2020:
     KD as learned label smoothing);
   - `random`, only when the front student starts from its teacher (`train.init:
     teacher` or `prune`): each draw on hard labels from random weights. Every other
     labels-only arm takes the student's own start, so KD minus the tuned twin is
     what distillation bought on top of the start, and the tuned twin minus this
     arm is what the start bought (DistilBERT's ablation reports the two apart);
   - `kd_random`, beside it: KD's own candidates from random weights, so the start's
     worth is measured under distillation too (Minitron's comparison: a pruned
     start with KD against KD from scratch at the same size and budget);
2. the race (`search.race` = r, `search.race_seeds` = R, with S > 1): each arm's r
   best candidates on validation at the base seed run at seeds seed+1 .. seed+R-1,
   and the best mean over those R seeds is the arm's winner (`analysis.gains.race_pick`):
   a pick on one seed's val_acc picks the luckiest seed. The arm's textbook candidate
   (`kdx.textbook`) races too, whatever its rank, and wins when the best leads it by less
   than the noise of seeds and validation split together (`analysis.gains.run_race`);
3. seeds (`search.seeds` = S): the three winners again with seeds seed+1 ..
   seed+S-1 (their race seeds already done), and two controls of the KD winner at every seed: `shuffled` (its
   teacher's non-target probabilities shuffled: the dark-knowledge control)
   and `same_recipe` (its own recipe on labels only: the cheap twin).

A language model's search (`data` of task lm) runs the same phases on its own terms: the KD arm
tunes the next-token loss the config weights (`kd_loss`: token_kd, rkl, gjsd or skew_kl), from
next-token textbook recipes (T 1 with weight 1; T 2 in an even mix), with temperatures drawn in
1..4; candidates are picked on validation cross-entropy (lower better); and there is no
`shuffled` control, since shuffling non-target classes has no next-token meaning.

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
from analysis.gains import Candidate, race_pick, race_settings
from analysis.store import FINISHED, Store, params_of
from distill.tasks import TASKS

from .experiment import ExperimentConfig
from .trial import Job

__all__ = ["recipe_jobs", "race_jobs", "seed_jobs", "kd_loss", "SEARCHED_ARMS", "TEXTBOOK", "TEXTBOOK_RECIPES",
           "textbook_recipes", "base_recipe"]

Log = Callable[[str], None]
SEARCHED_ARMS = {"kd": schema.ROLE_STUDENT, "twin": schema.ROLE_TWIN, "smooth": schema.ROLE_TWIN, "random": schema.ROLE_TWIN,
                 "kd_random": schema.ROLE_STUDENT}
CONTROL_ARMS = {"shuffled": schema.ROLE_STUDENT, "same_recipe": schema.ROLE_TWIN}
# (temperature, KD weight, ce weight) of the textbook recipes, per task (distill/tasks/: each task's `recipes`)
TEXTBOOK_RECIPES = {name: task.recipes for name, task in TASKS.items()}
TEXTBOOK = tuple({"losses.kd.temperature": t, "mix.kd": w, "mix.ce": ce} for t, w, ce in TASKS["classify"].recipes)


def kd_loss(exp: ExperimentConfig) -> str:
    """The distillation loss the gain's KD arm tunes, as the task picks it: kd for a classifier; a language
    model's next-token loss that the base mix weights, else the first the space weights."""
    spaced = [p.key.split(".", 1)[1] for p in exp.space if p.key.startswith("mix.")]
    return exp.task.kd_loss(exp.run.mix, spaced)


def textbook_recipes(exp: ExperimentConfig) -> list[dict]:
    """The task's textbook KD recipes on the keys of the loss the KD arm tunes."""
    name, labels = kd_loss(exp), exp.task.labels_loss
    return [{f"losses.{name}.temperature": t, f"mix.{name}": w, f"mix.{labels}": ce} for t, w, ce in exp.task.recipes]


def base_recipe(exp: ExperimentConfig, default_kd: float, default_ce: float) -> dict:
    """The base config's own KD recipe on the KD arm's keys (the defaults where its mix leaves a weight out);
    {} for a task with no recipe of that shape (an embedding's KD keeps its own mix)."""
    if not exp.task.recipes:
        return {}
    name, labels = kd_loss(exp), exp.task.labels_loss
    opts = exp.run.losses.get(name)
    return {f"losses.{name}.temperature": getattr(opts, "temperature", 4.0) if opts else 4.0, f"mix.{name}": exp.run.mix.get(name, default_kd),
            f"mix.{labels}": exp.run.mix.get(labels, default_ce)}


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
        # the front student's start goes with its shape: every arm takes it (a space may search train.init)
        start = {"train.init": params.get("train.init", exp.run.train.init)} | {
            k: params[k] for k in row["sampled"] if k in params and k.startswith(("train.prune.", "train.init_layers"))}
        out.append((row["arch"], {k: v for k, v in params.items() if k.startswith("student.")} | start,
                    {k: params[k] for k in row["sampled"] if k in params and k not in start}))
    n = exp.search.gain_archs
    if n and len(out) > n:
        out = [out[i] for i in sorted({round(j * (len(out) - 1) / max(1, n - 1)) for j in range(n)})]
    return out


def _draw(rng: np.random.Generator, low: float, high: float, log: bool = True) -> float:
    x = rng.uniform(math.log10(low), math.log10(high)) if log else rng.uniform(low, high)
    return float(f"{10 ** x if log else x:.4g}")


def _draws(exp: ExperimentConfig, own: dict, k: int, rng: np.random.Generator) -> list[dict]:
    """k (lr, weight decay) pairs that every arm of one architecture trains with: the front
    student's own (its searched lr), the base config's, then log-uniform draws around the base lr."""
    lr, wd = exp.run.train.lr, exp.run.train.weight_decay
    fixed = [{"train.lr": own.get("train.lr", lr), "train.weight_decay": own.get("train.weight_decay", wd)},
             {"train.lr": lr, "train.weight_decay": wd}]
    out = [d for i, d in enumerate(fixed) if d not in fixed[:i]]
    while len(out) < k:
        out.append({"train.lr": _draw(rng, lr / 10, lr * 10), "train.weight_decay": _draw(rng, 1e-5, 1e-2)})
    return out[:k]


def _arm_candidates(exp: ExperimentConfig, own: dict, k: int, rng: np.random.Generator, start: str = "random") -> dict[str, list[dict]]:
    """k recipes per searched arm, each a dict of dotted keys. Candidate i of every arm trains
    with the same lr / weight decay (draw i), so no arm is better tuned on a key they share;
    KD adds its temperature and mix (the front student's own, the textbook ones, the base
    config's, then draws), the smoothing control its label smoothing (Szegedy et al. 2016's 0.1, then draws)."""
    draws = _draws(exp, own, k, rng)
    task = exp.task
    own_recipe = {key: v for key, v in own.items() if key not in draws[0]}
    if task.recipes:
        name, labels = kd_loss(exp), task.labels_loss
        base = base_recipe(exp, 0.9, 0.1)
        parts = []
        for c in (own_recipe, *textbook_recipes(exp), base):  # the front student's recipe is often a textbook one
            if {key: c.get(key, v) for key, v in base.items()} not in [{key: p.get(key, v) for key, v in base.items()} for p in parts]:
                parts.append(c)
        low, high = task.temperatures  # the range of a random KD candidate's temperature
        while len(parts) < k:
            w = round(_draw(rng, 0.1, 0.95, log=False), 3)
            parts.append({f"losses.{name}.temperature": _draw(rng, low, high), f"mix.{name}": w, f"mix.{labels}": round(1 - w, 3)})
    else:  # no textbook recipe of this task's shape to start from: KD keeps the front student's own mix, tuned on the same draws
        parts = [own_recipe] * k
    plain = {"losses.ce.label_smoothing": 0.0} if task.smoothing else {}  # what a labels-only arm sets on its labels loss
    arms = {"kd": [parts[i] | d for i, d in enumerate(draws)], "twin": [d | plain for d in draws]}
    if task.smoothing:
        smoothing = [0.1] + [_draw(rng, 0.05, 0.3, log=False) for _ in range(k - 1)]
        arms["smooth"] = [d | {"losses.ce.label_smoothing": smoothing[i]} for i, d in enumerate(draws)]
    if start != "random":  # every labels-only arm takes the student's start; this one, tuned alike, measures what the start bought
        arms["random"] = [d | plain | {"train.init": "random"} for d in draws]
        arms["kd_random"] = [r | {"train.init": "random"} for r in arms["kd"]]  # KD's candidates from random weights: the start's worth under KD
    return arms


def _textbook(exp: ExperimentConfig, arm: str, recipes: list[dict]) -> int | None:
    """The index of the arm's textbook candidate, the recipe a practitioner would run without a search: KD's first
    textbook recipe (T 4, kd 0.9, ce 0.1 for a classifier), label smoothing's 0.1, and for a labels-only arm the base
    config's lr and weight decay. It races whatever its rank and wins a tie inside the noise (analysis.gains.run_race)."""
    if arm in ("kd", "kd_random") and exp.task.recipes:
        book = textbook_recipes(exp)[0]
        found = [i for i, r in enumerate(recipes) if all(r.get(k) == v for k, v in book.items())]
    elif arm == "smooth":
        found = [i for i, r in enumerate(recipes) if r.get("losses.ce.label_smoothing") == 0.1]
    else:
        base = {"train.lr": exp.run.train.lr, "train.weight_decay": exp.run.train.weight_decay}
        found = [i for i, r in enumerate(recipes) if all(r.get(k) == v for k, v in base.items())]
    return found[0] if found else None


def _tags(arm: str, arch: str) -> dict:
    return {schema.TAG_ARM: arm, schema.TAG_GAIN_ARCH: arch}


def recipe_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Phase 1: every front architecture's k candidates per searched arm, minus those finished."""
    done = {(r.data.tags.get(schema.TAG_GAIN_ARCH), r.data.tags.get(schema.TAG_ARM), r.data.tags.get(schema.TAG_CANDIDATE))
            for r in store.keep_finished(_arm_runs(store.runs(experiment_id, parent=parent_id), repeats=False))}
    rng = np.random.default_rng(exp.search.seed)
    jobs = []
    for arch, shape, own in _front_archs(exp, store):
        candidates = _arm_candidates(exp, own, exp.search.recipe_trials, rng, str(shape.get("train.init", exp.run.train.init)))
        for arm, recipes in candidates.items():
            book = _textbook(exp, arm, recipes)
            for i, recipe in enumerate(recipes, 1):
                if (arch, arm, str(i)) not in done:
                    tags = _tags(arm, arch) | {schema.TAG_CANDIDATE: str(i)} | ({schema.TAG_TEXTBOOK: "true"} if i - 1 == book else {})
                    jobs.append(Job(SEARCHED_ARMS[arm], {**shape, **recipe}, tags=tags, name=f"{arm} {arch} #{i}"))
    return jobs


def _arm_runs(runs: list, repeats: bool) -> list:
    """Arm runs among the search's runs: the candidates at the base seed (repeats=False) or the seeded ones."""
    return [r for r in runs if r.data.tags.get(schema.TAG_ARM)
            and bool(r.data.tags.get(schema.TAG_SEED_OF) or r.data.tags.get(schema.TAG_ARM) in CONTROL_ARMS) == repeats]


def _race(exp: ExperimentConfig) -> tuple[int, int]:
    return race_settings({"seeds": exp.search.seeds, "race": exp.search.race, "race_seeds": exp.search.race_seeds})


def _raced(exp: ExperimentConfig, runs: list, val_samples: int | None = None) -> dict[tuple[str, str], tuple[object, list]]:
    """(arch, arm) -> (its winner's run, the candidates raced), by `analysis.gains.race_pick`, on the
    validation score signed so that higher is better (a language model's cross-entropy negated);
    `runs`: the search's child runs, read once by the caller; `val_samples`: the validation split's size."""
    score = exp.score
    seeded: dict[str, dict[int, float]] = {}
    for r in _arm_runs(runs, repeats=True):
        if r.info.status == FINISHED and r.data.tags.get(schema.TAG_SEED_OF) and score.val in r.data.metrics:
            seeded.setdefault(r.data.tags[schema.TAG_SEED_OF], {})[int(params_of(r)["seed"])] = score.sign * r.data.metrics[score.val]
    groups: dict[tuple[str, str], list] = {}
    for r in _arm_runs(runs, repeats=False):
        if r.info.status == FINISHED and score.val in r.data.metrics:
            groups.setdefault((r.data.tags[schema.TAG_GAIN_ARCH], r.data.tags[schema.TAG_ARM]), []).append(r)
    out = {}
    for key, group in groups.items():
        by_id = {r.info.run_id: r for r in group}
        cands = [Candidate(r.info.run_id, score.sign * r.data.metrics[score.val], r.info.start_time, int(params_of(r)["seed"]),
                           seeded.get(r.info.run_id, {}), r.data.tags.get(schema.TAG_TEXTBOOK) == "true") for r in group]
        best, raced = race_pick(cands, *_race(exp), val_samples if score == schema.ACCURACY else None)
        out[key] = (by_id[best], [by_id[c.key] for c in raced])
    return out


def _val_samples(store: Store, parent_id: str) -> int | None:
    """The validation split's size as the search run logged it (analysis.store.SearchRecord); None for an older search."""
    from analysis.store import SearchRecord

    return SearchRecord.read(store.get(parent_id).data.params).val_samples


def _recipe_of(run) -> dict:
    return {k: v for k, v in params_of(run).items() if k in run.data.tags.get(schema.TAG_SAMPLED, "").split(",")}


def race_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Phase 2: each arm's best candidates at the base seed, again at the race's other seeds, minus those done."""
    race, seeds = _race(exp)
    if race < 2 or seeds < 2:
        return []
    repeated = store.repeats_done(experiment_id, parent_id)
    jobs = []
    for (arch, arm), (_, raced) in sorted(_raced(exp, store.runs(experiment_id, parent=parent_id), _val_samples(store, parent_id)).items(),
                                         key=lambda kv: kv[0]):
        for run in raced:
            for seed in range(exp.run.seed + 1, exp.run.seed + seeds):
                if (run.info.run_id, seed) not in repeated:
                    jobs.append(Job(SEARCHED_ARMS[arm], _recipe_of(run), seed=seed, repeat_of=run.info.run_id, tags=_tags(arm, arch),
                                    name=f"{arm} {arch} #{run.data.tags.get(schema.TAG_CANDIDATE)} seed {seed}"))
    return jobs


def seed_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Phase 3: the winners at the other seeds, and the KD winner's two controls at every seed, minus those done."""
    runs = store.runs(experiment_id, parent=parent_id)
    won = {key: winner for key, (winner, _) in _raced(exp, runs, _val_samples(store, parent_id)).items()}
    # before repeats_done, which reads the store afresh: a cut-off run is deleted once
    controls = {(r.data.tags.get(schema.TAG_CONTROL_OF), r.data.tags[schema.TAG_ARM], int(params_of(r)["seed"]))
                for r in store.keep_finished([r for r in _arm_runs(runs, repeats=True)
                                              if r.data.tags[schema.TAG_ARM] in CONTROL_ARMS])}
    repeated = store.repeats_done(experiment_id, parent_id)
    seeds = range(exp.run.seed, exp.run.seed + exp.search.seeds)
    jobs = []
    for (arch, arm), run in sorted(won.items(), key=lambda kv: kv[0]):
        recipe = _recipe_of(run)
        for seed in seeds[1:]:
            if (run.info.run_id, seed) not in repeated:
                jobs.append(Job(SEARCHED_ARMS[arm], recipe, seed=seed, repeat_of=run.info.run_id, tags=_tags(arm, arch),
                                name=f"{arm} {arch} seed {seed}"))
        if arm != "kd":
            continue
        for control, role in CONTROL_ARMS.items():
            if control not in exp.task.controls:  # shuffling non-target classes has no next-token meaning: the same-recipe twin stays
                continue
            extra = {"losses.kd.shuffle_nontarget": True} if control == "shuffled" else {}
            for seed in seeds:  # keyed by the winner: should it change on a resume, its controls follow
                if (run.info.run_id, control, seed) not in controls:
                    jobs.append(Job(role, recipe | extra, seed=seed, tags=_tags(control, arch) | {schema.TAG_CONTROL_OF: run.info.run_id},
                                    name=f"{control} {arch} seed {seed}"))
    return jobs
