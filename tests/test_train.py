import dataclasses
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError, TrainingDiverged
from distill.teacher import Teacher, get_teacher, teacher_keys, teacher_outputs
from distill.train import fidelity, run


def config(**sections):
    base = {
        "data": {"name": "digits"},
        "teacher": {"family": "cnn", "width": 16, "depth": 2, "epochs": 8},
        "student": {"family": "mlp", "width": 16, "depth": 1},
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.01},
    }
    base.update(sections)
    return RunConfig.from_dict(base)


@pytest.fixture(scope="module")
def setup():
    c = config()
    data = load_data(c.data)
    teacher, info = get_teacher(c, data, log=lambda s: None)
    return c, data, teacher, info


def outputs_for(c, data, teacher, info):
    """The teacher with its outputs cached: what a search hands each trial."""
    return Teacher(teacher, info, teacher_outputs(teacher, info, data, teacher_keys(c)))


def test_teacher_is_trained_once_frozen_and_accurate(setup):
    c, data, teacher, info = setup
    assert info.test_acc > 0.8 and info.source == "trained"
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    again, info2 = get_teacher(c, data)
    assert info2.source == "cache" and info2.key == info.key and info2.test_acc == info.test_acc
    for a, b in zip(teacher.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_tiny_kd_run_beats_chance(setup):
    c, data, teacher, info = setup
    r = run(c, data, outputs_for(c, data, teacher, info))
    assert r.test_acc > 0.5  # chance is 0.1
    assert r.params > 0 and r.latency_ms > 0 and len(r.history) == 3
    h = r.history[-1]
    assert set(h.losses) == {"ce", "kd"} and h.val_loss > 0 and h.epoch == 3
    assert h.train_loss == pytest.approx(0.1 * h.losses["ce"] + 0.9 * h.losses["kd"], rel=1e-5)


def test_runs_are_reproducible(setup):
    c, data, teacher, info = setup
    out = outputs_for(c, data, teacher, info)
    learned = lambda r: [(e.train_loss, e.losses, e.val_acc, e.val_loss) for e in r.history]  # noqa: E731  (latency is measured)
    a, b = run(c, data, out), run(c, data, out)
    assert learned(a) == learned(b) and a.test_acc == b.test_acc
    d = run(dataclasses.replace(c, seed=1), data, out)
    assert learned(d) != learned(a)


@pytest.mark.parametrize("mix, losses", [
    ({"ce": 0.1, "kd": 0.9}, {}),
    ({"ce": 0.5, "kd": 0.5}, {"ce": {"label_smoothing": 0.1}, "kd": {"temperature": 1.0}}),
    ({"kd": 1.0}, {"kd": {"temperature": 2.0}}),
    ({"ce": 0.3, "dkd": 0.7}, {}),
], ids=["ce+kd", "smoothed-ce+kd-T1", "kd-alone", "ce+dkd"])
def test_cached_outputs_train_like_an_online_teacher(setup, mix, losses):
    """Cached outputs take the fused step where every term is a soft-target cross-entropy (CE, KD);
    an online teacher takes one graph per term. Same terms, same run."""
    c, data, teacher, info = setup
    c = RunConfig.from_dict({**c.to_dict(), "mix": mix, "losses": losses})
    cached = run(c, data, outputs_for(c, data, teacher, info))
    online = run(c, data, Teacher(teacher, info))
    for x, y in zip(cached.history, online.history, strict=True):
        assert x.train_loss == pytest.approx(y.train_loss, rel=1e-4)
        assert x.losses == pytest.approx(y.losses, rel=1e-4)
        assert x.val_loss == pytest.approx(y.val_loss, rel=1e-4)
    for a, b in zip(cached.model.parameters(), online.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_cached_run_logs_the_kd_computed_the_per_step_way(setup):
    """With cached outputs KD's soft targets are prepared once per run. On one full batch the
    first epoch's terms are the per-step formulas on the student's starting weights."""
    c, data, teacher, info = setup
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=1, batch_size=len(data.y_train)))
    cached = outputs_for(c, data, teacher, info)
    logged = run(c, data, cached).history[0].losses
    torch.manual_seed(c.seed)  # the student run() builds
    student = c.student.build(data.input_shape, data.num_classes, "student")
    T = c.losses["kd"].temperature
    with torch.no_grad():
        z = student(data.x_train).logits
        log_q, log_p = F.log_softmax(z / T, -1), F.log_softmax(cached.outputs.logits / T, -1)
    assert logged["kd"] == pytest.approx(float((log_p.exp() * (log_p - log_q)).sum(-1).mean() * T * T), rel=1e-5)
    assert logged["ce"] == pytest.approx(float(F.cross_entropy(z, data.y_train)), rel=1e-5)


def test_fidelity_is_agreement_one_and_kl_zero_for_the_teacher_itself(setup):
    c, data, teacher, info = setup
    assert fidelity(teacher, teacher, data.x_test) == (1.0, 0.0)
    student = run(c, data, outputs_for(c, data, teacher, info)).model
    agreement, kl = fidelity(student, teacher, data.x_test)
    assert 0 < agreement < 1 and kl > 0


def test_report_callback_every_epoch(setup):
    c, data, teacher, info = setup
    seen = []
    run(c, data, outputs_for(c, data, teacher, info), report=lambda e: seen.append((e.epoch, e.val_acc)))
    assert [e for e, _ in seen] == [1, 2, 3]


def test_best_val_policy_keeps_the_best_validation_epoch(setup):
    c, data, teacher, info = setup
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=5, epoch_policy="best_val"))
    r = run(c, data, outputs_for(c, data, teacher, info))
    accs = [h.val_acc for h in r.history]
    assert r.best_epoch == accs.index(max(accs)) + 1 and r.val_acc == max(accs)
    last = run(dataclasses.replace(c, train=dataclasses.replace(c.train, epoch_policy="last")), data, outputs_for(c, data, teacher, info))
    assert last.best_epoch == 5 and last.val_acc == accs[-1]


def test_nan_loss_stops_with_training_diverged(setup):
    c, data, teacher, info = setup
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, lr=1e12, optimizer="sgd"))
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch \d"):
        run(c, data, outputs_for(c, data, teacher, info))


def test_every_loss_trains_a_student_of_each_family(setup):
    _, data, _, _ = setup
    for student, mix in [
        ({"family": "cnn", "width": 8, "depth": 2}, {"ce": 1.0, "fitnet": 1.0, "at": 10.0}),
        ({"family": "mlp", "width": 8}, {"ce": 1.0, "rkd": 1.0, "dkd": 1.0}),
    ]:
        c = config(student=student, mix=mix, train={"epochs": 1, "batch_size": 64})
        teacher, info = get_teacher(c, data)
        r = run(c, data, outputs_for(c, data, teacher, info))
        assert set(r.history[0].losses) == set(mix) and math.isfinite(r.history[0].train_loss)


def test_fitnet_regressor_is_trained_with_the_student(setup):
    _, data, _, _ = setup
    c = config(student={"family": "cnn", "width": 8, "depth": 2}, mix={"fitnet": 1.0}, train={"epochs": 4, "batch_size": 64})
    teacher, info = get_teacher(c, data)
    r = run(c, data, outputs_for(c, data, teacher, info))
    losses = [h.losses["fitnet"] for h in r.history]
    assert losses[-1] < losses[0]


def test_transformer_attention_transfer(setup):
    c = config(
        data={"name": "mnist1d", "num_samples": 400},
        teacher={"family": "transformer", "dim": 16, "heads": 4, "depth": 2, "epochs": 1},
        student={"family": "transformer", "dim": 8, "heads": 2, "depth": 1},
        mix={"ce": 1.0, "at": 1.0},
        train={"epochs": 1},
    )
    data = load_data(c.data)
    teacher, info = get_teacher(c, data)
    keys = teacher_keys(c)
    assert "attentions" in keys
    r = run(c, data, Teacher(teacher, info, teacher_outputs(teacher, info, data, keys)))
    assert r.history[0].losses["at"] >= 0


def test_at_with_an_mlp_student_is_a_config_error(setup):
    c, data, teacher, info = setup
    c = config(mix={"ce": 1.0, "at": 1.0})
    with pytest.raises(ConfigError, match="losses.at"):
        run(c, data, Teacher(teacher, info))


def test_cuda_asked_for_without_a_gpu_is_a_config_error(setup):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    c, data, teacher, info = setup
    c = dataclasses.replace(c, train=dataclasses.replace(c.train, device="cuda"))
    with pytest.raises(ConfigError, match="train.device"):
        run(c, data, None)


def test_importing_distill_loads_no_ray_optuna_or_mlflow():
    code = "import sys, distill, distill.job; print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna', 'mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
