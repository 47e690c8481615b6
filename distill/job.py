"""One distillation run end to end: data, teacher (trained or loaded, cached),
its outputs (cached), the student, and optionally its twins: the student's
recipe on labels only from the student's own start, and, when that start is
the teacher's layers, from random weights too, so the gain splits into what
the start bought and what distillation bought on top."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import RunConfig
from .data import Dataset, load_data
from .teacher import TeacherInfo, prepare_teacher
from .train import Report, RunResult, run

__all__ = ["JobResult", "distill_once"]


@dataclass
class JobResult:
    config: RunConfig
    data: Dataset
    teacher: TeacherInfo | None
    student: RunResult
    twin: RunResult | None  # labels only, from the student's own start
    random_twin: RunResult | None = None  # labels only, from random weights (only when the student starts from the teacher)

    def to_dict(self) -> dict:
        out = {
            "config": self.config.to_dict(),
            "data": {"name": self.data.name, "train": len(self.data.x_train), "val": len(self.data.x_val), "test": len(self.data.x_test),
                     "num_classes": self.data.num_classes, "input_shape": list(self.data.input_shape),
                     "pairs": len(self.data.pairs.score) if self.data.pairs is not None else None},
            "teacher": self.teacher.to_dict() if self.teacher else None,
            "student": self.student.to_dict(),
            "twin": self.twin.to_dict() if self.twin else None,
            "random_twin": self.random_twin.to_dict() if self.random_twin else None,
            "start": self.config.train.init,
        }
        task = self.data.task_type
        if task.causal:
            out["data"]["floor"] = self.data.tokens.floor  # nats per predicted test token; None where unknown
        for key in ("student", "twin", "random_twin"):  # the task's own metric names beside RunResult's fields (an embedding's Spearman)
            r = getattr(self, key)
            if r is not None:
                out[key] |= task.quality_metrics(r) | task.final_metrics(r, self.data)
        if self.twin is not None:  # distillation on top of the start: the student minus its same-start twin
            out |= task.gains(self.student, self.twin)
        if self.twin is not None and self.random_twin is not None:  # what the start bought: same-start twin minus random-start twin
            out |= {f"start_{k}": v for k, v in task.gains(self.twin, self.random_twin).items()}
        return out


def distill_once(config: RunConfig, twin: bool = False, log: Callable[[str], None] = print, report: Report | None = None) -> JobResult:
    data = load_data(config.data)
    teacher = prepare_teacher(config, data, log=log) if config.needs_teacher else None
    if teacher is not None:
        data = teacher.data  # what every run is scored against (`Task.with_teacher`: an embedding's reference is the teacher)
        i, (val, test) = teacher.info, data.task_type.quality_names
        lm = f", test cross-entropy {i.test_loss:.4f} nats/token" if i.test_loss is not None else ""
        log(f"teacher: {i.recipe}{' (read from the cache)' if i.source == 'cache' else ''}, {val} {i.val_acc:.4f}, {test} {i.test_acc:.4f}{lm}{data.task_type.metrics_text(i.metrics)}, "
            f"{i.params} params")
    student = run(config, data, teacher, report=report)
    same = config.scratch_twin()
    scratch = run(same, data, teacher if same.train.init != "random" else None) if twin else None
    at_random = run(config.scratch_twin("random"), data, None) if twin and same.train.init != "random" else None
    return JobResult(config, data, teacher.info if teacher else None, student, scratch, at_random)
