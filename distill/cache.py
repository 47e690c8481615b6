"""The kdx cache folder (`KDX_CACHE`, default ~/.cache/kdx): atomic writes and
checksummed reads, so a killed process or a damaged file never poisons a run."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("KDX_CACHE") or Path.home() / ".cache" / "kdx")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able value (a config section, say)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checked(path: Path, write: Callable[[Path], None]) -> None:
    """Write atomically, then record the file's sha256 beside it."""
    atomic_write(path, write)
    digest = sha256_file(path)
    atomic_write(path.with_name(path.name + ".sha256"), lambda p: p.write_text(digest))


def load_checked(path: Path, read: Callable[[Path], Any]) -> Any | None:
    """read(path) if the file exists and matches its recorded sha256, else None."""
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists() or not sidecar.exists():
        return None
    if sha256_file(path) != sidecar.read_text().strip():
        return None
    try:
        return read(path)
    except Exception:  # a file that passed its hash but does not parse: rebuild it
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (a lock file) across processes on this machine:
    two trials that need the same teacher train it once; the second waits, then reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
