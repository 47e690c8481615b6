"""distill/datasets/arrays.py and distill/files.py: a user's .npy/.npz arrays, memory-mapped `Mapped` views, and
training on a mapped file under a memory cap; plus data.py's shifted_digits
(CIFAR: tests/test_cifar.py)."""

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import SPLITS, data, object_array, one_line_error

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.files import Mapped
from distill.train import run

# --- a user's arrays ----------------------------------------------------------------------------------


def make_arrays(n_train=60, n_test=20, shape=(3, 4, 4), seed=0, x_dtype=np.float64, y_dtype=np.int32) -> dict:
    r = np.random.default_rng(seed)
    return {"x_train": r.normal(size=(n_train, *shape)).astype(x_dtype), "y_train": r.integers(0, 5, n_train).astype(y_dtype),
            "x_test": r.normal(size=(n_test, *shape)).astype(x_dtype), "y_test": r.integers(0, 5, n_test).astype(y_dtype)}


def write_npy(folder: Path, arrays: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, a in arrays.items():
        np.save(folder / f"{k}.npy", a, allow_pickle=a.dtype.hasobject)
    return folder


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def test_arrays_from_npz_and_from_a_folder_of_npy_are_the_same(tmp_path):
    arrays = make_arrays()
    a = data(name="arrays", path=str(write_npz(tmp_path / "d.npz", arrays)))
    b = data(name="arrays", path=str(write_npy(tmp_path / "d", arrays)))
    assert a.input_shape == (3, 4, 4) and a.num_classes == 5
    assert len(a.y_train) + len(a.y_val) == 60 and len(a.y_val) == 6 and len(a.y_test) == 20
    for name in SPLITS:
        x, y = getattr(a, name), getattr(b, name)
        assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor), name  # small files: in memory
        assert torch.equal(x, y), name
        assert x.dtype == (torch.float32 if name.startswith("x") else torch.int64), name
    assert torch.equal(a.x_test, torch.from_numpy(arrays["x_test"].astype(np.float32)))
    assert torch.equal(a.y_test, torch.from_numpy(arrays["y_test"].astype(np.int64)))
    # train + val are the training rows, each once, with their own labels
    got = {row.numpy().tobytes(): int(y) for row, y in zip(torch.cat([a.x_train, a.x_val]), torch.cat([a.y_train, a.y_val]))}
    want = {row.astype(np.float32).tobytes(): int(y) for row, y in zip(arrays["x_train"], arrays["y_train"])}
    assert got == want


@pytest.mark.parametrize("form", ["npz", "npy"])
def test_arrays_missing_one_names_it(tmp_path, form):
    arrays = make_arrays()
    del arrays["y_test"]
    path = write_npz(tmp_path / "d.npz", arrays) if form == "npz" else write_npy(tmp_path / "d", arrays)
    assert "y_test" in one_line_error(data, name="arrays", path=str(path), hide=tmp_path)


def test_arrays_path_that_is_neither_folder_nor_npz(tmp_path):
    assert "<tmp>/missing" in one_line_error(data, name="arrays", path=str(tmp_path / "missing"), hide=tmp_path)
    with pytest.raises(ConfigError, match="mmap"):
        data(name="arrays", path=str(tmp_path), mmap="sometimes")


@pytest.mark.parametrize("form, which, mmap", [("npz", "x_train", "auto"), ("npz", "y_test", "auto"), ("npy", "x_train", "auto"),
                                               ("npy", "x_train", "never"), ("npy", "y_train", "always")])
def test_arrays_with_pickled_objects_are_refused_without_unpickling(tmp_path, form, which, mmap):
    marker = tmp_path / "unpickled"
    arrays = make_arrays(n_train=4, n_test=4)
    arrays[which] = object_array(marker)
    if form == "npz":
        path = tmp_path / "d.npz"
        np.savez(path, **arrays)  # savez pickles object arrays
    else:
        path = write_npy(tmp_path / "d", arrays)
    msg = one_line_error(data, name="arrays", path=str(path), mmap=mmap, hide=tmp_path)
    assert "pickle" in msg.lower() and ("<tmp>/d" in msg), msg
    assert not marker.exists()


def test_pickled_x_npy_under_mmap_always_says_pickle(tmp_path):
    marker = tmp_path / "unpickled"
    arrays = make_arrays(n_train=4, n_test=4)
    arrays["x_train"] = object_array(marker)
    msg = one_line_error(data, name="arrays", path=str(write_npy(tmp_path / "d", arrays)), mmap="always", hide=tmp_path)
    assert not marker.exists()  # refused all the same
    assert "pickle" in msg.lower()


@pytest.mark.parametrize("form", ["npz", "npy"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_arrays_x_and_y_of_different_lengths(tmp_path, form, split):
    arrays = make_arrays()
    arrays[f"y_{split}"] = arrays[f"y_{split}"][:-1]
    path = write_npz(tmp_path / "d.npz", arrays) if form == "npz" else write_npy(tmp_path / "d", arrays)
    n = len(arrays[f"x_{split}"])
    msg = one_line_error(data, name="arrays", path=str(path), mmap="always" if form == "npy" else "auto", hide=tmp_path)
    assert f"x_{split} has {n} samples, y_{split} {n - 1}" in msg


def test_mmap_always_gives_mapped_views_equal_to_memory(tmp_path):
    arrays = make_arrays(n_train=200, n_test=30, shape=(3, 8, 8))  # float64 on disk: read back as float32
    folder = write_npy(tmp_path / "d", arrays)
    m, mem = data(name="arrays", path=str(folder), mmap="always"), data(name="arrays", path=str(folder), mmap="never")
    for name in ("x_train", "x_val", "x_test"):
        x, ref = getattr(m, name), getattr(mem, name)
        assert isinstance(x, Mapped) and isinstance(ref, torch.Tensor), name
        assert len(x) == len(ref) and tuple(x.shape) == tuple(ref.shape), name
        for idx in (slice(None), slice(3, 11), slice(5, 5), torch.tensor([7, 0, 3, 3]), np.array([len(ref) - 1, 1])):
            got = x[idx]
            assert isinstance(got, torch.Tensor) and got.dtype == torch.float32, (name, idx)
            assert torch.equal(got, ref[torch.as_tensor(idx) if isinstance(idx, np.ndarray) else idx]), (name, idx)
    for name in ("y_train", "y_val", "y_test"):
        assert torch.equal(getattr(m, name), getattr(mem, name)), name
    # pickled as its path and rows: much smaller than its samples, and it reads the same back
    for x in (m.x_train, m.x_test):
        blob = pickle.dumps(x)
        assert len(blob) < x[:].numel() * 4 / 20, len(blob)
        back = pickle.loads(blob)
        assert isinstance(back, Mapped) and len(back) == len(x) and torch.equal(back[:], x[:])
    assert m.input_shape == mem.input_shape == (3, 8, 8)


def test_training_on_a_mapped_file_matches_training_in_memory(tmp_path):
    r = np.random.default_rng(1)
    centres = r.normal(size=(4, 16))
    y = r.integers(0, 4, 400)
    yt = r.integers(0, 4, 100)
    arrays = {"x_train": (centres[y] + r.normal(size=(400, 16))).astype(np.float32), "y_train": y,
              "x_test": (centres[yt] + r.normal(size=(100, 16))).astype(np.float32), "y_test": yt}
    folder = write_npy(tmp_path / "d", arrays)
    results = []
    for mmap in ("always", "never"):
        c = RunConfig.from_dict({"data": {"name": "arrays", "path": str(folder), "mmap": mmap}, "mix": {"ce": 1.0},
                                 "student": {"family": "mlp", "width": 16, "depth": 1},
                                 "train": {"epochs": 2, "batch_size": 64, "device": "cpu", "threads": 1}})
        results.append(run(c, load_data(c.data)))
    a, b = results
    assert a.val_acc == b.val_acc and a.test_acc == b.test_acc and a.val_acc > 0.5
    assert [e.train_loss for e in a.history] == pytest.approx([e.train_loss for e in b.history], rel=1e-6)


def test_key_follows_the_files(tmp_path):
    arrays = make_arrays()
    folder = write_npy(tmp_path / "d", arrays)
    key = data(name="arrays", path=str(folder)).key
    assert data(name="arrays", path=str(folder)).key == key  # untouched: the same key
    # rewritten with other values of the same size: a later mtime
    target = folder / "x_train.npy"
    before = target.stat()
    np.save(target, arrays["x_train"] + 1.0)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # as any later rewrite would be
    assert target.stat().st_size == before.st_size
    key2 = data(name="arrays", path=str(folder)).key
    assert key2 != key
    # rewritten with another size (the mtime put back): the size alone changes the key
    mtime = target.stat().st_mtime_ns
    np.save(target, arrays["x_train"][:, :2])
    os.utime(target, ns=(mtime, mtime))
    key3 = data(name="arrays", path=str(folder)).key
    assert key3 not in (key, key2)
    # an .npz likewise
    npz = write_npz(tmp_path / "d.npz", arrays)
    k = data(name="arrays", path=str(npz)).key
    st = npz.stat()
    write_npz(npz, {**arrays, "y_train": arrays["y_train"][::-1].copy()})
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert data(name="arrays", path=str(npz)).key != k


# --- a mapped dataset larger than a memory cap ----------------------------------------------------------

CAP_HEADROOM = 64 << 20  # private memory the capped process may still take; its run needs about 20 MB (measured)
N_BIG, DIM_BIG = 80_000, 512  # x_train.npy: 80k x 512 float32 = 164 MB, 2.5 times the headroom

CAPPED_CHILD = textwrap.dedent("""
    import resource, sys, time
    import numpy as np, torch
    import distill.files, distill.train
    from distill.config import RunConfig
    from distill.data import load_data
    from distill.files import Mapped
    from distill.train import run

    def vm(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    folder, headroom = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    def config(data):
        return RunConfig.from_dict({"data": data, "mix": {"ce": 1.0}, "student": {"family": "mlp", "width": 32, "depth": 1},
                                    "train": {"epochs": 1, "batch_size": 1024, "device": "cpu", "threads": 1}})
    # A tiny run first: the first optimizer imports torch._dynamo (about 65 MB), which is not what is measured here.
    warm = config({"name": "hgmm", "classes": 4, "superclasses": 2, "dim": 8, "train_per_class": 8, "test_per_class": 2})
    run(warm, load_data(warm.data))
    now = vm("VmData")
    cap = now + headroom
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    print(f"VmData {now >> 20} MB, cap {cap >> 20} MB", flush=True)
    try:  # the control: the file read into memory does not fit under the cap
        np.load(folder + "/x_train.npy")
        print("CONTROL LOADED")
    except MemoryError:
        print("control: MemoryError")
    c = config({"name": "arrays", "path": folder, "mmap": "always"})
    d = load_data(c.data)
    assert isinstance(d.x_train, Mapped), type(d.x_train)
    before = vm("VmData")
    d.x_train.array.sum(dtype=np.float64)  # maps the file and reads every page: no private memory
    print(f"mapping adds {(vm('VmData') - before) >> 20} MB VmData", flush=True)
    t = time.perf_counter()
    r = run(c, d)
    print(f"val_acc {r.val_acc:.4f} test_acc {r.test_acc:.4f} in {time.perf_counter() - t:.1f} s; "
          f"VmData after {vm('VmData') >> 20} MB, VmHWM {vm('VmHWM') >> 20} MB")
""")


def write_big(folder: Path) -> Path:
    folder.mkdir()
    r = np.random.default_rng(0)
    centres = r.normal(size=(10, DIM_BIG)).astype(np.float32)
    y = r.integers(0, 10, N_BIG)
    x = np.lib.format.open_memmap(folder / "x_train.npy", mode="w+", dtype=np.float32, shape=(N_BIG, DIM_BIG))
    for s in range(0, N_BIG, 10_000):
        x[s : s + 10_000] = centres[y[s : s + 10_000]] + r.standard_normal((len(y[s : s + 10_000]), DIM_BIG), dtype=np.float32)
    x.flush()
    del x
    np.save(folder / "y_train.npy", y)
    yt = r.integers(0, 10, 1000)
    np.save(folder / "x_test.npy", centres[yt] + r.standard_normal((1000, DIM_BIG), dtype=np.float32))
    np.save(folder / "y_test.npy", yt)
    return folder


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and RLIMIT_DATA (Linux)")
def test_mapped_dataset_larger_than_a_memory_cap_trains(tmp_path):
    folder = write_big(tmp_path / "big")
    size = (folder / "x_train.npy").stat().st_size
    assert size > 2 * CAP_HEADROOM
    p = subprocess.run([sys.executable, "-c", CAPPED_CHILD, str(folder), str(CAP_HEADROOM)],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "control: MemoryError" in out, out  # the cap binds: the file does not fit under it
    assert "mapping adds 0 MB VmData" in out, out  # a read-only file mapping is not private memory
    acc = float(out.split("val_acc ")[1].split()[0])
    assert acc > 0.5, out  # 10 separable classes: it learned from the batches it read


# --- shifted_digits ----------------------------------------------------------------------------------------


def placements(d, canvas: int) -> dict[bytes, tuple[int, int]]:
    """Where each sample's digit lies: {digit bytes: (top, left)}, checking that the canvas is zero elsewhere,
    that the window is one of sklearn's digits / 16 with the sample's label, and that every digit appears once."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    originals = (digits.data / 16.0).astype(np.float32).reshape(-1, 8, 8)
    label_of = {}
    for img, y in zip(originals, digits.target):
        label_of.setdefault(img.tobytes(), set()).add(int(y))
    x = torch.cat([d.x_train, d.x_val, d.x_test]).numpy()
    y = torch.cat([d.y_train, d.y_val, d.y_test]).numpy()
    assert x.shape == (len(originals), 1, canvas, canvas) and x.dtype == np.float32
    x = x[:, 0]
    nonzero = np.count_nonzero(x, axis=(1, 2))
    found: list[tuple[int, int] | None] = [None] * len(x)
    for top in range(canvas - 7):
        for left in range(canvas - 7):
            window = x[:, top : top + 8, left : left + 8]
            inside = np.where(np.count_nonzero(window, axis=(1, 2)) == nonzero)[0]  # nothing outside the window
            for i in inside:
                if found[i] is None and int(y[i]) in label_of.get(window[i].tobytes(), ()):
                    found[i] = (top, left)
    assert all(f is not None for f in found), sum(f is None for f in found)
    windows = [x[i, t : t + 8, l : l + 8].tobytes() for i, (t, l) in enumerate(found)]
    assert sorted(windows) == sorted(img.tobytes() for img in originals)  # each digit once (copies: 1)
    return dict(zip(windows, found))


def test_shifted_digits_paste_each_digit_in_one_window():
    canvas = 14
    a = data(name="shifted_digits", canvas=canvas, noise=0.0, seed=0)
    assert a.input_shape == (1, canvas, canvas) and a.num_classes == 10
    for name in ("x_train", "x_val", "x_test"):
        assert getattr(a, name).shape[1:] == (1, canvas, canvas), name
    pa = placements(a, canvas)
    offsets = set(pa.values())
    assert len(offsets) > 0.8 * (canvas - 7) ** 2  # the placements cover the canvas
    pb = placements(data(name="shifted_digits", canvas=canvas, noise=0.0, seed=1), canvas)
    same = sum(pa[k] == pb[k] for k in pa)
    assert same < 0.2 * len(pa), same  # another seed, other places (chance: 1 in 49)
    again = placements(data(name="shifted_digits", canvas=canvas, noise=0.0, seed=0), canvas)
    assert again == pa


def test_shifted_digits_noise_and_copies():
    one = data(name="shifted_digits", noise=0.1)
    assert one.input_shape == (1, 16, 16)
    x = one.x_train.numpy()
    negative = x[x < 0]  # the background and the digits' blank pixels: half of N(0, 0.1) each; digit strokes are > 0
    assert 0.3 < negative.size / x.size < 0.5
    assert -0.1 < float(negative.mean()) < -0.06  # -0.1 * sqrt(2 / pi) = -0.080 for a half-normal
    two = data(name="shifted_digits", copies=2, noise=0.1)
    assert len(two.y_train) + len(two.y_val) == 2 * (len(one.y_train) + len(one.y_val))
    assert len(two.y_test) == 2 * len(one.y_test)
