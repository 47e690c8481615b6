"""Distillation losses: checks generated over the loss registry, then each method
against its paper or official code.

Every registered loss is built on real model outputs: a small student and a
larger teacher from the model registry, on a seeded batch of (1, 16) inputs
with 5 classes. The pair of families is the first of PAIR_ORDER the loss
accepts (`at` needs cnn+cnn or transformer+transformer, the others take mlp),
so a new loss gets the generated checks without editing this file, except for
its pinned value (PINNED, which `test_every_loss_is_pinned` enforces).

On gradients and the teacher: a loss need not detach the teacher's outputs
itself (kd and rkd compute their teacher side under no_grad; dkd, at and
fitnet differentiate through whatever they are given), so "no gradient
reaches the teacher" is a contract between the losses and the caller:
`train.run` and `teacher.teacher_outputs` compute teacher outputs under
`torch.no_grad()`. The tests check each side:
a loss fed teacher outputs the way the training loop feeds them leaves the
teacher's parameters (which still have requires_grad=True) without a .grad
while the student and the loss's own parameters get one; feeding teacher
outputs that carry a graph changes nothing for the student's gradient; and
an end-to-end `train.run` with an online teacher leaves it untouched.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.config import ModelConfig, RunConfig, TrainConfig
from distill.data import Dataset
from distill.errors import ConfigError, InvalidValue
from distill.losses import LOSSES, build_loss, pair_blocks, teacher_side
from distill.losses.at import ATOptions
from distill.losses.dkd import DKDOptions, dkd_loss
from distill.losses.fitnet import FitNetOptions
from distill.losses.kd import KDOptions, SoftTargets, kd_loss, shuffle_nontarget
from distill.losses.rkd import RKDOptions, rkd_loss
from distill.models import MODELS, Outputs, build_model
from distill.train import Teacher, run, slice_outputs

LOSS_NAMES = LOSSES.names()
INPUT_SHAPE, NUM_CLASSES, BATCH = (1, 16), 5, 6

# Small student and larger teacher shapes; a family missing here uses its defaults.
STUDENT = {"mlp": dict(width=8, depth=2), "cnn": dict(width=6, depth=2), "transformer": dict(dim=8, depth=2, heads=2, patch=4)}
TEACHER = {"mlp": dict(width=12, depth=3), "cnn": dict(width=8, depth=3), "transformer": dict(dim=16, depth=3, heads=4, patch=4)}
FAMILIES = MODELS.names()
PAIR_ORDER = [(f, f) for f in ("mlp", "cnn", "transformer")] + [(s, t) for s in FAMILIES for t in FAMILIES if s != t]
PAIR_ORDER += [p for p in ((f, f) for f in FAMILIES) if p not in PAIR_ORDER]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats a contended pool (conftest)

# The value of each loss (default options) on `case(name)`; pinned once from
# this code, so a change to a loss's math or defaults shows up here.
PINNED = {
    "at": 0.1350456,
    "ce": 1.691932,
    "dkd": 0.2851530,
    "fitnet": 0.1464159,
    "kd": 0.03334300,
    "rkd": 9.225878,
}

# Losses that are not ~0 when the student's outputs equal the teacher's.
NOT_ZERO_AT_IDENTITY = {
    "ce": "not a distillation loss: cross-entropy against the labels",
    "fitnet": "compares the teacher's hint with r(student), and the regressor r is a random layer, not the identity",
}


def options(loss: str, **kw):
    return LOSSES.get(loss, "losses").options(**kw)


def model(family: str, sizes: dict, shape=INPUT_SHAPE, **kw) -> nn.Module:
    opts = MODELS.get(family, "model.family").options(**{**sizes.get(family, {}), **kw})
    return build_model(family, opts, shape, NUM_CLASSES)


def detach(out: Outputs) -> Outputs:
    return Outputs(out.logits.detach(), {k: v.detach() for k, v in out.features.items()}, {k: v.detach() for k, v in out.attentions.items()})


def clone(out: Outputs) -> Outputs:
    return Outputs(out.logits.clone(), {k: v.clone() for k, v in out.features.items()}, {k: v.clone() for k, v in out.attentions.items()})


def pair_for(loss: str) -> tuple[str, str]:
    """The first (student, teacher) pair of families that `loss` can be built for."""
    torch.manual_seed(0)
    x = torch.randn(2, *INPUT_SHAPE)
    with torch.no_grad():
        for s, t in PAIR_ORDER:
            try:
                build_loss(loss, options(loss), model(s, STUDENT)(x), model(t, TEACHER)(x))
            except ConfigError:
                continue
            return s, t
    pytest.fail(f"loss {loss!r} builds for no pair of model families")


PAIRS = {name: pair_for(name) for name in LOSS_NAMES}


@dataclasses.dataclass
class Case:
    loss: nn.Module
    student: nn.Module
    teacher: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    s_out: Outputs
    t_out: Outputs  # computed as train.run does: under no_grad, teacher params still requiring grad

    def value(self) -> torch.Tensor:
        return self.loss(self.s_out, self.t_out, self.y)


def case(name: str, seed: int = 0, opts=None, pair: tuple[str, str] | None = None) -> Case:
    s_fam, t_fam = pair or PAIRS[name]
    torch.manual_seed(seed)
    student = model(s_fam, STUDENT)
    teacher = model(t_fam, TEACHER).eval()
    x = torch.randn(BATCH, *INPUT_SHAPE)
    y = torch.randint(0, NUM_CLASSES, (BATCH,))
    with torch.no_grad():
        t_out = teacher(x)
    s_out = student(x)
    loss = build_loss(name, opts if opts is not None else options(name), s_out, t_out)
    return Case(loss, student, teacher, x, y, s_out, t_out)


def num(v: torch.Tensor) -> float:
    return v.detach().item()


def assert_finite_scalar(v: torch.Tensor) -> None:
    assert isinstance(v, torch.Tensor) and v.dim() == 0, v
    assert v.dtype.is_floating_point and torch.isfinite(v), v


# --- generated over the registry ----------------------------------------------


def test_registry_has_the_documented_losses():
    assert {"ce", "kd", "dkd", "fitnet", "rkd", "at"} <= set(LOSS_NAMES)


def test_pair_choice():
    assert PAIRS["at"] in {("cnn", "cnn"), ("transformer", "transformer")}
    for name in ("kd", "dkd", "rkd", "fitnet", "ce"):
        assert PAIRS[name] == ("mlp", "mlp")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_finite_scalar(name):
    c = case(name)
    v = c.value()
    assert_finite_scalar(v)
    assert v.requires_grad


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_default_options_are_valid_and_frozen(name):
    opts = options(name)
    assert dataclasses.is_dataclass(opts)
    fields = dataclasses.fields(opts)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(opts, fields[0].name, getattr(opts, fields[0].name))


@pytest.mark.parametrize("t_fam", FAMILIES)
@pytest.mark.parametrize("s_fam", FAMILIES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_family_pair_builds_or_is_a_config_error(name, s_fam, t_fam):
    """A pairing a loss cannot make must be a ConfigError naming the loss, never a
    crash; one it can make gives a finite value whose gradient reaches the student
    and every parameter of the loss (a FitNet regressor is a 1x1 conv for cnn and
    transformer maps, a linear layer otherwise: each path is covered here)."""
    try:
        c = case(name, pair=(s_fam, t_fam))
    except ConfigError as e:
        assert str(e).startswith(f"losses.{name}: "), str(e)
        return
    v = c.value()
    assert_finite_scalar(v)
    v.backward()
    assert sum(num(p.grad.norm()) for p in c.student.parameters() if p.grad is not None) > 0
    for pname, p in c.loss.named_parameters():
        assert p.grad is not None and num(p.grad.norm()) > 0, f"{name}.{pname} got no gradient"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_backward_reaches_student_and_loss_params_not_teacher(name):
    """As in training: teacher outputs computed under no_grad from a teacher whose
    parameters still require grad. This fails if a loss module holds or re-runs
    teacher parameters, if it cuts the student's graph (e.g. detaches the wrong
    side), or if a learned part of the loss gets no gradient."""
    c = case(name)
    assert all(p.requires_grad for p in c.teacher.parameters())
    teacher_ids = {id(p) for p in c.teacher.parameters()}
    student_ids = {id(p) for p in c.student.parameters()}
    assert not teacher_ids & {id(p) for p in c.loss.parameters()}, "a loss must not own teacher parameters"
    assert not student_ids & {id(p) for p in c.loss.parameters()}

    c.value().backward()

    assert all(p.grad is None for p in c.teacher.parameters()), "gradient reached the teacher"
    grads = [p.grad for p in c.student.parameters() if p.grad is not None]
    assert grads, "no gradient reached the student"
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(num(g.norm()) for g in grads) > 0, "the student's gradient is zero"
    for pname, p in c.loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname} got no gradient"
        assert num(p.grad.norm()) > 0, f"{name}.{pname} has a zero gradient"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_teacher_graph_does_not_change_student_gradient(name):
    """Teacher outputs that carry a graph (a teacher run with grad enabled) must give
    the student and the loss the same value and gradient as detached ones."""
    c = case(name)
    with torch.enable_grad():
        t_live = c.teacher(c.x)
    params = [p for p in [*c.student.parameters(), *c.loss.parameters()]]

    def grads(t_out: Outputs) -> tuple[torch.Tensor, list]:
        s_out = c.student(c.x)
        v = c.loss(s_out, t_out, c.y)
        return v.detach(), torch.autograd.grad(v, params, allow_unused=True, retain_graph=True)

    v_det, g_det = grads(detach(t_live))
    v_live, g_live = grads(t_live)
    torch.testing.assert_close(v_live, v_det)
    for a, b in zip(g_live, g_det):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_does_not_modify_its_inputs(name):
    """Teacher outputs are cached and reused every epoch: a loss must never write into them."""
    c = case(name)
    s_before, t_before = clone(detach(c.s_out)), clone(c.t_out)
    c.value().backward()
    for before, after in ((s_before, c.s_out), (t_before, c.t_out)):
        torch.testing.assert_close(after.logits.detach(), before.logits, rtol=0, atol=0)
        for k in before.features:
            torch.testing.assert_close(after.features[k].detach(), before.features[k], rtol=0, atol=0)
        for k in before.attentions:
            torch.testing.assert_close(after.attentions[k].detach(), before.attentions[k], rtol=0, atol=0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_what_a_loss_reads_is_declared_when_it_registers(name):
    """The search and the teacher cache learn what a loss reads from its registration alone
    (`reads`), never by building it: every key a built loss reads must be covered."""
    from distill.losses import teacher_reads

    c = case(name)
    declared = set(LOSSES.get(name, "").reads)
    for key in c.loss.teacher_keys:
        assert key in declared or key.split(".")[0] in declared, (key, declared)
    assert set(teacher_reads([name])) == declared | {"logits"}


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_reads_only_its_declared_teacher_keys(name):
    """The teacher cache stores only the outputs named by `teacher_keys` (plus the
    logits): a loss built and run on just those must give the same value."""
    c = case(name)
    keys = set(c.loss.teacher_keys)
    for k in keys:
        kind, _, sub = k.partition(".")
        assert k == "logits" or (kind in ("features", "attentions") and sub in getattr(c.t_out, kind)), k
    kept = Outputs(
        c.t_out.logits,
        {k: v for k, v in c.t_out.features.items() if f"features.{k}" in keys},
        {k: v for k, v in c.t_out.attentions.items() if f"attentions.{k}" in keys},
    )
    expected = c.value()
    torch.testing.assert_close(c.loss(c.s_out, kept, c.y), expected)
    torch.manual_seed(123)
    rebuilt = build_loss(name, options(name), c.s_out, kept)
    assert tuple(rebuilt.teacher_keys) == tuple(c.loss.teacher_keys)
    rebuilt.load_state_dict(c.loss.state_dict())
    torch.testing.assert_close(rebuilt(c.s_out, kept, c.y), expected)


def side_tensors(side) -> list[torch.Tensor]:
    if side is None:
        return []
    if isinstance(side, Outputs):
        return [side.logits, *side.features.values(), *side.attentions.values()]
    return list(side)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_a_prepared_teacher_side_scores_as_the_plain_outputs(name):
    """With cached outputs `train.run` hands a loss the rows of its `teacher_side`, prepared once
    over the training set: the value and gradients must be those of the plain outputs, and the
    side must be row-wise (the rows of the side of a set are the side of those rows)."""
    c = case(name)
    params = [*c.student.parameters(), *c.loss.parameters()]

    def scored(t):
        v = c.loss(c.student(c.x), t, c.y)
        return v.detach(), torch.autograd.grad(v, params, allow_unused=True)

    side = teacher_side(c.loss, c.t_out)
    (v_plain, g_plain), (v_side, g_side) = scored(c.t_out), scored(side)
    torch.testing.assert_close(v_side, v_plain, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_side, g_plain):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    rows = slice(1, 4)
    sliced = [t[rows] for t in side_tensors(side)]
    for a, b in zip(sliced, side_tensors(teacher_side(c.loss, slice_outputs(c.t_out, rows))), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_zero_when_student_equals_teacher(name):
    if name in NOT_ZERO_AT_IDENTITY:
        pytest.skip(NOT_ZERO_AT_IDENTITY[name])
    c = case(name)
    same = detach(c.s_out)
    loss = build_loss(name, options(name), c.s_out, same)
    v = loss(c.s_out, same, c.y)
    assert_finite_scalar(v)
    assert abs(num(v)) < 1e-5, num(v)
    assert num(c.value()) > 1e-4, "the check is vacuous if the loss is ~0 for different outputs too"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_pinned_value(name):
    if name not in PINNED:
        pytest.fail(f"no pinned value for loss {name!r}: add PINNED[{name!r}] = {num(case(name).value())!r}")
    assert num(case(name).value()) == pytest.approx(PINNED[name], rel=1e-4)


def test_every_loss_is_pinned():
    assert set(PINNED) == set(LOSS_NAMES), "pin the value of every registered loss (and only those)"


# --- end to end: the training loop and an online teacher --------------------------


def tiny_data(n_train: int = 24) -> Dataset:
    g = torch.Generator().manual_seed(0)

    def split(n):
        return torch.randn(n, *INPUT_SHAPE, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(8), split(8)
    return Dataset("toy", xt, yt, xv, yv, xs, ys, NUM_CLASSES, INPUT_SHAPE, "toy")


def run_config(name: str, s_fam: str, batch_size: int = 8, mix: dict | None = None) -> RunConfig:
    mix = mix or {name: 1.0}
    opts = MODELS.get(s_fam, "x").options(**STUDENT.get(s_fam, {}))
    return RunConfig(
        student=ModelConfig(s_fam, opts),
        train=TrainConfig(epochs=1, batch_size=batch_size, lr=0.05, device="cpu"),
        losses={k: options(k) for k in mix},
        mix=mix,
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_training_with_online_teacher_updates_student_only(name):
    s_fam, t_fam = PAIRS[name]
    torch.manual_seed(0)
    teacher = model(t_fam, TEACHER)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = tiny_data()
    result = run(run_config(name, s_fam), data, Teacher(teacher))
    assert all(math.isfinite(h.train_loss) for h in result.history)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"the teacher's {k} changed"
    assert all(p.grad is None for p in teacher.parameters())
    torch.manual_seed(0)
    fresh = model(s_fam, STUDENT)
    changed = [not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), result.model.state_dict().values())]
    assert any(changed), "the student did not train"


# --- KD -----------------------------------------------------------------------


# kd_loss computes its teacher side in float32 whatever the input dtype, and
# as sum(p log p) - sum(p log q) over the batch (a difference of two large
# sums), so float64 references match it to float32 precision only.
F32 = dict(rtol=1e-5, atol=1e-6)


def logits_pair(b=8, n=NUM_CLASSES, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, n, generator=g, dtype=dtype) * scale
    t = torch.randn(b, n, generator=g, dtype=dtype) * scale
    y = torch.randint(0, n, (b,), generator=g)
    return s, t, y


def kd_module(T: float) -> nn.Module:
    s, t, _ = logits_pair(2)
    return build_loss("kd", KDOptions(temperature=T), Outputs(s, {}, {}), Outputs(t, {}, {}))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
def test_kd_matches_hand_computation_and_kl_div(T):
    s, t, y = logits_pair()
    v = kd_module(T)(Outputs(s, {}, {}), Outputs(t, {}, {}), y)
    p, q = torch.softmax(t / T, -1), torch.softmax(s / T, -1)
    hand = (p * (p.log() - q.log())).sum(-1).mean() * T * T
    torch.testing.assert_close(v, hand, **F32)
    ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
    torch.testing.assert_close(v, ref, **F32)
    # not the "mean" reduction, which would divide by the number of classes too
    wrong = (F.softmax(t / T, -1) * (F.log_softmax(t / T, -1) - F.log_softmax(s / T, -1))).mean() * T * T
    assert num(v) == pytest.approx(NUM_CLASSES * num(wrong), rel=1e-5)


def test_kd_gradient_size_is_independent_of_temperature():
    """T^2 cancels the 1/T^2 of the soft targets' gradient. The cancellation is exact
    only in the high-temperature limit, so the logits are small (|z| ~ 0.1) and
    zero-mean, where it holds at every T tried (measured: within 0.2%)."""
    s, t, y = logits_pair(scale=0.1, dtype=torch.float64)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    norms = {}
    for T in (1.0, 4.0, 16.0):
        z = s.clone().requires_grad_(True)
        kd_module(T)(Outputs(z, {}, {}), Outputs(t, {}, {}), y).backward()
        norms[T] = num(z.grad.norm())
    assert norms[4.0] == pytest.approx(norms[1.0], rel=0.02)
    assert norms[16.0] == pytest.approx(norms[1.0], rel=0.02)
    # the limit itself: grad -> (z_s - z_t) / (num_classes * batch) for zero-mean logits
    limit = num(((s - t) / (NUM_CLASSES * len(s))).norm())
    assert norms[16.0] == pytest.approx(limit, rel=0.01)
    # and without the T^2 factor the gradient would shrink like 1/T^2
    z = s.clone().requires_grad_(True)
    (kd_loss(z, t, 16.0) / 16.0**2).backward()
    assert num(z.grad.norm()) == pytest.approx(norms[16.0] / 256, rel=1e-6)


def test_kd_value_is_accurate_for_a_student_near_its_teacher():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(128, 10, generator=g) * 5
    s = t + 0.1 * torch.randn(128, 10, generator=g)
    T = 16.0
    p, log_q = F.softmax(t.double() / T, -1), F.log_softmax(s.double() / T, -1)
    ref = (p * (p.log() - log_q)).sum(-1).mean() * T * T
    assert num(kd_loss(s, t, T)) == pytest.approx(num(ref), rel=1e-3)


def per_step_kd(logits_student, logits_teacher, T, target=None):
    """kd_loss as it was before its teacher side was prepared apart: all of it on every step."""
    log_q = F.log_softmax(logits_student / T, dim=-1)
    with torch.no_grad():
        log_p = F.log_softmax(logits_teacher / T, dim=-1)
        if target is not None:
            log_p = shuffle_nontarget(log_p, target)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * T**2


@pytest.mark.parametrize("T", [1.0, 4.0, 10.0])
def test_kd_on_soft_targets_prepared_once_is_the_per_step_kd(T):
    """What train.run does with cached outputs: soft targets prepared once over the whole set,
    sliced per batch, give each batch the per-step KD's value and gradient (float32, as trained)."""
    s, t, y = logits_pair(b=40, n=10, dtype=torch.float32)
    loss = build_loss("kd", KDOptions(temperature=T), Outputs(s[:2], {}, {}), Outputs(t[:2], {}, {}))
    targets = teacher_side(loss, Outputs(t, {}, {}))
    assert isinstance(targets, SoftTargets) and not targets.p.requires_grad
    torch.testing.assert_close(targets.p, F.softmax(t / T, -1))
    for rows in (slice(0, 16), slice(16, 32), slice(32, 40)):
        z, z_ref = s[rows].clone().requires_grad_(True), s[rows].clone().requires_grad_(True)
        v = loss(Outputs(z, {}, {}), SoftTargets(*(part[rows] for part in targets)), y[rows])
        ref = per_step_kd(z_ref, t[rows], T)
        v.backward(), ref.backward()
        torch.testing.assert_close(v, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-6, atol=1e-7)


def test_kd_temperature_must_be_positive():
    with pytest.raises(InvalidValue):
        KDOptions(temperature=0.0)


# --- DKD ----------------------------------------------------------------------


def mdistiller_dkd(logits_student, logits_teacher, target, alpha, beta, temperature):
    """mdistiller's dkd_loss (megvii-research/mdistiller, mdistiller/distillers/DKD.py)."""

    def _get_gt_mask(logits, target):
        target = target.reshape(-1)
        return torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1).bool()

    def _get_other_mask(logits, target):
        target = target.reshape(-1)
        return torch.ones_like(logits).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(t, mask1, mask2):
        t1 = (t * mask1).sum(dim=1, keepdims=True)
        t2 = (t * mask2).sum(1, keepdims=True)
        return torch.cat([t1, t2], dim=1)

    gt_mask = _get_gt_mask(logits_student, target)
    other_mask = _get_other_mask(logits_student, target)
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    pred_student = cat_mask(pred_student, gt_mask, other_mask)
    pred_teacher = cat_mask(pred_teacher, gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd_loss = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum") * (temperature**2) / target.shape[0]
    return alpha * tckd_loss + beta * nckd_loss


@pytest.mark.parametrize("T, tckd, nckd", [(4.0, 1.0, 1.0), (1.0, 1.0, 1.0), (4.0, 1.0, 8.0), (2.0, 0.5, 0.0), (3.0, 0.0, 2.0)])
def test_dkd_matches_mdistiller(T, tckd, nckd):
    s, t, y = logits_pair(b=16)
    loss = build_loss("dkd", DKDOptions(temperature=T, tckd=tckd, nckd=nckd), Outputs(s, {}, {}), Outputs(t, {}, {}))
    torch.testing.assert_close(loss(Outputs(s, {}, {}), Outputs(t, {}, {}), y), mdistiller_dkd(s, t, y, tckd, nckd, T))


def test_dkd_default_options_are_the_papers():
    assert options("dkd") == DKDOptions(temperature=4.0, tckd=1.0, nckd=8.0)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_decomposes_kd_per_sample(T):
    """Zhao et al. 2022, eq. 3: KD = TCKD + (1 - p_t^teacher) NCKD, sample by sample,
    checked on kdx's terms and on a reference written from the definitions."""
    s, t, y = logits_pair(b=6, scale=2.0)
    for i in range(len(s)):
        si, ti, yi = s[i : i + 1], t[i : i + 1], y[i : i + 1]
        kd = kd_loss(si, ti, T)
        tckd = dkd_loss(si, ti, yi, T, tckd=1.0, nckd=0.0)
        nckd = dkd_loss(si, ti, yi, T, tckd=0.0, nckd=1.0)
        p_t = torch.softmax(ti / T, -1)[0, yi[0]]
        torch.testing.assert_close(kd, tckd + (1 - p_t) * nckd, **F32)

        p, q = torch.softmax(ti[0] / T, -1), torch.softmax(si[0] / T, -1)
        k = int(yi[0])
        other = torch.arange(NUM_CLASSES) != k
        ref_kd = (p * (p / q).log()).sum()
        bp, bq = torch.stack([p[k], 1 - p[k]]), torch.stack([q[k], 1 - q[k]])
        ref_tckd = (bp * (bp / bq).log()).sum()
        pn, qn = p[other] / p[other].sum(), q[other] / q[other].sum()
        ref_nckd = (pn * (pn / qn).log()).sum()
        torch.testing.assert_close(ref_kd, ref_tckd + (1 - p[k]) * ref_nckd)
        torch.testing.assert_close(tckd, T * T * ref_tckd)
        torch.testing.assert_close(nckd, T * T * ref_nckd)


def test_dkd_binary_part_is_stable_for_confident_logits():
    """The log-space binary term stays finite where mdistiller's log(p) would hit log(0)."""
    s = torch.tensor([[200.0, 0.0, 0.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 5.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([1])  # student: p_target = exp(-200/T) underflows in float32
    z = s.clone().requires_grad_(True)
    v = dkd_loss(z, t, y, 1.0, 1.0, 8.0)
    v.backward()
    assert torch.isfinite(v) and torch.isfinite(z.grad).all()
    assert not torch.isfinite(mdistiller_dkd(s, t, y, 1.0, 8.0, 1.0))


# --- RKD ----------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-2, 7.0, 1e3])
def test_rkd_is_invariant_to_scaling_the_teacher_embedding(scale):
    c = case("rkd")
    scaled = Outputs(c.t_out.logits, {**c.t_out.features, "embedding": c.t_out.features["embedding"] * scale}, {})
    base = c.value()
    assert num(base) > 1e-3
    torch.testing.assert_close(c.loss(c.s_out, scaled, c.y), base, rtol=1e-4, atol=1e-6)


def test_rkd_is_invariant_to_translating_the_teacher_embedding():
    c = case("rkd")
    emb = c.t_out.features["embedding"]
    moved = Outputs(c.t_out.logits, {**c.t_out.features, "embedding": emb + 3.0}, {})
    torch.testing.assert_close(c.loss(c.s_out, moved, c.y), c.value(), rtol=1e-4, atol=1e-6)


def test_rkd_terms_and_sizes():
    """Embeddings of different sizes compare (no regressor); each weight scales its term."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 9, generator=g)
    d, a = rkd_loss(s, t, 1.0, 0.0), rkd_loss(s, t, 0.0, 1.0)
    assert num(d) > 0 and num(a) > 0
    torch.testing.assert_close(rkd_loss(s, t, 25.0, 50.0), 25 * d + 50 * a)
    with pytest.raises(InvalidValue):
        RKDOptions(distance=0.0, angle=0.0)


def rkd_reference(s: torch.Tensor, t: torch.Tensor, distance: float, angle: float) -> torch.Tensor:
    """RepDistiller's / mdistiller's RKD: pdist by the expanded square with its diagonal set to 0."""

    def pdist(e):
        sq = e.pow(2).sum(1)
        d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt().clone()
        d[range(len(e)), range(len(e))] = 0
        return d / d[d > 0].mean()

    def angles(e):
        x = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(x, x.transpose(1, 2)).view(-1)

    with torch.no_grad():
        td, ta = pdist(t), angles(t)
    return distance * F.smooth_l1_loss(pdist(s), td) + angle * F.smooth_l1_loss(angles(s), ta)


@pytest.mark.parametrize("batch", [8, 25, 26, 64, 128])
def test_rkd_matches_the_reference_above_25_samples(batch):
    """torch.cdist's default switches to a matmul formula above 25 rows, whose diagonal
    is rounding noise, not 0; that noise shifted mu by 0.2-1.4% until kdx asked for
    exact distances. Value and gradient must agree with the reference at every size."""
    g = torch.Generator().manual_seed(batch)
    s = torch.randn(batch, 16, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(batch, 32, generator=g, dtype=torch.float64)
    ours, theirs = rkd_loss(s, t, 25.0, 50.0), rkd_reference(s, t, 25.0, 50.0)
    (g_ours,), (g_theirs,) = torch.autograd.grad(ours, s), torch.autograd.grad(theirs, s)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(g_ours.double(), g_theirs, rtol=0, atol=1e-6 * float(g_theirs.abs().max()))


def test_rkd_is_finite_for_a_batch_of_one():
    e = torch.randn(1, 8)
    assert torch.isfinite(rkd_loss(e, e + 1, 25.0, 50.0))


# --- AT -----------------------------------------------------------------------


def at_reference(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Zagoruyko's code (and mdistiller's): at(x) = normalize(x.pow(2).mean(1).view(B, -1))."""

    def at(x):
        return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))

    return (at(fs) - at(ft)).pow(2).mean()


@pytest.mark.parametrize("shape", [(1, 16), (1, 8, 8)], ids=["1d", "2d"])
def test_at_cnn_maps(shape):
    torch.manual_seed(0)
    s, t = model("cnn", STUDENT, shape, depth=3), model("cnn", TEACHER, shape, depth=3)
    x = torch.randn(BATCH, *shape)
    so, to = s(x), t(x)
    loss = build_loss("at", ATOptions(), so, to)
    assert loss.kind == "features" and loss.pairs == [("block1", "block1"), ("block2", "block2"), ("block3", "block3")]
    ref = sum(at_reference(so.features[b], to.features[b]) for b in ("block1", "block2", "block3"))
    torch.testing.assert_close(loss(so, to, None), ref)
    # equal maps give 0; scaling a map changes nothing (the maps are normalized)
    assert num(loss(so, detach(so), None)) == 0.0
    scaled = Outputs(so.logits, {k: 5 * v for k, v in so.features.items()}, {})
    assert num(loss(so, detach(scaled), None)) < 1e-10


def test_at_cnn_pools_maps_of_different_sizes():
    torch.manual_seed(0)
    s, t = model("cnn", STUDENT, depth=2), model("cnn", TEACHER, depth=3)  # (1, 16): lengths 8, 4 vs 8, 4, 2
    x = torch.randn(BATCH, *INPUT_SHAPE)
    so, to = s(x), t(x)
    loss = build_loss("at", ATOptions(), so, to)
    assert loss.pairs == pair_blocks(["block1", "block2"], ["block1", "block2", "block3"]) == [("block1", "block2"), ("block2", "block3")]
    v = loss(so, to, None)
    assert_finite_scalar(v)
    fs = F.adaptive_avg_pool1d(so.features["block1"], 4)
    fs2 = F.adaptive_avg_pool1d(so.features["block2"], 2)
    torch.testing.assert_close(v, at_reference(fs, to.features["block2"]) + at_reference(fs2, to.features["block3"]))


def transformer_pair(s_heads=2, t_heads=4, s_patch=4, t_patch=4):
    torch.manual_seed(0)
    s = model("transformer", STUDENT, heads=s_heads, patch=s_patch)
    t = model("transformer", TEACHER, heads=t_heads, patch=t_patch)
    x = torch.randn(BATCH, *INPUT_SHAPE)
    return s(x), t(x)


def test_at_transformer_identical_attentions_give_zero():
    so, _ = transformer_pair()
    loss = build_loss("at", ATOptions(), so, detach(so))
    assert loss.kind == "attentions"
    assert num(loss(so, detach(so), None)) == 0.0


def test_at_transformer_is_attention_kl():
    so, to = transformer_pair(s_heads=4, t_heads=4)
    loss = build_loss("at", ATOptions(), so, to)
    assert loss.pairs == [("block1", "block2"), ("block2", "block3")]
    ref = 0
    for s_name, t_name in loss.pairs:
        a_s, a_t = so.attentions[s_name], to.attentions[t_name]
        ref = ref + F.kl_div(a_s.log(), a_t, reduction="sum") / (a_s.shape[0] * a_s.shape[1] * a_s.shape[2])
    torch.testing.assert_close(loss(so, to, None), ref)


def test_at_transformer_different_head_counts_average_over_heads():
    so, to = transformer_pair(s_heads=2, t_heads=4)
    loss = build_loss("at", ATOptions(), so, to)
    v = loss(so, to, None)
    assert_finite_scalar(v)
    assert num(v) > 0
    # a teacher whose head-averaged maps equal the student's gives 0
    same_mean = Outputs(to.logits, to.features, {k: so.attentions[s].detach().repeat(1, 2, 1, 1) for s, k in loss.pairs})
    assert num(loss(so, same_mean, None)) < 1e-6


def test_at_transformer_token_counts_must_match():
    so, to = transformer_pair(s_patch=4, t_patch=2)
    with pytest.raises(ConfigError, match=r"losses\.at: .*different token counts \(4 vs 8\)"):
        build_loss("at", ATOptions(), so, to)


@pytest.mark.parametrize("pair", [("mlp", "mlp"), ("cnn", "mlp"), ("cnn", "transformer"), ("transformer", "cnn")])
def test_at_rejects_unmatched_families(pair):
    with pytest.raises(ConfigError, match=r"losses\.at: needs spatial feature maps"):
        case("at", pair=pair)


def test_at_rejects_1d_with_2d_maps():
    torch.manual_seed(0)
    s, t = model("cnn", STUDENT, (1, 64)), model("cnn", TEACHER, (1, 8, 8))
    x = torch.randn(2, 64)
    with pytest.raises(ConfigError, match=r"losses\.at:"):
        build_loss("at", ATOptions(), s(x), t(x.reshape(2, 1, 8, 8)))


# --- FitNet -------------------------------------------------------------------


def fitnet(student_layer=0.5, teacher_layer=0.5, s_depth=None, t_depth=None, pair=("cnn", "cnn")):
    torch.manual_seed(0)
    s_kw = {} if s_depth is None else {"depth": s_depth}
    t_kw = {} if t_depth is None else {"depth": t_depth}
    s, t = model(pair[0], STUDENT, **s_kw), model(pair[1], TEACHER, **t_kw)
    x = torch.randn(BATCH, *INPUT_SHAPE)
    so, to = s(x), t(x)
    return build_loss("fitnet", FitNetOptions(student_layer, teacher_layer), so, to), so, to


@pytest.mark.parametrize("depth", [
    1, 3, 5, 7, 9,
])
def test_fitnet_relative_depth_half_picks_the_middle_block(depth):
    loss, _, _ = fitnet(s_depth=depth, t_depth=depth)
    middle = f"block{(depth + 1) // 2}"
    assert (loss.student_layer, loss.teacher_layer) == (middle, middle)
    assert loss.teacher_keys == (f"features.{middle}",)


def test_fitnet_default_on_mlp_pair():
    c = case("fitnet", pair=("mlp", "mlp"))  # student 2 layers, teacher 3
    assert (c.loss.student_layer, c.loss.teacher_layer) == ("layer1", "layer2")
    assert isinstance(c.loss.regressor, nn.Linear)
    assert (c.loss.regressor.in_features, c.loss.regressor.out_features) == (8, 12)


def test_fitnet_relative_depth_one_is_the_last_block():
    loss, _, _ = fitnet(1.0, 1.0, s_depth=2, t_depth=3)
    assert (loss.student_layer, loss.teacher_layer) == ("block2", "block3")


def test_fitnet_named_layers():
    loss, so, to = fitnet("block1", "block3", s_depth=2, t_depth=3)
    assert (loss.student_layer, loss.teacher_layer) == ("block1", "block3")
    assert loss.teacher_keys == ("features.block3",)
    assert isinstance(loss.regressor, nn.Conv1d) and loss.regressor.kernel_size == (1,)
    # student block1 (length 8) is pooled to the teacher's block3 (length 2)
    v = F.adaptive_avg_pool1d(loss.regressor(so.features["block1"]), 2)
    torch.testing.assert_close(loss(so, to, None), F.mse_loss(v, to.features["block3"]))


def test_fitnet_embedding_layer_by_name():
    loss, so, to = fitnet("embedding", "embedding")
    assert loss.teacher_keys == ("features.embedding",)
    assert isinstance(loss.regressor, nn.Linear)
    assert_finite_scalar(loss(so, to, None))


def test_fitnet_cross_family_uses_linear_on_pooled_features():
    loss, so, to = fitnet(pair=("cnn", "mlp"))
    assert isinstance(loss.regressor, nn.Linear) and not loss.as_map
    ref = F.mse_loss(loss.regressor(so.features[loss.student_layer].mean(-1)), to.features[loss.teacher_layer])
    torch.testing.assert_close(loss(so, to, None), ref)


@pytest.mark.parametrize("which", ["student_layer", "teacher_layer"])
def test_fitnet_unknown_layer_is_config_error_naming_it(which):
    with pytest.raises(ConfigError) as e:
        fitnet(**{which: "block9"})
    msg = str(e.value)
    assert msg.startswith("losses.fitnet: "), msg
    assert "'block9'" in msg and "block1" in msg and "embedding" in msg
    assert ("the student" if which == "student_layer" else "the teacher") in msg


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_fitnet_relative_depth_range(bad):
    with pytest.raises(InvalidValue):
        FitNetOptions(student_layer=bad)


def test_fitnet_relative_depth_survives_the_teacher_output_cache():
    torch.manual_seed(0)
    s, t = model("cnn", STUDENT, depth=1), model("cnn", TEACHER, depth=4)
    x = torch.randn(2, *INPUT_SHAPE)
    so, to = s(x), t(x)
    at = build_loss("at", ATOptions(), so, to)
    fit = build_loss("fitnet", FitNetOptions(teacher_layer=0.75), so, to)
    keys = sorted({"logits", *at.teacher_keys, *fit.teacher_keys})
    from distill.teacher import _select  # what teacher_outputs caches for these keys

    cached = _select(to, keys)
    assert build_loss("fitnet", FitNetOptions(teacher_layer=0.75), so, cached).teacher_keys == fit.teacher_keys == ("features.block3",)


# --- CE -----------------------------------------------------------------------


def test_ce_reads_no_teacher_output():
    c = case("ce")
    assert tuple(c.loss.teacher_keys) == ()
    torch.testing.assert_close(c.loss(c.s_out, None, c.y), F.cross_entropy(c.s_out.logits, c.y))
    smoothed = build_loss("ce", options("ce", label_smoothing=0.1), c.s_out, None)
    torch.testing.assert_close(smoothed(c.s_out, None, c.y), F.cross_entropy(c.s_out.logits, c.y, label_smoothing=0.1))


# --- the dark-knowledge control ---------------------------------------------------


def test_shuffle_nontarget_keeps_the_target_and_the_values_but_not_their_places():
    from distill.losses.kd import shuffle_nontarget

    torch.manual_seed(0)
    log_p = F.log_softmax(torch.randn(64, 10) * 3, -1)
    y = torch.randint(0, 10, (64,))
    out = shuffle_nontarget(log_p, y)
    rows = torch.arange(64)
    assert torch.equal(out[rows, y], log_p[rows, y])  # same confidence in the target
    assert torch.allclose(out.exp().sum(-1), torch.ones(64))  # still distributions
    assert torch.equal(out.sort(-1).values, log_p.sort(-1).values)  # the same values per row
    moved = (out != log_p).any(-1).float().mean()
    assert moved > 0.9  # and (almost always) in other places: class relations are gone


def test_kd_with_the_control_differs_and_stays_zero_free_only_without_it():
    torch.manual_seed(1)
    t = torch.randn(32, 10) * 2
    y = t.argmax(-1)
    plain = kd_loss(t.clone(), t, 4.0)
    control = kd_loss(t.clone(), t, 4.0, target=y)
    assert float(plain) == pytest.approx(0.0, abs=1e-6)
    assert float(control) > 1e-3  # a student equal to the teacher no longer matches the shuffled targets
    opts = LOSSES.get("kd", "x").options(temperature=4.0, shuffle_nontarget=True)
    loss = build_loss("kd", opts, None, None)
    s = Outputs(t.clone(), {}, {})
    assert float(loss(s, Outputs(t, {}, {}), y)) > 1e-3


def test_the_control_on_prepared_targets_draws_a_fresh_permutation_every_step():
    """Prepared once, the soft targets stay unshuffled; the control shuffles a copy per call,
    with the very draw the per-step path made."""
    torch.manual_seed(1)
    t = torch.randn(32, 10) * 2
    y = t.argmax(-1)
    loss = build_loss("kd", KDOptions(temperature=4.0, shuffle_nontarget=True), None, None)
    targets = teacher_side(loss, Outputs(t, {}, {}))
    before = [part.clone() for part in targets]
    s = Outputs(t.clone(), {}, {})
    torch.manual_seed(7)
    first = loss(s, targets, y)
    torch.manual_seed(7)
    torch.testing.assert_close(first, per_step_kd(t.clone(), t, 4.0, target=y))
    second = loss(s, targets, y)
    assert float(first) > 1e-3 and float(second) > 1e-3 and float(first) != float(second)
    for a, b in zip(targets, before):
        assert torch.equal(a, b)
