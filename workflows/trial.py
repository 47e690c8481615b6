"""One Tune trial: one distillation run (or one scratch twin), logged to MLflow.

Data and teacher outputs arrive once per worker through Ray's object store
(`tune.with_parameters`); the trial applies its params to the base config,
trains with `distill.run`, and writes its own MLflow run in batches.

Tune stops a trial that a scheduler (ASHA) culled by raising SystemExit from
`tune.report` in the trial's thread (ray/train/_internal/session.py); the run
is then ended KILLED and tagged stopped-early, so the front never sees it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from analysis import schema
from distill.data import Dataset
from distill.errors import KdxError
from distill.models import Outputs
from distill.train import run
from search_spaces.space import apply

__all__ = ["TrialContext", "student_trial", "baseline_trial", "seed_trial", "train_logged", "failed_run", "final_metrics", "failed_report", "replayed", "trial_number", "timing", "teacher_metrics", "FAILED"]

FAILED = "kdx_failed"  # in a trial's last result: it failed for a reason a retry would not change


@dataclass(frozen=True)
class TrialContext:
    base: dict  # the base run config (train.threads and train.device already set for the trial's resources)
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    teacher_run_id: str | None
    report_every_epoch: bool  # a scheduler needs per-epoch results; without one, a report per epoch only costs
    teacher: dict = field(default_factory=dict)  # the search's teacher: {"config": its section, "metrics": teacher_params, ...}
    output_keys: tuple = ("logits",)  # the teacher outputs the losses read


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:500]


def failed_report() -> dict:
    # NaN objectives: Optuna records the trial as FAIL; epoch 0 sits below every ASHA rung.
    return {FAILED: 1, "epoch": 0, **{k: float("nan") for k in schema.OBJECTIVES}}


def trial_number(trial_id: str) -> str:
    return trial_id.rsplit("_", 1)[-1]


def _execute(params: dict, role: str, data: Dataset, teacher: Outputs | None, ctx: TrialContext, extra_tags: dict | None = None,
             name: str | None = None, teacher_model: nn.Module | None = None) -> None:
    from ray import tune

    from .tracking import Tracker

    started = time.perf_counter()
    trial_id = tune.get_context().get_trial_id()
    tracker = Tracker(ctx.tracking_uri)
    if replayed(tracker, ctx, trial_id):
        return
    import ray

    tags = {
        schema.TAG_ROLE: role,
        schema.TAG_TRIAL: trial_id,
        schema.TAG_NODE: ray.get_runtime_context().get_node_id(),
        schema.TAG_PARENT: ctx.parent_run_id,
        schema.TAG_SAMPLED: ",".join(params) if role == schema.ROLE_STUDENT else "",
        **(extra_tags or {}),
    }
    if ctx.teacher_run_id and role == schema.ROLE_STUDENT:
        tags[schema.TAG_TEACHER_RUN] = ctx.teacher_run_id
    name = name or f"{role}-{trial_number(trial_id)}"
    try:
        config = apply(params, ctx.base)
    except KdxError as e:  # a combination the space allowed but no run config does: a failed trial, logged
        failed_run(tracker, ctx, name, tags, params, e)
        tune.report(failed_report())
        return
    if role == schema.ROLE_BASELINE:
        config = config.scratch_twin()
        name = f"twin {schema.arch_id(config.student.to_dict())}"
    about_teacher: dict = {}
    if role == schema.ROLE_STUDENT:
        try:
            teacher, teacher_model, about_teacher, own_key = _trial_teacher(config, data, teacher, teacher_model, ctx)
        except KdxError as e:  # a teacher the space chose that cannot be made (a checkpoint that does not fit)
            failed_run(tracker, ctx, name, tags, params, e)
            tune.report(failed_report())
            return
        if own_key:  # not the search's teacher run: name the cached teacher instead
            tags = {k: v for k, v in tags.items() if k != schema.TAG_TEACHER_RUN} | {schema.TAG_TEACHER_KEY: own_key}
    done = train_logged(tracker, ctx, name, tags, config, data, teacher if role == schema.ROLE_STUDENT else None,
                        extra_metrics=about_teacher, init_from=teacher_model)
    if done is None:
        tune.report(failed_report())
        return
    result, _ = done
    tune.report(final_metrics(result) | timing(started, result.seconds) | {"epoch": result.epochs})


def timing(started: float, train_s: float) -> dict:
    """Where a trial's time went (bench_search prints it); reported after MLflow is complete, so a stop here loses nothing."""
    return {"time_train_s": train_s, "time_other_s": time.perf_counter() - started - train_s}


def _trial_teacher(config, data: Dataset, outputs: Outputs | None, model: nn.Module | None,
                   ctx: TrialContext) -> tuple[Outputs | None, nn.Module | None, dict, str | None]:
    """The search's teacher outputs, or those of the teacher this trial's params chose
    (teacher.* in the space: its size; its epochs, an early-stopped teacher, since
    a teacher keeps its best validation epoch and its schedule is constant), trained
    once per machine (cached under a lock) and run over the training set once.
    Returns the outputs, the model, the metrics that describe the teacher on the
    student's run, and the teacher's cache key when it is the trial's own (else None)."""
    if not ctx.teacher or config.teacher.to_dict() == ctx.teacher["config"]:
        return outputs, model, dict(ctx.teacher.get("metrics", {})), None
    from distill.teacher import get_teacher, teacher_outputs

    model, info = get_teacher(config, data, log=lambda s: None)
    return teacher_outputs(model, info, data, list(ctx.output_keys)), model, teacher_metrics(info), info.key


def teacher_metrics(info) -> dict:
    """A teacher as the metrics of the student runs that learned from it."""
    return {schema.TEACHER_PARAMS: info.params, schema.TEACHER_VAL_ACC: info.val_acc, schema.TEACHER_TEST_ACC: info.test_acc}


def replayed(tracker, ctx: TrialContext, trial_id: str) -> bool:
    """On --resume: a trial whose run finished before the kill reports it again and trains
    nothing (True); runs the kill cut off are deleted, and the trial starts again (False)."""
    from ray import tune

    old = tracker.runs(ctx.experiment_id, f"tags.`{schema.TAG_TRIAL}` = '{trial_id}'")
    for r in old:
        if (r.info.status == "FINISHED" and r.data.tags.get(schema.TAG_STOPPED) != "true"
                and r.data.tags.get(schema.TAG_ROLE) != schema.ROLE_ASSISTANT):  # a chain's student ends it
            m = r.data.metrics
            tune.report({k: m[k] for k in (*schema.OBJECTIVES, schema.TEST_ACC) if k in m} | {"epoch": int(m[schema.EPOCHS])})
            return True
    for r in old:
        tracker.client.delete_run(r.info.run_id)
    return False


def failed_run(tracker, ctx: TrialContext, name: str, tags: dict, params: dict, error: BaseException) -> None:
    """A run whose config could not be made: its params and error, FAILED."""
    log = tracker.start(ctx.experiment_id, name, tags)
    log.params(params)
    log.tags({schema.TAG_ERROR: _one_line(error)})
    log.end("FAILED")


def final_metrics(result) -> dict:
    return {
        schema.VAL_ACC: result.val_acc,
        schema.TEST_ACC: result.test_acc,
        schema.PARAMS: result.params,
        schema.LATENCY: result.latency_ms,
        schema.BEST_EPOCH: result.best_epoch,
        schema.EPOCHS: result.epochs,
    }


def train_logged(tracker, ctx: TrialContext, name: str, tags: dict, config, data: Dataset, teacher: Outputs | None,
                 params: dict | None = None, report_epochs: bool = True, extra_metrics: dict | None = None,
                 init_from: nn.Module | None = None):
    """Train `config` as one MLflow run: params, per-epoch metrics, final metrics, weights.

    Returns (RunResult, run id), or None when the run failed for a reason a retry would
    not change (logged FAILED with its error). A scheduler's stop ends the run
    KILLED and tagged stopped-early; any other error ends it FAILED and goes up,
    so Tune retries it (it may be the machine)."""
    from ray import tune

    arch = schema.arch_id(config.student.to_dict())
    kd = config.losses.get("kd")
    if kd is not None and kd.shuffle_nontarget and config.mix.get("kd", 0) > 0:
        tags = tags | {schema.TAG_CONTROL: "dark_knowledge"}  # a diagnostic, never a front member
    log = tracker.start(ctx.experiment_id, name, tags | {schema.TAG_ARCH: arch})
    log.params(schema.flat_params(config.to_dict()) | (params or {}))
    epochs = config.train.epochs
    objectives = {}

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        objectives.update({k: metrics[k] for k in schema.OBJECTIVES}, epoch=epoch)
        log.metrics({k: v for k, v in metrics.items() if k not in (schema.PARAMS, schema.LATENCY)}, step=epoch)
        if report_epochs and ctx.report_every_epoch and epoch < epochs:
            tune.report(dict(objectives))

    try:
        result = run(config, data, teacher, report=on_epoch, init_from=init_from)
    except SystemExit:
        log.tags({schema.TAG_STOPPED: "true"})
        log.metrics({k: objectives[k] for k in schema.OBJECTIVES if k in objectives}, step=objectives.get("epoch", 0))
        log.end("KILLED")
        raise
    except KdxError as e:
        # Deterministic (diverged, a pairing no loss can make): recorded, not retried.
        log.tags({schema.TAG_ERROR: _one_line(e)})
        log.end("FAILED")
        return None
    except BaseException as e:  # anything else may be the machine (a lost node): Tune retries it
        log.tags({schema.TAG_ERROR: _one_line(e)})
        log.end("FAILED")
        raise
    log.metrics(final_metrics(result) | (extra_metrics or {}), step=epochs)
    log.weights(result.model.state_dict(), config.to_dict())
    log.end("FINISHED")
    return result, log.run_id


def student_trial(params: dict, data: Dataset = None, teacher: Outputs | None = None, ctx: TrialContext = None,
                  teacher_model: nn.Module | None = None) -> None:
    _execute(params, schema.ROLE_STUDENT, data, teacher, ctx, teacher_model=teacher_model)


def baseline_trial(params: dict, data: Dataset = None, teacher: Any = None, ctx: TrialContext = None) -> None:
    arch = dict(params["arch"])  # {"student.family": ..., "student.width": ...}
    _execute(arch, schema.ROLE_BASELINE, data, None, ctx)


def seed_trial(params: dict, data: Dataset = None, teacher: Outputs | None = None, ctx: TrialContext = None,
               teacher_model: nn.Module | None = None) -> None:
    """A repeat of a Pareto student (or of its twin) with another seed, or a chain
    search's direct run: {"job": {role, params, seed_of, tags}}."""
    job = params["job"]
    tags = dict(job.get("tags") or {}) | ({schema.TAG_SEED_OF: job["seed_of"]} if job.get("seed_of") else {})
    _execute(dict(job["params"]), job["role"], data, teacher, ctx, tags, job.get("name"), teacher_model)
