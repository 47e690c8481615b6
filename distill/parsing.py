"""Strict parsing of plain dicts (YAML) into frozen dataclasses.

An unknown key names its full path and the nearest valid key; a wrong type
names its key and what was expected; range checks live in each dataclass's
`__post_init__` (via `errors.check`) and get the path added here.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import fields
from typing import Annotated, Any, Literal, Mapping, Sequence

import yaml

from .errors import ConfigError, InvalidValue, did_you_mean

__all__ = ["parse_dataclass", "options_field", "section_keys", "to_plain", "yaml_float", "coerce", "unknown_key", "as_mapping", "load_yaml"]


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def yaml_float(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads `1e-3` as the string "1e-3"; take it as the number meant."""
    return float(value) if isinstance(value, str) and _FLOAT.match(value.strip()) else value


def coerce(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        choices = [str(a) for a in typing.get_args(tp)]
        raise ConfigError(f"{path}: {value!r} is not one of {_type_name(tp)}" + did_you_mean(str(value), choices))
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return coerce(value, arm, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        value = yaml_float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif origin is list or tp is list:
        if isinstance(value, list):
            return list(value)
    else:
        raise TypeError(f"config type {tp} is not supported")
    raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def unknown_key(key: str, path: str, valid: list[str]) -> ConfigError:
    where = f"{path}.{key}" if path else key
    return ConfigError(f"unknown key '{where}'" + did_you_mean(key, valid))


def as_mapping(data: Any, path: str) -> Mapping:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    return data


_OPTIONS = "kdx.options"


def options_field(**kwargs: Any) -> Any:
    """A field that takes the keys of its section that are not fields (see `parse_dataclass`)."""
    return dataclasses.field(metadata={_OPTIONS: True}, **kwargs)


def section_keys(cls: type) -> list[str]:
    """The keys a section takes of its own: its fields, less an options_field."""
    return [f.name for f in fields(cls) if f.init and not f.metadata.get(_OPTIONS)]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return None if f.default_factory is dataclasses.MISSING else f.default_factory()


def parse_dataclass(cls: type, data: Any, path: str, default: Any = None, known: Sequence[str] = ()) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and ranges.

    Keys left out take their value from `default` (an instance), else from the
    field. A field typed as a dataclass is a nested section, defaulted by its
    field. Where a section's other keys depend on a choice made in it, an
    `options_field` takes them, parsed as the class that `cls.split(values,
    path)` picks from the values read (None: kept as given) or, without
    `split`, as the field's own type, whose default stands when there are none.
    `Annotated[dict[str, V], registry]` is keyed by the registry's names; V =
    Any means each entry's options. `known`: other keys valid here (an
    enclosing section's), named in suggestions."""
    data = as_mapping(data, path)
    hints = typing.get_type_hints(cls, include_extras=True)
    by_name = {f.name: f for f in fields(cls)}
    names = section_keys(cls)
    into = next((f for f in by_name.values() if f.metadata.get(_OPTIONS)), None)
    kwargs = {n: getattr(default, n) for n in names} if default is not None else {}
    rest = {}
    for key, value in data.items():
        if key in names:
            kwargs[key] = _parse_value(hints[key], value, f"{path}.{key}" if path else key, by_name[key])
        elif into is None:
            raise unknown_key(str(key), path, [*known, *names])
        else:
            rest[key] = value
    if into is not None:
        split = getattr(cls, "split", None)
        options_cls = split(kwargs, path) if split else hints[into.name]
        if options_cls is None:
            kwargs[into.name] = rest
        elif split or rest:
            kwargs[into.name] = parse_dataclass(options_cls, rest, path, None if split else _default(into), [*known, *names])
    try:
        return cls(**kwargs)
    except InvalidValue as e:
        where = f"{path}.{e.key}" if path else e.key
        raise ConfigError(f"{where}: {e}") from None


def _parse_value(tp: Any, value: Any, path: str, f: dataclasses.Field) -> Any:
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, path, _default(f))
    if typing.get_origin(tp) is Annotated:
        mapping, registry = typing.get_args(tp)
        of = typing.get_args(mapping)[1]
        out = {}
        for name, item in as_mapping(value, path).items():
            entry = registry.get(str(name), f"{path}.{name}")
            where = f"{path}.{name}"
            out[str(name)] = parse_dataclass(entry.options, item, where) if of is Any else coerce(item, of, where)
        return out
    return coerce(value, tp, path)


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain dicts (what YAML and MLflow params hold)."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str) -> dict:
    """Read a YAML config with the safe loader; errors name the file (and line)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data
