"""Errors a user can cause. The CLI prints them as one line and exits 2."""

from __future__ import annotations

import difflib


class KdxError(Exception):
    """Base of every error kdx reports to a user without a traceback.

    The message is kept to one line whatever a user's key or value held."""

    def __init__(self, message: str = ""):
        super().__init__("".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(message)))


class ConfigError(KdxError):
    """A config key, value or file is wrong. The message names it."""


class DataError(KdxError):
    """A dataset cannot be built or found."""


class TrainingDiverged(KdxError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, terms: dict[str, float]):
        self.epoch = epoch
        self.terms = terms
        bad = ", ".join(f"{k}={v}" for k, v in terms.items())
        super().__init__(f"training diverged at epoch {epoch}: {bad}")  # KdxError keeps it one line


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the nearest choice, or the list of choices."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    initials = "".join(part[:1] for part in name.split("_"))  # learning_rate -> lr
    if not close and "_" in name and initials in choices:
        close = [initials]
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(sorted(choices))})" if choices else ""


class InvalidValue(ValueError):
    """Raised by an options dataclass's checks; the parser adds the key's path."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


def check(ok: bool, key: str, message: str) -> None:
    """In a config dataclass's __post_init__: fail on `key` unless `ok`."""
    if not ok:
        raise InvalidValue(key, message)
