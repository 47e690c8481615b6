"""What a trial's MLflow run and its Tune reports carry, computed from what is already made:
the run's name (the trial's number, the spoken recipe), the tags every run of a config gets,
its error tag's one line, and the metric dicts (a finished run's final metrics with its
fidelity to its teacher, an epoch's, a teacher's as its students see it, where the time went,
a failed trial's report). Nothing here trains, talks to MLflow or reports to Tune: that is
`trial`'s, and the chain's, which build their runs from these same pieces.
"""

from __future__ import annotations

import time

from torch import nn

from analysis import schema
from distill.config import RunConfig
from distill.data import Dataset
from distill.metrics import fidelity
from distill.teacher import TeacherInfo
from distill.tasks import Task, task_named
from distill.train import Epoch, RunResult

from .tune import FAILED

__all__ = ["error_line", "trial_number", "spoken_name", "run_tags", "failed_report", "timing", "teacher_metrics", "final_metrics",
           "epoch_metrics"]


def error_line(e: BaseException) -> str:
    """An error as the one line of a run's error tag: its type and first line, at most 500 characters."""
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:500]


def trial_number(trial_id: str) -> str:
    """A Tune trial id's counter, for run names."""
    return trial_id.rsplit("_", 1)[-1]


def spoken_name(config: RunConfig, data: Dataset) -> str:
    """'cnn d2 w25 · T4 kd.9 · 4.5k': what the runs table shows without extra columns."""
    from distill.models import count_params

    kd = config.losses.get("kd")
    size = count_params(config.student.build(data.input_shape, data.num_classes, "student"))  # milliseconds, once per run
    return schema.run_name(config.student.to_dict(), config.mix, kd.temperature if kd else None, size, config.task.labels_loss)


def run_tags(config: RunConfig, tags: dict) -> dict:
    """The tags every run of `config` carries: its architecture, its start (random, or the teacher's layers), and a control's mark."""
    kd = config.losses.get("kd")
    if kd is not None and kd.shuffle_nontarget and config.mix.get("kd", 0) > 0:
        tags = tags | {schema.TAG_CONTROL: "dark_knowledge"}  # a diagnostic, never a front member
    return tags | {schema.TAG_ARCH: schema.arch_id(config.student.to_dict()), schema.TAG_START: config.train.init}


def failed_report() -> dict:
    # NaN objectives: Optuna records the trial as FAIL; epoch 0 sits below every ASHA rung.
    return {FAILED: 1, "epoch": 0, **{k: float("nan") for k in schema.OBJECTIVES}}


def timing(started: float, train_s: float) -> dict:
    """Where a trial's time went (bench_search prints it); reported after MLflow is complete, so a stop here loses nothing."""
    return {"time_train_s": train_s, "time_other_s": time.perf_counter() - started - train_s}


def teacher_metrics(info: TeacherInfo) -> dict:
    """A teacher as the metrics of the student runs that learned from it."""
    return {schema.TEACHER_PARAMS: info.params, schema.TEACHER_VAL_ACC: info.val_acc, schema.TEACHER_TEST_ACC: info.test_acc,
            schema.TEACHER_TRAIN_S: info.train_s} | ({schema.TEACHER_TEST_LOSS: info.test_loss} if info.test_loss is not None else {})


def final_metrics(result: RunResult, data: Dataset | None = None, reference: nn.Module | None = None) -> dict:
    """What a finished run reports; with `reference` (its teacher) also its fidelity to it on the test split."""
    out = {
        schema.PARAMS: result.params,
        schema.LATENCY: result.latency_ms,
        schema.BEST_EPOCH: result.best_epoch,
        schema.EPOCHS: result.epochs,
        schema.TRAIN_S: result.seconds,
    }
    task = data.task_type if data is not None else task_named("classify")
    out |= task.quality_metrics(result)
    if result.at_start is not None:
        out |= task.start_metrics(result.at_start)
    out |= task.final_metrics(result, data)
    if reference is not None and data is not None and task.fidelity:  # a causal model's agreement is per predicted token
        out[schema.AGREEMENT], out[schema.TEACHER_KL] = fidelity(result.model, reference, data.x_test, y=data.y_test if task.causal else None)
    return out


def epoch_metrics(e: Epoch, task: Task | None = None) -> dict[str, float]:
    """What a run logs at the end of an epoch: its losses, term by term, and its validation scores (named by its task)."""
    return ({schema.TRAIN_LOSS: e.train_loss, **{schema.loss_metric(k): v for k, v in e.losses.items()}}
            | (task or task_named("classify")).epoch_metrics(e.val_acc, e.val_loss) | ({schema.VAL_PPL: e.val_ppl} if e.val_ppl is not None else {}))
