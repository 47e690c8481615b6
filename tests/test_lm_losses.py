"""The next-token losses (token_kd, rkl, gjsd, skew_kl) against independent float64 implementations of
their papers' formulas, value and gradient, with masking; the ends of gjsd and skew_kl; the top-k
cache's buckets; and the one-line refusals. The registry's generic checks (zero at identity, no
gradient into the teacher, pinned values) run in tests/test_losses.py on the language-model pair."""

from __future__ import annotations

import pytest
import torch

from distill.config import RunConfig
from distill.data import IGNORE
from distill.errors import ConfigError
from distill.losses import LOSSES, build_loss, is_next_token, next_token_losses
from distill.losses.next_token import topk_outputs
from distill.models import Outputs

B, L, V = 3, 5, 7


def out(logits: torch.Tensor) -> Outputs:
    return Outputs(logits, {}, {})


def opts(name: str, **kw):
    return LOSSES.get(name, "losses").options(**kw)


def pair(seed: int = 0, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    z_s = (torch.randn(B, L, V, generator=g) * scale).requires_grad_()
    z_t = torch.randn(B, L, V, generator=g) * scale
    y = torch.randint(0, V, (B, L), generator=g)
    y[0, -1] = y[1, 2:] = IGNORE  # the end of a sequence, and padding
    return z_s, z_t, y


def reference(name: str, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, t: float, **o) -> torch.Tensor:
    """The papers' formulas, written out in float64 without any of kdx's helpers."""
    p = torch.softmax(z_t.double() / t, -1)
    q = torch.softmax(z_s.double() / t, -1)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if name == "token_kd":
        d = kl(p, q)
    elif name == "rkl":
        d = kl(q, p)
    elif name == "gjsd":
        beta = o["beta"]
        m = beta * p + (1 - beta) * q
        d = beta * kl(p, m) + (1 - beta) * kl(q, m)
    elif name == "skew_kl":
        d = kl(p, o["alpha"] * p + (1 - o["alpha"]) * q)
    valid = y != IGNORE
    return d[valid].mean() * t**2


def ours(name: str, z_s, z_t, y, **o) -> torch.Tensor:
    loss = build_loss(name, opts(name, **o), out(z_s), out(z_t))
    return loss(out(z_s), out(z_t), y)


CASES = [("token_kd", {}), ("rkl", {}), ("gjsd", {"beta": 0.5}), ("gjsd", {"beta": 0.2}), ("skew_kl", {"alpha": 0.1}), ("skew_kl", {"alpha": 0.6})]


def test_the_next_token_losses_are_registered_as_such():
    assert set(next_token_losses()) == {"token_kd", "rkl", "gjsd", "skew_kl"}
    assert not any(is_next_token(n) for n in ("kd", "ce", "dkd", "minilm"))


@pytest.mark.parametrize("t", [1.0, 2.5])
@pytest.mark.parametrize("name, o", CASES)
def test_value_and_gradient_match_the_reference_formula(name, o, t):
    z_s, z_t, y = pair()
    mine, ref = ours(name, z_s, z_t, y, temperature=t, **o), reference(name, z_s, z_t, y, t, **o)
    assert mine.item() == pytest.approx(ref.item(), rel=1e-5)
    g_mine, = torch.autograd.grad(mine, z_s)
    g_ref, = torch.autograd.grad(ref, z_s)
    torch.testing.assert_close(g_mine.double(), g_ref.double(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name, o", CASES)
def test_masked_positions_take_no_part(name, o):
    z_s, z_t, y = pair()
    before = ours(name, z_s, z_t, y, **o)
    moved = z_s.detach().clone()
    moved[y == IGNORE] += 5 * torch.randn_like(moved[y == IGNORE])
    assert ours(name, moved, z_t, y, **o).item() == pytest.approx(before.item(), rel=1e-6)
    g, = torch.autograd.grad(before, z_s)
    assert g[y == IGNORE].abs().max() == 0 and g[y != IGNORE].abs().max() > 0
    none = torch.full_like(y, IGNORE)
    empty = ours(name, z_s, z_t, none, **o)
    assert empty.item() == 0 and empty.requires_grad  # a batch with nothing to predict: 0, and backward still runs


def test_gjsd_ends_are_the_forward_and_reverse_kl_and_beta_near_zero_is_not():
    z_s, z_t, y = pair()
    fkl, rkl = ours("token_kd", z_s, z_t, y), ours("rkl", z_s, z_t, y)
    assert ours("gjsd", z_s, z_t, y, beta=0.0).item() == pytest.approx(fkl.item(), rel=1e-6)
    assert ours("gjsd", z_s, z_t, y, beta=1.0).item() == pytest.approx(rkl.item(), rel=1e-6)
    # the docstring's warning: near 0 the formula is about beta * KL(p || q), not KL(p || q)
    small = ours("gjsd", z_s, z_t, y, beta=1e-3).item()
    assert small / 1e-3 == pytest.approx(fkl.item(), rel=0.05) and small < 0.01 * fkl.item()
    assert ours("gjsd", z_s, z_t, y).item() <= torch.log(torch.tensor(2.0)).item()  # JSD is bounded by log 2


def test_skew_kl_at_alpha_zero_is_the_forward_kl_and_smaller_beyond():
    z_s, z_t, y = pair(scale=4.0)
    fkl = ours("token_kd", z_s, z_t, y).item()
    assert ours("skew_kl", z_s, z_t, y, alpha=0.0).item() == pytest.approx(fkl, rel=1e-6)
    values = [ours("skew_kl", z_s, z_t, y, alpha=a).item() for a in (0.1, 0.5, 0.9)]
    assert fkl > values[0] > values[1] > values[2] > 0


def test_t_squared_keeps_the_gradient_size_at_high_temperature():
    z_s, z_t, y = pair()
    norms = [torch.autograd.grad(ours("token_kd", z_s, z_t, y, temperature=t), z_s)[0].norm().item() for t in (20.0, 40.0, 80.0)]
    assert max(norms) / min(norms) < 1.1


def test_a_student_equal_to_its_teacher_scores_zero_at_any_temperature_and_through_the_top_k_cache():
    z_s, _, y = pair()
    for name, o in CASES:
        for t in (1.0, 3.0):
            assert abs(ours(name, z_s, z_s.detach(), y, temperature=t, **o).item()) < 1e-6, (name, o, t)
            cached = topk_outputs(z_s.detach(), 3)
            loss = build_loss(name, opts(name, temperature=t, **o), out(z_s), cached)
            assert abs(loss(out(z_s), cached, y).item()) < 1e-6, (name, o, t)


def test_the_top_k_cache_stores_k_buckets_and_the_tail_and_full_k_is_the_online_teacher_exactly():
    z_s, z_t, y = pair()
    cached = topk_outputs(z_t, 3)
    assert cached.logits.shape == (B, L, 4) and cached.parts["topk.index"].shape == (B, L, 3)
    torch.testing.assert_close(cached.logits.logsumexp(-1), torch.zeros(B, L), atol=1e-6, rtol=0)  # k + tail is all the mass
    top = torch.log_softmax(z_t, -1).topk(3, -1).values
    torch.testing.assert_close(cached.logits[..., :3], top)
    for name, o in CASES:
        for t in (1.0, 2.0):
            loss = build_loss(name, opts(name, temperature=t, **o), out(z_s), out(z_t))
            full = topk_outputs(z_t, V)
            assert loss(out(z_s), full, y).item() == pytest.approx(loss(out(z_s), out(z_t), y).item(), rel=1e-6)


def test_at_t1_the_top_k_loss_is_the_divergence_between_the_bucketed_distributions():
    z_s, z_t, y = pair()
    k = 2
    index = torch.log_softmax(z_t, -1).topk(k, -1).indices

    def buckets(z):
        p = torch.softmax(z.double(), -1)
        top = p.gather(-1, index)
        return torch.cat([top, 1 - top.sum(-1, keepdim=True)], -1)

    p, q = buckets(z_t), buckets(z_s)
    expected = (p * (p / q).log()).sum(-1)[y != IGNORE].mean()
    cached = topk_outputs(z_t, k)
    loss = build_loss("token_kd", opts("token_kd"), out(z_s), cached)
    value = loss(out(z_s), cached, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert value.item() <= ours("token_kd", z_s, z_t, y).item()  # bucketing loses information, never adds it


def test_a_tail_with_no_mass_left_stays_finite():
    z_t = torch.full((1, 2, V), -200.0)
    z_t[..., 0] = 200.0  # every other id underflows to 0 in float32
    cached = topk_outputs(z_t, 2)
    assert torch.isfinite(cached.logits).all()
    z_s = torch.randn(1, 2, V, requires_grad=True)
    y = torch.zeros(1, 2, dtype=torch.long)
    for name, o in CASES:
        loss = build_loss(name, opts(name, **o), out(z_s), cached)
        v = loss(out(z_s), cached, y)
        g, = torch.autograd.grad(v, z_s)
        assert torch.isfinite(v) and torch.isfinite(g).all(), name


def test_a_teacher_of_another_vocabulary_or_no_language_model_is_refused_in_one_line():
    z_s, z_t, _ = pair()
    with pytest.raises(ConfigError) as e:
        build_loss("token_kd", opts("token_kd"), out(z_s), out(torch.randn(B, L, V + 2)))
    assert str(e.value).startswith("losses.token_kd: the teacher's vocabulary has 9 ids and the student's 7") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="^losses.rkl: .*not a language model"):
        build_loss("rkl", opts("rkl"), out(torch.randn(B, V)), out(torch.randn(B, V)))
    base = {"data": {"name": "hmm"}, "student": {"family": "transformer"}, "teacher": {"family": "transformer"}}
    with pytest.raises(ConfigError, match="^losses.gjsd.beta: must be in"):
        RunConfig.from_dict({**base, "mix": {"gjsd": 1.0}, "losses": {"gjsd": {"beta": 1.5}}})
    with pytest.raises(ConfigError, match="^losses.skew_kl.alpha: must be in"):
        RunConfig.from_dict({**base, "mix": {"skew_kl": 1.0}, "losses": {"skew_kl": {"alpha": 1.0}}})


def test_a_mix_of_the_wrong_task_is_refused_in_one_line():
    base = {"student": {"family": "transformer", "dim": 16, "depth": 1, "heads": 2}, "teacher": {"family": "transformer"}}
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({**base, "data": {"name": "hmm"}, "mix": {"ce": 0.5, "kd": 0.5}})
    assert str(e.value).startswith("mix.kd: data hmm is language modelling") and "token_kd" in str(e.value)
    with pytest.raises(ConfigError, match="^mix.token_kd: .*classification"):
        RunConfig.from_dict({**base, "data": {"name": "mnist1d"}, "mix": {"ce": 0.5, "token_kd": 0.5}})
