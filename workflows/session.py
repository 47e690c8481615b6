"""What every kdx search shares, whatever its trials are: the MLflow parent and
teacher runs, Ray started or joined quietly, Tune driven with Optuna or over a
grid of fixed jobs, progress lines, and the summary.

`open_session` sets a search up in the order that makes a bad input cost
nothing: the experiment config is already checked (`load_experiment`); then
the store is checked and refusals made, data and teacher are made in this
process, once, before any worker starts (two processes creating one SQLite
store race, STACK.md), and only then Ray, the parent run and the teacher run.
`workflows.search` (students) and `workflows.chain` (teacher-assistant
chains) run their trials inside it.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml
from torch import nn

from analysis import schema
from distill.config import with_values
from distill.data import Dataset, load_data
from distill.errors import ConfigError
from distill.models import Outputs
from distill.teacher import get_teacher, teacher_outputs
from ray.tune import Callback
from search_spaces.space import define, dump

from .experiment import Experiment
from .tracking import Tracker
from .trial import FAILED, TrialContext, teacher_metrics

__all__ = ["SearchSummary", "Session", "open_session", "Progress", "fit_search", "run_jobs", "summarize", "make_searcher",
           "make_scheduler", "trial_settings", "trial_ids", "close_running", "check_tracking", "init_ray", "FEATURE_LOSSES"]

Log = Callable[[str], None]
FEATURE_LOSSES = ("fitnet", "at", "rkd")  # losses that read teacher features or attention maps


@dataclass
class SearchSummary:
    experiment: str
    experiment_id: str
    parent_run_id: str
    trials: int
    finished: int
    failed: int
    stopped: int
    baselines: int
    elapsed_s: float
    best: dict
    timings: dict  # seconds: setup (MLflow, data, teacher), trials (Tune), twins; train_s/other_s summed inside trials


def _sampler(exp: Experiment):
    import optuna

    s = exp.search
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=s.seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=s.seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=s.seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=s.seed),
    }[s.sampler]()


def make_searcher(exp: Experiment, base: dict):
    """OptunaSearch over the space; multi-objective when several objectives are named."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names, modes = list(exp.search.objectives), list(exp.search.objectives.values())
    return OptunaSearch(
        space=define(exp.space, base),
        metric=names if len(names) > 1 else names[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=_sampler(exp),
        points_to_evaluate=[dict(p) for p in exp.search.enqueue] or None,
    )


def make_scheduler(exp: Experiment):
    """ASHA on val_acc by epoch, or None. It stops trials early; they are tagged and kept off the front."""
    if exp.search.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    epochs = exp.run.train.epochs
    return ASHAScheduler(metric=schema.VAL_ACC, mode=exp.search.objectives[schema.VAL_ACC], time_attr="epoch", max_t=epochs,
                         grace_period=min(exp.search.grace_period, epochs), reduction_factor=exp.search.reduction_factor)


def needs_features(exp: Experiment) -> bool:
    keys = {p.key for p in exp.space}
    return any(exp.run.mix.get(name, 0) > 0 or f"mix.{name}" in keys for name in FEATURE_LOSSES)


def trial_settings(exp: Experiment) -> dict:
    """What a trial's resources set in its run config: threads from its CPUs, the device from its GPUs."""
    return {"train.threads": max(1, int(exp.resources.cpu)), "train.device": "cuda" if exp.resources.gpu > 0 else "cpu"}


def open_parent(tracker: Tracker, exp: Experiment, experiment_id: str, resume: bool, log: Log, reference: dict) -> str:
    parents = tracker.runs(experiment_id, f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_SEARCH}'")
    if parents and resume:
        parent = parents[0]
        if parent.data.tags.get(schema.TAG_CONFIG_HASH) != exp.config_hash:
            raise ConfigError(f"experiment '{exp.name}' ran a different config; --resume needs the same config and overrides (or pick another --name)")
        tracker.client.update_run(parent.info.run_id, status="RUNNING")
        log(f"resuming search run {parent.info.run_id}")
        return parent.info.run_id
    run = tracker.start(experiment_id, exp.name, {schema.TAG_ROLE: schema.ROLE_SEARCH, schema.TAG_CONFIG_HASH: exp.config_hash})
    s = exp.search
    run.params({
        "search.num_samples": s.num_samples, "search.max_concurrent": s.max_concurrent, "search.sampler": s.sampler,
        "search.seed": s.seed, "search.objectives": ",".join(f"{k}:{v}" for k, v in s.objectives.items()),
        "search.scheduler": s.scheduler, "search.baselines": s.baselines,
        "resources.cpu": exp.resources.cpu, "resources.gpu": exp.resources.gpu,
        **{f"ref.{k}": v for k, v in reference.items()},
    })
    run.text(yaml.safe_dump(exp.to_dict(), sort_keys=False), schema.CONFIG_ARTIFACT)
    run.text(dump(exp.space), schema.SPACE_ARTIFACT)
    return run.run_id


def teacher_run(tracker: Tracker, exp: Experiment, experiment_id: str, parent_id: str, info, model) -> str:
    found = tracker.runs(experiment_id, f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_TEACHER}' and tags.`{schema.TAG_PARENT}` = '{parent_id}'")
    if found:
        return found[0].info.run_id
    run = tracker.start(experiment_id, "teacher", {schema.TAG_ROLE: schema.ROLE_TEACHER, schema.TAG_PARENT: parent_id, schema.TAG_TEACHER_KEY: info.key})
    run.params(schema.flat_params({"teacher": exp.run.teacher.to_dict(), "data": exp.run.data.to_dict()}))
    run.metrics({schema.VAL_ACC: info.val_acc, schema.TEST_ACC: info.test_acc, schema.PARAMS: info.params, schema.LATENCY: info.latency_ms})
    run.weights(model.state_dict(), {"teacher": exp.run.teacher.to_dict()})
    run.end("FINISHED")
    return run.run_id


class Progress(Callback):
    """Prints one line per finished trial: count, result, best so far, time left.

    A module-level class: Tune pickles its callbacks with the experiment state.
    The log function is not pickled: after a node died, Ray had swapped
    `builtins.print`, and pickling the twins' Tuner failed on it."""

    def __init__(self, total: int, epochs: int, log: Log = print, label: str = "trial"):
        self.total, self.epochs, self.log, self.label = total, epochs, log, label
        self.count, self.best, self.started = 0, None, time.monotonic()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "log": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, log=print)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._done(trial, ok=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._done(trial, ok=False)

    def _done(self, trial, ok: bool) -> None:
        self.count += 1
        r = trial.last_result or {}
        elapsed = time.monotonic() - self.started
        left = elapsed / self.count * max(0, self.total - self.count)
        if not ok or r.get(FAILED):
            what = "failed"
        elif r.get("epoch", self.epochs) < self.epochs:
            what = f"stopped at epoch {r.get('epoch')}"
        else:
            what = f"val_acc {r.get(schema.VAL_ACC, float('nan')):.4f}  params {int(r.get(schema.PARAMS, 0)):,}"
            if self.best is None or r.get(schema.VAL_ACC, -1) > self.best[0]:
                self.best = (r.get(schema.VAL_ACC, -1), int(r.get(schema.PARAMS, 0)))
        best = f"best val_acc {self.best[0]:.4f} ({self.best[1]:,} params)" if self.best else "best -"
        self.log(f"[{self.count:>3}/{self.total}] {self.label} {trial.trial_id}: {what} | {best} | {_clock(elapsed)} elapsed, ~{_clock(left)} left")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


def init_ray(address: str | None) -> bool:
    """Start or join Ray quietly; True when this process started it."""
    import logging

    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per result
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 configure_logging=True)
    except ConnectionError as e:
        raise ConfigError(f"--address: cannot reach a Ray cluster at {address!r} ({e})") from None
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    return True


def check_storage_for_cluster(exp: Experiment) -> None:
    """On several nodes, Tune's results must go where every node can write:
    refuse the default local folder; a path the user set (NFS) or a URI is theirs."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not exp.search.storage:
        raise ConfigError(f"search.storage: this Ray cluster has {len(nodes)} nodes; set search.storage to a folder every node "
                          "can reach (a shared mount) or an object-store URI such as s3://bucket/kdx, not the local default")


def tune_storage(exp: Experiment) -> Path | str:
    """Tune's storage: a URI (s3://, gs://) as given, a folder made absolute."""
    if "://" in exp.search.storage:
        return exp.search.storage.rstrip("/")
    return Path(exp.search.storage or "kdx-results").expanduser().resolve()


def check_tracking(uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"--tracking-uri: cannot reach the MLflow server at {uri} ({getattr(e, 'reason', e)})") from None


def close_running(tracker: Tracker, experiment_id: str, parent_id: str) -> str:
    """Runs still RUNNING under the search belong to trials that will never report: KILLED, with a reason.
    Returns the filter that selects the search's runs."""
    under = f"tags.`{schema.TAG_PARENT}` = '{parent_id}'"
    for r in tracker.runs(experiment_id, f"{under} and attributes.status = 'RUNNING'"):
        tracker.client.set_tag(r.info.run_id, schema.TAG_ERROR, "left running by an interrupted search")
        tracker.client.set_terminated(r.info.run_id, status="KILLED")
    return under


def fit_search(exp: Experiment, fn: Callable, space_base: dict, storage: Path | str, resume: bool, log: Log, **shared):
    """The search proper: Optuna's sampler behind Tune, or Tune's snapshot of it on --resume."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    path = tune_path(storage, exp.name)
    trainable = tune.with_parameters(tune.with_resources(fn, {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}), **shared)
    if resume and tune.Tuner.can_restore(str(path)):
        log(f"restoring the Tune state from {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False).fit()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # metric/mode stay unset: setting them turns a multi-objective study single-objective (STACK.md)
            search_alg=ConcurrencyLimiter(make_searcher(exp, space_base), max_concurrent=exp.search.max_concurrent),
            scheduler=make_scheduler(exp),
            num_samples=exp.search.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=exp.name, storage_path=str(storage), verbose=0, callbacks=[Progress(exp.search.num_samples, exp.run.train.epochs, log)],
            # Retries are for the machine (a lost node, a killed worker): failures a
            # retry cannot change end the trial themselves (trial.FAILED).
            failure_config=tune.FailureConfig(max_failures=exp.search.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    ).fit()


def run_jobs(fn: Callable, key: str, jobs: list, exp: Experiment, storage: Path | str, label: str, log: Log, **shared):
    """A batch of fixed jobs (twins, repeats) as one Tune grid: `fn({key: job}, **shared)` per job."""
    from ray import tune

    resources = {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}
    return tune.Tuner(
        tune.with_parameters(tune.with_resources(fn, resources), **shared),
        param_space={key: tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=exp.search.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{exp.name}-{label}s-{int(time.time())}", storage_path=str(storage), verbose=0,
                                  callbacks=[Progress(len(jobs), exp.run.train.epochs, log, label=label)],
                                  failure_config=tune.FailureConfig(max_failures=exp.search.retries)),
    ).fit()


def trial_ids(grid) -> set[str]:
    # Every trial Tune knows, errored ones included (a Result of a trial that
    # failed before reporting has no metrics, so no trial_id to read).
    return {t.trial_id for t in grid._experiment_analysis.trials}


def tune_path(storage: Path | str, name: str) -> Path | str:
    return f"{storage}/{name}" if isinstance(storage, str) else storage / name


def teacher_context(exp: Experiment, info) -> dict:
    return {"config": exp.run.teacher.to_dict(), "metrics": teacher_metrics(info)}


def output_keys(exp: Experiment) -> list[str]:
    return ["logits"] + (["features.embedding", "attentions.*"] if needs_features(exp) else [])


def summarize(exp: Experiment, grid, experiment_id: str, parent_id: str, baselines: int, started: float, timings: dict) -> SearchSummary:
    """The search's outcome from Tune's results (what was reported at each trial's end)."""
    epochs = exp.run.train.epochs
    failed = [r for r in grid if r.error is not None or r.metrics.get(FAILED)]
    ran = [r for r in grid if r.error is None and not r.metrics.get(FAILED)]
    stopped = [r for r in ran if r.metrics.get("epoch", epochs) < epochs]
    finished = [r for r in ran if r.metrics.get("epoch", epochs) >= epochs]
    best = max((r.metrics for r in finished), key=lambda m: m.get(schema.VAL_ACC, -1), default={})
    best = {k: best[k] for k in (*schema.OBJECTIVES, schema.TEST_ACC) if k in best}
    timings["train_s"] = sum(r.metrics.get("time_train_s", 0.0) for r in grid)
    timings["other_s"] = sum(r.metrics.get("time_other_s", 0.0) for r in grid)
    return SearchSummary(exp.name, experiment_id, parent_id, len(grid), len(finished), len(failed), len(stopped),
                         baselines, time.monotonic() - started, best, timings)


@dataclass
class Session:
    """A search's fixed surroundings: the store, its parent and teacher runs, the data and teacher outputs."""

    tracker: Tracker
    experiment_id: str
    parent_id: str
    storage: Path | str
    ctx: TrialContext
    data: Dataset
    outputs: Outputs
    teacher: nn.Module
    started: float
    timings: dict  # seconds, "setup" first; the caller adds its phases

    @property
    def shared(self) -> dict:
        """What every distilling trial gets through the object store."""
        return {"data": self.data, "teacher": self.outputs, "ctx": self.ctx, "teacher_model": self.teacher}


@contextlib.contextmanager
def open_session(exp: Experiment, resume: bool, address: str | None, log: Log,
                 reference: Callable[[Dataset], dict] = lambda data: {}) -> Iterator[Session]:
    """Everything around a search's trials, in the order that makes a bad input cost nothing:
    refusals first; data and teacher before any MLflow write (a missing file or a checkpoint
    that does not fit fails with nothing half-logged); then Ray, the parent and teacher runs
    and the trials' context. On a clean exit the parent run is FINISHED; Ray is shut down
    if this process started it. `reference(data)` is the hypervolume reference logged on the parent."""
    started = time.monotonic()
    check_tracking(exp.tracking_uri)
    tracker = Tracker(exp.tracking_uri)
    try:
        experiment_id = tracker.experiment_id(exp.name, create=False)
    except Exception as e:
        raise ConfigError(f"tracking: cannot use the MLflow store at {exp.tracking_uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    storage = tune_storage(exp)
    path = tune_path(storage, exp.name)
    if not resume:  # refuse before anything is written
        if experiment_id and tracker.runs(experiment_id, f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_SEARCH}'"):
            raise ConfigError(f"experiment '{exp.name}' already has a search in {tracker.uri}; add --resume to continue it, or pick another --name")
        if isinstance(path, Path) and path.exists():
            raise ConfigError(f"search.storage: {path} holds an earlier search of '{exp.name}'; add --resume, pick another --name, or remove it")
    data = load_data(exp.run.data)
    teacher, info = get_teacher(exp.run, data, log=log)
    log(f"teacher: {info.source}, test_acc {info.test_acc:.4f}, {info.params:,} params")
    keys = output_keys(exp)
    outputs = teacher_outputs(teacher, info, data, keys)
    ref = reference(data)
    started_ray = init_ray(address)
    try:
        check_storage_for_cluster(exp)
        experiment_id = experiment_id or tracker.experiment_id(exp.name)
        parent_id = open_parent(tracker, exp, experiment_id, resume, log, ref)
        teacher_run_id = teacher_run(tracker, exp, experiment_id, parent_id, info, teacher)
        ctx = TrialContext(with_values(exp.base, trial_settings(exp)), exp.tracking_uri, experiment_id, parent_id, teacher_run_id,
                           report_every_epoch=exp.search.scheduler == "asha", teacher=teacher_context(exp, info),
                           output_keys=tuple(keys))
        yield Session(tracker, experiment_id, parent_id, storage, ctx, data, outputs, teacher, started,
                      {"setup": time.monotonic() - started})
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    tracker.client.set_terminated(parent_id, status="FINISHED")
