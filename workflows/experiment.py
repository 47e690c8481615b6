"""The experiment config: a base run config plus the search around it.

    experiment: mnist1d-frontier
    data/teacher/student/train/losses/mix: the base run (distill.config)
    space:     presets/capacity_gap.yaml    # or a file, or inline entries
    search:    {num_samples: 16, max_concurrent: 2, sampler: nsga2, seed: 0,
                objectives: {val_acc: max, params: min}, scheduler: asha, baselines: true}
    resources: {cpu: 1, gpu: 0}
    tracking:  {uri: sqlite:///mlflow.db}
    chain:     {assistants: 1, assistant: {family: mlp}}  # a teacher-assistant chain search instead (see chain.py)

Everything is checked here, before Ray or MLflow is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from analysis.schema import FINAL_ONLY, OBJECTIVES, QUALITY, VAL_ACC, Score, quality
from distill.cache import fingerprint
from distill.config import RunConfig, apply_overrides, check_key, load_yaml, parse_dataclass, resolve_paths, to_plain
from distill.data import import_object, is_custom
from distill.errors import ConfigError, check, did_you_mean
from distill.tasks import Task
from distill.teacher import check_teacher_source
from search_spaces.space import Param, apply, load_space, validate
from search_spaces.stages import stage_bases, stage_check, stage_configs, validate_stages

from .sampling import SamplerChoice, choose_sampler

__all__ = ["ExperimentConfig", "SearchSettings", "Resources", "ChainSettings", "load_experiment", "EXPERIMENT_KEYS", "default_tracking_uri"]

EXPERIMENT_KEYS = ("experiment", "space", "search", "resources", "tracking", "chain")


@dataclass(frozen=True)
class SearchSettings:
    num_samples: int = 16
    max_concurrent: int = 2
    sampler: Literal["auto", "tpe", "nsga2", "gp", "random"] = "auto"  # auto: chosen for the budget and the keys (workflows/sampling.py)
    seed: int = 0
    objectives: dict = field(default_factory=lambda: {VAL_ACC: "max"})
    scheduler: Literal["asha", "none"] = "none"
    grace_period: int = 2  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: int = 3  # ASHA: keep the best 1/3 at each rung
    baselines: bool = True  # a scratch twin per distinct student architecture
    storage: str = ""  # Ray Tune's results and checkpoints; default ./kdx-results
    study: str = ""  # the persisted Optuna study (workflows/study.py): a journal file or a database URL; default beside storage
    enqueue: list = field(default_factory=list)  # param dicts to try first (known-good configs, benchmarks)
    warm_start: bool = True  # the textbook recipes and a size ladder after enqueue (workflows/warm.py); false: the sampler alone
    retries: int = 2  # a trial lost to its machine (node death, OOM kill) runs again this many times
    seeds: int = 1  # > 1: the gain's arms (or, with twins: base_recipe, the Pareto students and their twins) at seeds seed+1 .. (paired)
    # How the gain is measured (workflows/gain.py): "tuned" gives the front's architectures a recipe
    # search per arm, KD and labels-only, with the same budget; "base_recipe" only pairs each student
    # with one twin per architecture trained with the base config's settings on labels only (cheap;
    # the student's recipe was searched and the twin's was not, which favours KD).
    twins: Literal["tuned", "base_recipe"] = "tuned"
    recipe_trials: int = 4  # per arm and front architecture, with twins: tuned
    gain_archs: int = 0  # with twins: tuned, at most this many front architectures, spread over its sizes (0: all)
    # With twins: tuned and seeds > 1, each arm's `race` best recipes at the base seed run on `race_seeds`
    # seeds before its winner is picked on their mean (one seed's val_acc is as noisy as the gaps between
    # good recipes); the winner's race seeds count toward its `seeds`. race 1 picks on the base seed alone.
    race: int = 2
    race_seeds: int = 3
    confirm: int = 1  # > 1: seeds behind each front point a single run put there (a trial, a base-recipe twin): workflows/confirm.py

    def __post_init__(self) -> None:
        for key in ("num_samples", "max_concurrent", "seeds", "recipe_trials", "race_seeds", "grace_period", "confirm"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.retries >= 0, "retries", f"must be >= 0, got {self.retries}")
        check(self.race >= 1, "race", f"must be >= 1 (1: the winner is picked on one seed), got {self.race}")
        check(self.gain_archs >= 0, "gain_archs", f"must be >= 0 (0: every front architecture), got {self.gain_archs}")
        check(isinstance(self.enqueue, list), "enqueue", "expected a list of param mappings")
        check(self.reduction_factor >= 2, "reduction_factor", f"must be >= 2, got {self.reduction_factor}")
        check(bool(self.objectives), "objectives", "name at least one objective, e.g. {val_acc: max}")
        for name, mode in self.objectives.items():
            check(name in OBJECTIVES, "objectives", f"unknown objective '{name}'" + did_you_mean(str(name), list(OBJECTIVES)))
            check(mode in ("max", "min"), "objectives", f"{name}: direction must be max or min, got {mode!r}")
        if self.scheduler == "asha":
            check(quality(self.objectives) is not None, "scheduler",
                  f"asha stops trials on how good they are per epoch: add one of {', '.join(QUALITY)} to the objectives")
            late = [k for k in self.objectives if k in FINAL_ONLY]
            check(not late, "scheduler", f"asha reads every objective per epoch, and {', '.join(late)} is measured once a run ends")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # per trial; also the trial's torch threads (rounded down, at least 1)
    gpu: float = 0.0  # fractions pack several small students on one GPU

    def __post_init__(self) -> None:
        check(self.cpu > 0, "cpu", f"must be > 0, got {self.cpu}")
        check(self.gpu >= 0, "gpu", f"must be >= 0, got {self.gpu}")


@dataclass(frozen=True)
class ChainSettings:
    """Teacher -> a1 -> ... -> student. The space names a stage per key (a1.student.width);
    the search maximises the student's val_acc, then runs the direct teacher -> student
    distillation and the scratch twin on the same budget (search.seeds times, paired)."""

    assistants: int = 1
    assistant: dict = field(default_factory=dict)  # the assistants' base model section; default: the student's

    def __post_init__(self) -> None:
        check(1 <= self.assistants <= 8, "assistants", f"must be in 1..8, got {self.assistants}")


@dataclass(frozen=True)
class Tracking:
    uri: str = ""  # default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    base: dict  # the base run config as plain data (trial params are set on it)
    run: RunConfig  # the base, checked
    space: list[Param]
    search: SearchSettings
    resources: Resources
    tracking_uri: str
    source: str  # the config file
    chain: ChainSettings | None = None  # a teacher-assistant chain search

    @property
    def stage_bases(self) -> dict[str, dict]:
        return stage_bases(self.base, self.chain.assistant, self.chain.assistants)

    @property
    def sampler(self) -> SamplerChoice:
        """The sampler this search runs: `search.sampler`, or with auto the one chosen for its budget."""
        s = self.search
        return choose_sampler(s.sampler, self.space, s.num_samples, len(s.objectives), s.max_concurrent)

    @property
    def task(self) -> Task:
        """What the data's task decides (distill.tasks): objectives, score, recipes, controls."""
        return self.run.task

    @property
    def lm(self) -> bool:
        """A language-modelling search: models are ranked by perplexity, gains read in nats per token."""
        return self.task.causal

    @property
    def score(self) -> Score:
        """How its models are picked and compared (distill.tasks.Score): accuracy, or a language model's nats per token."""
        return self.task.score

    @property
    def quality(self) -> str:
        """The objective that says how good a model is: the search's own, else the task's first."""
        return quality(self.search.objectives) or next(iter(self.task.objectives))

    @property
    def objective_names(self) -> list[str]:
        return list(self.search.objectives)

    @property
    def config_hash(self) -> str:
        parts = [self.base, [to_plain(p) for p in self.space], to_plain(self.search), to_plain(self.resources)]
        return fingerprint(parts + ([to_plain(self.chain)] if self.chain else []))

    def to_dict(self) -> dict:
        return {
            "experiment": self.name,
            **self.run.to_dict(),
            "search": to_plain(self.search),
            "resources": to_plain(self.resources),
            "tracking": {"uri": self.tracking_uri},
            **({"chain": to_plain(self.chain)} if self.chain else {}),
        }


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def absolute_uri(uri: str) -> str:
    """Trials run in other working directories: pin a relative SQLite path here."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    if "://" not in uri:  # a bare folder: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def load_experiment(
    path: str,
    overrides: list[str] = (),
    name: str | None = None,
    num_samples: int | None = None,
    max_concurrent: int | None = None,
    tracking_uri: str | None = None,
    smoke: bool = False,
    need_space: bool = True,
) -> ExperimentConfig:
    """Read and check an experiment config; command-line flags win over the file."""
    raw = resolve_paths(apply_overrides(load_yaml(path), list(overrides)), Path(path).resolve().parent)
    base = {k: v for k, v in raw.items() if k not in EXPERIMENT_KEYS}
    if smoke:  # a tiny budget end to end: same code path, minutes become seconds
        base = apply_overrides(base, ["train.epochs=2", "teacher.epochs=3"])
        if (base.get("data") or {}).get("name", "mnist1d") == "mnist1d":
            base = apply_overrides(base, ["data.num_samples=1000"])
        if (base.get("data") or {}).get("name") == "hmm":
            base = apply_overrides(base, ["data.train_samples=1000", "data.test_samples=300"])
    run = RunConfig.from_dict(base)
    exp_name = name or raw.get("experiment") or Path(path).stem
    if not isinstance(exp_name, str) or not exp_name.strip():
        raise ConfigError(f"experiment: expected a name, got {exp_name!r}")
    if not isinstance(raw.get("search") or {}, dict):
        raise ConfigError(f"search: expected a mapping, got {raw.get('search')!r}")
    search_raw = dict(raw.get("search") or {})
    if num_samples is not None:
        search_raw["num_samples"] = num_samples
    if max_concurrent is not None:
        search_raw["max_concurrent"] = max_concurrent
    if smoke:
        search_raw |= {"num_samples": min(int(search_raw.get("num_samples", 4)), 4), "confirm": min(int(search_raw.get("confirm", 1)), 2)}
    task = run.task
    if "objectives" not in search_raw:
        search_raw["objectives"] = dict(task.objectives)
    search = parse_dataclass(SearchSettings, search_raw, "search")
    _check_task_objectives(search.objectives, run.data.name, task)
    resources = parse_dataclass(Resources, raw.get("resources"), "resources")
    tracking = parse_dataclass(Tracking, raw.get("tracking"), "tracking")
    chain = None
    if raw.get("chain") is not None:
        if task.score.val != VAL_ACC:
            raise ConfigError(f"chain: teacher-assistant chains rank students by val_acc, and data {run.data.name} is {task.words}; "
                              "search students directly (drop the chain section)")
        chain = parse_dataclass(ChainSettings, raw["chain"], "chain")
        bases = stage_bases(base, chain.assistant, chain.assistants)
        try:
            RunConfig.from_dict(bases["a1"])  # every assistant starts from this base; the student's is `run`
        except ConfigError as e:
            raise ConfigError(f"chain.assistant: {e}") from None
        if search.objectives != {VAL_ACC: "max"}:
            raise ConfigError(f"search.objectives: a chain search maximises the student's val_acc (its size is fixed); set {{val_acc: max}}, got {search.objectives}")
        if search.scheduler != "none":
            raise ConfigError("search.scheduler: a chain reports once, after its last stage; use scheduler: none")
        if run.teacher.outputs == "views":
            raise ConfigError("teacher.outputs: a chain's assistants teach online (each is trained inside the chain, so no views of it are stored); use online")
    space: list[Param] = []
    if chain is not None:
        if raw.get("space") is None:
            raise ConfigError("space: a chain search needs a space over its assistants, e.g. {a1.student.width: {int: [16, 256], log: true}}")
        space = load_space(raw.get("space"), Path(path).parent, check=stage_check(chain.assistants))
        validate_stages(space, bases)
    elif raw.get("space") is not None or need_space:
        key_check = lambda key: check_key(key, is_custom(run.data.name), bool(run.student.factory))  # noqa: E731
        space = load_space(raw.get("space"), Path(path).parent, check=key_check)
        validate(space, base)
        own = next((p.key for p in space if p.key.startswith("teacher.")), None)
        if own and task.scored_by_teacher:  # its reference is the search's teacher: a trial's own would be scored against another
            raise ConfigError(f"space: {own}: every {task.words} run is scored against the search's teacher, so a trial cannot "
                              "train its own; search teachers in their own searches")
    keys = {p.key for p in space}
    for i, point in enumerate(search.enqueue):
        if not isinstance(point, dict) or not set(point) <= keys:
            raise ConfigError(f"search.enqueue[{i}]: expected a mapping of space keys ({', '.join(sorted(keys))}), got {point!r}")
        try:
            stage_configs(point, bases) if chain is not None else apply(point, base)
        except ConfigError as e:
            raise ConfigError(f"search.enqueue[{i}]: {e}") from None
    check_teacher_source(run)
    if is_custom(run.data.name):
        import_object(run.data.name, "data.name")
    uri = absolute_uri(tracking_uri or tracking.uri or default_tracking_uri())
    return ExperimentConfig(exp_name.strip(), base, run, space, search, resources, uri, str(path), chain)


def _check_task_objectives(objectives: dict, data: str, task: Task) -> None:
    """An objective the data's task does not rank by (val_acc on a language model, its next-token
    accuracy, where perplexity was meant; val_ppl on a classifier) is one line."""
    wrong = [k for k in objectives if k in OBJECTIVES and k not in task.objective_names]
    if wrong:
        good = ", ".join(f"{k}: {v}" for k, v in task.objectives.items())
        why = task.refused.get(wrong[0], f"{wrong[0]} is not one of its scores")
        raise ConfigError(f"search.objectives: data {data} is {task.words}, where {why} and models are ranked by {task.score.words}: "
                          f"use {{{good}}}; objectives for this task: {', '.join(task.objective_names)}")


def describe(exp: ExperimentConfig) -> str:
    """What `kdx validate` prints."""
    lines = [
        f"experiment {exp.name!r} from {exp.source}",
        f"  data {exp.run.data.name}" + (f" (augment {exp.run.data.augment.to_dict()})" if exp.run.data.augment.active else "")
        + f", teacher {exp.run.teacher.model.factory or exp.run.teacher.model.family} (outputs {exp.run.teacher.outputs}), "
        f"base student {exp.run.student.factory or exp.run.student.family}",
        f"  teacher {exp.run.teacher_recipe}" + (f", from {exp.run.teacher.checkpoint or exp.run.teacher.pretrained}" if exp.run.teacher.from_weights else ""),
        f"  students start {exp.run.train.start_words}" + ("; every twin takes the same start" if exp.run.train.init != "random" else ""),
        f"  mix {exp.run.mix}",
        f"  search: {exp.search.num_samples} trials, {exp.search.max_concurrent} at a time, sampler {exp.sampler.describe()}, "
        f"objectives {exp.search.objectives}, scheduler {exp.search.scheduler}, baselines {exp.search.baselines}",
        f"  gain: twins {exp.search.twins}" + (f", {exp.search.recipe_trials} recipe(s) per arm on "
        + (f"{exp.search.gain_archs} front architecture(s)" if exp.search.gain_archs else "every front architecture")
        if exp.search.twins == "tuned" else "") + f", {exp.search.seeds} seed(s)" + (f"; front confirmed on {exp.search.confirm} seeds" if exp.search.confirm > 1 else ""),
        f"  resources per trial: cpu {exp.resources.cpu:g}, gpu {exp.resources.gpu:g}",
        f"  tracking: {exp.tracking_uri}",
        f"  space ({len(exp.space)} entries):",
    ]
    if exp.chain:
        lines.insert(2, f"  teacher-assistant chain: {exp.chain.assistants} assistant(s), base {exp.stage_bases['a1']['student']}")
    lines += [f"    {p.key}: {p.describe()}" + (f" when {p.when}" if p.when else "") for p in exp.space]
    return "\n".join(lines)

