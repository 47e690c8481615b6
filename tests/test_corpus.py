"""The `corpus` dataset (a user's text corpus for language modelling, distill/datasets/corpus.py): packing,
document splits, its tokenizer's end of text, a run and an export that load back with
`from_pretrained` (model and tokenizer), and one clear line for each kind of bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import data, one_line_error
from distill.datasets.corpus import pack
from distill.data import IGNORE

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in the old tall trees".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(4, 12))) for _ in range(n)]


def test_blocks_overlap_by_one_so_every_id_after_the_first_is_predicted_once():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    blocks = pack(docs, eos=1, length=4)
    stream = [5, 6, 7, 1, 8, 9, 1, 10, 11, 12, 13, 1]
    assert blocks.tolist() == [stream[0:4], stream[3:7], stream[6:10]]  # the tail [12, 13, 1] is shorter than a block: left out
    predicted = [b[t + 1] for b in blocks.tolist() for t in range(3)]
    assert predicted == stream[1:10]  # each once, in order
    assert pack([[5]], eos=1, length=4).shape == (0, 4)


def test_a_text_corpus_becomes_next_token_blocks_with_end_of_text_between_documents(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(sentences(200)) + "\n")
    d = data(name="corpus", path=str(tmp_path / "c.txt"), max_len=16, vocab_size=100)
    assert d.task == "lm" and d.tokens.max_len == 16 and d.tokens.floor is None and d.x_train.shape[1] == 16
    assert torch.equal(d.y_train[:, :-1], d.x_train[:, 1:]) and (d.y_train[:, -1] == IGNORE).all()  # nothing padded, only the last
    from distill.text import load_tokenizer

    tok = load_tokenizer(Path(d.tokens.tokenizer))
    eos = tok.eos_token_id
    assert eos is not None and eos != tok.pad_token_id
    assert int((d.x_train == eos).sum()) > 100  # one after every training document (packed: a few fall in the cut tail)
    assert tok("the cat sat")["input_ids"] == tok("the cat sat", add_special_tokens=False)["input_ids"]  # no [CLS] ... [SEP] wrapping
    assert tok.decode(tok("The Cat sat", add_special_tokens=False)["input_ids"]).strip() == "The Cat sat"  # case kept, bytes round-trip


def test_documents_split_whole_and_paragraphs_and_jsonl_read_alike(tmp_path):
    docs = sentences(60, seed=1)
    (tmp_path / "p.txt").write_text("\n\n".join(f"{a}\n{b}" for a, b in zip(docs[::2], docs[1::2])))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in docs))
    para = data(name="corpus", path=str(tmp_path / "p.txt"), documents="paragraphs", max_len=8, vocab_size=80)
    lines = data(name="corpus", path=str(tmp_path / "c.jsonl"), text_column="body", max_len=8, vocab_size=80)
    assert para.task == lines.task == "lm" and len(para.x_test) > 0 and len(lines.x_test) > 0
    from distill.datasets.corpus import CorpusOptions, read_documents

    opts = CorpusOptions(path=str(tmp_path / "p.txt"), documents="paragraphs")
    assert read_documents(tmp_path / "p.txt", "data.path", opts)[0] == f"{docs[0]}\n{docs[1]}"  # a paragraph keeps its lines


def test_bad_corpora_are_one_line_each(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "one.txt").write_text("just one document here\n")
    (tmp_path / "short.txt").write_text("a b\nc d\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    cases = [
        (dict(path=str(tmp_path / "missing.txt")), "data.path: no such file"),
        (dict(path=str(tmp_path / "empty.txt")), "data.path: <tmp>/empty.txt is empty (no text)"),
        (dict(path=str(tmp_path / "one.txt")), "holds one document: too few to split off a test set"),
        (dict(path=str(tmp_path / "short.txt"), test_path=str(tmp_path / "short.txt"), max_len=64, vocab_size=40),
         "tokens after tokenization (end-of-text ids included), fewer than one block of data.max_len 64"),
        (dict(path=str(tmp_path / "bad.jsonl")), "line 2: expected an object with a string 'text' field; set data.text_column"),
        (dict(path=str(tmp_path / "c.csv")), "not .txt or .jsonl"),
        (dict(path=str(tmp_path / "one.txt"), max_len=1), "data.max_len: must be >= 2"),
    ]
    for kw, want in cases:
        assert want in one_line_error(data, name="corpus", hide=tmp_path, **kw), kw


def test_a_tokenizer_without_an_end_of_text_token_is_refused_in_one_line(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(sorted(set(WORDS)))}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "c.txt").write_text("\n".join(sentences(20)))
    msg = one_line_error(data, name="corpus", path=str(tmp_path / "c.txt"), tokenizer_path=str(tmp_path / "tokenizer.json"), hide=tmp_path)
    assert msg.startswith("data.tokenizer_path: ") and "no end-of-text token (eos_token)" in msg


def test_a_student_trained_on_a_corpus_exports_with_its_tokenizer_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.config import RunConfig
    from distill.models.causal import save_causal_lm
    from distill.train import run

    (tmp_path / "c.txt").write_text("\n".join(sentences(300, seed=2)))
    config = RunConfig.from_dict({"data": {"name": "corpus", "path": str(tmp_path / "c.txt"), "max_len": 16, "vocab_size": 80},
                                  "student": {"family": "transformer", "dim": 16, "depth": 1, "heads": 2},
                                  "train": {"epochs": 2, "batch_size": 32, "lr": 0.003}, "mix": {"ce": 1.0}})
    from distill.data import load_data
    from distill.text import load_tokenizer

    d = load_data(config.data)
    r = run(config, d, None)
    assert r.test_loss < np.log(d.num_classes)  # it learned something about the words
    folder = save_causal_lm(r.model, tmp_path / "hf", d.tokens.pad_id, d.x_test[:4], tokenizer=load_tokenizer(Path(d.tokens.tokenizer)))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tok(["the cat"], return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids.shape[1] and isinstance(tok.decode(out[0]), str)
