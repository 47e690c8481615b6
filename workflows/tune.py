"""The Ray Tune machinery every kdx search drives: Ray started or joined quietly,
where Tune keeps its state, Optuna's sampler behind `OptunaSearch`, ASHA, the
search proper (`fit_search`), batches of fixed jobs (`run_jobs`), and the
progress lines. Nothing here knows about MLflow or distillation.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from ray.tune import Callback

from analysis import schema
from distill.errors import ConfigError
from search_spaces.space import define

from .experiment import ExperimentConfig

__all__ = ["FAILED", "DUPLICATE", "init_ray", "RayStart", "check_storage_for_cluster", "tune_storage", "make_searcher", "make_scheduler", "fit_search",
           "run_jobs", "trial_ids", "Progress"]

Log = Callable[[str], None]
FAILED = "kdx_failed"  # in a trial's last result: it failed for a reason a retry would not change
LOCAL_STORAGE = "kdx-results"  # Tune's state (and the Optuna study) when search.storage is not set
DUPLICATE = "kdx_duplicate"  # in a trial's last result: it replayed an earlier run with the same config


def init_ray(address: str | None) -> bool:
    """Start or join Ray quietly; True when this process started it."""
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per result
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    _trials_on_prestarted_workers()
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


def _trials_on_prestarted_workers() -> None:
    """Tune gives every trainable actor runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}} (for
    PyTorch Lightning's fork, ray-project/ray#28197), and an actor with a runtime env cannot take a
    worker Ray prestarted without one: each trial actor waited for a new worker process (two actors
    ready 1.5-1.8 s after asking, against 0.5-0.6 s with no runtime env, on 2 cores). kdx trains no
    Lightning module, so the variable goes; with no other to set (Tune still passes on AWS_* and its
    own variables when the driver has them), the actors take the prestarted workers."""
    from ray.tune.execution import class_cache

    getattr(class_cache, "DEFAULT_ENV_VARS", {}).pop("PL_DISABLE_FORK", None)


class RayStart:
    """`init_ray` in a background thread: Ray's start (about 4 s, measured on a 2-core machine) overlaps the driver's
    own (the teacher, the hypervolume reference, the MLflow runs). `wait()` returns what
    init_ray returned, or raises what it raised.

    The thread lives until `stop()`: Ray ties its processes to the thread that started them
    (PR_SET_PDEATHSIG fires when that thread ends, not the process), so a thread that ended
    after ray.init took the raylet with it and the driver died on a broken plasma pipe."""

    def __init__(self, address: str | None):
        import signal
        import sys
        import threading

        import ray

        # A cluster (or a Ray this process joined already): its node count matters before MLflow writes.
        self.remote = bool(address or os.environ.get("RAY_ADDRESS") or ray.is_initialized())
        self._started: bool | BaseException | None = None  # init_ray's answer, once _ready is set
        self._ready, self._done = threading.Event(), threading.Event()
        if threading.current_thread() is threading.main_thread():  # what ray.init sets when it runs on the main thread
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        logging.getLogger("ray._private.worker").setLevel(logging.ERROR)  # not "SIGTERM handler is not set ..." (set above)
        self._thread = threading.Thread(target=self._start, args=(address,), name="kdx-ray-start", daemon=True)
        self._thread.start()

    def _start(self, address: str | None) -> None:
        try:
            self._started = init_ray(address)
        except BaseException as e:  # handed to the caller's thread by wait()
            self._started = e
        self._ready.set()
        if self._started is True:
            self._done.wait()  # keep Ray's processes alive (see the class doc)

    def wait(self) -> bool:
        self._ready.wait()
        if isinstance(self._started, BaseException):
            raise self._started
        return bool(self._started)

    def stop(self) -> None:
        """Shut Ray down if this start began it (waiting for a start still under way)."""
        self._ready.wait()
        if self._started is True:
            import ray

            ray.shutdown()
        self._done.set()
        self._thread.join()


def check_storage_for_cluster(exp: ExperimentConfig) -> None:
    """On several nodes, Tune's results must go where every node can write:
    refuse the default local folder; a path the user set (NFS) or a URI is theirs."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1 and not exp.search.storage:
        raise ConfigError(f"search.storage: this Ray cluster has {len(nodes)} nodes; set search.storage to a folder every node "
                          "can reach (a shared mount) or an object-store URI such as s3://bucket/kdx, not the local default")


def tune_storage(exp: ExperimentConfig) -> Path | str:
    """Tune's storage: a URI (s3://, gs://) as given, a folder made absolute."""
    if "://" in exp.search.storage:
        return exp.search.storage.rstrip("/")
    return Path(exp.search.storage or LOCAL_STORAGE).expanduser().resolve()


def tune_path(storage: Path | str, name: str) -> Path | str:
    return f"{storage}/{name}" if isinstance(storage, str) else storage / name


def make_searcher(exp: ExperimentConfig, base: dict, first: list[dict] = (), study=None):
    """OptunaSearch over the space; multi-objective when several objectives are named.
    The config's `search.enqueue` points run first, then `first` (known-good recipes).
    With `study` (a `workflows.study.StudyRef`) every finished trial is copied there."""
    import optuna

    from .sampling import make_sampler
    from .study import MirroredOptunaSearch
    from .warm import startup_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names, modes = list(exp.search.objectives), list(exp.search.objectives.values())
    return MirroredOptunaSearch(
        study=study,
        space=define(exp.space, base),
        metric=names if len(names) > 1 else names[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=make_sampler(exp.sampler, exp.search.seed, startup_trials(len(first))),
        points_to_evaluate=[dict(p) for p in (*exp.search.enqueue, *first)] or None,
    )


def make_scheduler(exp: ExperimentConfig):
    """ASHA by epoch, or None. It stops trials early; they are tagged and kept off the front. With several
    objectives its rungs rank by non-dominated sorting, so small students survive (workflows/rungs.py)."""
    if exp.search.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    epochs = exp.run.train.epochs
    if len(exp.search.objectives) > 1:
        from .rungs import MOASHA

        return MOASHA(exp.search.objectives, "epoch", epochs, min(exp.search.grace_period, epochs), exp.search.reduction_factor)
    metric = schema.quality(exp.search.objectives)
    return ASHAScheduler(metric=metric, mode=exp.search.objectives[metric], time_attr="epoch", max_t=epochs,
                         grace_period=min(exp.search.grace_period, epochs), reduction_factor=exp.search.reduction_factor)


def _resources(exp: ExperimentConfig) -> dict:
    return {"cpu": exp.resources.cpu, "gpu": exp.resources.gpu}


def fit_search(exp: ExperimentConfig, fn: Callable, space_base: dict, storage: Path | str, resume: bool, log: Log,
               first: list[dict] = (), **shared):
    """The search proper: Optuna's sampler behind Tune, or Tune's snapshot of it on --resume; `first`: see make_searcher.
    Every finished trial is copied into the persisted Optuna study (workflows/study.py)."""
    from .study import study_ref

    study = study_ref(exp, storage)
    study.open()
    log(f"Optuna study '{study.name}': optuna-dashboard {study.storage}")
    log(f"sampler {exp.sampler.describe()}")
    grid = _fit(exp, fn, space_base, storage, resume, log, first, study, **shared)
    dropped = study.keep_only(trial_ids(grid)) if resume else 0
    if dropped:
        log(f"Optuna study: {dropped} trial(s) that finished after Tune's last snapshot were sampled again; the study keeps the new ones")
    return grid


def _fit(exp: ExperimentConfig, fn: Callable, space_base: dict, storage: Path | str, resume: bool, log: Log, first, study, **shared):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    _driver_log[0] = log
    path = tune_path(storage, exp.name)
    trainable = tune.with_parameters(tune.with_resources(fn, _resources(exp)), **shared)
    if resume and tune.Tuner.can_restore(str(path)):
        log(f"restoring the Tune state from {path}")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True, restart_errored=False).fit()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            # metric/mode stay unset: setting them turns a multi-objective study single-objective (measured with Ray 2.60 and Optuna 5.0)
            search_alg=ConcurrencyLimiter(make_searcher(exp, space_base, first, study), max_concurrent=exp.search.max_concurrent),
            scheduler=make_scheduler(exp),
            num_samples=exp.search.num_samples,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=exp.name, storage_path=str(storage), verbose=0, callbacks=[Progress(exp.search.num_samples, exp.run.train.epochs, quality=exp.quality)],
            # Retries are for the machine (a lost node, a killed worker): failures a
            # retry cannot change end the trial themselves (FAILED in the result).
            failure_config=tune.FailureConfig(max_failures=exp.search.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    ).fit()


def run_jobs(fn: Callable, jobs: list, exp: ExperimentConfig, storage: Path | str, label: str, log: Log, **shared):
    """A batch of fixed jobs (twins, repeats) as one Tune grid: `fn({"job": job}, **shared)` per job."""
    from ray import tune

    _driver_log[0] = log
    return tune.Tuner(
        tune.with_parameters(tune.with_resources(fn, _resources(exp)), **shared),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=exp.search.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(name=f"{exp.name}-{label}s-{int(time.time())}", storage_path=str(storage), verbose=0,
                                  callbacks=[Progress(len(jobs), exp.run.train.epochs, label=label, quality=exp.quality)],
                                  failure_config=tune.FailureConfig(max_failures=exp.search.retries)),
    ).fit()


def trial_ids(grid) -> set[str]:
    # Every trial Tune knows, errored ones included (a Result of a trial that
    # failed before reporting has no metrics, so no trial_id to read).
    return {t.trial_id for t in grid._experiment_analysis.trials}


_driver_log: list[Log] = [print]  # the log of the search this process drives (see Progress)


class Progress(Callback):
    """Prints one line per finished trial: count, result, best so far, time left.

    A module-level class: Tune pickles its callbacks with the experiment state.
    It holds no log function (after a node died, Ray had swapped `builtins.print`
    and pickling the twins' Tuner failed on it); it logs through the one the
    search in this process set, so a copy Tune restored logs where the caller asked."""

    def __init__(self, total: int, epochs: int, label: str = "trial", quality: str = schema.VAL_ACC):
        self.total, self.epochs, self.label, self.quality = total, epochs, label, quality
        self.count, self.best, self.started = 0, None, time.monotonic()

    @staticmethod
    def log(line: str) -> None:
        _driver_log[0](line)

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
        elif r.get(DUPLICATE):
            what = "a duplicate of an earlier trial (not trained again)"
        elif r.get("epoch", self.epochs) < self.epochs:
            what = f"stopped at epoch {r.get('epoch')}"
        else:
            key = self.quality
            value, sign = r.get(key, float("nan")), 1 if schema.QUALITY[key] == "max" else -1
            what = f"{key} {value:.4f}  params {int(r.get(schema.PARAMS, 0)):,}"
            if value == value and (self.best is None or sign * value > sign * self.best[0]):
                self.best = (value, int(r.get(schema.PARAMS, 0)))
        best = f"best {self.quality} {self.best[0]:.4f} ({self.best[1]:,} params)" if self.best else "best -"
        self.log(f"[{self.count:>3}/{self.total}] {self.label} {trial.trial_id}: {what} | {best} | {_clock(elapsed)} elapsed, ~{_clock(left)} left")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"
