import pickle

import pytest
import torch

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.models import build_model
from distill.teacher import Teacher, get_teacher, teacher_keys, teacher_outputs
from distill.train import run

STUDENT = {"family": "mlp", "width": 8, "depth": 1}


def config(teacher):
    return RunConfig.from_dict({"data": {"name": "digits"}, "teacher": teacher, "student": STUDENT, "train": {"epochs": 1}})


@pytest.fixture(scope="module")
def data():
    return load_data(config({}).data)


def test_checkpoint_built_from_the_registry(tmp_path, data):
    c = config({"family": "mlp", "width": 32, "depth": 1})
    model = build_model("mlp", c.teacher.model.options, data.input_shape, data.num_classes)
    torch.save(model.state_dict(), tmp_path / "t.pt")
    c = config({"family": "mlp", "width": 32, "depth": 1, "checkpoint": str(tmp_path / "t.pt")})
    teacher, info = get_teacher(c, data)
    assert info.source == "checkpoint" and not teacher.training
    for a, b in zip(model.state_dict().values(), teacher.state_dict().values()):
        assert torch.equal(a, b)
    r = run(c, data, Teacher(teacher, info, teacher_outputs(teacher, info, data, teacher_keys(c))))
    assert r.epochs == 1


def test_checkpoint_with_a_users_factory_returning_logits(tmp_path, monkeypatch, data):
    (tmp_path / "myteacher.py").write_text(
        "import torch\n"
        "def build(num_classes):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import myteacher

    torch.save({"state_dict": myteacher.build(10).state_dict()}, tmp_path / "t.pt")
    c = config({"checkpoint": str(tmp_path / "t.pt"), "factory": "myteacher:build"})
    teacher, info = get_teacher(c, data)
    out = teacher_outputs(teacher, info, data, teacher_keys(c))
    assert out.logits.shape == (len(data.x_train), 10)


def test_missing_and_mismatched_checkpoints(tmp_path, data):
    with pytest.raises(ConfigError, match="teacher.checkpoint: no such file"):
        get_teacher(config({"checkpoint": str(tmp_path / "nope.pt")}), data)
    small = build_model("mlp", config({"family": "mlp", "width": 4}).teacher.model.options, data.input_shape, 10)
    torch.save(small.state_dict(), tmp_path / "small.pt")
    with pytest.raises(ConfigError, match="does not fit the teacher model"):
        get_teacher(config({"family": "mlp", "width": 32, "checkpoint": str(tmp_path / "small.pt")}), data)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="does not load as weights only"):
        get_teacher(config({"checkpoint": str(tmp_path / "junk.pt")}), data)
    torch.save(small.state_dict(), tmp_path / "ok.pt")
    with pytest.raises(ConfigError, match="teacher.factory: cannot import module 'no_such_module'"):
        get_teacher(config({"checkpoint": str(tmp_path / "ok.pt"), "factory": "no_such_module:f"}), data)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, data):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Evil(str(marker))}, f)
    with pytest.raises(ConfigError, match="does not load as weights only"):
        get_teacher(config({"checkpoint": str(tmp_path / "evil.pt")}), data)
    assert not marker.exists()
    torch.save({"w": _Evil(str(marker))}, tmp_path / "evil2.pt")  # torch's own zip format
    assert not marker.exists()
    with pytest.raises(ConfigError, match="does not load as weights only"):
        get_teacher(config({"checkpoint": str(tmp_path / "evil2.pt")}), data)
    assert not marker.exists()


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_validate_reports_a_checkpoint_that_does_not_fit(tmp_path, data):
    import os
    import subprocess
    import sys
    from pathlib import Path

    small = build_model("mlp", config({"family": "mlp", "width": 4}).teacher.model.options, data.input_shape, 10)
    torch.save(small.state_dict(), tmp_path / "small.pt")
    (tmp_path / "c.yaml").write_text(f"data: {{name: digits}}\nteacher: {{family: mlp, width: 32, checkpoint: {tmp_path / 'small.pt'}}}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([sys.executable, "-m", "workflows.cli", "validate", str(tmp_path / "c.yaml")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "does not fit the teacher model" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_checkpoint_that_does_not_fit_names_the_first_missing_unexpected_and_misshapen_keys(tmp_path, data):
    c = config({"family": "mlp", "width": 32, "depth": 1})
    state = build_model("mlp", c.teacher.model.options, data.input_shape, data.num_classes).state_dict()
    first = next(iter(state))
    wrong = {k: v for k, v in state.items() if k != first} | {"extra.weight": torch.zeros(1), "extra.bias": torch.zeros(1)}
    torch.save(wrong, tmp_path / "t.pt")
    with pytest.raises(ConfigError) as e:
        get_teacher(config({"family": "mlp", "width": 32, "depth": 1, "checkpoint": str(tmp_path / "t.pt")}), data)
    assert str(e.value).endswith(f"does not fit the teacher model: missing '{first}'; unexpected 'extra.weight' (and 1 more)")
    with pytest.raises(ConfigError, match=r"'layers.0.weight' is \(32, 64\) in the file, \(16, 64\) in the model"):
        torch.save(state, tmp_path / "t.pt")
        get_teacher(config({"family": "mlp", "width": 16, "depth": 1, "checkpoint": str(tmp_path / "t.pt")}), data)


def test_a_teacher_factory_needing_an_argument_kdx_does_not_pass_is_one_line(tmp_path, monkeypatch, data):
    from distill.teacher import check_teacher_source

    (tmp_path / "needy.py").write_text("def build(num_classes, hidden):\n    import torch\n    return torch.nn.Linear(64, num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.save({}, tmp_path / "t.pt")
    spec = {"checkpoint": str(tmp_path / "t.pt"), "factory": "needy:build"}
    with pytest.raises(ConfigError, match=r"^teacher\.hidden: needy:build needs argument 'hidden', which the config does not give$"):
        check_teacher_source(config(spec))  # refused as the config is read, like a student factory's
    with pytest.raises(ConfigError, match=r"^teacher\.hidden: needy:build needs argument 'hidden'"):
        get_teacher(config(spec), data)
    given = config(spec | {"hidden": 32}).teacher  # a teacher factory takes its kwargs from the section too
    assert given.model.factory == "needy:build" and given.model.options == {"hidden": 32}
    assert given.to_dict()["factory"] == "needy:build" and "family" not in given.to_dict()


def test_a_pickled_whole_module_is_refused_without_terminal_escapes(tmp_path, data):
    model = build_model("mlp", config({"family": "mlp", "width": 32, "depth": 1}).teacher.model.options, data.input_shape, data.num_classes)
    torch.save(model, tmp_path / "whole.pt")  # the module itself, pickled: weights_only refuses it
    with pytest.raises(ConfigError) as e:
        get_teacher(config({"family": "mlp", "width": 32, "depth": 1, "checkpoint": str(tmp_path / "whole.pt")}), data)
    assert "does not load as weights only" in str(e.value) and "\x1b" not in str(e.value) and "\\x1b" not in str(e.value)
