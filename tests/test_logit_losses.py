"""The logit losses against their papers and reference code: Hinton KD (its T^2 scaling, the
soft targets prepared once), DKD (Zhao et al. 2022, against mdistiller's code), CE, and the
dark-knowledge control. The checks every loss gets are generated in tests/test_losses.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import (
    NUM_CLASSES,
    case,
    num,
    options,
)
from torch import nn

from distill.errors import InvalidValue
from distill.losses import LOSSES, build_loss, teacher_side
from distill.losses.dkd import DKDOptions, dkd_loss
from distill.losses.kd import KDOptions, SoftTargets, kd_loss, shuffle_nontarget
from distill.models import Outputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats a contended pool (conftest)


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
