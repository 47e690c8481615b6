import os
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.config import DataConfig
from distill.data import load_data
from distill.datasets.hgmm import HGMMOptions, hgmm_centres
from distill.errors import ConfigError, DataError


def data(**kw):
    return load_data(DataConfig.parse(kw))


@pytest.mark.parametrize("spec", [{"name": "mnist1d", "num_samples": 600}, {"name": "digits"}, {"name": "hgmm", "classes": 20, "superclasses": 4}])
def test_splits_are_reproducible_and_disjoint(spec):
    a, b = data(**spec), data(**spec)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.x_train.shape[1:] == a.input_shape
    n_val = len(a.y_val)
    assert n_val == round((n_val + len(a.y_train)) * 0.1)
    # the validation split is carved from training data, never from test
    train_rows = {r.numpy().tobytes() for r in a.x_train}
    assert not any(r.numpy().tobytes() in train_rows for r in a.x_val)
    assert a.key == b.key


def test_data_seed_changes_the_split_and_key():
    a, b = data(name="digits", seed=0), data(name="digits", seed=1)
    assert a.key != b.key and not torch.equal(a.y_val, b.y_val)


def test_shapes_of_builtin_datasets():
    assert data(name="mnist1d", num_samples=600).input_shape == (1, 40)
    d = data(name="digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and float(d.x_train.max()) <= 1.0
    h = data(name="hgmm")
    assert h.input_shape == (64,) and h.num_classes == 100
    assert len(h.y_train) + len(h.y_val) == 100 * 20 and len(h.y_test) == 100 * 50


def test_mnist1d_cache_is_reused_and_rebuilt_when_damaged():
    folder = Path(os.environ["KDX_CACHE"]) / "data"
    first = data(name="mnist1d", num_samples=300, seed=7)
    files = sorted(folder.glob("mnist1d-*.npz"))
    assert files and all(f.with_name(f.name + ".sha256").exists() for f in files)
    target = [f for f in files if f.stat().st_mtime == max(g.stat().st_mtime for g in files)][0]
    stamp = target.stat().st_mtime_ns
    again = data(name="mnist1d", num_samples=300, seed=7)
    assert target.stat().st_mtime_ns == stamp  # read, not regenerated
    assert torch.equal(first.x_train, again.x_train)
    target.write_bytes(b"garbage")  # a damaged cache file fails its hash and is rebuilt
    rebuilt = data(name="mnist1d", num_samples=300, seed=7)
    assert torch.equal(first.x_train, rebuilt.x_train)
    assert not list(folder.glob(".*.tmp"))


def test_hgmm_classes_of_a_superclass_are_neighbours():
    opts = HGMMOptions()
    centres = hgmm_centres(opts, 0)
    per = opts.classes // opts.superclasses
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    same = np.repeat(np.arange(opts.superclasses), per)
    within = d[(same[:, None] == same[None]) & ~np.eye(len(d), dtype=bool)].mean()
    across = d[same[:, None] != same[None]].mean()
    assert within * 2.5 < across
    # and the samples follow: a class's nearest other class is in its superclass
    nearest = np.where(np.eye(len(d), dtype=bool), np.inf, d).argmin(1)
    assert (same[nearest] == same).mean() > 0.95


def test_hgmm_knobs_are_config_keys():
    h = data(name="hgmm", classes=12, superclasses=3, dim=8, noise=0.5, train_per_class=10, test_per_class=5)
    assert h.num_classes == 12 and h.input_shape == (8,) and len(h.y_test) == 60


def test_custom_dataset_function(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def make(n=50, seed=0):\n"
        "    r = np.random.default_rng(seed)\n"
        "    x = r.normal(size=(n, 3)).astype('float32'); y = (x[:, 0] > 0).astype(int)\n"
        "    return x, y, x[:10], y[:10]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    d = data(name="mydata:make", n=80)
    assert d.input_shape == (3,) and len(d.y_train) + len(d.y_val) == 80
    with pytest.raises(ConfigError, match="data: options do not fit mydata:make"):
        data(name="mydata:make", bogus=1)
    with pytest.raises(ConfigError, match="cannot import module 'nosuchmod'"):
        data(name="nosuchmod:make")
    with pytest.raises(ConfigError, match="has no 'nothing'"):
        data(name="mydata:nothing")


def test_cifar_without_files_is_a_clear_error(tmp_path):
    with pytest.raises((DataError, ConfigError)) as e:
        data(name="cifar10", root=str(tmp_path))
    msg = str(e.value)
    assert "no cifar10 files" in msg and "cifar-10-binary.tar.gz" in msg


def test_a_damaged_teacher_cache_is_rebuilt_not_trusted():
    from distill.config import RunConfig
    from distill.teacher import get_teacher

    c = RunConfig.from_dict({"data": {"name": "hgmm", "classes": 10, "superclasses": 2, "dim": 8},
                             "teacher": {"family": "mlp", "width": 16, "epochs": 2}})
    d = load_data(c.data)
    _, first = get_teacher(c, d, log=lambda s: None)
    assert get_teacher(c, d)[1].source == "cache"
    weights = Path(os.environ["KDX_CACHE"]) / "teachers" / f"{first.key}.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # same size, wrong bytes
    _, again = get_teacher(c, d, log=lambda s: None)
    assert again.source == "trained" and again.test_acc == first.test_acc  # retrained, deterministic
    assert get_teacher(c, d)[1].source == "cache"
