"""One distillation run, pure PyTorch: config, data, models, losses, teacher, training.

Nothing here imports ray, optuna or mlflow; the search builds on this.
"""

from .config import DataConfig, ModelConfig, RunConfig, TeacherConfig, TrainConfig, apply_overrides, load_yaml
from .data import DATASETS, Dataset, load_data, register_dataset
from .errors import ConfigError, DataError, KdxError, TrainingDiverged
from .job import JobResult, distill_once
from .losses import LOSSES, build_loss, register_loss
from .models import MODELS, Outputs, build_model, count_params, measure_latency, register_model
from .teacher import Teacher, TeacherInfo, get_teacher, prepare_teacher, teacher_keys, teacher_outputs
from .train import Epoch, RunResult, evaluate, run

__all__ = [
    "RunConfig", "DataConfig", "ModelConfig", "TeacherConfig", "TrainConfig", "apply_overrides", "load_yaml",
    "DATASETS", "Dataset", "load_data", "register_dataset",
    "ConfigError", "DataError", "KdxError", "TrainingDiverged",
    "JobResult", "distill_once",
    "LOSSES", "build_loss", "register_loss",
    "MODELS", "Outputs", "build_model", "count_params", "measure_latency", "register_model",
    "Teacher", "TeacherInfo", "get_teacher", "prepare_teacher", "teacher_keys", "teacher_outputs",
    "Epoch", "RunResult", "evaluate", "run",
]
