"""The feature and relation losses against their papers and reference code: RKD (Park et al.
2019), attention transfer (Zagoruyko & Komodakis 2017; attention-map KL for transformers) and
FitNets (Romero et al. 2015). The checks every loss gets are generated in tests/test_losses.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from loss_helpers import (
    BATCH,
    INPUT_SHAPE,
    STUDENT,
    TEACHER,
    assert_finite_scalar,
    case,
    detach,
    model,
    num,
)
from torch import nn

from distill.errors import ConfigError, InvalidValue
from distill.losses import build_loss, pair_blocks
from distill.losses.at import ATOptions
from distill.losses.fitnet import FitNetOptions
from distill.losses.rkd import RKDOptions, rkd_loss
from distill.models import Outputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats a contended pool (conftest)


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
