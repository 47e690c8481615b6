"""Pieces the file-backed dataset tests share: loading a data section, the one-line
error it fails with, and an object array whose unpickling would leave a mark."""

from pathlib import Path

import numpy as np
import pytest

from distill.config import DataConfig
from distill.data import load_data
from distill.errors import ConfigError, DataError


def data(**kw):
    return load_data(DataConfig.parse(kw))


def one_line_error(fn, *a, hide: Path | None = None, **kw) -> str:
    """The one-line message `fn` fails with; `hide` (tmp_path, which holds the test's name) is replaced by <tmp>
    so that a word checked in the message is the message's own."""
    with pytest.raises((DataError, ConfigError)) as e:
        fn(*a, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg.replace(str(hide), "<tmp>") if hide is not None else msg


class Boom:
    """Unpickling this creates `marker`: proof that something unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def object_array(marker: Path, n: int = 4) -> np.ndarray:
    a = np.empty(n, dtype=object)
    a[:] = [Boom(marker) for _ in range(n)]
    return a

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")  # the Dataset fields holding samples or labels
