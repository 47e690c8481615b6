"""A plain name -> entry registry, one per kind (dataset, model family, loss).

Each entry carries the options dataclass its config section is checked against,
so a new dataset, family or loss is one file: its options and its builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[..., Any]
    options: type
    reads: tuple[str, ...] = ()  # losses: the teacher outputs they read ("logits", "features", "features.embedding", "attentions")


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type, reads: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
        def decorate(build: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, build, options, tuple(reads))
            return build

        return decorate

    def get(self, name: str, path: str) -> Entry:
        if not isinstance(name, str):
            raise ConfigError(f"{path}: expected a {self.kind} name, got {name!r}")
        if name not in self._entries:
            raise ConfigError(f"{path}: unknown {self.kind} '{name}'" + did_you_mean(name, self.names()))
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries
