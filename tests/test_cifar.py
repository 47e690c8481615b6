"""distill/datasets/cifar.py: CIFAR-10/100 from the binary version, never the pickle: layout,
labels, normalisation, the archive read in place, and the refusals."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import SPLITS, data, object_array, one_line_error

# --- CIFAR, binary version ---------------------------------------------------------------------------

CIFAR = {  # folder, archive, train files, test files, label bytes
    "cifar10": ("cifar-10-batches-bin", "cifar-10-binary.tar.gz", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1),
    "cifar100": ("cifar-100-binary", "cifar-100-binary.tar.gz", ["train.bin"], ["test.bin"], 2),
}
PER_FILE = 4  # records per training file (cifar10: 5 files; cifar100: one file of 5 * PER_FILE)
N_TRAIN, N_TEST = 5 * PER_FILE, 3


def image(red: int) -> np.ndarray:
    """(3, 32, 32) uint8: red = `red` everywhere, green = 100 + row, blue = 200 + column."""
    img = np.empty((3, 32, 32), np.uint8)
    img[0] = red
    img[1] = 100 + np.arange(32)[:, None]
    img[2] = 200 + np.arange(32)[None, :]
    return img


def fine_label(red: int) -> int:
    return (red * 37 + 11) % 100


def labels(which: str, red: int) -> list[int]:
    """The label byte(s) of the image whose red value is `red`: cifar10 one label; cifar100 coarse != fine, then fine."""
    if which == "cifar10":
        return [red % 10]
    fine = fine_label(red)
    return [(fine + 1) % 20, fine]


def expected_label(which: str, red: int) -> int:
    return labels(which, red)[-1]


def records(which: str, reds) -> bytes:
    # the layout by hand: label byte(s), then the 1024 red values, the green, the blue, each row-major
    return b"".join(bytes(labels(which, r)) + image(r).tobytes() for r in reds)


TRAIN_REDS = list(range(N_TRAIN))  # training image i has red = i
TEST_REDS = [50 + j for j in range(N_TEST)]


def write_cifar(root: Path, which: str = "cifar10") -> Path:
    folder, _, train, test, _ = CIFAR[which]
    out = root / folder
    out.mkdir(parents=True)
    per = N_TRAIN // len(train)
    for k, name in enumerate(train):
        (out / name).write_bytes(records(which, TRAIN_REDS[k * per : (k + 1) * per]))
    (out / test[0]).write_bytes(records(which, TEST_REDS))
    return out


def write_cifar_archive(root: Path, staging: Path, which: str = "cifar10") -> Path:
    folder = write_cifar(staging, which)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR[which][1]
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def train_stats() -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of all training images (train + val), scaled to [0, 1]."""
    raw = np.stack([image(r) for r in TRAIN_REDS]).astype(np.float64) / 255.0
    return raw.mean(axis=(0, 2, 3)).reshape(1, 3, 1, 1), raw.std(axis=(0, 2, 3)).reshape(1, 3, 1, 1)


def unnormalise(x: torch.Tensor) -> np.ndarray:
    mean, std = train_stats()
    return x.double().numpy() * std + mean


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_binary_folder_layout_labels_and_normalisation(tmp_path, which):
    write_cifar(tmp_path, which)
    d = data(name=which, root=str(tmp_path))
    assert d.input_shape == (3, 32, 32)
    for name in ("x_train", "x_val", "x_test"):
        x = getattr(d, name)
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32), name
    for name in ("y_train", "y_val", "y_test"):
        assert getattr(d, name).dtype == torch.int64, name
    assert len(d.y_train) + len(d.y_val) == N_TRAIN and len(d.y_val) == round(N_TRAIN * 0.1) and len(d.y_test) == N_TEST

    # every image, un-normalised with the training statistics, is its pixels / 255: red plane, green, blue, row-major
    for split, reds_expected in (("train", None), ("val", None), ("test", TEST_REDS)):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        pixels = unnormalise(x)
        reds = np.rint(pixels[:, 0, 0, 0] * 255).astype(int)
        for img, red, label in zip(pixels, reds, y.tolist()):
            np.testing.assert_allclose(img, image(red) / 255.0, atol=1e-5)
            assert label == expected_label(which, red), (split, red)  # the label byte of that very record
        if reds_expected is not None:
            assert reds.tolist() == reds_expected  # test records in file order
    # train and val together are the training records, each once
    seen = np.rint(np.concatenate([unnormalise(d.x_train), unnormalise(d.x_val)])[:, 0, 0, 0] * 255).astype(int)
    assert sorted(seen.tolist()) == TRAIN_REDS
    # normalised with train + val statistics: per channel mean 0, std 1 over train + val
    both = torch.cat([d.x_train, d.x_val]).double()
    assert torch.allclose(both.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(both.std(dim=(0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-4)
    if which == "cifar100":  # the fine label is used: the coarse labels all lie below 20, never equal to the fine
        fine = {fine_label(r) for r in TRAIN_REDS + TEST_REDS}
        assert d.num_classes == max(fine) + 1 and d.num_classes > 20
        assert set(torch.cat([d.y_train, d.y_val, d.y_test]).tolist()) == fine
    else:
        assert d.num_classes == 10


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_archive_gives_the_same_arrays_as_the_folder(tmp_path, which):
    write_cifar(tmp_path / "folder", which)
    archive = write_cifar_archive(tmp_path / "archive", tmp_path / "staging", which)
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]
    a, b = data(name=which, root=str(tmp_path / "folder")), data(name=which, root=str(tmp_path / "archive"))
    for name in SPLITS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.num_classes == b.num_classes


@pytest.mark.parametrize("which, pickled", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                            ("cifar10", "cifar-10-python.tar.gz")])
def test_cifar_python_version_is_refused_and_never_unpickled(tmp_path, which, pickled):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"data": object_array(marker)})
    if pickled.endswith(".tar.gz"):
        with tarfile.open(tmp_path / pickled, "w:gz") as tar:
            info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    else:
        (tmp_path / pickled).mkdir()
        (tmp_path / pickled / "data_batch_1").write_bytes(payload)
    msg = one_line_error(data, name=which, root=str(tmp_path), hide=tmp_path)
    assert "pickle" in msg and CIFAR[which][1] in msg and f"<tmp>/{pickled}" in msg
    assert not marker.exists()


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_empty_root_names_the_binary_archive(tmp_path, which):
    msg = one_line_error(data, name=which, root=str(tmp_path), hide=tmp_path)
    assert CIFAR[which][1] in msg and "<tmp>" in msg and "pickle" not in msg


def test_cifar_folder_missing_a_batch_names_it(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_5.bin").unlink()
    assert "data_batch_5.bin" in one_line_error(data, name="cifar10", root=str(tmp_path), hide=tmp_path)


@pytest.mark.parametrize("cut", [1, 3073 + 5])
def test_cifar_truncated_batch_is_a_clear_error(tmp_path, cut):
    folder = write_cifar(tmp_path)
    raw = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(raw[:-cut])
    msg = one_line_error(data, name="cifar10", root=str(tmp_path), hide=tmp_path)
    assert "not whole CIFAR records of 3073 bytes" in msg and str(len(raw) - cut) in msg


def test_cifar_truncated_batch_error_names_the_file(tmp_path):
    folder = write_cifar(tmp_path)
    raw = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(raw[:-1])
    assert "data_batch_3.bin" in one_line_error(data, name="cifar10", root=str(tmp_path), hide=tmp_path)
