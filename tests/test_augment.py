"""distill.augment: pad-crop-flip views that replay exactly, noise, mixup, cutmix (CPU, seeded)."""

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.augment import AugmentConfig, Augmenter, Batch, View, apply_view, spatial_axes
from distill.errors import ConfigError, InvalidValue
from distill.parsing import parse_dataclass

SHAPES = [(3, 8, 8), (2, 12), (12,)]  # (C, H, W), (C, L), flat (D,)


def _x(shape, n=6, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


# --- config --------------------------------------------------------------------


def test_inactive_config_is_the_identity():
    x, y = _x((3, 8, 8)), torch.arange(6)
    b = Augmenter(AugmentConfig(), seed=0)(x, y)
    assert isinstance(b, Batch) and b.x is x and b.y is y
    assert b.y_mixed is None and b.lam == 1.0 and b.view is None


@pytest.mark.parametrize("cfg, active, replayable", [
    (AugmentConfig(), False, True),
    (AugmentConfig(crop=4), True, True),
    (AugmentConfig(flip=True), True, True),
    (AugmentConfig(crop=2, flip=True), True, True),
    (AugmentConfig(noise=0.1), True, False),
    (AugmentConfig(mixup=0.2), True, False),
    (AugmentConfig(crop=4, flip=True, cutmix=1.0), True, False),
])
def test_active_and_replayable(cfg, active, replayable):
    assert cfg.active is active and cfg.replayable is replayable
    assert AugmentConfig(**cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == {"crop", "flip", "noise", "mixup", "cutmix"}


@pytest.mark.parametrize("key, value", [("crop", -1), ("noise", -0.1), ("mixup", -1.0), ("cutmix", -0.5), ("noise", float("nan"))])
def test_bad_values_name_their_key(key, value):
    with pytest.raises(InvalidValue) as e:
        AugmentConfig(**{key: value})
    assert e.value.key == key
    with pytest.raises(ConfigError, match=rf"data\.augment\.{key}: must be"):
        parse_dataclass(AugmentConfig, {key: value}, "data.augment")


def test_spatial_axes():
    assert [spatial_axes(s) for s in SHAPES] == [2, 1, 1]
    for bad in [(), (1, 2, 3, 4)]:
        with pytest.raises(ValueError):
            spatial_axes(bad)


# --- apply_view ----------------------------------------------------------------


def _manual(x, offsets, flips, crop):
    """Pad-then-slice, one sample at a time."""
    h = x.unsqueeze(1) if x.ndim == 2 else x
    size = h.shape[2:]
    padded = F.pad(h, (crop, crop) * len(size))
    out = []
    for p, off, flip in zip(padded, offsets, flips):
        window = p[(slice(None), *(slice(o, o + n) for o, n in zip(off, size)))]
        out.append(window.flip(-1) if flip else window)
    out = torch.stack(out)
    return out.squeeze(1) if x.ndim == 2 else out


@pytest.mark.parametrize("shape", SHAPES)
def test_apply_view_is_pad_then_slice(shape):
    crop, x = 3, _x(shape, n=4)
    s = spatial_axes(shape)
    offsets = torch.tensor([[0, 6], [3, 3], [6, 0], [1, 5]])[:, :s]  # both ends of [0, 2*crop] and between
    flips = torch.tensor([False, True, False, True])
    for f in (torch.zeros(4, dtype=torch.bool), flips):
        out = apply_view(x, View(offsets, f), crop)
        assert out.shape == x.shape
        assert torch.equal(out, _manual(x, offsets.tolist(), f.tolist(), crop))
    # the centre window is the input; a shift brings in zeros
    assert torch.equal(apply_view(x, View(torch.full((4, s), crop), torch.zeros(4, dtype=torch.bool)), crop), x)
    assert (apply_view(x, View(torch.zeros(4, s, dtype=torch.long), torch.zeros(4, dtype=torch.bool)), crop)[..., 0] == 0).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_flip_reverses_the_last_axis(shape):
    x = _x(shape, n=3)
    flips = torch.tensor([True, False, True])
    out = apply_view(x, View(torch.zeros(3, spatial_axes(shape), dtype=torch.long), flips), 0)
    assert torch.equal(out[flips], x[flips].flip(-1)) and torch.equal(out[~flips], x[~flips])
    unflipped = View(torch.zeros(3, spatial_axes(shape), dtype=torch.long), torch.zeros(3, dtype=torch.bool))
    assert apply_view(x, unflipped, 0) is x


def test_apply_view_rejects_a_view_of_another_shape():
    x = _x((3, 8, 8), n=4)
    with pytest.raises(ValueError):
        apply_view(x, View(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, dtype=torch.bool)), 2)
    with pytest.raises(ValueError):
        View(torch.zeros(4, 2, dtype=torch.long), torch.zeros(3, dtype=torch.bool))


# --- Augmenter: views -------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_crop_flip_batch_replays_bit_for_bit(shape):
    """What the teacher-views cache relies on: the batch is apply_view of a view drawn alone."""
    cfg, x, y = AugmentConfig(crop=4, flip=True), _x(shape, n=16), torch.arange(16)
    live, replay = Augmenter(cfg, seed=11), Augmenter(cfg, seed=11)
    for _ in range(3):
        b = live(x, y)
        view = replay.draw_view(16, shape)
        assert torch.equal(b.x, apply_view(x, view, cfg.crop))
        assert torch.equal(b.view.offsets, view.offsets) and torch.equal(b.view.flip, view.flip)
        assert b.y is y and b.y_mixed is None and b.lam == 1.0
        idx = torch.tensor([5, 0, 9])  # a stored view replays on any subset of its samples
        assert torch.equal(apply_view(x[idx], view.index(idx), cfg.crop), b.x[idx])
        assert torch.equal(apply_view(x[2:7], view.index(slice(2, 7)), cfg.crop), b.x[2:7])


def test_same_seed_same_batches_other_seed_others():
    cfg, x, y = AugmentConfig(crop=2, flip=True, noise=0.1, mixup=0.4, cutmix=1.0), _x((3, 8, 8), n=8), torch.arange(8)

    def run(seed):
        a = Augmenter(cfg, seed)
        return [a(x, y) for _ in range(4)]

    first, again, other = run(0), run(0), run(1)
    for b, c in zip(first, again):
        assert torch.equal(b.x, c.x) and torch.equal(b.y_mixed, c.y_mixed) and b.lam == c.lam
    assert not all(torch.equal(b.x, c.x) for b, c in zip(first, other))


@pytest.mark.parametrize("shape", SHAPES)
def test_offsets_cover_the_range_and_flips_are_fair(shape):
    crop, n = 3, 20_000
    view = Augmenter(AugmentConfig(crop=crop, flip=True), seed=3).draw_view(n, shape)
    assert view.offsets.shape == (n, spatial_axes(shape)) and view.offsets.dtype == torch.int64
    for axis in view.offsets.unbind(1):
        assert axis.min() == 0 and axis.max() == 2 * crop
        assert torch.bincount(axis).min() > n / (2 * crop + 1) * 0.9  # every offset, about equally often
    assert view.flip.dtype == torch.bool and abs(view.flip.float().mean().item() - 0.5) < 0.02
    plain = Augmenter(AugmentConfig(crop=crop), seed=3).draw_view(100, shape)
    assert not plain.flip.any()


# --- Augmenter: noise and mixing ----------------------------------------------------


def test_noise_std():
    x = torch.zeros(64, 3, 16, 16)
    b = Augmenter(AugmentConfig(noise=0.3), seed=0)(x, torch.zeros(64, dtype=torch.long))
    assert abs(b.x.std().item() - 0.3) < 0.006 and abs(b.x.mean().item()) < 0.006
    assert b.y_mixed is None and b.lam == 1.0 and (x == 0).all()


def _perm(b: Batch, y: torch.Tensor) -> torch.Tensor:
    """The pairing, read back from y_mixed (labels are distinct: y = arange)."""
    assert torch.equal(b.y, y) and torch.equal(b.y_mixed.sort().values, y)
    return b.y_mixed


@pytest.mark.parametrize("shape", SHAPES)
def test_mixup_is_the_convex_combination(shape):
    x, y = _x(shape, n=10), torch.arange(10)
    a = Augmenter(AugmentConfig(mixup=0.4), seed=5)
    lams = []
    for _ in range(5):
        b = a(x, y)
        perm = _perm(b, y)
        assert 0.0 <= b.lam <= 1.0 and isinstance(b.lam, float)
        torch.testing.assert_close(b.x, b.lam * x + (1 - b.lam) * x[perm], rtol=0, atol=1e-6)
        lams.append(b.lam)
    assert len(set(lams)) == 5


@pytest.mark.parametrize("shape", SHAPES)
def test_cutmix_pastes_one_box_of_one_minus_lam(shape):
    x, y = _x(shape, n=10), torch.arange(10)
    before = x.clone()
    a = Augmenter(AugmentConfig(cutmix=1.0), seed=2)
    size = shape[-spatial_axes(shape):]
    mixed = 0
    for _ in range(20):
        b = a(x, y)
        assert torch.equal(x, before)  # the caller's tensor is not written
        perm = _perm(b, y)
        assert 0.0 <= b.lam <= 1.0
        area = round((1 - b.lam) * math.prod(size))
        assert math.isclose(1 - area / math.prod(size), b.lam, abs_tol=1e-12)  # lam is a whole box
        pasted = b.x != x
        moved = perm != torch.arange(10)  # a sample paired with itself changes nothing
        per_sample = pasted.flatten(1).sum(1)
        assert (per_sample[moved] == area * math.prod(shape) // math.prod(size)).all()
        assert (per_sample[~moved] == 0).all()
        assert torch.equal(b.x[pasted], x[perm][pasted])
        if len(size) == 2 and area:  # a box: the pasted mask is rows x columns
            m = pasted[moved][0, 0]
            assert torch.equal(m, m.any(1)[:, None] & m.any(0)[None, :])
        mixed += b.lam < 1
    assert mixed > 10


def test_mixing_never_writes_the_callers_tensor():
    """Also when the drawn view is the identity (crop 0, no sample flipped) and apply_view returns x itself."""
    for shape in SHAPES:
        x = _x(shape, n=2)
        before = x.clone()
        a = Augmenter(AugmentConfig(flip=True, cutmix=1.0), seed=0)
        for _ in range(20):
            a(x, torch.arange(2))
        assert torch.equal(x, before)


def test_with_both_each_batch_picks_one():
    x, y = _x((2, 12), n=8), torch.arange(8)
    a = Augmenter(AugmentConfig(mixup=1.0, cutmix=1.0), seed=0)
    kinds = []
    for _ in range(100):
        b = a(x, y)
        kept = (b.x == x).flatten(1).float().mean(1)[_perm(b, y) != torch.arange(8)]
        if b.lam in (0.0, 1.0) or not len(kept):
            continue
        kinds.append(bool((kept > 0).all()))  # cutmix leaves the unpasted values exactly as they were
    assert 0.3 < sum(kinds) / len(kinds) < 0.7


def test_inputs_on_another_device_are_refused():
    a = Augmenter(AugmentConfig(crop=1), seed=0, device="cpu")
    assert a.device == a.generator.device == torch.device("cpu")
    x = _x((3, 4, 4)).to("meta")
    with pytest.raises(ValueError, match="augmenter draws on cpu"):
        a(x, torch.arange(6))


# --- boundary ---------------------------------------------------------------------


def test_imports_no_ray_optuna_or_mlflow():
    root = Path(__file__).resolve().parents[1] / "distill"
    for name in ("augment.py", "errors.py"):
        tree = ast.parse((root / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
        assert not imported & {"ray", "optuna", "mlflow"}, (name, imported)
    relative = {n.module for n in ast.walk(ast.parse((root / "augment.py").read_text())) if isinstance(n, ast.ImportFrom) and n.level}
    assert relative == {"errors"}
