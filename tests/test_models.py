"""Model families: generated over the registry, so a new family gets every check.

Each family is built with default options (or the small ones of TEST_OPTIONS,
where the defaults are a production model) for the input kinds kdx's datasets
have: (1, 40) (MNIST-1D, a 1-D signal), (1, 8, 8) (digits, an image), (64,)
(hgmm, a flat vector) and token ids (text, khop). A family that cannot take a
kind must refuse it with a one-line ConfigError, and each takes at least one.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from distill.config import RunConfig
from distill.errors import ConfigError
from distill.models import MODELS, Outputs, TokenShape, as_outputs, build_model, count_params, expose, measure_latency

FAMILIES = MODELS.names()
SHAPES = {"1d": (1, 40), "2d": (1, 8, 8), "flat": (64,), "tokens": TokenShape(12, vocab=20, pad_id=0)}
NUM_CLASSES = 7
BATCH = 3
# Families whose defaults are production sizes (hf: BERT-base, 110M parameters), small here.
TEST_OPTIONS = {"hf": dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats a contended pool (conftest)


def options(family: str, **kw):
    return MODELS.get(family, "model.family").options(**{**TEST_OPTIONS.get(family, {}), **kw})


def build(family: str, shape: tuple[int, ...], seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(family, options(family, **kw), shape, NUM_CLASSES)


def sample(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """A batch: random features, or ids whose first sample ends in padding."""
    torch.manual_seed(seed)
    if isinstance(shape, TokenShape):
        x = torch.randint(1, shape.vocab, (BATCH, shape[0]))
        x[0, shape[0] // 2 :] = shape.pad_id
        return x
    return torch.randn(BATCH, *shape)


def forward(model: nn.Module, shape: tuple[int, ...], seed: int = 1) -> tuple[torch.Tensor, Outputs]:
    x = sample(shape, seed)
    return x, model(x)


def takes(family: str, shape: tuple[int, ...]) -> bool:
    try:
        build(family, shape)
    except ConfigError:
        return False
    return True


KINDS = [(f, k) for f in FAMILIES for k in SHAPES if takes(f, SHAPES[k])]
FIRST = {f: next(SHAPES[k] for g, k in KINDS if g == f) for f in FAMILIES}
kinds = pytest.mark.parametrize("family, shape", [(f, SHAPES[k]) for f, k in KINDS], ids=[f"{f}-{k}" for f, k in KINDS])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_takes_an_input_kind_and_refuses_others_in_one_line(family):
    assert family in FIRST
    for kind, shape in SHAPES.items():
        try:
            build_model(family, options(family), shape, NUM_CLASSES, "student")
        except ConfigError as e:
            assert str(e).startswith("student:") and "\n" not in str(e), (kind, str(e))


def size_knob(family: str) -> str:
    """The option that sets a family's width (what the size check doubles)."""
    names = {f.name for f in dataclasses.fields(MODELS.get(family, "x").options)}
    for knob in ("width", "dim", "hidden_size"):
        if knob in names:
            return knob
    pytest.fail(f"family {family!r} has neither 'width' nor 'dim': teach size_knob() its size option")


def test_registry_has_the_documented_families():
    assert {"mlp", "cnn", "transformer", "resnet", "wrn"} <= set(FAMILIES)


# --- generated over every family x input kind ---------------------------------


@kinds
def test_outputs_contract(family, shape):
    model = build(family, shape)
    x, out = forward(model, shape)
    assert isinstance(out, Outputs)
    assert out.logits.shape == (BATCH, NUM_CLASSES)
    assert torch.isfinite(out.logits).all()

    assert isinstance(out.features, dict) and isinstance(out.attentions, dict)
    names = list(out.features)
    assert names[-1] == "embedding", "the embedding (what the classifier reads) must be the last feature"
    blocks = names[:-1]
    assert blocks, "a model must expose at least one named intermediate block"
    assert len(set(names)) == len(names)
    opts = options(family)
    if family in ("resnet", "wrn"):  # depth counts layers (6n+2, 6n+4); the features are the three stages
        assert blocks == ["stage1", "stage2", "stage3"]
    elif isinstance(shape, TokenShape):  # block0 is the embedding output (distill.models' token contract)
        assert blocks[0] == "block0" and len(blocks) == (getattr(opts, "depth", None) or opts.num_hidden_layers) + 1
        assert out.mask is not None and out.mask.tolist()[0] == [True] * 6 + [False] * 6
    elif hasattr(opts, "depth"):
        assert len(blocks) == opts.depth
    for name, f in out.features.items():
        assert f.shape[0] == BATCH, name
        assert f.dim() in (2, 3, 4), f"{name}: features are (B, C), (B, C, L) or (B, C, H, W)"
        assert torch.isfinite(f).all(), name
    assert out.features["embedding"].dim() == 2


@kinds
def test_attentions_are_row_stochastic(family, shape):
    model = build(family, shape).eval()  # Hugging Face returns its maps after attention dropout when training
    expose(model, {"attentions", "parts"})  # token models compute maps only when asked
    x, out = forward(model, shape)
    if family in ("transformer", "hf"):
        assert out.attentions, "a transformer must expose its attention maps"
    for name, a in out.attentions.items():
        assert a.dim() == 4 and a.shape[0] == BATCH and a.shape[-1] == a.shape[-2], name
        assert (a >= 0).all(), name
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), rtol=0, atol=1e-5)
        if out.mask is not None:  # padded keys take no part
            assert (a.transpose(1, 3)[~out.mask] == 0).all(), name
    if isinstance(shape, TokenShape):
        depth = len(out.attentions)
        assert sorted(out.parts) == sorted(f"{w}.block{i}" for w in "qkv" for i in range(1, depth + 1))
        heads = out.attentions["block1"].shape[1]
        assert out.parts["q.block1"].shape[:3] == (BATCH, heads, shape[0])
        expose(model, set())
        again = model(x)
        assert not again.attentions and not again.parts
        torch.testing.assert_close(again.logits, out.logits, rtol=1e-4, atol=1e-5)


@kinds
def test_samples_do_not_mix_across_the_batch(family, shape):
    """In eval mode a sample's outputs must not depend on the rest of its batch."""
    model = build(family, shape).eval()
    x, out = forward(model, shape)
    with torch.no_grad():
        alone = model(x[1:2])
    torch.testing.assert_close(alone.logits, out.logits[1:2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone.features["embedding"], out.features["embedding"][1:2], rtol=1e-4, atol=1e-5)


@kinds
def test_param_count_grows_with_width(family, shape):
    knob = size_knob(family)
    base = getattr(options(family), knob)
    small = count_params(build(family, shape, **{knob: base}))
    large = count_params(build(family, shape, **{knob: 2 * base}))
    assert 0 < small < large
    assert count_params(build(family, shape)) == sum(p.numel() for p in build(family, shape).parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_measure_latency(family):
    shape = FIRST[family]
    model = build(family, shape).train()
    torch.set_num_threads(2)  # measure_latency runs on one thread, then must put this back
    try:
        ms = measure_latency(model, shape, repeats=5, warmup=1)
        assert torch.get_num_threads() == 2, "measure_latency must restore the thread count"
    finally:
        torch.set_num_threads(1)
    assert isinstance(ms, float) and ms > 0 and math.isfinite(ms)
    assert model.training, "measure_latency must restore training mode"


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_reaches_every_parameter(family):
    model = build(family, FIRST[family])
    _, out = forward(model, FIRST[family])
    out.logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph of the logits: {missing}"


# --- transformer --------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, tokens", [((1, 40), 10), ((1, 8, 8), 4), ((64,), 16), ((2, 12), 3)], ids=["1d", "2d", "flat", "2ch"]
)
def test_transformer_attention_shape(shape, tokens):
    model = build("transformer", shape, dim=16, heads=2, depth=3, patch=4)
    _, out = forward(model, shape)
    assert list(out.attentions) == ["block1", "block2", "block3"]
    for a in out.attentions.values():
        assert a.shape == (BATCH, 2, tokens, tokens)
    for name in ("block1", "block2", "block3"):
        assert out.features[name].shape == (BATCH, 16, tokens)  # channels first, like the other families
    assert out.features["embedding"].shape == (BATCH, 16)


def test_transformer_param_count_grows_with_depth():
    assert count_params(build("transformer", (1, 40), depth=1)) < count_params(build("transformer", (1, 40), depth=2))


@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8), (44,)], ids=["1d", "2d", "flat"])
def test_transformer_patch_must_divide_input(shape):
    with pytest.raises(ConfigError) as e:
        build_model("transformer", options("transformer", patch=3), shape, NUM_CLASSES, "student")
    msg = str(e.value)
    assert msg.startswith("student:"), msg
    assert "patch 3 does not divide" in msg


def test_transformer_heads_must_divide_dim_via_run_config():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"student": {"family": "transformer", "dim": 30, "heads": 4}})
    assert "student.heads" in str(e.value)
    assert "dim 30" in str(e.value)


def test_transformer_tokenizes_2d_patches_as_squares():
    """Each token of a 2-D input is one p x p square: changing one pixel changes one token's embedding."""
    model = build("transformer", (1, 8, 8), patch=4)
    x = torch.zeros(1, 1, 8, 8)
    y = x.clone()
    y[0, 0, 5, 1] = 1.0  # row 5, column 1: the bottom-left 4x4 square, token 2 in row-major order
    tok_x, tok_y = model.tokenize(x), model.tokenize(y)
    changed = (tok_x != tok_y).any(-1)[0]
    assert changed.tolist() == [False, False, True, False]


# --- cnn ----------------------------------------------------------------------


def conv_kinds(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))}


@pytest.mark.parametrize("shape, conv, rank", [((1, 40), nn.Conv1d, 3), ((64,), nn.Conv1d, 3), ((1, 8, 8), nn.Conv2d, 4)], ids=["1d", "flat", "2d"])
def test_cnn_picks_convolution_from_input_rank(shape, conv, rank):
    model = build("cnn", shape, width=5)
    assert conv_kinds(model) == {conv}
    _, out = forward(model, shape)
    for name in ("block1", "block2", "block3"):
        assert out.features[name].dim() == rank and out.features[name].shape[1] == 5


def test_cnn_halves_spatial_size_while_at_least_4():
    _, out = forward(build("cnn", (1, 40), depth=5), (1, 40))
    assert [out.features[f"block{i}"].shape[-1] for i in range(1, 6)] == [20, 10, 5, 3, 3]


@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8)], ids=["1d", "2d"])
def test_cnn_residual(shape):
    plain = build("cnn", shape, residual=False)
    res = build("cnn", shape, residual=True)
    assert count_params(res) > count_params(plain)
    assert all(b.conv2 is not None for b in res.blocks)
    assert all(b.conv2 is None and b.skip is None for b in plain.blocks)
    assert res.blocks[0].skip is not None  # channels change: 1x1 projection on the shortcut
    _, out = forward(res, shape)
    assert out.logits.shape == (BATCH, NUM_CLASSES) and torch.isfinite(out.logits).all()


def test_cnn_residual_identity_shortcut():
    """A block whose shape does not change adds its input unprojected."""
    model = build("cnn", (1, 2), depth=2, width=4, residual=True)  # length 2 < 4: stride 1, no halving
    assert model.blocks[0].skip is not None and model.blocks[1].skip is None


@pytest.mark.parametrize("family", ["cnn", "transformer"])
def test_unsupported_input_rank_is_config_error(family):
    with pytest.raises(ConfigError, match="neither 1-D nor 2-D"):
        build_model(family, options(family), (1, 2, 8, 8), NUM_CLASSES, "student")


# --- mlp and helpers ------------------------------------------------------------


def test_mlp_feature_names_and_sizes():
    _, out = forward(build("mlp", (1, 8, 8), width=9, depth=3), (1, 8, 8))
    assert list(out.features) == ["layer1", "layer2", "layer3", "embedding"]
    assert all(f.shape == (BATCH, 9) for f in out.features.values())


def test_unknown_family_names_path():
    with pytest.raises(ConfigError, match=r"student\.family: unknown model family 'mpl' \(did you mean 'mlp'\?\)"):
        build_model("mpl", None, (1, 40), NUM_CLASSES, "student")


def test_as_outputs():
    logits = torch.zeros(2, 3)
    assert as_outputs(logits) == Outputs(logits, {}, {})
    out = Outputs(logits, {"embedding": logits}, {})
    assert as_outputs(out) is out
    assert as_outputs((logits, {}, {})).logits is logits
    with pytest.raises(TypeError):
        as_outputs([logits])
