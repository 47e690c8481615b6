"""Every task type (distill/tasks/) gets the same checks, generated from the registry: what it
declares is consistent, a dataset serves it, a model family builds for it, and a tiny run with
its twin goes end to end and logs the task's own metrics. A new task adds its tiny run here
(`RUNS`); the first test fails until it does."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from analysis import schema
from distill.config import RunConfig
from distill.datasets import DATASETS
from distill.job import distill_once
from distill.losses import LOSSES
from distill.models import MODELS
from distill.tasks import TASKS, Task, task_named
from workflows.records import epoch_metrics, final_metrics

TOPICS = Path(__file__).resolve().parents[1] / "examples" / "data" / "topics.txt"
TINY_TRANSFORMER = {"family": "transformer", "dim": 16, "depth": 1, "heads": 2}


def _runs(tmp: Path) -> dict[str, dict]:
    (tmp / "t.txt").write_text("\n".join(random.Random(0).sample(TOPICS.read_text().splitlines(), 300)))
    return {
        "classify": {"data": {"name": "hgmm", "classes": 10, "superclasses": 2, "dim": 8, "train_per_class": 20, "test_per_class": 10},
                     "teacher": {"family": "mlp", "width": 32, "epochs": 2}, "student": {"family": "mlp", "width": 8},
                     "train": {"epochs": 2}},
        "lm": {"data": {"name": "hmm", "symbols": 12, "length": 12, "train_samples": 240, "test_samples": 60},
               "teacher": {**TINY_TRANSFORMER, "epochs": 2}, "student": TINY_TRANSFORMER, "train": {"epochs": 2},
               "mix": {"ce": 0.5, "token_kd": 0.5}},
        "embed": {"data": {"name": "sentences", "path": str(tmp / "t.txt"), "vocab_size": 100, "max_len": 16},
                  "teacher": {**TINY_TRANSFORMER, "dropout": 0.1, "epochs": 2, "batch_size": 32}, "student": {**TINY_TRANSFORMER, "dropout": 0.1},
                  "train": {"epochs": 2, "batch_size": 32}, "mix": {"emb_mse": 1.0}},
    }


def test_every_task_has_a_tiny_run_here(tmp_path):
    assert set(_runs(tmp_path)) == set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_what_a_task_declares_holds_together(name):
    task: Task = TASKS[name]
    assert task_named(name) is task and task.name == name
    assert task.score.val in task.objective_names or task.score.val in task.loss_names  # a language model ranks by val_ppl, compares in val_loss
    assert next(iter(task.objectives)) in task.objective_names and set(task.objective_names) <= set(schema.OBJECTIVES)
    assert all(q in schema.QUALITY or q in task.loss_names for q in task.quality_names[:1])
    assert task.labels_loss in LOSSES and task.fits(task.labels_loss) and task.fitting()  # a twin, and something to distil with
    assert not set(task.refused) & set(task.objective_names)
    assert any(DATASETS.get(d, "").reads[0] == name for d in DATASETS.names())  # some dataset serves it
    assert any(task.model_input in MODELS.get(f, "").reads for f in MODELS.names())  # some family builds its model
    assert set(task.controls) <= {"shuffled", "same_recipe"} and all(len(r) == 3 for r in task.recipes)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_tiny_run_and_its_twin_log_the_task_metrics(name, tmp_path):
    config = RunConfig.from_dict(_runs(tmp_path)[name])
    assert config.task is TASKS[name]
    job = distill_once(config, twin=True, log=lambda s: None)
    task = job.data.task_type
    assert task is TASKS[name] and job.twin is not None
    assert job.twin.history and all(math.isfinite(r.test_acc) for r in (job.student, job.twin))
    metrics = final_metrics(job.student, job.data)
    assert set(task.quality_names) <= set(metrics) and task.score.test in metrics
    assert task.quality_names[0] in epoch_metrics(job.student.history[-1], task)
    gains = task.gains(job.student, job.twin)
    assert gains and all(math.isfinite(v) for v in gains.values()) and task.gain_line(gains | {f"start_{k}": v for k, v in gains.items()}, "twin", True)


SEARCH = {"space": {"train.lr": {"choice": [0.001, 0.003]}},
          "search": {"num_samples": 2, "max_concurrent": 2, "sampler": "random", "scheduler": "none", "twins": "base_recipe"},
          "resources": {"cpu": 1, "gpu": 0}}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_tiny_search_of_every_task_ends_in_a_front_that_exports(name, tmp_path):
    """Every task through the whole path a user takes: `kdx search --smoke` (Ray, MLflow), then `kdx export`,
    whose every file reproduces the run's logged test score."""
    import yaml

    from search_helpers import kdx

    config = {"experiment": f"tiny-{name}", **_runs(tmp_path)[name], **SEARCH}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(config))
    out = kdx("search", "s.yaml", "--smoke", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Pareto front:" in out.stdout and TASKS[name].score.test in out.stdout
    out = kdx("export", "--experiment", f"tiny-{name}", "--out", "exported", "--formats", "safetensors", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "reproduced by every format" in out.stdout and list((tmp_path / "exported").glob("p*-*/card.json"))
