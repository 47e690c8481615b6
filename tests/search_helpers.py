"""Shared pieces of the end-to-end search tests: a tiny experiment, a CLI runner, MLflow reads."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The small hgmm task and teacher the end-to-end tests share (seconds to train).
TINY_TASK = """data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}
teacher: {family: mlp, width: 64, depth: 1, epochs: 5}
mix: {ce: 0.5, kd: 0.5}
"""

TINY = """
experiment: {name}
data: {{name: hgmm, classes: 20, superclasses: 4, dim: 16}}
teacher: {{family: mlp, width: 64, depth: 1, epochs: 5}}
student: {{family: mlp, width: 8, depth: 1}}
train: {{epochs: {epochs}, batch_size: 64}}
mix: {{ce: 0.5, kd: 0.5}}
space:
  student.family: {{choice: [mlp, cnn]}}
  student.width: {{int: [4, 32], log: true}}
  losses.kd.temperature: {{float: [1.0, 8.0], log: true}}
search:
  num_samples: {samples}
  max_concurrent: 2
  sampler: {sampler}
  objectives: {objectives}
  scheduler: {scheduler}
  baselines: true
  seeds: {seeds}
  confirm: {confirm}
  twins: {twins}
  recipe_trials: 2
  gain_archs: {gain_archs}
"""


def write_config(folder: Path, name: str = "tiny", epochs: int = 2, samples: int = 4, sampler: str = "random",
                 objectives: str = "{val_acc: max, params: min}", scheduler: str = "none", seeds: int = 1,
                 twins: str = "base_recipe", gain_archs: int = 0, confirm: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(TINY.format(name=name, epochs=epochs, samples=samples, sampler=sampler, objectives=objectives, scheduler=scheduler,
                                seeds=seeds, twins=twins, gain_archs=gain_archs, confirm=confirm))
    return path


def env_for(folder: Path) -> dict:
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "TMPDIR": ray_tmp, "MLFLOW_TRACKING_URI": ""}


def kdx_args(*args) -> list[str]:
    return [sys.executable, "-m", "workflows.cli", *args]


def kdx(*args, cwd: Path, timeout: int = 600, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**env_for(cwd), **(extra_env or {})}
    return subprocess.run(kdx_args(*args), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def runs(db: Path, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def study(folder: Path, experiment: str):
    """The search's persisted Optuna study, loaded the way a user would (workflows/study.py)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = folder / "kdx-results" / f"{experiment}.optuna.journal"
    return optuna.load_study(study_name=experiment, storage=JournalStorage(JournalFileBackend(str(path))))


def by_role(all_runs: list, role: str) -> list:
    return [r for r in all_runs if r.data.tags.get("kdx.role") == role]
