"""The `text` dataset (a user's JSONL, CSV or Parquet files and their tokenizer) and
integer token ids from `.npy` arrays: round trips, the saved tokenizer, and one
clear line for each kind of bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import data, one_line_error
from distill.errors import ConfigError
from distill.models import TokenShape

TRAIN = [("the film was good", "pos"), ("a bad film", "neg"), ("good acting and a good plot", "pos"),
         ("bad bad bad", "neg"), ("what a good film", "pos"), ("the plot was bad", "neg")] * 3
LONG = " ".join(["good film"] * 20)  # longer than any max_len here: cut, and counted
TEST = [("a good film", "pos"), ("bad plot", "neg"), (LONG, "pos")]


def write(path: Path, rows: list, text: str = "text", label: str = "label") -> Path:
    records = [{text: t, label: y} for t, y in rows]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, [text, label])
            w.writeheader()
            w.writerows(records)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({text: [r[text] for r in records], label: [r[label] for r in records]}), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_round_trip(tmp_path, suffix):
    from transformers import AutoTokenizer

    train, test = write(tmp_path / f"train{suffix}", TRAIN), write(tmp_path / f"test{suffix}", TEST)
    d = data(name="text", path=str(train), test_path=str(test), max_len=8)
    tok = AutoTokenizer.from_pretrained(d.tokens.tokenizer)
    assert d.tokens.labels == ("neg", "pos")  # sorted names, kept for the run and the export
    assert d.y_test.tolist() == [1, 0, 1]  # the test file's order, names mapped
    assert d.x_train.dtype == d.x_test.dtype == torch.int64 and d.x_test.shape == (3, 8)
    assert isinstance(d.input_shape, TokenShape) and d.input_shape == (8,)
    assert d.input_shape.vocab == d.tokens.vocab_size == len(tok) and d.input_shape.pad_id == d.tokens.pad_id == tok.pad_token_id
    assert (d.x_test[:, 0] == tok.cls_token_id).all() and (d.x_train[:, 0] == tok.cls_token_id).all()
    short = d.x_test[0].tolist()  # [CLS] a good film [SEP], then the pad id to max_len
    assert short[:5] == [tok.cls_token_id, *tok("a good film", add_special_tokens=False)["input_ids"], tok.sep_token_id]
    assert short[5:] == [tok.pad_token_id] * 3
    assert d.x_test[2, -1] == tok.sep_token_id and tok.pad_token_id not in d.x_test[2].tolist()  # cut to max_len, [SEP] kept
    assert d.tokens.truncated == 1 and d.tokens.samples == len(TRAIN) + len(TEST)


def test_split_and_int_labels(tmp_path):
    """Without test_path a seeded fraction is the test split; integer labels stay as given (CSV ones too)."""
    rows = [(t, int(y == "pos")) for t, y in TRAIN]
    for suffix in (".jsonl", ".csv"):
        d = data(name="text", path=str(write(tmp_path / f"ints{suffix}", rows)), test_fraction=0.25)
        assert d.tokens.labels == () and d.num_classes == 2
        assert len(d.y_test) == round(len(rows) * 0.25) and len(d.y_train) + len(d.y_val) + len(d.y_test) == len(rows)
        assert d.x_test.shape[1] == 64 and d.tokens.truncated == 0


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_same_tokenizer_every_load(tmp_path, kind, monkeypatch):
    path = str(write(tmp_path / "train.jsonl", TRAIN))
    a, b = data(name="text", path=path, tokenizer=kind), data(name="text", path=path, tokenizer=kind)
    assert a.tokens.tokenizer == b.tokens.tokenizer and a.key == b.key
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    folder = Path(a.tokens.tokenizer)
    assert folder.parent.name == "tokenizers" and not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.") and p.is_dir()]
    if kind == "bpe":  # byte-level BPE trains to the same file in a fresh cache too (WordPiece: see distill/text.py)
        monkeypatch.setenv("KDX_CACHE", str(tmp_path / "fresh"))
        c = data(name="text", path=path, tokenizer=kind)
        assert c.tokens.tokenizer != a.tokens.tokenizer
        assert (Path(c.tokens.tokenizer) / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    other = data(name="text", path=path, tokenizer=kind, vocab_size=40)  # other options: another folder
    assert other.tokens.tokenizer != a.tokens.tokenizer


def test_tokenizer_folder_reloads(tmp_path):
    from transformers import AutoTokenizer

    d = data(name="text", path=str(write(tmp_path / "train.jsonl", TRAIN)), test_path=str(write(tmp_path / "test.jsonl", TEST)), max_len=8)
    tok = AutoTokenizer.from_pretrained(d.tokens.tokenizer, local_files_only=True)
    again = tok([t for t, _ in TEST], truncation=True, padding="max_length")["input_ids"]  # its model_max_length is max_len
    assert again == d.x_test.tolist()


def _user_tokenizer(pad: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = sorted({w for t, _ in TRAIN + TEST for w in t.split()})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] if pad else ["[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return tok, vocab


def test_tokenizer_path(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok, vocab = _user_tokenizer(pad=True)
    tok.save(str(tmp_path / "tokenizer.json"))
    folder = tmp_path / "mine"
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]").save_pretrained(folder)
    train, test = str(write(tmp_path / "train.jsonl", TRAIN)), str(write(tmp_path / "test.jsonl", TEST))
    want = [vocab["[CLS]"], vocab["a"], vocab["good"], vocab["film"], vocab["[SEP]"]] + [vocab["[PAD]"]] * 3
    for given in (folder, tmp_path / "tokenizer.json"):
        d = data(name="text", path=train, test_path=test, tokenizer_path=str(given), max_len=8)
        assert d.tokens.vocab_size == len(vocab) and d.tokens.pad_id == vocab["[PAD]"]
        assert d.x_test[0].tolist() == want and d.tokens.truncated == 1
    assert d.tokens.tokenizer != str(tmp_path / "tokenizer.json") and (Path(d.tokens.tokenizer) / "tokenizer_config.json").is_file()

    nopad, _ = _user_tokenizer(pad=False)
    nopad.save(str(tmp_path / "nopad.json"))
    msg = one_line_error(data, name="text", path=train, tokenizer_path=str(tmp_path / "nopad.json"))
    assert msg.startswith("data.tokenizer_path:") and "no pad token" in msg and "nopad.json" in msg
    msg = one_line_error(data, name="text", path=train, tokenizer_path=str(tmp_path / "absent"))
    assert msg.startswith("data.tokenizer_path:") and "absent" in msg


def test_int_arrays_stay_ints(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(1, 10, (20, 6))
    x[:, 4:] = 0  # padded tails
    for name, a in (("x_train", x[:16]), ("y_train", np.arange(16) % 2), ("x_test", x[16:]), ("y_test", np.arange(4) % 2)):
        np.save(tmp_path / f"{name}.npy", a)
    d = data(name="arrays", path=str(tmp_path), vocab_size=10)
    assert d.x_train.dtype == torch.int64 and torch.equal(d.x_test, torch.from_numpy(x[16:]))
    assert isinstance(d.input_shape, TokenShape) and d.input_shape.vocab == 10 and d.tokens.max_len == 6
    assert data(name="arrays", path=str(tmp_path)).x_train.dtype == torch.float32  # vocab_size 0: features, as before
    msg = one_line_error(data, name="arrays", path=str(tmp_path), vocab_size=5)
    assert "token id" in msg and "0..4" in msg and "x_train" in msg
    np.save(tmp_path / "x_test.npy", x[16:].astype(np.float32))
    assert "must be integers" in one_line_error(data, name="arrays", path=str(tmp_path), vocab_size=10)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, dict, tuple[str, ...]]]:
    """One file per kind of bad input: (file, extra options, words its one-line error holds)."""
    good = "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in TRAIN[:4])
    files = {
        "empty text": (good + '{"text": "  ", "label": "pos"}\n', {}, ("line 5", "'text' is empty")),
        "not utf-8": (good.encode() + b'{"text": "caf\xe9", "label": "pos"}\n', {}, ("line 5", "not UTF-8", "byte 0xe9", "offset")),
        "no text column": ('{"body": "hi", "label": "pos"}\n' + good, {}, ("line 1", "no 'text' field", "'body', 'label'", "text_column")),
        "no label column": (good.replace('"label"', '"y"'), {}, ("line 1", "no 'label' field", "'text', 'y'", "label_column")),
        "label missing": (good + '{"text": "fine", "label": null}\n', {}, ("line 5", "no label")),
        "text not a string": (good + '{"text": 7, "label": "pos"}\n', {}, ("line 5", "not a string")),
        "not json": (good + "{oops\n", {}, ("line 5", "not JSON")),
        "empty file": ("", {}, ("is empty",)),
        "unseen test label": (good, {"test_path": "test.jsonl"}, ("test.jsonl line 1", "'meh' never occurs", "neg, pos")),
    }
    out = {}
    for i, (kind, (content, extra, words)) in enumerate(files.items()):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        out[kind] = (path, extra, words)
    (tmp_path / "test.jsonl").write_text(json.dumps({"text": "so so", "label": "meh"}) + "\n")
    return out


def test_bad_input_is_one_line(tmp_path):
    for kind, (path, extra, words) in _bad_files(tmp_path).items():
        extra = {k: str(tmp_path / v) for k, v in extra.items()}
        msg = one_line_error(data, name="text", path=str(path), **extra)
        assert str(path.name) in msg or "test.jsonl" in msg, (kind, msg)
        assert all(w in msg for w in words), (kind, msg)
    write(tmp_path / "cols.csv", TRAIN, text="body")
    msg = one_line_error(data, name="text", path=str(tmp_path / "cols.csv"))
    assert "cols.csv" in msg and "no column 'text'" in msg and "'body', 'label'" in msg
    write(tmp_path / "cols.parquet", TRAIN, label="y")
    assert "no column 'label'" in one_line_error(data, name="text", path=str(tmp_path / "cols.parquet"))
    assert "no such file" in one_line_error(data, name="text", path=str(tmp_path / "absent.jsonl"))
    with pytest.raises(ConfigError, match=r"data\.path: .*suffix"):
        data(name="text", path=str(tmp_path / "train.txt"))
    with pytest.raises(ConfigError, match=r"data\.path: name the training file"):
        data(name="text")


def test_cli_bad_data_one_line(tmp_path):
    """`kdx run` on a bad file: one line on stderr, a nonzero exit, no traceback (the error comes before any model)."""
    path = _bad_files(tmp_path)["not utf-8"][0]
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {{name: text, path: {path.name}}}\n"  # relative: taken from the config's folder
                   "teacher: {family: transformer, dim: 16, depth: 2, heads: 2}\n"
                   "student: {family: transformer, dim: 8, depth: 1, heads: 2}\ntrain: {epochs: 1}\n")
    kdx = Path(sys.executable).with_name("kdx")
    p = subprocess.run([str(kdx), "run", str(cfg)], cwd=tmp_path / "..", capture_output=True, text=True, timeout=120,
                       env={**os.environ, "KDX_CACHE": str(tmp_path / "cache")})
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("kdx: error: data.path:") and path.name in lines[0] and "not UTF-8" in lines[0]
