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
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping

import yaml

from .data import DATASETS, is_custom
from .errors import ConfigError, check
from .losses import LOSSES
from .models import MODELS
from .parsing import as_mapping, coerce, load_yaml, parse_dataclass, to_plain, unknown_key, yaml_float

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TeacherConfig",
    "TrainConfig",
    "RunConfig",
    "apply_overrides",
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
    options: Any = None

    def to_dict(self) -> dict:
        opts = self.options if isinstance(self.options, dict) else to_plain(self.options)
        return {"name": self.name, "val_fraction": self.val_fraction, "seed": self.seed, **(opts or {})}

    @classmethod
    def parse(cls, data: Any, path: str = "data") -> "DataConfig":
        data = dict(as_mapping(data, path))
        own = {k: data.pop(k) for k in ("name", "val_fraction", "seed") if k in data}
        name = coerce(own.get("name", cls.name), str, f"{path}.name")
        val_fraction = coerce(own.get("val_fraction", cls.val_fraction), float, f"{path}.val_fraction")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"{path}.val_fraction: must be in (0, 1), got {val_fraction}")
        seed = coerce(own.get("seed", cls.seed), int, f"{path}.seed")
        if is_custom(name):
            options = dict(data)  # checked against the function's signature when loaded
        else:
            entry = DATASETS.get(name, f"{path}.name")
            options = _parse_options(entry.options, data, path, ["name", "val_fraction", "seed"])
        return cls(name=name, val_fraction=val_fraction, seed=seed, options=options)


def _parse_options(options_cls: type, data: Mapping, path: str, own: list[str]) -> Any:
    valid = own + [f.name for f in fields(options_cls)]
    for key in data:
        if key not in valid:
            raise unknown_key(str(key), path, valid)
    return parse_dataclass(options_cls, data, path)


@dataclass(frozen=True)
class ModelConfig:
    """A registered model `family` and its shape options (width, depth, ...)."""

    family: str
    options: Any

    def to_dict(self) -> dict:
        return {"family": self.family, **to_plain(self.options)}

    @classmethod
    def parse(cls, data: Any, path: str, default_family: str, own: tuple[str, ...] = ()) -> "ModelConfig":
        data = dict(as_mapping(data, path))
        family = coerce(data.pop("family", default_family), str, f"{path}.family")
        entry = MODELS.get(family, f"{path}.family")
        return cls(family, _parse_options(entry.options, data, path, ["family", *own]))


@dataclass(frozen=True)
class TeacherConfig:
    """Train a teacher from the registry, or load `checkpoint` (a state dict)
    into the model that `factory` ("package.module:function") builds; without a
    factory the registry family and shape build it."""

    model: ModelConfig
    checkpoint: str | None = None
    factory: str | None = None
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    seed: int = 0

    _OWN = ("checkpoint", "factory", "epochs", "lr", "batch_size", "weight_decay", "seed")

    def to_dict(self) -> dict:
        own = {k: getattr(self, k) for k in self._OWN}
        return {**self.model.to_dict(), **own}

    @classmethod
    def parse(cls, data: Any, path: str = "teacher") -> "TeacherConfig":
        data = dict(as_mapping(data, path))
        own = {k: data.pop(k) for k in cls._OWN if k in data}
        if "family" not in data and not data:
            data = {"family": "cnn", "width": 64, "depth": 3}  # about 95% on MNIST-1D in 13 s (STACK.md)
        model = ModelConfig.parse(data, path, "cnn", own=cls._OWN)
        hints = typing.get_type_hints(cls)
        kwargs = {k: coerce(v, hints[k], f"{path}.{k}") for k, v in own.items()}
        for key in ("epochs", "batch_size"):
            if key in kwargs and kwargs[key] < 1:
                raise ConfigError(f"{path}.{key}: must be >= 1, got {kwargs[key]}")
        if kwargs.get("lr", 1.0) <= 0:
            raise ConfigError(f"{path}.lr: must be > 0, got {kwargs['lr']}")
        if kwargs.get("factory") and ":" not in kwargs["factory"]:
            raise ConfigError(f"{path}.factory: expected 'package.module:function', got {kwargs['factory']!r}")
        return cls(model=model, **kwargs)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-2  # KD needs a larger student lr than CE: at 1e-3 it lost 1-4 points on hgmm (STACK.md)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: Literal["constant", "cosine"] = "constant"
    epoch_policy: Literal["last", "best_val"] = "last"  # never best-on-test
    threads: int = 1  # one thread per tiny run was steadier under load (STACK.md)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = False  # autocast on CUDA only; CPU runs stay float32
    init: Literal["random", "teacher"] = "random"  # "teacher": start from the teacher's layers (DistilBERT; distill/init.py)

    def __post_init__(self) -> None:
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.threads >= 1, "threads", f"must be >= 1, got {self.threads}")


def _default_losses() -> dict:
    return {"kd": LOSSES.get("kd", "losses").options()}


@dataclass(frozen=True)
class RunConfig:
    """One distillation run. `mix` names the weight of every loss term; `losses`
    holds each term's options (defaults for terms it does not mention)."""

    seed: int = 0
    data: DataConfig = field(default_factory=lambda: DataConfig.parse({}))
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig.parse({}))
    student: ModelConfig = field(default_factory=lambda: ModelConfig.parse({}, "student", "mlp"))
    train: TrainConfig = field(default_factory=TrainConfig)
    losses: dict = field(default_factory=_default_losses)
    mix: dict = field(default_factory=lambda: {"ce": 0.1, "kd": 0.9})

    SECTIONS = ("seed", "data", "teacher", "student", "train", "losses", "mix")

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
    def needs_teacher(self) -> bool:
        return any(w > 0 for name, w in self.mix.items() if name != "ce") or self.train.init == "teacher"

    def scratch_twin(self) -> "RunConfig":
        """The same student, data, budget and seed, trained on labels only, from a random start."""
        return dataclasses.replace(self, mix={"ce": 1.0}, losses={k: v for k, v in self.losses.items() if k == "ce"},
                                   train=dataclasses.replace(self.train, init="random"))

    @classmethod
    def from_dict(cls, data: Any, ignore: tuple[str, ...] = ()) -> "RunConfig":
        """Strictly parse a run config; top-level keys in `ignore` (an experiment
        config's search sections) are skipped, any other unknown key is an error."""
        data = as_mapping(data, "")
        valid = list(cls.SECTIONS) + list(ignore)
        for key in data:
            if key not in valid:
                raise unknown_key(str(key), "", valid)
        seed = coerce(data.get("seed", 0), int, "seed")
        mix = _parse_mix(data.get("mix", {"ce": 0.1, "kd": 0.9}))
        losses = _parse_losses(data.get("losses"), mix)
        return cls(
            seed=seed,
            data=DataConfig.parse(data.get("data")),
            teacher=TeacherConfig.parse(data.get("teacher")),
            student=ModelConfig.parse(data.get("student"), "student", "mlp"),
            train=parse_dataclass(TrainConfig, data.get("train"), "train"),
            losses=losses,
            mix=mix,
        )


def _parse_mix(data: Any) -> dict[str, float]:
    data = as_mapping(data, "mix")
    mix = {}
    for name, weight in data.items():
        LOSSES.get(str(name), f"mix.{name}")
        weight = coerce(weight, float, f"mix.{name}")
        if weight < 0:
            raise ConfigError(f"mix.{name}: weight must be >= 0, got {weight}")
        mix[str(name)] = weight
    if not any(w > 0 for w in mix.values()):
        raise ConfigError("mix: at least one loss weight must be > 0")
    return mix


def _parse_losses(data: Any, mix: dict[str, float]) -> dict[str, Any]:
    data = as_mapping(data, "losses")
    losses = {}
    for name, opts in data.items():
        entry = LOSSES.get(str(name), f"losses.{name}")
        losses[str(name)] = parse_dataclass(entry.options, opts, f"losses.{name}")
    for name in mix:  # every mixed term has its options, defaults where unset
        if name not in losses:
            losses[name] = LOSSES.get(name, f"mix.{name}").options()
    return losses


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


def with_values(data: Mapping, values: Mapping[str, Any], label: str = "space") -> dict:
    """A copy of `data` with dotted keys set to `values` (a trial's params)."""
    out = copy.deepcopy(dict(data))
    for key, value in values.items():
        set_value(out, key, value, f"{label}.{key}")
    return out


def _field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def check_key(key: str, custom_data: bool = False) -> None:
    """Fail unless some run config has dotted `key` (whatever the family or dataset)."""
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    model_keys = ["family"] + sorted({n for name in MODELS.names() for n in _field_names(MODELS.get(name, "").options)})
    valid: dict[str, list[str]] = {
        "data": ["name", "val_fraction", "seed"] + sorted({n for name in DATASETS.names() for n in _field_names(DATASETS.get(name, "").options)}),
        "student": model_keys,
        "teacher": model_keys + list(TeacherConfig._OWN),
        "train": _field_names(TrainConfig),
        "mix": LOSSES.names(),
        "losses": LOSSES.names(),
    }
    if head == "seed" and not rest:
        return
    if head not in valid:
        raise unknown_key(head, "", list(RunConfig.SECTIONS))
    if not rest:
        raise ConfigError(f"'{key}' is a section, not a value")
    if head == "data" and custom_data:
        return
    if rest[0] not in valid[head]:
        raise unknown_key(rest[0], head, valid[head])
    if head == "losses":
        opts = _field_names(LOSSES.get(rest[0], "").options)
        if len(rest) != 2 or rest[1] not in opts:
            raise unknown_key(".".join(rest[1:]) or "?", f"losses.{rest[0]}", opts)
    elif len(rest) != 1:
        raise ConfigError(f"unknown key '{key}'")
