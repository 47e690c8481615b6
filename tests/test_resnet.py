"""CIFAR ResNets (`resnet`, `wrn`): RepDistiller's parameter counts and state-dict
names, the depth rules, shapes on CIFAR and on 1-D signals, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.config import RunConfig
from distill.errors import ConfigError
from distill.models import MODELS, build_model, count_params

CIFAR = (3, 32, 32)
BATCH = 2

# name: (family, depth, width, params for 100 classes as RepDistiller/CRD tabulate them)
ARCHS = {
    "resnet8x4": ("resnet", 8, 4, 1.23e6),
    "resnet32x4": ("resnet", 32, 4, 7.43e6),
    "resnet20": ("resnet", 20, 1, 0.28e6),
    "resnet56": ("resnet", 56, 1, 0.86e6),
    "resnet110": ("resnet", 110, 1, 1.74e6),
    "wrn_40_2": ("wrn", 40, 2, 2.26e6),
    "wrn_16_2": ("wrn", 16, 2, 0.70e6),
    "wrn_40_1": ("wrn", 40, 1, 0.57e6),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats a contended pool (conftest)


def build(family: str, shape: tuple[int, ...] = CIFAR, num_classes: int = 100, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(family, MODELS.get(family, "x").options(**kw), shape, num_classes)


@pytest.fixture(scope="module")
def cifar_models() -> dict[str, nn.Module]:
    """Every named architecture, built once."""
    return {name: build(family, depth=depth, width=width) for name, (family, depth, width, _) in ARCHS.items()}


@pytest.mark.parametrize("name", ARCHS)
def test_param_counts_match_repdistiller(cifar_models, name):
    expected = ARCHS[name][3]
    assert count_params(cifar_models[name]) == pytest.approx(expected, rel=0.01)


def test_exact_param_counts(cifar_models):
    """Pinned exactly, so a change to the architecture cannot hide inside the 1% above."""
    counts = {name: count_params(m) for name, m in cifar_models.items()}
    assert counts == {
        "resnet8x4": 1_233_540,
        "resnet32x4": 7_433_860,
        "resnet20": 278_324,
        "resnet56": 861_620,
        "resnet110": 1_736_564,
        "wrn_40_2": 2_255_156,
        "wrn_16_2": 703_284,
        "wrn_40_1": 569_780,
    }


# --- RepDistiller's state-dict names ----------------------------------------------


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_resnet8x4_state_dict_names(cifar_models):
    sd = shapes(cifar_models["resnet8x4"])
    assert sd["conv1.weight"] == (32, 3, 3, 3)  # num_filters [32, 64, 128, 256]: a 32-channel stem
    assert sd["bn1.running_mean"] == (32,)
    assert sd["layer1.0.conv1.weight"] == (64, 32, 3, 3)
    assert sd["layer1.0.downsample.0.weight"] == (64, 32, 1, 1)  # 32 -> 64 at stride 1 still projects
    assert sd["layer1.0.downsample.1.weight"] == (64,)
    assert sd["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert sd["layer3.0.bn2.num_batches_tracked"] == ()
    assert sd["fc.weight"] == (100, 256) and sd["fc.bias"] == (100,)
    assert len(sd) == 62
    assert not any(k.startswith(("layer4", "avgpool")) for k in sd)


def test_resnet32x4_state_dict_names(cifar_models):
    sd = shapes(cifar_models["resnet32x4"])
    assert sd["layer1.4.conv2.weight"] == (64, 64, 3, 3)  # n = 5 blocks a stage
    assert sd["layer3.4.bn2.weight"] == (256,)
    assert "layer1.5.conv1.weight" not in sd
    assert "layer1.1.downsample.0.weight" not in sd  # only a stage's first block projects
    assert sd["fc.weight"] == (100, 256)
    assert len(sd) == 206


def test_resnet20_has_identity_first_stage(cifar_models):
    sd = shapes(cifar_models["resnet20"])
    assert sd["conv1.weight"] == (16, 3, 3, 3)  # num_filters [16, 16, 32, 64]
    assert not any(k.startswith("layer1.0.downsample") for k in sd)
    assert sd["layer2.0.downsample.0.weight"] == (32, 16, 1, 1)


def test_wrn_40_2_state_dict_names(cifar_models):
    sd = shapes(cifar_models["wrn_40_2"])
    assert sd["conv1.weight"] == (16, 3, 3, 3)
    assert sd["block1.layer.0.bn1.weight"] == (16,)
    assert sd["block1.layer.0.conv1.weight"] == (32, 16, 3, 3)
    assert sd["block1.layer.0.convShortcut.weight"] == (32, 16, 1, 1)
    assert "block1.layer.1.convShortcut.weight" not in sd
    assert sd["block2.layer.0.convShortcut.weight"] == (64, 32, 1, 1)
    assert sd["block3.layer.5.conv2.weight"] == (128, 128, 3, 3)  # n = 6 blocks a stage
    assert "block3.layer.6.conv1.weight" not in sd
    assert sd["bn1.weight"] == (128,)
    assert sd["fc.weight"] == (100, 128)
    assert len(sd) == 227


def test_wrn_40_1_first_stage_has_no_shortcut(cifar_models):
    sd = shapes(cifar_models["wrn_40_1"])
    assert not any("convShortcut" in k for k in sd if k.startswith("block1."))  # 16 -> 16: identity


def test_state_dict_round_trips_into_a_fresh_model(cifar_models):
    """What loading a RepDistiller checkpoint does: `load_state_dict(ckpt["model"])` with strict names."""
    trained = cifar_models["resnet8x4"].eval()
    fresh = build("resnet", depth=8, width=4, seed=1).eval()
    fresh.load_state_dict({"model": trained.state_dict()}["model"])
    x = torch.randn(BATCH, *CIFAR)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x).logits, trained(x).logits)


# --- depth rules ----------------------------------------------------------------


@pytest.mark.parametrize("family, depth", [("resnet", 21), ("resnet", 2), ("resnet", 0), ("wrn", 18), ("wrn", 4), ("wrn", 20)])
def test_bad_depth_is_config_error_naming_the_key(family, depth):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"student": {"family": family, "depth": depth}})
    msg = str(e.value)
    assert "student.depth" in msg, msg
    assert ("6n+2" if family == "resnet" else "6n+4") in msg, msg


@pytest.mark.parametrize("family, depth", [("resnet", 8), ("resnet", 110), ("wrn", 10), ("wrn", 28)])
def test_good_depth_parses(family, depth):
    cfg = RunConfig.from_dict({"student": {"family": family, "depth": depth, "width": 3}})
    assert cfg.student.options.depth == depth


def test_bad_width_and_dropout():
    with pytest.raises(ConfigError, match=r"student\.width"):
        RunConfig.from_dict({"student": {"family": "resnet", "width": 0}})
    with pytest.raises(ConfigError, match=r"student\.dropout"):
        RunConfig.from_dict({"student": {"family": "wrn", "dropout": 1.0}})


@pytest.mark.parametrize("family", ["resnet", "wrn"])
def test_unsupported_input_rank_is_config_error(family):
    with pytest.raises(ConfigError, match=r"^student: .*neither 1-D nor 2-D"):
        build_model(family, MODELS.get(family, "x").options(), (1, 2, 8, 8), 10, "student")


# --- shapes ---------------------------------------------------------------------


def conv_kinds(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d))}


@pytest.mark.parametrize(
    "name, stages",
    [
        ("resnet8x4", [(64, 32, 32), (128, 16, 16), (256, 8, 8)]),
        ("resnet20", [(16, 32, 32), (32, 16, 16), (64, 8, 8)]),
        ("wrn_16_2", [(32, 32, 32), (64, 16, 16), (128, 8, 8)]),
    ],
)
def test_cifar_shapes(cifar_models, name, stages):
    model = cifar_models[name]
    assert conv_kinds(model) == {nn.Conv2d, nn.BatchNorm2d}
    out = model(torch.randn(BATCH, *CIFAR))
    assert out.logits.shape == (BATCH, 100)
    assert list(out.features) == ["stage1", "stage2", "stage3", "embedding"]
    assert [tuple(out.features[f"stage{i}"].shape) for i in (1, 2, 3)] == [(BATCH, *s) for s in stages]
    assert out.features["embedding"].shape == (BATCH, stages[-1][0])
    assert out.attentions == {}
    # the embedding is the global mean of the last stage map (post-activation in both families)
    torch.testing.assert_close(out.features["embedding"], out.features["stage3"].mean((2, 3)))
    assert (out.features["stage3"] >= 0).all()


@pytest.mark.parametrize("family, c", [("resnet", 16), ("wrn", 32)])
@pytest.mark.parametrize("shape", [(1, 40), (40,)], ids=["1d", "flat"])
def test_1d_shapes(family, c, shape):
    model = build(family, shape, num_classes=10)
    assert conv_kinds(model) == {nn.Conv1d, nn.BatchNorm1d}
    out = model(torch.randn(BATCH, *shape))
    assert out.logits.shape == (BATCH, 10)
    assert [tuple(out.features[f"stage{i}"].shape) for i in (1, 2, 3)] == [(BATCH, c, 40), (BATCH, 2 * c, 20), (BATCH, 4 * c, 10)]
    assert out.features["embedding"].shape == (BATCH, 4 * c)


@pytest.mark.parametrize("family", ["resnet", "wrn"])
def test_tiny_inputs_work(family):
    """8x8 digits and a length-1 signal: stride-2 stages shrink to 1 and stop there."""
    for shape, last in [((1, 8, 8), (2, 2)), ((1, 1), (1,))]:
        out = build(family, shape, num_classes=3)(torch.randn(BATCH, *shape))
        assert tuple(out.features["stage3"].shape[2:]) == last
        assert torch.isfinite(out.logits).all()


# --- behaviour ------------------------------------------------------------------


@pytest.mark.parametrize("family, kw", [("resnet", {}), ("wrn", {"dropout": 0.3})])
def test_eval_outputs_are_deterministic(family, kw):
    model = build(family, CIFAR, num_classes=10, **kw).eval()
    x = torch.randn(BATCH, *CIFAR)
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    for name in a.features:
        torch.testing.assert_close(a.features[name], b.features[name], rtol=0, atol=0)


def test_wrn_dropout_is_active_in_training_only():
    model = build("wrn", (1, 40), num_classes=10, dropout=0.5).train()
    x = torch.randn(BATCH, 1, 40)
    torch.manual_seed(0)
    a = model(x).logits
    torch.manual_seed(1)
    b = model(x).logits
    assert not torch.allclose(a, b)
    plain = build("wrn", (1, 40), num_classes=10, dropout=0.0).train()
    torch.testing.assert_close(plain(x).logits, plain(x).logits, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["resnet", "wrn"])
@pytest.mark.parametrize("shape", [(1, 40), (3, 16, 16)], ids=["1d", "2d"])
def test_backward_reaches_every_parameter(family, shape):
    kw = {"depth": 8} if family == "resnet" else {"depth": 10, "dropout": 0.2}
    model = build(family, shape, num_classes=5, width=2, **kw)
    out = model(torch.randn(BATCH, *shape))
    (out.logits.sum() + sum(f.sum() for f in out.features.values())).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_init_follows_repdistiller():
    model = build("wrn", CIFAR, depth=10, width=1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in bns)
    assert (model.fc.bias == 0).all()
    conv = model.block3.layer[0].conv1  # Kaiming fan_out: std sqrt(2 / (k * k * out))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.1)
