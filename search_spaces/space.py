"""A search space is data: dotted run-config keys mapped to distributions.

    student.width:  {int: [4, 256], log: true}
    train.lr:       {float: [1.0e-3, 3.0e-2], log: true}
    student.family: {choice: [mlp, cnn]}
    seed:           {fixed: 0}
    student.heads:  {choice: [1, 2, 4], when: {student.family: transformer}}
    losses.fitnet.student_layer: {float: [0.25, 1.0], when: {mix.fitnet: {gt: 0}}}

`when` makes an entry conditional on keys sampled before it or set in the base
config: a value, or {in: [...]}, {ne: v}, {gt: x}, {ge: x}, {lt: x}, {le: x}.
`define(space, base)` is an Optuna define-by-run function; `apply(params,
base)` turns a trial's params into a checked `RunConfig`.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from distill.config import RunConfig, TeacherConfig, check_key, load_yaml, with_values, yaml_float
from distill.data import is_custom
from distill.errors import ConfigError, did_you_mean
from distill.models import MODELS

__all__ = ["Param", "parse_space", "load_space", "define", "apply", "validate", "PRESETS", "flatten", "holds"]

PRESETS = Path(__file__).parent / "presets"
KINDS = ("int", "float", "choice", "fixed")
OPS = {
    "in": lambda v, arg: v in arg,
    "ne": lambda v, arg: v != arg,
    "gt": lambda v, arg: v is not None and v > arg,
    "ge": lambda v, arg: v is not None and v >= arg,
    "lt": lambda v, arg: v is not None and v < arg,
    "le": lambda v, arg: v is not None and v <= arg,
}
_MISSING = object()


@dataclass(frozen=True)
class Param:
    key: str
    kind: str  # int | float | choice | fixed
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    value: Any = None
    when: dict = field(default_factory=dict)

    def describe(self) -> str:
        """What the key may take, in words: 'int 4 .. 64, log', 'mlp, cnn', 'fixed 0.5'."""
        if self.kind in ("int", "float"):
            return f"{self.kind} {self.low:g} .. {self.high:g}" + (", log" if self.log else "") + (f", step {self.step:g}" if self.step else "")
        return ", ".join(map(str, self.choices)) if self.kind == "choice" else f"fixed {self.value!r}"

    def endpoints(self) -> list[Any]:
        """Values that must all make a valid run: the bounds, every choice."""
        if self.kind in ("int", "float"):
            return [self.low, self.high]
        return list(self.choices) if self.kind == "choice" else [self.value]


def flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _number(v: Any, where: str) -> float:
    v = yaml_float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    return v


def _parse_entry(key: str, spec: Any, where: str) -> Param:
    if isinstance(spec, list):
        raise ConfigError(f"{where}: a bare list is ambiguous; write {{choice: [...]}} to search over it")
    if not isinstance(spec, Mapping):
        return Param(key, "fixed", value=spec)  # a bare value fixes the key
    kinds = [k for k in KINDS if k in spec]
    extra = [k for k in spec if k not in (*KINDS, "log", "step", "when")]
    if extra:
        raise ConfigError(f"{where}: unknown field '{extra[0]}'" + did_you_mean(str(extra[0]), [*KINDS, "log", "step", "when"]))
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of int, float, choice, fixed")
    kind, when = kinds[0], spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise ConfigError(f"{where}.when: expected a mapping of key: condition")
    for cond_key, cond in when.items():
        if isinstance(cond, Mapping):
            for op in cond:
                if op not in OPS:
                    raise ConfigError(f"{where}.when.{cond_key}: unknown test '{op}'" + did_you_mean(str(op), list(OPS)))
    if kind == "fixed":
        return Param(key, "fixed", value=spec["fixed"], when=dict(when))
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choice needs a non-empty list")
        if any(isinstance(c, (dict, list)) for c in choices):
            raise ConfigError(f"{where}: choices must be plain values (numbers, strings, booleans)")
        return Param(key, "choice", choices=tuple(choices), when=dict(when))
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(f"{where}: {kind} needs [low, high]")
    low, high = (_number(b, where) for b in bounds)
    if kind == "int" and not all(float(b).is_integer() for b in (low, high)):
        raise ConfigError(f"{where}: int bounds must be whole numbers, got {bounds}")
    if low > high:
        raise ConfigError(f"{where}: low {low} is above high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (_number(step, f"{where}.step") <= 0 or log):
        raise ConfigError(f"{where}.step: must be > 0, and cannot go with log")
    if step is not None and kind == "int" and not float(step).is_integer():
        raise ConfigError(f"{where}.step: an int entry needs a whole step, got {step}")
    if kind == "int":
        low, high = int(low), int(high)
    return Param(key, kind, low=low, high=high, log=log, step=step, when=dict(when))


def parse_space(data: Any, where: str = "space", check: Callable[[str], None] = check_key) -> list[Param]:
    """Check a space's entries and keys (with `check`, a run config's keys by default); errors name the entry."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{where}: the search space is empty")
    params: list[Param] = []
    for key, spec in data.items():
        entry = f"{where}.{key}"
        try:
            check(str(key))
        except ConfigError as e:
            raise ConfigError(f"{entry}: no run config has this key ({e})") from None
        params.append(_parse_entry(str(key), spec, entry))
    return params


def load_space(spec: Any, base_dir: Path | None = None, check: Callable[[str], None] = check_key) -> list[Param]:
    """A space from a mapping, a preset name ("capacity_gap" or "presets/capacity_gap.yaml"),
    or a YAML file path (relative to the config's folder)."""
    if isinstance(spec, str):
        name = spec.removeprefix("presets/").removesuffix(".yaml")
        preset = PRESETS / f"{name}.yaml"
        path = Path(spec) if Path(spec).is_absolute() else (base_dir or Path.cwd()) / spec
        if preset.exists() and not path.exists():
            path = preset
        elif not path.exists():
            presets = sorted(p.stem for p in PRESETS.glob("*.yaml"))
            raise ConfigError(f"space: no file or preset '{spec}'" + did_you_mean(name, presets))
        return parse_space(load_yaml(str(path)), "space", check)
    return parse_space(spec, "space", check)


def holds(cond: Any, value: Any) -> bool:
    if isinstance(cond, Mapping):
        return all(OPS[op](value, arg) for op, arg in cond.items())
    return value == cond


def _active(p: Param, chosen: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    return all(holds(cond, chosen.get(k, base.get(k))) for k, cond in p.when.items())


class Sampler:
    """An Optuna define-by-run function: trial -> {dotted key: value}.

    Conditional entries whose `when` does not hold are not sampled at all, so
    they never appear in the trial's params. A class, not a closure: Ray Tune
    pickles it with the searcher's state."""

    def __init__(self, space: list[Param], base: Mapping):
        self.space, self.base_flat = list(space), flatten(base)

    def __call__(self, trial: Any) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for p in self.space:
            if not _active(p, chosen, self.base_flat):
                continue
            if p.kind == "int":
                chosen[p.key] = trial.suggest_int(p.key, p.low, p.high, step=int(p.step or 1), log=p.log)
            elif p.kind == "float":
                chosen[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
            elif p.kind == "choice":
                chosen[p.key] = trial.suggest_categorical(p.key, list(p.choices))
            else:
                chosen[p.key] = p.value
        return chosen


def define(space: list[Param], base: Mapping) -> Callable[[Any], dict[str, Any]]:
    return Sampler(space, base)


def _refit_family(base: Mapping, params: Mapping[str, Any], section: str) -> Mapping:
    """When a trial picks another model family, drop the base's shape keys that
    family does not have (an mlp's width means nothing to a transformer)."""
    family = params.get(f"{section}.family")
    current = base.get(section) or {}
    if family is None or family == current.get("family") or family not in MODELS:
        return base
    fields = {f.name for f in dataclasses.fields(MODELS.get(family, "").options)}
    own = set(TeacherConfig._OWN) if section == "teacher" else set()
    kept = {k: v for k, v in current.items() if k in fields or k in own}
    return {**base, section: kept}


def apply(params: Mapping[str, Any], base: Mapping, ignore: tuple[str, ...] = ()) -> RunConfig:
    """The run config of a trial: the base config with the params set, checked."""
    for section in ("student", "teacher"):
        base = _refit_family(base, params, section)
    return RunConfig.from_dict(with_values(base, params), ignore=ignore)


def validate(space: list[Param], base: Mapping, ignore: tuple[str, ...] = ()) -> None:
    """Check that every entry's bounds and choices make valid runs.

    Each value is tried with the others at their first endpoint and with the
    conditions it needs; a failure names the entry and the value."""
    base_flat = flatten(base)
    keys = [p.key for p in space]
    by_key = {p.key: p for p in space}
    for i, p in enumerate(space):
        for cond_key, cond in p.when.items():
            if cond_key in keys[i:]:
                raise ConfigError(f"space.{p.key}.when: '{cond_key}' is sampled after this entry; list it first")
            if cond_key not in keys and cond_key not in base_flat:
                try:
                    check_key(cond_key, is_custom(str(base_flat.get("data.name", ""))))
                except ConfigError as e:
                    raise ConfigError(f"space.{p.key}.when: {e}") from None
            numeric = [op for op in (cond if isinstance(cond, Mapping) else {}) if op in ("gt", "ge", "lt", "le")]
            seen = by_key[cond_key].endpoints() if cond_key in by_key else [base_flat.get(cond_key)]
            bad = [v for v in seen if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
            if numeric and bad:
                raise ConfigError(f"space.{p.key}.when.{cond_key}: '{numeric[0]}' compares numbers, but {cond_key} can be {bad[0]!r}")
    for p in space:
        for value in p.endpoints():
            chosen: dict[str, Any] = {}
            for q in space:  # in order; the others at an endpoint that satisfies p's conditions
                if not _active(q, chosen, base_flat):
                    continue
                if q is p:
                    chosen[p.key] = value
                    continue
                wanted = p.when.get(q.key, _MISSING)
                options = q.endpoints()
                chosen[q.key] = next((o for o in options if wanted is _MISSING or holds(wanted, o)), options[0])
            if p.key not in chosen:
                continue  # its conditions cannot hold together; nothing to check
            try:
                apply(chosen, base, ignore)
            except ConfigError as e:
                raise ConfigError(f"space.{p.key}: value {value!r} does not make a valid run ({e})") from None
    _validate_together(space, base, base_flat, ignore)


def _validate_together(space: list[Param], base: Mapping, base_flat: Mapping, ignore: tuple[str, ...], most: int = 256) -> None:
    """Entries of one section checked together, every combination of their endpoints (up to `most`):
    keys a model's options check as a pair (a transformer's heads must divide its dim) pass one at a
    time and fail together. The other entries sit at their first endpoint."""
    sections: dict[str, list[Param]] = {}
    for p in space:
        sections.setdefault(p.key.split(".")[0], []).append(p)
    for group in (g for g in sections.values() if len(g) > 1):
        for combo in itertools.islice(itertools.product(*(q.endpoints() for q in group)), most):
            picked = {q.key: v for q, v in zip(group, combo)}
            chosen: dict[str, Any] = {}
            for q in space:  # in order, so that conditions see what they depend on
                if _active(q, chosen, base_flat):
                    chosen[q.key] = picked.get(q.key, q.endpoints()[0])
            try:
                apply(chosen, base, ignore)
            except ConfigError as e:
                values = ", ".join(f"{k} {chosen[k]!r}" for k in picked if k in chosen)
                raise ConfigError(f"space: {values} together do not make a valid run ({e}); "
                                  "condition one on the other (when:) or pick values that fit") from None


def dump(space: list[Param]) -> str:
    """The space as YAML (for the parent run's artifacts)."""
    out = {}
    for p in space:
        if p.kind in ("int", "float"):
            spec: dict[str, Any] = {p.kind: [p.low, p.high]}
            if p.log:
                spec["log"] = True
            if p.step:
                spec["step"] = p.step
        elif p.kind == "choice":
            spec = {"choice": list(p.choices)}
        else:
            spec = {"fixed": p.value}
        if p.when:
            spec["when"] = dict(p.when)
        out[p.key] = spec
    return yaml.safe_dump(out, sort_keys=False)

