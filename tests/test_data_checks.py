"""Data is checked where it enters (load_data): labels 0..C-1, two classes or more, finite
inputs, one label per sample; classes nobody uses are a warning line, not an error."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from distill.config import DataConfig
from distill.data import load_data
from distill.errors import DataError

ROOT = Path(__file__).resolve().parents[1]

SOURCE = '''
import numpy as np

def make(case: str = "ok", seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train, x_test = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(20, 6)).astype(np.float32)
    y_train, y_test = np.arange(40) % 4, np.arange(20) % 4
    if case == "negative":
        y_train = y_train - 1
    elif case == "shifted":
        y_train, y_test = y_train + 3, y_test + 3
    elif case == "single":
        y_train, y_test = np.zeros(40, int), np.zeros(20, int)
    elif case == "fractional":
        y_train = y_train + 0.5
    elif case == "whole_floats":
        y_train = y_train.astype(np.float64)
    elif case == "nan":
        x_train[17, 2] = np.nan
    elif case == "inf_test":
        x_test[3, 0] = np.inf
    elif case == "short_labels":
        y_train = y_train[:-1]
    elif case == "two_d_labels":
        y_train = np.eye(4)[y_train]
    return x_train, y_train, x_test, y_test
'''


@pytest.fixture
def make(tmp_path, monkeypatch):
    (tmp_path / "checked_data.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda case: load_data(DataConfig.parse({"name": "checked_data:make", "case": case}))


@pytest.mark.parametrize("case, message", [
    ("negative", r"^data: labels must be integers 0\.\.C-1; y_train has -1 \(its labels run -1\.\.2\)$"),
    ("single", r"^data: y_train has one class only \(0\): there is nothing to classify$"),
    ("fractional", r"^data: y_train must hold integer class labels 0\.\.C-1, got 0\.5, 1\.5, 2\.5$"),
    ("nan", r"^data: x_train has NaN or infinite values \(the first in sample 17\)$"),
    ("inf_test", r"^data: x_test has NaN or infinite values \(the first in sample 3\)$"),
    ("short_labels", r"^data: x_train has 40 samples, y_train 39 labels$"),
    ("two_d_labels", r"^data: y_train must be one integer label per sample, got shape \(40, 4\)$"),
])
def test_bad_data_is_one_line_naming_what_is_wrong(make, case, message):
    with pytest.raises(DataError, match=message):
        make(case)


def test_classes_without_samples_are_a_warning_and_whole_floats_are_labels(make, capsys):
    shifted = make("shifted")
    assert shifted.num_classes == 7
    assert "warning: data: classes 0, 1, 2 of 0..6 have no training sample" in capsys.readouterr().err
    assert str(make("whole_floats").y_train.dtype) == "torch.int64" and make("ok").num_classes == 4
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow  # a CLI process
def test_labels_out_of_range_stop_kdx_run_with_one_line(tmp_path):
    (tmp_path / "checked_data.py").write_text(SOURCE)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""
        data: {name: "checked_data:make", case: negative}
        teacher: {family: mlp, width: 8, depth: 1, epochs: 1}
        student: {family: mlp, width: 4, depth: 1}
        train: {epochs: 1}
    """))
    p = subprocess.run([sys.executable, "-m", "workflows.cli", "run", str(cfg)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"}, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().endswith("data: labels must be integers 0..C-1; y_train has -1 (its labels run -1..2)")


def test_a_memory_mapped_file_is_checked_in_chunks(tmp_path):
    folder = tmp_path / "arrays"
    folder.mkdir()
    x = np.zeros((10_000, 4), np.float32)
    x[9_321, 1] = np.nan
    for name, a in (("x_train", x), ("y_train", np.arange(10_000) % 3), ("x_test", np.zeros((5, 4), np.float32)), ("y_test", np.arange(5) % 3)):
        np.save(folder / f"{name}.npy", a)
    with pytest.raises(DataError, match=r"x_train has NaN or infinite values \(the first in sample 9321\)"):
        load_data(DataConfig.parse({"name": "arrays", "path": str(folder), "mmap": "always"}))
