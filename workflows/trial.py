"""One Tune trial: one distillation run (a student, a scratch twin, a repeat), logged to MLflow.

Data and the `Teacher` (module and cached outputs) arrive once per worker
through Ray's object store (`tune.with_parameters`); the trial applies its
params to the base config, trains with `distill.run`, and writes its own
MLflow run in batches through `analysis.store`.

Two trial functions: `student_trial` gets the params Optuna sampled;
`job_trial` gets a fixed `Job` (a twin, a repeat with another seed, a chain's
direct run) from a batch that `tune.run_jobs` runs as a grid.

Tune stops a trial that a scheduler (ASHA) culled by raising SystemExit from
`tune.report` in the trial's thread (ray/train/_internal/session.py); the run
is then ended KILLED and tagged stopped-early, so the front never sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from torch import nn

from analysis import schema
from analysis.store import FAILED as RUN_FAILED, FINISHED, KILLED, RUNNING, RunLog, Store, check_tracking
from distill.cache import fingerprint
from distill.config import RunConfig
from distill.data import Dataset
from distill.errors import KdxError
from distill.teacher import Teacher, prepare_teacher
from distill.train import Epoch, RunResult, run
from search_spaces.space import apply

from .records import (epoch_metrics, error_line, failed_report, final_metrics, run_tags, spoken_name, teacher_metrics, timing,
                      trial_number)
from .tune import DUPLICATE

__all__ = ["TrialContext", "Job", "student_trial", "job_trial", "run_job", "train_logged", "start_unless_duplicate", "log_failed",
           "replay_finished"]


@dataclass(frozen=True)
class TrialContext:
    base: dict  # the base run config (train.threads and train.device already set for the trial's resources)
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    teacher_run_id: str | None
    report_every_epoch: bool  # a scheduler needs per-epoch results; without one, a report per epoch only costs
    teacher_config: dict = field(default_factory=dict)  # the search's teacher section: a trial whose teacher.* differ trains its own
    output_keys: tuple = ("logits",)  # what of the teacher any trial's losses may read


@dataclass(frozen=True)
class Job:
    """One fixed run for Tune to do; a sampled trial is a student Job of its params."""

    role: str  # schema.ROLE_STUDENT, schema.ROLE_TWIN, or a workflow's own ("chain")
    params: dict  # dotted keys set on the base config (the sampled ones, for a student)
    seed: int | None = None  # a repeat's seed; None keeps the base config's
    repeat_of: str | None = None  # the run this one repeats with another seed (tag kdx.seed_of)
    tags: dict = field(default_factory=dict)
    name: str | None = None


def student_trial(config: dict, data: Dataset = None, teacher: Teacher | None = None, ctx: TrialContext = None) -> None:
    """A trial Optuna sampled: `config` is its params."""
    run_job(Job(schema.ROLE_STUDENT, dict(config)), data, teacher, ctx)


def job_trial(config: dict, data: Dataset = None, teacher: Teacher | None = None, ctx: TrialContext = None) -> None:
    """A trial of a fixed batch: `config` is {"job": Job}."""
    run_job(config["job"], data, teacher, ctx)


def _tracking_lost(uri: str) -> bool:
    try:
        check_tracking(uri, timeout=3.0)
        return False
    except KdxError:
        return True


def run_job(job: Job, data: Dataset, teacher: Teacher | None, ctx: TrialContext, wait_s: float = 120.0) -> None:
    """One job as one run. When the tracking server has gone, the trial waits (quietly) for
    the driver's TrackingWatch to stop the search: it stays unfinished in Tune's snapshot, so
    --resume runs it again. A server back within `wait_s` is an ordinary error: Tune retries."""
    try:
        _run_job(job, data, teacher, ctx)
    except Exception:
        if not _tracking_lost(ctx.tracking_uri):
            raise
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _tracking_lost(ctx.tracking_uri):
            time.sleep(3.0)
        raise


def _run_job(job: Job, data: Dataset, teacher: Teacher | None, ctx: TrialContext) -> None:
    import ray
    from ray import tune

    started = time.perf_counter()
    trial_id = tune.get_context().get_trial_id()
    store = Store(ctx.tracking_uri, made=True)  # the session made it before any trial ran
    if replay_finished(store, ctx, trial_id):
        return
    student = job.role == schema.ROLE_STUDENT
    tags = {
        schema.TAG_ROLE: job.role,
        schema.TAG_TRIAL: trial_id,
        schema.TAG_NODE: ray.get_runtime_context().get_node_id(),
        schema.TAG_PARENT: ctx.parent_run_id,
        schema.TAG_SAMPLED: ",".join(job.params),  # what the job set on the base config: how to run it again
        **({schema.TAG_SEED_OF: job.repeat_of} if job.repeat_of else {}),
        **({schema.TAG_TEACHER_RUN: ctx.teacher_run_id} if student and ctx.teacher_run_id else {}),
        **job.tags,
    }
    params = job.params | ({"seed": job.seed} if job.seed is not None else {})
    name = job.name or f"{job.role}-{trial_number(trial_id)}"
    about_teacher: dict = {}
    try:
        config = apply(params, ctx.base)  # a combination the space allowed but no run config does: a failed trial, logged
        if student:
            teacher, about_teacher, own_key = _trial_teacher(config, data, teacher, ctx)  # a teacher.* the space chose may not fit
            if own_key:  # not the search's teacher run: name the cached teacher instead
                tags = {k: v for k, v in tags.items() if k != schema.TAG_TEACHER_RUN} | {schema.TAG_TEACHER_KEY: own_key}
    except KdxError as e:
        log_failed(store, ctx, name, tags, params, e)
        tune.report(failed_report())
        return
    reference = teacher.module if teacher is not None else None  # a twin's fidelity: to the search's teacher
    if job.role == schema.ROLE_TWIN:  # labels only, from the student's own start: the teacher's layers stay, its outputs go
        config = config.scratch_twin()
        teacher = teacher if config.train.init != "random" else None
    name = job.name or spoken_name(config, data)  # a twin's recipe reads "scratch"; the trial id is a tag
    tags[schema.TAG_CONFIG_KEY] = fingerprint([job.role, config.to_dict()])
    log = start_unless_duplicate(store, ctx, name, tags, config)
    if log is None:
        return
    done = train_logged(store, ctx, name, tags, config, data, teacher, extra_metrics=about_teacher, reference=reference, log=log)
    if done is None:
        tune.report(failed_report())
        return
    result, _, metrics = done
    tune.report(metrics | timing(started, result.seconds) | {"epoch": result.epochs})


def _trial_teacher(config: RunConfig, data: Dataset, teacher: Teacher | None, ctx: TrialContext) -> tuple[Teacher | None, dict, str | None]:
    """The search's teacher, or the one this trial's params chose (teacher.* in the space:
    its size; its epochs, an early-stopped teacher, since a teacher keeps its best
    validation epoch and its schedule is constant), trained once per machine (cached
    under a lock) and run over the training set once. Returns the teacher, the metrics
    that describe it on the student's run, and its cache key when it is the trial's own."""
    if teacher is None or not ctx.teacher_config or config.teacher.to_dict() == ctx.teacher_config:
        return teacher, teacher_metrics(teacher.info) if teacher is not None and teacher.info else {}, None
    own = prepare_teacher(config, data, list(ctx.output_keys), log=lambda s: None)
    return own, teacher_metrics(own.info), own.info.key


def replay_finished(store: Store, ctx: TrialContext, trial_id: str) -> bool:
    """On --resume, a trial Tune runs again: if its run finished before the kill, report
    that run's result to Tune and return True (nothing trains). Otherwise delete the runs
    the kill cut off and return False (the trial starts again)."""
    from ray import tune

    old = store.runs(ctx.experiment_id, trial=trial_id)
    for r in old:
        if (r.info.status == FINISHED and r.data.tags.get(schema.TAG_STOPPED) != "true"
                and r.data.tags.get(schema.TAG_ROLE) != schema.ROLE_ASSISTANT):  # a chain's student ends it
            m = r.data.metrics
            tune.report({k: m[k] for k in (*schema.OBJECTIVES, *schema.TEST_SCORES) if k in m} | {"epoch": int(m[schema.EPOCHS])})
            return True
    for r in old:
        store.delete(r.info.run_id)
    return False


def start_unless_duplicate(store: Store, ctx: TrialContext, name: str, tags: dict, config: RunConfig,
                           wait_s: float = 600.0) -> RunLog | None:
    """The trial's run, begun, or None when it was a duplicate and has been recorded as one.

    A trial whose role and resolved config (sampled params and seed included) equal
    another run's trains nothing: Optuna samples a categorical point again, often to two
    workers at once. The run begun first (start time, then id) trains; a later one waits
    for it (at most `wait_s`, in case its worker died), then records that run's result,
    tagged as its duplicate (kept off the front), and reports it to Tune."""
    from ray import tune

    key = tags[schema.TAG_CONFIG_KEY]
    log = store.start(ctx.experiment_id, name, run_tags(config, tags))
    log.params(schema.flat_params(config.to_dict()))
    same = [r for r in store.runs(ctx.experiment_id, parent=ctx.parent_run_id, tag=(schema.TAG_CONFIG_KEY, key))
            if r.data.tags.get(schema.TAG_STOPPED) != "true" and not r.data.tags.get(schema.TAG_DUPLICATE_OF)
            and r.info.status in (FINISHED, RUNNING)]
    mine = next((r for r in same if r.info.run_id == log.run_id), None)
    earlier = [r for r in same if mine is not None and (r.info.start_time, r.info.run_id) < (mine.info.start_time, mine.info.run_id)]
    first = min(earlier, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
    deadline, pause = time.monotonic() + wait_s, 0.5
    while first is not None and first.info.status == RUNNING:  # one run to watch: ask for it alone, less often as it goes
        if time.monotonic() > deadline:
            return log  # the earlier one stalls (its worker may be gone): train this one after all
        time.sleep(pause)
        pause = min(2 * pause, 5.0)
        first = store.get(first.info.run_id)
    if first is None or first.info.status != FINISHED:
        return log  # none earlier, or it failed: this one trains
    m = first.data.metrics
    log.tags({schema.TAG_DUPLICATE_OF: first.info.run_id})
    log.metrics(m, step=int(m.get(schema.EPOCHS, 0)))
    log.end(FINISHED)
    store.client.update_run(log.run_id, name=f"{name} = {first.info.run_name}")
    tune.report({k: m[k] for k in (*schema.OBJECTIVES, *schema.TEST_SCORES) if k in m} | {"epoch": int(m[schema.EPOCHS]), DUPLICATE: 1})
    return None


def log_failed(store: Store, ctx: TrialContext, name: str, tags: dict, params: dict, error: BaseException) -> None:
    """A run whose config could not be made: its params and error, FAILED."""
    log = store.start(ctx.experiment_id, name, tags)
    log.params(params)
    log.tags({schema.TAG_ERROR: error_line(error)})
    log.end(RUN_FAILED)


def train_logged(store: Store, ctx: TrialContext, name: str, tags: dict, config: RunConfig, data: Dataset, teacher: Teacher | None,
                 extra_params: dict | None = None, report_epochs: bool = True, extra_metrics: dict | None = None,
                 reference: nn.Module | None = None, log: RunLog | None = None) -> tuple[RunResult, str, dict] | None:
    """Train `config` as one MLflow run: params, per-epoch metrics, final metrics (fidelity
    to `reference`, its teacher, when given), weights; into `log` when the run is begun already.

    Returns (RunResult, run id, final metrics), or None when the run failed for a reason a retry would
    not change (logged FAILED with its error). A scheduler's stop ends the run
    KILLED and tagged stopped-early; any other error ends it FAILED and goes up,
    so Tune retries it (it may be the machine)."""
    from ray import tune

    if log is None:
        log = store.start(ctx.experiment_id, name, run_tags(config, tags))
        log.params(schema.flat_params(config.to_dict()))
    if extra_params:
        log.params(extra_params)
    epochs = config.train.epochs
    objectives: dict = {}

    def on_epoch(e: Epoch) -> None:
        objectives.update(config.task.epoch_metrics(e.val_acc, e.val_loss) | {schema.PARAMS: e.params, schema.LATENCY: e.latency_ms},
                          epoch=e.epoch)
        if e.val_ppl is not None:
            objectives[schema.VAL_PPL] = e.val_ppl
        reporting = report_epochs and ctx.report_every_epoch and e.epoch < epochs
        # Flushed before a scheduler sees the epoch: a stop may end this process before the
        # except-branch below has written anything; the driver then closes the run (search.py).
        log.metrics(epoch_metrics(e, config.task), step=e.epoch, flush=reporting)
        if reporting:
            tune.report(dict(objectives))

    try:
        result = run(config, data, teacher, report=on_epoch)
    except SystemExit:
        log.tags({schema.TAG_STOPPED: "true"})
        log.metrics({k: objectives[k] for k in schema.OBJECTIVES if k in objectives}, step=objectives.get("epoch", 0))
        log.end(KILLED)
        raise
    except KdxError as e:
        # Deterministic (diverged, a pairing no loss can make): recorded, not retried.
        log.tags({schema.TAG_ERROR: error_line(e)})
        log.end(RUN_FAILED)
        return None
    except BaseException as e:  # anything else may be the machine (a lost node): Tune retries it
        log.tags({schema.TAG_ERROR: error_line(e)})
        log.end(RUN_FAILED)
        raise
    final = final_metrics(result, data, reference)
    log.metrics(final | (extra_metrics or {}), step=epochs)
    log.weights(result.model.state_dict(), config.to_dict())
    log.end(FINISHED)
    return result, log.run_id, final
