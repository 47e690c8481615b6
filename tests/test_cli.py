import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kdx(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "workflows.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_kdx_run_end_to_end_with_twin(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "experiment: tiny\n"
        "data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}\n"
        "teacher: {family: mlp, width: 64, epochs: 5}\n"
        "student: {family: mlp, width: 8, depth: 1}\n"
        "train: {epochs: 2}\n"
        "search: {num_samples: 3}\n"
    )
    p = kdx("run", str(cfg), "--set", "train.lr=0.02", "--twin", "--out", "out", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "scratch twin" in p.stdout and "distillation gain" in p.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["config"]["train"]["lr"] == 0.02
    assert {"val_acc", "test_acc", "params", "latency_ms", "history"} <= set(result["student"])
    assert result["gain"] == result["student"]["test_acc"] - result["twin"]["test_acc"]
    assert result["teacher"]["params"] > result["student"]["params"]


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {lerning_rate: 0.1}\n")
    for args in (["run", str(cfg)], ["run", str(tmp_path / "missing.yaml")], ["run", str(cfg), "--set", "oops"]):
        p = kdx(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("kdx: error:"), p.stderr
        assert "Traceback" not in p.stderr
    p = kdx("run", str(cfg), cwd=tmp_path)
    assert "train.lerning_rate" in p.stderr and "did you mean 'lr'" in p.stderr


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_kdx_teacher_trains_once_and_caches_outputs(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("data: {name: hgmm, classes: 10, superclasses: 2, dim: 8}\nteacher: {family: cnn, width: 8, depth: 2, epochs: 2}\n")
    first = kdx("teacher", str(cfg), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "trained" in first.stdout and "2 feature maps" not in first.stdout and "3 feature maps" in first.stdout
    again = kdx("teacher", str(cfg), cwd=tmp_path)
    assert again.returncode == 0 and "cache" in again.stdout
