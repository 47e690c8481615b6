"""The image path: augmentation in the run, the teacher consistent with the student's view
(online, views), a user's student factory, the step schedule.

The recording factory below is a user's model that keeps every training-mode input
it sees, so a test can compare what the student saw with what the teacher saw."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.augment import Augmenter, View, apply_view
from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.teacher import prepare_teacher
from distill.train import Teacher, _stream_seed, run

ROOT = Path(__file__).resolve().parents[1]

RECORDER = '''
import torch
from torch import nn

SEEN = []  # training-mode inputs, in call order


class Recorder(nn.Module):
    def __init__(self, input_shape, num_classes, width):
        super().__init__()
        n = 1
        for d in input_shape:
            n *= d
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        if self.training:
            SEEN.append(x.detach().clone())
        return self.head(self.body(x))


def build(input_shape, num_classes, width: int = 8):
    return Recorder(input_shape, num_classes, width)
'''

DATA = {"name": "shifted_digits", "canvas": 10, "test_fraction": 0.5}
TEACHER = {"family": "cnn", "width": 8, "depth": 2, "epochs": 1}


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    (tmp_path / "recorder_mod.py").write_text(RECORDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import recorder_mod

    importlib.reload(recorder_mod)
    yield recorder_mod
    sys.modules.pop("recorder_mod", None)


def config(**sections) -> RunConfig:
    base = {"data": DATA, "teacher": TEACHER, "student": {"family": "mlp", "width": 8, "depth": 1},
            "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}
    return RunConfig.from_dict(base | sections)


def test_a_cached_teacher_with_augmentation_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^teacher\.outputs: cached outputs are the teacher's on un-augmented samples.*online.*views") as e:
        config(data={**DATA, "augment": {"crop": 2}})
    assert "\n" not in str(e.value)
    config(data={**DATA, "augment": {"crop": 2}}, mix={"ce": 1.0})  # a scratch run reads no teacher: fine
    with pytest.raises(ConfigError, match="views replay crop and flip only"):
        config(data={**DATA, "augment": {"crop": 2, "mixup": 0.2}}, teacher={**TEACHER, "outputs": "views"})
    with pytest.raises(ConfigError, match="views of un-augmented data are all the same"):
        config(teacher={**TEACHER, "outputs": "views"})


@pytest.mark.slow  # a CLI process
def test_kdx_run_refuses_a_cached_teacher_with_augmentation_in_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: shifted_digits, augment: {crop: 4, flip: true}}\n")
    p = subprocess.run([sys.executable, "-m", "workflows.cli", "run", str(cfg)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "teacher.outputs: cached outputs" in p.stderr


def test_augment_keys_are_checked_like_any_key():
    with pytest.raises(ConfigError, match=r"unknown key 'data.augment.crops' \(did you mean 'crop'\?\)"):
        config(data={**DATA, "augment": {"crops": 2}})
    with pytest.raises(ConfigError, match="data.augment.crop: must be >= 0"):
        config(data={**DATA, "augment": {"crop": -1}})
    from distill.config import check_key

    check_key("data.augment.flip")
    with pytest.raises(ConfigError, match="data.augment"):
        check_key("data.augment.flop")


def _expected_first_batch(cfg: RunConfig, data) -> torch.Tensor:
    """What the run's first training batch must be: its shuffle, then its augmentation stream."""
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(cfg.seed))
    rows = order[: cfg.train.batch_size]
    aug = Augmenter(cfg.data.augment, _stream_seed(cfg.seed, "augment"))
    return aug(data.x_train[rows], data.y_train[rows]).x


def test_the_online_teacher_runs_on_the_students_augmented_batch(recorder):
    cfg = config(data={**DATA, "augment": {"crop": 2, "flip": True}}, teacher={**TEACHER, "outputs": "online"},
                 student={"factory": "recorder_mod:build", "width": 8})
    data = load_data(cfg.data)
    teacher = prepare_teacher(cfg, data, log=lambda s: None)
    assert teacher.outputs is None and teacher.views is None
    seen_by_teacher = []
    handle = teacher.module.register_forward_hook(lambda m, args, out: seen_by_teacher.append((args[0].clone(), out.logits.clone())))
    run(cfg, data, teacher)
    handle.remove()
    student_seen = recorder.SEEN
    assert len(student_seen) == len(seen_by_teacher) == 1 + -(-len(data.y_train) // 64)  # the probe, then every batch
    for (t_in, t_logits), s_in in zip(seen_by_teacher, student_seen):
        assert torch.equal(t_in, s_in)  # the same view, bit for bit
        assert torch.equal(teacher.module(t_in).logits, t_logits)  # and its outputs are the teacher's on that view
    first = student_seen[1]
    assert torch.equal(first, _expected_first_batch(cfg, data))
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(cfg.seed))
    assert not torch.equal(first, data.x_train[order[:64]])  # augmented, not the stored samples


def test_a_views_replay_is_bit_identical_to_recomputing_the_view(recorder):
    cfg = config(data={**DATA, "augment": {"crop": 2, "flip": True}}, teacher={**TEACHER, "outputs": "views", "views": 3},
                 student={"factory": "recorder_mod:build", "width": 8})
    data = load_data(cfg.data)
    teacher = prepare_teacher(cfg, data, log=lambda s: None)
    views = teacher.views
    n = len(data.y_train)
    assert views.count == 3 and views.offsets.shape == (3, n, 2) and views.outputs.logits.shape == (3, n, data.num_classes)
    assert not torch.equal(views.offsets[0], views.offsets[1])
    with torch.no_grad():
        for k in range(3):
            x = apply_view(data.x_train, View(views.offsets[k], views.flip[k]), 2)
            assert torch.equal(teacher.module(x).logits, views.outputs.logits[k])
    again = prepare_teacher(cfg, data, log=lambda s: None).views  # from the cache: the same views
    assert torch.equal(again.offsets, views.offsets) and torch.equal(again.outputs.logits, views.outputs.logits)

    run(cfg, data, teacher)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=g)
    which = torch.randint(3, (n,), generator=g)
    rows, picks = order[:64], which[:64]
    expected = apply_view(data.x_train[rows], View(views.offsets[picks, rows], views.flip[picks, rows]), 2)
    assert torch.equal(recorder.SEEN[1], expected)  # the student sees the stored view it is taught on


def test_mixup_and_cutmix_runs_score_both_labels():
    for augment in ({"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0, "crop": 1, "noise": 0.05}):
        cfg = config(data={**DATA, "augment": augment}, teacher={**TEACHER, "outputs": "online"}, train={"epochs": 2, "batch_size": 64, "device": "cpu"})
        data = load_data(cfg.data)
        result = run(cfg, data, prepare_teacher(cfg, data, log=lambda s: None))
        assert all(e.train_loss == e.train_loss for e in result.history)
        assert set(result.history[-1].losses) == {"ce", "kd"}


def test_a_student_factory_with_kwargs_and_named_features(tmp_path, monkeypatch):
    (tmp_path / "my_student.py").write_text(textwrap.dedent('''
        from torch import nn

        def build(input_shape, num_classes, width=16, depth: int = 1):
            layers = [nn.Flatten()]
            n = 1
            for d in input_shape:
                n *= d
            for _ in range(depth):
                layers += [nn.Linear(n, width), nn.ReLU()]
                n = width
            return nn.Sequential(*layers, nn.Linear(n, num_classes))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config(student={"factory": "my_student:build", "width": 12, "depth": 2, "features": ["2", "embedding=4"]},
                 mix={"ce": 0.5, "kd": 0.3, "fitnet": 0.2, "rkd": 0.1}, data={"name": "hgmm", "classes": 10, "superclasses": 2, "dim": 8},
                 teacher={"family": "mlp", "width": 16, "depth": 2, "epochs": 1})
    assert cfg.student.to_dict() == {"factory": "my_student:build", "features": ["2", "embedding=4"], "width": 12, "depth": 2}
    data = load_data(cfg.data)
    model = cfg.student.build(data.input_shape, data.num_classes, "student")
    out = model(data.x_train[:3])
    assert set(out.features) == {"2", "embedding"} and out.features["embedding"].shape == (3, 12)
    assert list(model.state_dict()) == list(nn.Sequential(*model).state_dict())  # hooks only: the user's own keys
    import copy

    twin = copy.deepcopy(model)
    assert set(twin(data.x_train[:3]).features) == {"2", "embedding"}
    result = run(cfg, data, prepare_teacher(cfg, data, log=lambda s: None))
    assert set(result.history[-1].losses) == {"ce", "kd", "fitnet", "rkd"}

    with pytest.raises(ConfigError, match=r"^student\.widht: my_student:build takes no argument 'widht' \(it takes input_shape, num_classes, width, depth\)$"):
        config(student={"factory": "my_student:build", "widht": 12})
    with pytest.raises(ConfigError, match=r"^student\.factory: cannot import module 'nope'"):
        config(student={"factory": "nope:build"})
    with pytest.raises(ConfigError, match="student.features: the model has no module 'fc9'"):
        config(student={"factory": "my_student:build", "features": ["fc9"]}).student.build(data.input_shape, data.num_classes, "student")


@pytest.mark.slow  # a CLI process
def test_a_searched_factory_kwarg_that_the_function_lacks_is_one_line(tmp_path):
    (tmp_path / "my_student.py").write_text("def build(input_shape, num_classes, width=8):\n    import torch\n    return torch.nn.Linear(1, 1)\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: hgmm}\nstudent: {factory: 'my_student:build', width: 8}\nspace:\n  student.widht: {int: [4, 16]}\n")
    p = subprocess.run([sys.executable, "-m", "workflows.cli", "validate", str(cfg)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"}, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "student.widht: my_student:build takes no argument 'widht'" in p.stderr and p.stderr.strip().count("\n") == 0


def test_the_step_schedule_divides_lr_at_each_milestone():
    cfg = config(train={"epochs": 5, "lr": 0.1, "optimizer": "sgd", "schedule": "step", "milestones": [2, 4], "gamma": 0.1,
                        "batch_size": 512, "device": "cpu"}, mix={"ce": 1.0})
    from distill.train import _optimizer, _scheduler

    opt = _optimizer(cfg.train, [nn.Parameter(torch.zeros(1))])
    sched = _scheduler(cfg.train, opt, 1)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    with pytest.raises(ConfigError, match="train.milestones: only mean something with schedule: step"):
        config(train={"milestones": [3]})


def test_a_teacher_trains_on_augmented_batches_and_is_cached_apart():
    plain = config(teacher={**TEACHER, "outputs": "online"})
    augmented = config(data={**DATA, "augment": {"crop": 2}}, teacher={**TEACHER, "outputs": "online"})
    data = load_data(plain.data)
    a = prepare_teacher(plain, data, log=lambda s: None).info.key
    b = prepare_teacher(augmented, data, log=lambda s: None).info.key
    views = config(data={**DATA, "augment": {"crop": 2}}, teacher={**TEACHER, "outputs": "views", "views": 2})
    assert a != b and prepare_teacher(views, data, log=lambda s: None).info.key == b  # how outputs reach a student is not the teacher


def test_cached_outputs_on_a_teacher_are_ignored_by_an_online_config():
    cfg = config(data={**DATA, "augment": {"crop": 2}}, teacher={**TEACHER, "outputs": "online"})
    data = load_data(cfg.data)
    t = prepare_teacher(cfg, data, log=lambda s: None)
    wrong = Teacher(t.module, t.info, outputs=None)
    assert run(cfg, data, wrong).history


def test_the_cifar100_example_is_a_valid_experiment(tmp_path, monkeypatch):
    from workflows.experiment import load_experiment

    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "resnet32x4.pth").write_bytes(b"")  # only its presence is checked before a run
    (tmp_path / "cifar100_resnet.yaml").write_text((ROOT / "examples" / "cifar100_resnet.yaml").read_text())
    monkeypatch.chdir(ROOT)  # elsewhere: relative paths are read from the config's folder
    exp = load_experiment(str(tmp_path / "cifar100_resnet.yaml"))
    assert exp.run.teacher.checkpoint == str(tmp_path / "teachers" / "resnet32x4.pth") and exp.run.data.options.root == str(tmp_path / "data")
    run_cfg = exp.run
    assert (run_cfg.student.family, run_cfg.student.options.depth, run_cfg.student.options.width) == ("resnet", 8, 4)
    assert (run_cfg.teacher.model.options.depth, run_cfg.teacher.outputs) == (32, "online")
    t = run_cfg.train
    assert (t.optimizer, t.lr, t.momentum, t.weight_decay, t.batch_size, t.epochs, t.milestones) == ("sgd", 0.05, 0.9, 5e-4, 64, 240, [150, 180, 210])
    assert run_cfg.data.augment.crop == 4 and run_cfg.data.augment.flip and run_cfg.mix == {"ce": 0.1, "kd": 0.9}


def test_a_repdistiller_style_checkpoint_loads_into_the_resnet_family(tmp_path):
    from distill.models import build_model
    from distill.teacher import get_teacher

    cfg = config(teacher={"family": "resnet", "depth": 8, "width": 1, "checkpoint": str(tmp_path / "ckpt_epoch_240.pth")})
    data = load_data(cfg.data)
    saved = build_model("resnet", cfg.teacher.model.options, data.input_shape, data.num_classes)
    torch.save({"epoch": 240, "model": saved.state_dict(), "accuracy": 71.5}, tmp_path / "ckpt_epoch_240.pth")
    module, info = get_teacher(cfg, data)
    assert info.source == "checkpoint"
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), saved.state_dict().values()))
