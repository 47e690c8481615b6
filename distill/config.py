"""The configuration of one distillation run: frozen dataclasses, built strictly.

`RunConfig.from_dict` turns plain dicts (YAML) into checked dataclasses: an
unknown key names its full path and the nearest valid key, a wrong type or an
out-of-range value names its key. `apply_overrides` applies `key=value`
strings to the plain dict first, so an override is checked like any value.

Sections whose keys depend on a choice (the dataset's knobs, a model family's
shape, a loss's options) are checked against the options dataclass that the
choice registered; see `distill.registry`.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Mapping

import yaml

from .augment import AugmentConfig
from .datasets import DATASETS, dataset_task, is_custom
from .errors import ConfigError, check
from .losses import LOSSES, next_token_losses
from .models import MODELS, build_model
from .models.factory import build_factory, check_factory
from .tasks import Task, task_named
from .on_policy import OnPolicy
from .prune import PruneOptions
from .parsing import as_mapping, load_yaml, options_field, parse_dataclass, section_keys, to_plain, unknown_key, yaml_float
from .registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TeacherConfig",
    "TrainConfig",
    "RunConfig",
    "apply_overrides",
    "resolve_paths",
    "with_values",
    "check_key",
    "yaml_float",
    "parse_dataclass",
    "load_yaml",
]


# --- sections ------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """`name` is a registered dataset or "package.module:function"; the rest of
    the section is that dataset's own knobs (its options dataclass)."""

    name: str = "mnist1d"
    val_fraction: float = 0.1
    seed: int = 0  # fixed apart from the run seed: every trial sees the same split
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training batches only; drawn from the run seed
    options: Any = options_field(default=None)

    def __post_init__(self) -> None:
        check(0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict:
        opts = self.options if isinstance(self.options, dict) else to_plain(self.options)
        aug = {"augment": self.augment.to_dict()} if self.augment.active else {}  # none: the dict (and config hashes) as before
        return {"name": self.name, "val_fraction": self.val_fraction, "seed": self.seed, **aug, **(opts or {})}

    @classmethod
    def split(cls, own: dict, path: str) -> type | None:
        name = own.get("name", cls.name)
        if is_custom(name):
            return None  # checked against the function's signature when loaded
        return DATASETS.get(name, f"{path}.name").options

    @classmethod
    def parse(cls, data: Any, path: str = "data") -> "DataConfig":
        """A data section alone (what `load_data` takes)."""
        return parse_dataclass(cls, data, path)


@dataclass(frozen=True)
class ModelConfig:
    """A registered model `family` and its shape options (width, depth, ...), or a
    user's `factory` ("package.module:function") and the keyword arguments it takes;
    see `distill.models.factory`."""

    family: str = ""
    options: Any = options_field(default_factory=dict)  # always set by the parser (the family's options, or the factory's kwargs)
    factory: str | None = None
    features: list[str] = field(default_factory=list)  # a factory model's module paths whose outputs feature losses read

    def __post_init__(self) -> None:
        check(bool(self.family) != bool(self.factory), "family", "give a model family or a factory, one of the two")
        check(not self.factory or ":" in self.factory, "factory", f"expected 'package.module:function', got {self.factory!r}")
        check(not self.features or bool(self.factory), "features", "names modules of a factory's model; kdx's families expose their own")
        if self.factory:
            check_factory(self.factory, self.options, self.features)  # imports it: a wrong kwarg fails here, before any work

    def to_dict(self) -> dict:
        if self.factory:
            return {"factory": self.factory, **({"features": list(self.features)} if self.features else {}), **self.options}
        return {"family": self.family, **to_plain(self.options)}

    @classmethod
    def split(cls, own: dict, path: str) -> type | None:
        if own.get("factory"):
            own["family"] = ""  # a factory section takes no family from the section's default (student: mlp)
            return None  # the factory's kwargs, checked against its signature (check_factory)
        return MODELS.get(own.get("family"), f"{path}.family").options

    def build(self, input_shape: tuple[int, ...], num_classes: int, path: str = "model") -> "nn.Module":
        if self.factory:
            return build_factory(self.factory, self.options, self.features, input_shape, num_classes, path)
        return build_model(self.family, self.options, input_shape, num_classes, path)


@dataclass(frozen=True)
class TeacherConfig:
    """Train a teacher, or load `checkpoint` (a state dict) into it. Its model is a
    `ModelConfig` read from the same section: a registry family and shape, or a
    user's `factory` ("package.module:function") with its kwargs, as for a student.
    A section without model keys gets the default model; one with some builds that
    family's defaults."""

    model: ModelConfig = options_field(  # about 95% on MNIST-1D: 13 s on an idle 2-core machine, 36 s on one thread of a busy one
        default_factory=lambda: parse_dataclass(ModelConfig, {"family": "cnn", "width": 64, "depth": 3}, "teacher"))
    checkpoint: str | None = None
    # What the student learns from: "cached", the teacher's outputs on each training sample,
    # computed once per search (exact only without augmentation); "online", the frozen
    # teacher run on every augmented batch; "views", `views` augmented views per sample,
    # made once per search with their crop/flip, that trials replay (FKD, Shen & Xing 2022).
    outputs: Literal["cached", "online", "views"] = "cached"
    views: int = 8
    # A language model's cached outputs: the top-k log-probabilities per token and their ids, the rest
    # of the mass in one tail bucket (distill/losses/next_token.py): 8k + 4 bytes a token where the
    # whole vocabulary takes 4 x vocab. None: the whole vocabulary, exact.
    topk: int | None = None
    # "slice": a Hugging Face teacher folder whose embedding is padded to more rows than the data's
    # vocabulary (Qwen's and Llama's round up to a multiple of 64 or 128) scores the shared rows only.
    vocab: Literal["same", "slice"] = "same"
    # false: the teacher is used as it stands (a checkpoint, or a Hugging Face folder whose head is
    # trained on the data's labels); true: trained, from random weights or fine-tuned from the
    # folder's or checkpoint's. None: a checkpoint as it stands, anything else trained.
    train: bool | None = None
    # None below: the recipe of how the teacher starts. From random weights: Adam at a constant 3e-3
    # for 60 epochs (about 95% on MNIST-1D; examples/demo.yaml's ResNet does better). Fine-tuning pretrained weights, as practitioners
    # do (BERT's recipe: AdamW, lr 2e-5 to 5e-5, weight decay 0.01, linear warmup over the first 10%
    # of steps then linear decay to 0, a few epochs): a constant 3e-3 wrecks a pretrained transformer.
    epochs: int | None = None
    lr: float | None = None
    batch_size: int = 128
    weight_decay: float | None = None
    warmup: float | None = None  # the fraction of steps over which lr rises linearly from 0, then decays linearly to 0
    # data label name -> the name of a label of a teacher's own head (its config's id2label), for a
    # teacher used as it stands whose label names differ from the data's; labels are mapped by name, never by order
    labels: dict[str, str] = field(default_factory=dict)
    seed: int = 0

    _OWN: ClassVar[tuple[str, ...]]  # set below; search_spaces keeps these keys when a trial switches family

    @property
    def pretrained(self) -> str | None:
        """A Hugging Face teacher's local folder, if it has one."""
        return getattr(self.model.options, "pretrained", None) if self.model.family == "hf" else None

    @property
    def from_weights(self) -> bool:
        """The teacher starts from weights it was given (a checkpoint, or a pretrained folder as saved), not at random
        (size or config keys beside `pretrained` build the folder's architecture changed, at random: distill/models/hf.py)."""
        return bool(self.checkpoint or (self.pretrained and not self.model.options.overrides()))

    @property
    def settings(self) -> dict[str, Any]:
        """train, epochs, lr, weight_decay and warmup as they apply: the values given, else the defaults of how the
        teacher starts (the fields keep None, so a section parsed over this one's defaults still sees what was given)."""
        finetune = self.from_weights
        defaults = {"train": not self.checkpoint, "epochs": 3 if finetune else 60, "lr": 5e-5 if finetune else 3e-3,
                    "weight_decay": 0.01 if finetune else 0.0, "warmup": 0.1 if finetune else 0.0}
        return {k: v if getattr(self, k) is None else getattr(self, k) for k, v in defaults.items()}

    @property
    def recipe(self) -> str:
        """How the teacher's weights were made, in words (the teacher run records it)."""
        r = self.settings
        if not r["train"]:
            return "used as it stands (not trained)"
        if self.from_weights:
            return (f"fine-tuned from its weights: AdamW lr {r['lr']:g}, weight decay {r['weight_decay']:g}, warmup {r['warmup']:.0%} "
                    f"then linear decay, {r['epochs']} epochs, best validation epoch kept")
        lr = f"warmup {r['warmup']:.0%} then linear decay" if r["warmup"] > 0 else "constant"  # a warmup given is honoured, never dropped
        return f"trained from random weights: Adam lr {r['lr']:g} {lr}, {r['epochs']} epochs, best validation epoch kept"

    def __post_init__(self) -> None:
        r = self.settings
        check(r["train"] or self.from_weights, "train", "false uses a teacher as it stands: give teacher.checkpoint, or a "
              "pretrained folder (family: hf, pretrained: DIR)")
        check(not self.labels or not r["train"], "labels", "maps the data's labels to the head of a teacher used as it stands "
              "(teacher.train: false); a trained teacher's head learns the data's labels")
        check(r["epochs"] >= 1, "epochs", f"must be >= 1, got {r['epochs']}")
        check(r["lr"] > 0, "lr", f"must be > 0, got {r['lr']}")
        check(r["weight_decay"] >= 0, "weight_decay", f"must be >= 0, got {r['weight_decay']}")
        check(0.0 <= r["warmup"] < 1.0, "warmup", f"must be a fraction of the steps in [0, 1), got {r['warmup']}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.views >= 1, "views", f"must be >= 1, got {self.views}")
        check(self.topk is None or self.topk >= 1, "topk", f"must be >= 1, got {self.topk}")
        check(self.topk is None or self.outputs == "cached", "topk", "keeps the cached outputs small; with outputs "
              f"{self.outputs} the teacher's whole distribution is read on each batch")
        check(self.vocab == "same" or (self.model.family == "hf" and bool(self.model.options.pretrained)), "vocab",
              "slice reads a Hugging Face teacher folder whose vocabulary is a padded superset of the data's: "
              "set teacher.family: hf and teacher.pretrained")

    def to_dict(self) -> dict:
        """As given (None: the default of how the teacher starts; `settings` fills them in), so it parses back to an equal config."""
        return {**self.model.to_dict(), **{k: getattr(self, k) for k in self._OWN}}

    def training_dict(self) -> dict:
        """What makes the teacher's weights (how its outputs reach a student does not)."""
        return {k: v for k, v in (self.to_dict() | self.settings).items() if k not in ("outputs", "views", "topk", "vocab", "labels")}


TeacherConfig._OWN = tuple(section_keys(TeacherConfig))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-2  # KD needs a larger student lr than CE: at 1e-3 it lost 1-4 points on hgmm (measured on a 2-core CPU machine, 2026-11)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    # linear: `warmup` (a fraction of all steps) of linear rise from 0, then linear decay to 0, stepped per batch (BERT's fine-tuning schedule)
    schedule: Literal["constant", "cosine", "step", "linear"] = "constant"
    warmup: float = 0.0
    milestones: list[int] = field(default_factory=list)  # step: epochs after which lr is multiplied by gamma (CIFAR: 150, 180, 210)
    gamma: float = 0.1
    epoch_policy: Literal["last", "best_val"] = "last"  # never best-on-test
    threads: int = 1  # one thread per tiny run was steadier under load (measured on a 2-core CPU machine, 2026-11)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False  # autocast on CUDA only; CPU runs stay float32
    # "teacher": start from the teacher's layers (DistilBERT; distill/init.py); "prune": from the teacher cut
    # to the student's shape by importance (Minitron; distill/prune.py)
    init: Literal["random", "teacher", "prune"] = "random"
    init_layers: Literal["every_other", "distilbert", "first"] | list[int] = "every_other"  # which teacher layers (distill/init.py)
    prune: PruneOptions = field(default_factory=PruneOptions)  # train.init: prune only
    on_policy: OnPolicy = field(default_factory=OnPolicy)  # a language model's batches written by the student itself (distill/on_policy.py)

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")
        check(self.gamma > 0, "gamma", f"must be > 0, got {self.gamma}")
        check(all(isinstance(m, int) and m >= 1 for m in self.milestones), "milestones", f"must be epochs >= 1, got {self.milestones}")
        check(self.schedule == "step" or not self.milestones, "milestones", "only mean something with schedule: step")
        check(0.0 <= self.warmup < 1.0, "warmup", f"must be a fraction of the steps in [0, 1), got {self.warmup}")
        check(self.schedule == "linear" or not self.warmup, "warmup", "only means something with schedule: linear")
        check(not isinstance(self.init_layers, list) or all(isinstance(j, int) and j >= 0 for j in self.init_layers),
              "init_layers", f"a list names teacher layers 0, 1, ..., got {self.init_layers}")


    @property
    def start_words(self) -> str:
        """Where a student's weights start, in words (what `kdx run` and `kdx validate` print)."""
        if self.init == "teacher":
            return f"from the teacher's layers ({self.init_layers})"
        if self.init == "prune":
            return f"from the teacher pruned to the student's shape (units by importance, layers: {self.prune.layers})"
        return "from random weights"


def _default_losses() -> dict:
    return {"kd": LOSSES.get("kd", "losses").options()}


@dataclass(frozen=True)
class RunConfig:
    """One distillation run. `mix` names the weight of every loss term; `losses`
    holds each term's options (defaults for terms it does not mention)."""

    seed: int = 0
    data: DataConfig = field(default_factory=lambda: parse_dataclass(DataConfig, {}, "data"))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: ModelConfig = field(default_factory=lambda: parse_dataclass(ModelConfig, {"family": "mlp"}, "student"))
    train: TrainConfig = field(default_factory=TrainConfig)
    losses: Annotated[dict[str, Any], LOSSES] = field(default_factory=_default_losses)
    mix: Annotated[dict[str, float], LOSSES] = field(default_factory=lambda: {"ce": 0.1, "kd": 0.9})

    def __post_init__(self) -> None:
        for name, weight in self.mix.items():
            check(weight >= 0, f"mix.{name}", f"weight must be >= 0, got {weight}")
        check(any(w > 0 for w in self.mix.values()), "mix", "at least one loss weight must be > 0")
        task = self.task
        for name, weight in self.mix.items():
            if weight > 0 and not task.fits(name):
                raise ConfigError(f"mix.{name}: data {self.data.name} is {task.words}, which this loss does not teach: "
                                  f"use {', '.join(task.fitting())}")
        aug, outputs = self.data.augment, self.teacher.outputs
        if self.distills:
            check(not (aug.active and outputs == "cached"), "teacher.outputs",
                  "cached outputs are the teacher's on un-augmented samples, which data.augment changes; "
                  "use online (the teacher runs on each augmented batch) or views (stored augmented views)")
            check(not (outputs == "views" and not aug.active), "teacher.outputs", "views of un-augmented data are all the same: use cached")
            check(aug.replayable or outputs != "views", "teacher.outputs",
                  "views replay crop and flip only; data.augment noise, mixup and cutmix need teacher.outputs: online")
        if self.train.on_policy.active:
            check(task.causal and self.distills, "train.on_policy", "the student's own sequences are scored by a teacher on next tokens: "
                  f"it needs a language-model dataset and a weighted next-token loss ({', '.join(next_token_losses())})")
            check(outputs == "online", "teacher.outputs", "train.on_policy samples new sequences, which no cache holds: use online")

    @property
    def teacher_recipe(self) -> str:
        """How the teacher's weights are made, in words, as the task trains it (`TeacherConfig.recipe`)."""
        return self.task.teacher_recipe(self.teacher.recipe)

    @property
    def task(self) -> Task:
        """What the data's task decides (distill.tasks): the losses that fit, the score, the recipes."""
        return task_named(dataset_task(self.data.name))

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "data": self.data.to_dict(),
            "teacher": self.teacher.to_dict(),
            "student": self.student.to_dict(),
            "train": to_plain(self.train),
            "losses": {k: to_plain(v) for k, v in self.losses.items()},
            "mix": dict(self.mix),
        }

    @property
    def distills(self) -> bool:
        """A weighted term other than cross-entropy reads the teacher."""
        return any(w > 0 for name, w in self.mix.items() if name != self.task.labels_loss)

    @property
    def needs_teacher(self) -> bool:
        return self.distills or self.train.init != "random" or self.task.scored_by_teacher

    def scratch_twin(self, start: Literal["same", "random"] = "same") -> "RunConfig":
        """The same student, data, budget and seed, trained on labels only. `same`: from the student's own
        start, so a student started from its teacher's layers is compared with a twin that starts from those
        layers too, and the gain is what distillation added on top of the start (DistilBERT's ablation reports
        the two apart); `random`: from random weights, which measures what the start bought."""
        init = self.train.init if start == "same" else "random"
        labels = self.task.labels_loss  # ce; an embedding's SimCSE
        return dataclasses.replace(self, mix={labels: 1.0}, losses={k: v for k, v in self.losses.items() if k == labels},
                                   train=dataclasses.replace(self.train, init=init, on_policy=OnPolicy()))

    @classmethod
    def from_dict(cls, data: Any, ignore: tuple[str, ...] = ()) -> "RunConfig":
        """Strictly parse a run config; top-level keys in `ignore` (an experiment
        config's search sections) are skipped, any other unknown key is an error."""
        run = {k: v for k, v in as_mapping(data, "").items() if k not in ignore}
        run.setdefault("losses", {})  # the field default serves RunConfig() in code; parsed, losses are those named, then the mix's
        config = parse_dataclass(cls, run, "", known=ignore)
        unset = {name: LOSSES.get(name, f"mix.{name}").options() for name in config.mix if name not in config.losses}
        return dataclasses.replace(config, losses={**config.losses, **unset})


# --- overrides and keys ---------------------------------------------------------------


def set_value(data: dict, key: str, value: Any, label: str) -> None:
    """Set dotted `key` in nested dict `data`, creating sections; `label` names the source in errors."""
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"{label}: '{'.'.join(parts[: i + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: Mapping, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (values read as YAML scalars) to a copy."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        set_value(out, key, value, f"--set {item!r}")
    return out


PATH_KEYS = ("teacher.checkpoint", "data.root", "data.path", "data.test_path", "data.tokenizer_path", "data.pairs", "teacher.pretrained",
             "student.pretrained")  # file and folder names a config can hold


def resolve_paths(data: Mapping, folder: str | Path) -> dict:
    """A copy of a config read from a file in `folder` with its relative paths (PATH_KEYS, and
    `space:` files elsewhere) taken from that folder: one rule, wherever kdx is run from."""
    out = copy.deepcopy(dict(data))
    for key in PATH_KEYS:
        section, name = key.split(".")
        node = out.get(section)
        value = node.get(name) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[name] = str(Path(folder) / value)
        elif isinstance(value, str) and value.startswith("~"):
            node[name] = str(Path(value).expanduser())
    return out


def with_values(data: Mapping, values: Mapping[str, Any], label: str = "space") -> dict:
    """A copy of `data` with dotted keys set to `values` (a trial's params)."""
    out = copy.deepcopy(dict(data))
    for key, value in values.items():
        set_value(out, key, value, f"{label}.{key}")
    return out


def _option_keys(registry: Registry) -> list[str]:
    return sorted({k for name in registry.names() for k in section_keys(registry.get(name, "").options)})


def check_key(key: str, custom_data: bool = False, custom_student: bool = False) -> None:
    """Fail unless some run config has dotted `key` (whatever the family or dataset). With a
    user's data function or student factory, their sections take the function's own arguments."""
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    model_keys = section_keys(ModelConfig) + _option_keys(MODELS)
    valid: dict[str, list[str]] = {
        "data": section_keys(DataConfig) + _option_keys(DATASETS),
        "student": model_keys,
        "teacher": model_keys + section_keys(TeacherConfig),
        "train": section_keys(TrainConfig),
        "mix": LOSSES.names(),
        "losses": LOSSES.names(),
    }
    if head == "seed" and not rest:
        return
    if head not in valid:
        raise unknown_key(head, "", section_keys(RunConfig))
    if not rest:
        raise ConfigError(f"'{key}' is a section, not a value")
    if (head == "data" and custom_data) or (head == "student" and custom_student):
        return
    if head == "data" and rest[0] == "augment":
        aug = section_keys(AugmentConfig)
        if len(rest) != 2 or rest[1] not in aug:
            raise unknown_key(".".join(rest[1:]) or "?", "data.augment", aug)
        return
    if rest[0] not in valid[head]:
        raise unknown_key(rest[0], head, valid[head])
    if head == "losses":
        opts = section_keys(LOSSES.get(rest[0], "").options)
        if len(rest) != 2 or rest[1] not in opts:
            raise unknown_key(".".join(rest[1:]) or "?", f"losses.{rest[0]}", opts)
    elif len(rest) != 1:
        raise ConfigError(f"unknown key '{key}'")
