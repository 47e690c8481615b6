"""One distillation run end to end: data, teacher (trained or loaded, cached),
its outputs (cached), the student, and optionally its from-scratch twin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import RunConfig
from .data import Dataset, load_data
from .teacher import TeacherInfo, get_teacher, teacher_keys, teacher_outputs
from .train import Report, RunResult, run

__all__ = ["JobResult", "distill_once"]


@dataclass
class JobResult:
    config: RunConfig
    data: Dataset
    teacher: TeacherInfo | None
    student: RunResult
    twin: RunResult | None

    def to_dict(self) -> dict:
        out = {
            "config": self.config.to_dict(),
            "data": {"name": self.data.name, "train": len(self.data.x_train), "val": len(self.data.x_val), "test": len(self.data.x_test),
                     "num_classes": self.data.num_classes, "input_shape": list(self.data.input_shape)},
            "teacher": self.teacher.to_dict() if self.teacher else None,
            "student": self.student.to_dict(),
            "twin": self.twin.to_dict() if self.twin else None,
        }
        if self.twin is not None:
            out["gain"] = self.student.test_acc - self.twin.test_acc
        return out


def distill_once(config: RunConfig, twin: bool = False, log: Callable[[str], None] = print, report: Report | None = None) -> JobResult:
    data = load_data(config.data)
    info, outputs, teacher = None, None, None
    if config.needs_teacher:
        teacher, info = get_teacher(config, data, log=log)
        log(f"teacher: {info.source}, val_acc {info.val_acc:.4f}, test_acc {info.test_acc:.4f}, {info.params} params")
        outputs = teacher_outputs(teacher, info, data, teacher_keys(config, data, teacher))
    student = run(config, data, outputs, report=report, init_from=teacher)
    scratch = run(config.scratch_twin(), data, None) if twin else None
    return JobResult(config, data, info, student, scratch)
