"""What every kdx search sets up around its trials: the MLflow parent and teacher
runs, the data and the teacher made once, Ray, and the summary at the end.

`open_session` goes in the order that makes a bad input cost nothing: the
experiment config is already checked (`load_experiment`); then the store is
checked and refusals made, data and teacher are made in this process, once,
before any worker starts (two processes creating one SQLite store race: one
dies in MLflow's migration), and only then Ray, the parent run and the teacher run.
`workflows.search` (students) and `workflows.chain` (teacher-assistant
chains) run their trials inside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import yaml

from analysis import schema
from analysis.store import FINISHED, RUNNING, VIEW_FRONT, VIEW_RUNS, Store, check_tracking, search_params, ui_path
from distill.config import with_values
from distill.data import Dataset, load_data, small_split_line
from distill.errors import ConfigError
from distill.losses import teacher_reads
from distill.models import measure_latency
from distill.prune import teacher_importance
from distill.teacher import PASSES, Teacher, prepare_teacher
from search_spaces.space import dump

from .experiment import ExperimentConfig
from .trial import TrialContext
from .study import study_ref
from .tune import DUPLICATE, FAILED, RayStart, check_storage_for_cluster, tune_path, tune_storage

__all__ = ["SearchSummary", "Session", "open_session", "summarize", "trial_settings", "TrackingWatch", "output_keys"]

Log = Callable[[str], None]


@dataclass
class SearchSummary:
    experiment: str
    experiment_id: str
    parent_run_id: str
    trials: int
    finished: int
    failed: int
    stopped: int
    duplicates: int  # trials that sampled a finished config again: replayed, not trained
    twins: int
    elapsed_s: float
    best: dict
    timings: dict  # seconds: setup (MLflow, data, teacher), trials (Tune), twins; train_s/other_s summed inside trials


def trial_settings(exp: ExperimentConfig) -> dict:
    """What a trial's resources set in its run config: threads from its CPUs, the device from its GPUs."""
    return {"train.threads": max(1, int(exp.resources.cpu)), "train.device": "cuda" if exp.resources.gpu > 0 else "cpu"}


def output_keys(exp: ExperimentConfig) -> list[str]:
    """What of the teacher any trial may read: the `reads` of every loss the base config
    weights or the space may weight (a stage-prefixed key too: a1.mix.fitnet)."""
    spaced = {p.key.split(".")[-1] for p in exp.space if p.key.split(".")[-2:-1] == ["mix"]}
    return teacher_reads({n for n, w in exp.run.mix.items() if w > 0} | spaced)


class TrackingWatch:
    """Watches a tracking server while a search runs: when it stops answering, the search
    stops within seconds, as a kill would (Tune's last snapshot stands, the trials in flight
    are rerun by --resume), with one line naming the server, instead of every MLflow call
    of every trial retrying against it."""

    def __init__(self, uri: str, every_s: float = 3.0, misses: int = 2):
        import threading

        self.uri, self.every_s, self.misses = uri, every_s, misses
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kdx-tracking-watch", daemon=True)

    def __enter__(self) -> "TrackingWatch":
        if self.uri.startswith(("http://", "https://")):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        import os
        import sys

        missed = 0
        while not self._done.wait(self.every_s):
            try:
                check_tracking(self.uri, timeout=self.every_s)
                missed = 0
            except ConfigError as e:
                missed += 1
                if missed >= self.misses and not self._done.is_set():
                    print(f"kdx: error: tracking: the MLflow server at {self.uri} stopped answering ({str(e).rsplit('(', 1)[-1].rstrip(')')}) "
                          f"at {time.strftime('%H:%M:%S')}; the search stopped with its state saved: start the server again and run the "
                          "same command with --resume", file=sys.stderr, flush=True)
                    os._exit(2)  # Ray's processes share this one's fate; nothing here may wait on the server


def _experiment_note(exp: ExperimentConfig, experiment_id: str) -> str:
    """What the experiment's page says on top in MLflow's UI: what was searched, and where to look."""
    s, t = exp.search, exp.run.teacher
    teacher = f"`{schema.arch_id(t.model.to_dict())}`" + (f" from `{Path(t.checkpoint).name}`" if t.checkpoint else "")
    objectives = ", ".join(f"{k} ({v})" for k, v in s.objectives.items())
    return (f"**kdx search `{exp.name}`**: {s.num_samples} trials of Optuna's {exp.sampler.describe()} through Ray Tune on "
            f"`{exp.run.data.name}`, objectives {objectives}; teacher {teacher}. Every trial is one distillation run "
            f"(`kdx.role` = student), with a from-scratch twin per architecture (`baseline`).\n\n"
            f"Open [every run]({ui_path(experiment_id, view=VIEW_RUNS)}) or [the Pareto front]({ui_path(experiment_id, view=VIEW_FRONT)}) "
            f"(`tags.{schema.TAG_PARETO} = 'true'`); the verdict is on the search run `{exp.name}`.\n\n"
            "| searched | values |\n|---|---|\n" + "".join(f"| `{p.key}` | {p.describe()} |\n" for p in exp.space))


def _views(store: Store, exp: ExperimentConfig, experiment_id: str) -> None:
    """The runs table kdx ui opens on: objectives, test accuracy, the front's label and every sampled param as columns."""
    metrics = [*exp.search.objectives, exp.task.shown_test]
    columns = [f"metrics.`{m}`" for m in dict.fromkeys(metrics)] + [f"tags.`{schema.TAG_PARETO_LABEL}`"]
    store.set_views(experiment_id, columns + [f"params.`{p.key}`" for p in exp.space])
    store.describe(_experiment_note(exp, experiment_id), experiment_id=experiment_id)


def _open_parent(store: Store, exp: ExperimentConfig, experiment_id: str, resume: bool, log: Log, reference: dict, val_samples: int) -> str:
    _views(store, exp, experiment_id)
    parent = store.search_run(experiment_id)
    if parent is not None and resume:
        if parent.data.tags.get(schema.TAG_CONFIG_HASH) != exp.config_hash:
            raise ConfigError(f"experiment '{exp.name}' ran a different config; --resume needs the same config and overrides (or pick another --name)")
        store.set_status(parent.info.run_id, RUNNING)
        store.end_running(experiment_id, parent.info.run_id)  # nothing runs yet: whatever says RUNNING was cut off by the kill
        log(f"resuming search run {parent.info.run_id}")
        return parent.info.run_id
    run = store.start(experiment_id, exp.name, {schema.TAG_ROLE: schema.ROLE_SEARCH, schema.TAG_CONFIG_HASH: exp.config_hash})
    s = exp.search
    settings = {"num_samples": s.num_samples, "max_concurrent": s.max_concurrent, "sampler": exp.sampler.name, "sampler_why": exp.sampler.describe(), "seed": s.seed,
                "scheduler": s.scheduler, "baselines": s.baselines, "seeds": s.seeds, "twins": s.twins, "recipe_trials": s.recipe_trials,
                "race": s.race, "race_seeds": s.race_seeds, "confirm": s.confirm, "task": exp.task.name,
                "val_samples": val_samples}  # the split's own sampling error is a noise of its own (analysis.gains.run_race)
    run.params(search_params(settings, s.objectives, reference) | {"resources.cpu": exp.resources.cpu, "resources.gpu": exp.resources.gpu})
    run.text(yaml.safe_dump(exp.to_dict(), sort_keys=False), schema.CONFIG_ARTIFACT)
    run.text(dump(exp.space), schema.SPACE_ARTIFACT)
    return run.run_id


def teacher_passes_line(outputs: str, batches: int, samples: int, train: int) -> str:
    """How often the search ran its teacher over training data: once, before any trial, for cached outputs."""
    if outputs == "online":
        return "teacher outputs: online, the teacher runs on every training batch of every distilling trial"
    if not batches:
        return f"teacher outputs: read from the cache (0 forward passes), shared by every trial ({train:,} training samples)"
    views = f" ({samples // max(train, 1)} stored views)" if outputs == "views" else ""
    return (f"teacher outputs: made once in this process, {batches:,} forward batch{'es' if batches != 1 else ''} over {samples:,} "
            f"samples{views}, and shared by every trial (no trial runs the teacher)")


def may_prune(exp: ExperimentConfig) -> bool:
    """Some student of this search starts from its teacher pruned (train.init: prune, in the base or the space)."""
    return exp.run.train.init == "prune" or any(p.key == "train.init" and "prune" in (*p.choices, p.value) for p in exp.space)


def _teacher_run(store: Store, exp: ExperimentConfig, experiment_id: str, parent_id: str, teacher: Teacher, data: Dataset) -> str:
    found = store.runs(experiment_id, role=schema.ROLE_TEACHER, parent=parent_id)
    if found:
        return found[0].info.run_id
    info = teacher.info
    importance = None
    with contextlib.suppress(ConfigError):  # a teacher no student can be cut from: each pruned trial fails on its own line
        if may_prune(exp):  # computed once here and cached: every trial that prunes to another shape reads the same scores
            importance = teacher_importance(teacher.module, info.key, data, exp.run.train.prune.calibration)
    run = store.start(experiment_id, "teacher", {schema.TAG_ROLE: schema.ROLE_TEACHER, schema.TAG_PARENT: parent_id, schema.TAG_TEACHER_KEY: info.key,
                                                 schema.TAG_TEACHER_RECIPE: exp.run.teacher_recipe})
    run.params(schema.flat_params({"teacher": exp.run.teacher.to_dict() | exp.run.teacher.settings, "data": exp.run.data.to_dict()}))
    metrics = data.task_type.quality_metrics(info) | {schema.PARAMS: info.params, schema.LATENCY: info.latency_ms} | info.metrics
    if info.test_loss is not None:  # a language model's, and the floor no model beats on its test tokens where the data knows it
        metrics |= {schema.TEST_LOSS: info.test_loss, schema.TEST_PPL: math.exp(info.test_loss)}
        metrics |= {schema.VAL_LOSS: info.val_loss} if info.val_loss is not None else {}
        metrics |= {schema.FLOOR: data.tokens.floor} if data.tokens is not None and data.tokens.floor is not None else {}
    run.metrics(metrics)
    run.weights(teacher.module.state_dict(), {"teacher": exp.run.teacher.to_dict()})
    if importance is not None:
        run.text(json.dumps({"calibration": exp.run.train.prune.calibration, "scores": {k: v.reshape(-1).tolist() for k, v in importance.items()}}),
                 schema.IMPORTANCE_ARTIFACT)
    run.end(FINISHED)
    return run.run_id


def _floor_run(store: Store, exp: ExperimentConfig, experiment_id: str, parent_id: str, data: Dataset, log: Callable[[str], None]) -> None:
    """The task's reference model made with no training (`Task.floor`), scored on the same splits as every student, once per search."""
    if store.runs(experiment_id, role=schema.ROLE_FLOOR, parent=parent_id):
        return
    task = data.task_type
    floor = task.floor(exp.run, data, log)
    if floor is None:
        return
    (val, val_loss), (test, test_loss) = (task.evaluate(floor.module, data.x_val, data.y_val), task.evaluate(floor.module, data.x_test, data.y_test))
    metrics = dict(zip(task.quality_names, (val, test))) | dict(zip(task.loss_names, (val_loss, test_loss))) | task.model_metrics(floor.module, data)
    metrics |= {schema.PARAMS: floor.params, schema.LATENCY: measure_latency(floor.module, data.input_shape), "distil_s": floor.seconds,
                "vocab_mapped": floor.mapped}
    run = store.start(experiment_id, "static floor", {schema.TAG_ROLE: schema.ROLE_FLOOR, schema.TAG_PARENT: parent_id, schema.TAG_FLOOR: floor.words})
    run.params(schema.flat_params({"data": exp.run.data.to_dict()}))
    run.metrics(metrics)
    run.end(FINISHED)
    log(f"static floor scored: {task.quality_names[1]} {test:.4f}{task.metrics_text(metrics)}, {floor.params:,} params")


def summarize(exp: ExperimentConfig, grid, s: "Session", twins: int) -> SearchSummary:
    """The search's outcome from Tune's results (what was reported at each trial's end)."""
    epochs = exp.run.train.epochs
    failed = [r for r in grid if r.error is not None or r.metrics.get(FAILED)]
    ran = [r for r in grid if r.error is None and not r.metrics.get(FAILED)]
    stopped = [r for r in ran if r.metrics.get("epoch", epochs) < epochs]
    finished = [r for r in ran if r.metrics.get("epoch", epochs) >= epochs]
    key = exp.quality
    sign = 1 if schema.QUALITY[key] == "max" else -1
    best = max((r.metrics for r in finished if key in r.metrics), key=lambda m: sign * m[key], default={})
    best = {k: best[k] for k in (*schema.OBJECTIVES, *schema.TEST_SCORES) if k in best}
    timings = s.timings | {"train_s": sum(r.metrics.get("time_train_s", 0.0) for r in grid),
                           "other_s": sum(r.metrics.get("time_other_s", 0.0) for r in grid)}
    duplicates = sum(1 for r in finished if r.metrics.get(DUPLICATE))
    return SearchSummary(exp.name, s.experiment_id, s.parent_id, len(grid), len(finished), len(failed), len(stopped), duplicates,
                         twins, time.monotonic() - s.started, best, timings)


@dataclass
class Session:
    """A search's fixed surroundings: the store, its parent and teacher runs, the data and the teacher."""

    store: Store
    experiment_id: str
    parent_id: str
    storage: Path | str
    ctx: TrialContext
    data: Dataset
    teacher: Teacher
    started: float
    timings: dict = field(default_factory=dict)  # seconds, "setup" first; the caller adds its phases

    @property
    def shared(self) -> dict:
        """What every distilling trial gets through the object store."""
        return {"data": self.data, "teacher": self.teacher, "ctx": self.ctx}


def _open_store(exp: ExperimentConfig, resume: bool) -> tuple[Store, str | None]:
    """The MLflow store (a server that is down is refused here, in seconds) and the experiment's id, if it has one."""
    store = Store(exp.tracking_uri)
    try:
        experiment_id = store.experiment_id(exp.name, create=False)
    except Exception as e:
        raise ConfigError(f"tracking: cannot use the MLflow store at {exp.tracking_uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not resume and experiment_id and store.search_run(experiment_id) is not None:
        raise ConfigError(f"experiment '{exp.name}' already has a search in {store.uri}; add --resume to continue it, or pick another --name")
    return store, experiment_id


@contextlib.contextmanager
def open_session(exp: ExperimentConfig, resume: bool, address: str | None, log: Log,
                 reference: Callable[[Dataset], dict] = lambda data: {}) -> Iterator[Session]:
    """Everything around a search's trials, in the order that makes a bad input cost nothing:
    refusals first; a dead tracking server, the data and the teacher before Ray starts; the
    store (2 s when new), its refusal and the reference while Ray starts in the background
    (a refusal then stops it: nothing is half-logged); the parent and teacher runs (on a
    cluster once Ray has told how many nodes it has) and the trials' context. On a clean exit the parent run is FINISHED; Ray is shut down
    if this process started it. `reference(data)` is the hypervolume reference logged on the parent."""
    started = time.monotonic()
    storage = tune_storage(exp)
    path = tune_path(storage, exp.name)
    if not resume:  # refuse before anything is written
        if isinstance(path, Path) and path.exists():
            raise ConfigError(f"search.storage: {path} holds an earlier search of '{exp.name}'; add --resume, pick another --name, or remove it")
        study = study_ref(exp, storage)
        if study.exists():
            raise ConfigError(f"search.study: {study.storage} holds an Optuna study '{exp.name}' of an earlier search; add --resume, "
                              "pick another --name, or remove it")
    check_tracking(exp.tracking_uri)  # a server that is down: one line in seconds
    data = load_data(exp.run.data)  # a missing file or bad labels, a checkpoint that does not fit: one line, before Ray starts
    keys = output_keys(exp)
    before = dataclasses.replace(PASSES)
    teacher = prepare_teacher(exp.run, data, keys, log=log)
    data = teacher.data  # what every trial is scored against (`Task.with_teacher`: an embedding's reference is the teacher)
    teacher = dataclasses.replace(teacher, data=None)  # the object store carries the data once (Session.shared), not twice
    score = (f"test {teacher.info.test_loss:.4f} nats/token (perplexity {math.exp(teacher.info.test_loss):.3f})" if teacher.info.test_loss is not None
             else f"{data.task_type.quality_names[1]} {teacher.info.test_acc:.4f}")
    log(f"teacher: {exp.run.teacher_recipe}{' (read from the cache)' if teacher.info.source == 'cache' else ''}, {score}"
        f"{data.task_type.metrics_text(teacher.info.metrics)}, {teacher.info.params:,} params")
    log(teacher_passes_line(exp.run.teacher.outputs, PASSES.batches - before.batches, PASSES.samples - before.samples, len(data.x_train)))
    if line := small_split_line(data):
        log(line)
    ray_start = RayStart(address)  # Ray starts (seconds) while this process opens the store, makes the reference and the runs
    try:
        store, experiment_id = _open_store(exp, resume)
        ref = reference(data)
        if ray_start.remote:  # a cluster's nodes decide whether its storage will do: before any MLflow write
            ray_start.wait()
            check_storage_for_cluster(exp)
        experiment_id = experiment_id or store.experiment_id(exp.name)
        parent_id = _open_parent(store, exp, experiment_id, resume, log, ref, len(data.y_val))
        teacher_run_id = _teacher_run(store, exp, experiment_id, parent_id, teacher, data)
        _floor_run(store, exp, experiment_id, parent_id, data, log)
        ctx = TrialContext(with_values(exp.base, trial_settings(exp)), exp.tracking_uri, experiment_id, parent_id, teacher_run_id,
                           report_every_epoch=exp.search.scheduler == "asha", teacher_config=exp.run.teacher.to_dict(),
                           output_keys=tuple(keys))
        ray_start.wait()
        with TrackingWatch(exp.tracking_uri):
            yield Session(store, experiment_id, parent_id, storage, ctx, data, teacher, started, {"setup": time.monotonic() - started})
    finally:
        ray_start.stop()
    store.set_status(parent_id, FINISHED)
