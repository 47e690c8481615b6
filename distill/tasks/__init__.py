"""Task types, one file each: what differs between a classifier and a language model.

A task owns what its runs are checked, scored, ranked, taught and reported by:
its labels' checks, the metric a pick is made on (`Score`), the reference a
model that learned nothing scores, its default search objectives, which losses
fit it, the textbook KD recipes the gain's arms start from, what a twin's
control may be, how its teacher's outputs are cached, and what `kdx run`
prints. Generic code asks the task (`task_named(data.task)`); it never
branches on a task's name. A new task is one file here that registers itself.

A dataset names its task when it registers (`distill.datasets.register_dataset`);
a user's function dataset is a classifier's. Token data carries the name in
`TokenInfo.task` and `TokenShape.task`, which models read to build a causal
decoder where the task asks for one.

The names are the words earlier runs stored: "classify" and "lm". A search run
logged before tasks were objects wrote "classification", which reads as
"classify" (`ALIASES`).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from ..errors import ConfigError, did_you_mean

__all__ = ["Score", "Task", "TASKS", "register_task", "task_named", "ALIASES"]


@dataclass(frozen=True)
class Score:
    """How a task's models are ranked and compared: the validation metric a pick is made on, the
    test metric reported, which way is better, and the unit a difference is read in.

    A language model is picked and compared in nats per predicted token (val_loss, test_loss),
    also where its search's objective is val_ppl: the same ranking (perplexity is exp of it), and
    a mean over seeds or a paired difference of cross-entropies is one of the same quantity,
    where a mean of perplexities is not the perplexity of the mean."""

    val: str
    test: str
    better: str  # "max" | "min"
    unit: str  # what a difference is read in
    scale: float  # a difference times this, in `unit`
    short: str  # the unit in a table or a line: "points", "nats/token"
    words: str  # what a pick is made on, in words: "validation accuracy"

    def gain(self, a: float, b: float) -> float:
        """How much better a is than b, > 0 when a is better (in the metric's own units)."""
        return a - b if self.better == "max" else b - a

    @property
    def sign(self) -> float:
        """+1 where higher is better: sign * value ranks best first when sorted descending."""
        return 1.0 if self.better == "max" else -1.0

    def diff(self, x: float) -> str:
        """A gain in its unit: '+1.23' points, '+0.0123' nats."""
        return "n/a" if x != x else f"{self.scale * x:+.2f}" if self.scale != 1 else f"{x:+.4f}"

    def size(self, x: float) -> str:
        """A spread or a noise in its unit, unsigned: '1.23', '0.0123'."""
        return self.diff(x).lstrip("+")


class Task:
    """What a task type decides. Subclasses set the class attributes and override the methods;
    one instance per task lives in `TASKS`."""

    name: ClassVar[str]
    score: ClassVar[Score]
    words: ClassVar[str]  # the task in a sentence: "classification", "language modelling"
    model_words: ClassVar[str]  # what its model is: "a classifier", "a language model"
    objectives: ClassVar[dict[str, str]]  # a search's objectives where the config names none
    objective_names: ClassVar[tuple[str, ...]]  # the objectives a search of this task may name
    refused: ClassVar[dict[str, str]] = {}  # why an objective other tasks rank by does not rank this one's models
    shown_test: ClassVar[str]  # the test metric a runs table shows beside the objectives
    model_input: ClassVar[str]  # what a model family's `inputs` must name to take this task's token ids
    quality_names: ClassVar[tuple[str, str]] = ("val_acc", "test_acc")  # `evaluate`'s first number on validation and test
    loss_names: ClassVar[tuple[str, str]] = ("val_loss", "test_loss")  # ... and its second
    head: ClassVar[str] = "classes"  # what a model's output layer maps to: "classes", "vocabulary" or "none" (the pooled embedding)
    scored_by_teacher: ClassVar[bool] = False  # every run, a twin's too, is scored against its teacher (`with_teacher`)
    teacher_policy: ClassVar[str] = "best_val"  # the epoch a teacher trained here keeps (train.epoch_policy)
    labels_loss: ClassVar[str] = "ce"  # the loss a twin learns from without a teacher
    twin_words: ClassVar[str] = "from labels only"  # how a twin learns, in a sentence
    # The textbook KD recipes, (temperature, KD weight, ce weight), and the range a random KD candidate's
    # temperature is drawn from: where the gain's KD arm starts (workflows/gain.py).
    recipes: ClassVar[tuple[tuple[float, float, float], ...]]
    temperatures: ClassVar[tuple[float, float]]
    controls: ClassVar[tuple[str, ...]]  # the KD winner's control arms (workflows/gain.py CONTROL_ARMS)
    cache_batch: ClassVar[int] = 1024  # rows per forward when the teacher's outputs are cached

    @property
    def causal(self) -> bool:
        """A model predicts at every position (logits (B, L, vocab)): its head is the vocabulary."""
        return self.head == "vocabulary"

    @property
    def fidelity(self) -> bool:
        """Top-1 agreement and KL with the teacher mean something: the model's outputs are distributions (not an embedding)."""
        return self.head != "none"

    @property
    def smoothing(self) -> bool:
        """The labels loss is ce, whose label smoothing is the tuned gain's control arm (Yuan et al. 2020); SimCSE has no label."""
        return self.labels_loss == "ce"

    @property
    def keeps_loss(self) -> bool:
        """A teacher's and a run's cross-entropy are part of its score (logged, kept, printed): it is ranked on it."""
        return self.score.val == "val_loss"

    def fits(self, loss: str) -> bool:
        """Whether the loss term `loss` can teach a model of this task: its labels loss, or one registered for it."""
        from ..losses import LOSSES, loss_tasks

        return loss == self.labels_loss or (loss in LOSSES and self.name in loss_tasks(loss))

    def evaluate(self, model: Any, x: Any, y: Any) -> tuple[float, float]:
        """(quality, loss) of `model` on a split: accuracy and cross-entropy here; every run, epoch and teacher is scored so.
        RunResult and Epoch keep them as val_acc/test_acc and val_loss/test_loss; `quality_metrics` names them."""
        from ..metrics import evaluate

        return evaluate(model, x, y)

    def with_teacher(self, data: Any, teacher: Any) -> Any:
        """The data a run of this task is scored on once its teacher is known (an embedding's reference); as it is here."""
        return data

    def check_batch(self, n: int, batch_size: int) -> None:
        """Refuse a training set too small for the batch where the task's losses need a full batch."""

    def teacher_recipe(self, recipe: str) -> str:
        """A teacher's recipe in words (`TeacherConfig.recipe`) as this task trains it."""
        return recipe

    def fitting(self) -> list[str]:
        """The distillation losses that fit this task, for an error line."""
        from ..losses import LOSSES

        return [n for n in LOSSES.names() if n != self.labels_loss and self.fits(n)]

    def kd_loss(self, mix: dict[str, float], spaced: list[str]) -> str:
        """The distillation loss the gain's KD arm tunes, given the base mix and the losses a space weights."""
        raise NotImplementedError

    def check_labels(self, arrays: Any) -> tuple[Any, Any, int]:
        """Checked labels of `distill.datasets.Arrays` (train, test) and the output count."""
        raise NotImplementedError

    def reference(self, data: Any) -> dict[str, float]:
        """What a model that learned nothing scores on each quality objective: a hypervolume's reference."""
        raise NotImplementedError

    def chance_warning(self, val_acc: float, val_loss: float | None, data: Any) -> str | None:
        """A loud line when a teacher scores no better than a model that learned nothing."""
        raise NotImplementedError

    def split_line(self, data: Any) -> str:
        """One line naming a validation split too small to rank recipes; '' when it is not."""
        return ""

    def pick(self, val_acc: float, val_loss: float) -> float:
        """An epoch's validation score, higher better: what `train.epoch_policy: best_val` keeps."""
        return val_acc if self.score.better == "max" else -val_loss

    def quality_metrics(self, result: Any) -> dict[str, float]:
        """A finished run's quality as metrics: what `evaluate`'s first number is called on each split."""
        return dict(zip(self.quality_names, (result.val_acc, result.test_acc)))

    def epoch_metrics(self, val_quality: float, val_loss: float) -> dict[str, float]:
        """An epoch's validation scores as metrics."""
        return {self.quality_names[0]: val_quality, self.loss_names[0]: val_loss}

    def final_metrics(self, result: Any, data: Any = None) -> dict[str, float]:
        """A finished run's further task metrics (`distill.train.RunResult`; `data` its Dataset)."""
        return {}

    def model_metrics(self, model: Any, data: Any) -> dict[str, float]:
        """What any model of this task scores beyond `evaluate` on `data` (a teacher's, a reference model's too): none here."""
        return {}

    def start_metrics(self, at_start: tuple[float, float, float, float]) -> dict[str, float]:
        """What a teacher-started run scored before training: (val_acc, val_loss, test_acc, test_loss) as metrics."""
        return {"start_val_acc": at_start[0], "start_test_acc": at_start[2]}

    def result_columns(self) -> tuple[str, ...]:
        """`kdx run`'s table columns after test_acc."""
        return ()

    def result_cells(self, result: Any) -> tuple[str, ...]:
        return ()

    def floor(self, config: Any, data: Any, log: Callable[[str], None]) -> Any:
        """A reference model made with no training (`distill.static.StaticFloor`) that a search scores beside its
        students and draws on its frontier; None where the task has none (saying why through `log` where it could)."""
        return None

    def metrics_text(self, metrics: dict[str, float]) -> str:
        """`model_metrics` worth a word in a teacher's line (", ..."); '' for none."""
        return ""

    def result_lines(self, result: dict) -> str:
        """`kdx run`'s lines after its table, read from its result.json (`distill.job.JobResult.to_dict`); '' for none."""
        return ""

    def start_text(self, at_start: tuple[float, float, float, float]) -> str:
        """What the start scored before training, in `kdx run`'s words."""
        return f"val_acc {at_start[0]:.4f}, test_acc {at_start[2]:.4f}"

    def gains(self, student: Any, twin: Any) -> dict[str, float]:
        """`kdx run`'s gain of `student` over `twin` (RunResults), keyed as its result.json keeps it."""
        return {"gain": student.test_acc - twin.test_acc}

    def gain_line(self, gains: dict[str, float], what: str, start: bool) -> str:
        raise NotImplementedError


TASKS: dict[str, Task] = {}
ALIASES = {"classification": "classify"}  # the word a search run logged before tasks were objects


def register_task(cls: type[Task]) -> type[Task]:
    """Register a task class under its `name` (one instance)."""
    if cls.name in TASKS:
        raise ValueError(f"task '{cls.name}' is registered twice")
    TASKS[cls.name] = cls()
    return cls


def task_named(name: str | None, path: str = "task") -> Task:
    """The task registered as `name` (or an older stored word for it); None reads as a classifier,
    as runs logged before tasks had names."""
    name = ALIASES.get(name or "classify", name or "classify")
    if name not in TASKS:
        raise ConfigError(f"{path}: unknown task '{name}'" + did_you_mean(name, sorted(TASKS)))
    return TASKS[name]


def _register_all() -> None:
    """Import every module of this package: each registers its task, so a new task is one file here."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


_register_all()
