"""A user's text corpus for language modelling: the `corpus` dataset.

    data: {name: corpus, path: books.txt, max_len: 64}                 # one document per line
    data: {name: corpus, path: docs.jsonl, text_column: text}          # one JSON object per line
    data: {name: corpus, path: notes.txt, documents: paragraphs}       # documents split by blank lines

Documents are tokenized (a byte-level BPE trained on the training documents, or the user's
`tokenizer_path`, a Hugging Face folder or tokenizer.json), joined into one stream with the
tokenizer's end-of-text id after each (GPT-2's <|endoftext|>; kdx's trained tokenizers use
[SEP]), and cut into blocks of `max_len` ids that overlap by one: block i is
stream[i (L - 1) : i (L - 1) + L], so every id after the first is predicted exactly once (the
last position of a block predicts nothing: the next block predicts its id). No block is padded;
the stream's tail shorter than a block is left out. The test split is a seeded `test_fraction`
of the documents (or `test_path`), so no document is in both.

A source like this has no known floor: its reports carry none (distill/datasets/hmm.py's hmm has one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..cache import fingerprint
from . import IGNORE, Arrays, TokenInfo, register_dataset
from ..errors import ConfigError, DataError, check
from ..text import decode_file, file_stamp, load_tokenizer, test_split, train_tokenizer, user_tokenizer

__all__ = ["CorpusOptions", "read_documents", "pack"]

SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class CorpusOptions:
    path: str = ""  # required: the training corpus (a default so that leaving it out is a one-line error)
    test_path: str | None = None  # none: a seeded test_fraction of the documents is the test split
    test_fraction: float = 0.1
    documents: Literal["lines", "paragraphs"] = "lines"  # a .txt's documents: one per line, or blocks between blank lines
    text_column: str = "text"  # a .jsonl's
    tokenizer: Literal["bpe", "wordpiece"] = "bpe"  # byte-level BPE: no text is [UNK]; ignored with tokenizer_path
    vocab_size: int = 2000
    lowercase: bool = False  # a language model predicts case too
    tokenizer_path: str | None = None  # a local Hugging Face tokenizer folder or a tokenizer.json, used instead of training one
    max_len: int = 64  # ids per block: the model's context

    def __post_init__(self) -> None:
        check(bool(self.path), "path", f"name the training corpus ({', '.join(SUFFIXES)})")
        for key in ("path", "test_path"):
            value = getattr(self, key)
            if value:
                check(Path(value).suffix.lower() in SUFFIXES, key, f"'{value}' is not .txt or .jsonl (kdx reads the format from the suffix)")
        check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        check(self.max_len >= 2, "max_len", f"must be >= 2: a language model reads one token and predicts the next, got {self.max_len}")
        check(self.vocab_size >= 16, "vocab_size", f"must be >= 16, got {self.vocab_size}")


def read_documents(path: str | Path, key: str, opts: CorpusOptions) -> list[str]:
    """The non-empty documents of one file; a file that is not there, not UTF-8, a JSONL line that is not
    an object with a text field, or no documents at all, is a one-line DataError naming `key`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: no such file '{path}'")
    text = decode_file(path, key)
    if path.suffix.lower() == ".jsonl":
        docs = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{key}: {path} line {n}: not JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(opts.text_column), str):
                raise DataError(f"{key}: {path} line {n}: expected an object with a string '{opts.text_column}' field; set data.text_column")
            docs.append(obj[opts.text_column])
    elif opts.documents == "paragraphs":
        docs = [block.strip("\n") for block in text.replace("\r\n", "\n").split("\n\n")]
    else:
        docs = text.replace("\r\n", "\n").split("\n")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise DataError(f"{key}: {path} is empty (no text)")
    return docs


def pack(docs: list[list[int]], eos: int, length: int) -> np.ndarray:
    """Documents' ids joined with `eos` after each, cut into (N, length) blocks overlapping by one id."""
    stream = np.fromiter((i for d in docs for i in (*d, eos)), dtype=np.int64)
    starts = range(0, len(stream) - length + 1, length - 1)
    return np.stack([stream[s : s + length] for s in starts]) if len(starts) else np.zeros((0, length), dtype=np.int64)


def _labels(blocks: np.ndarray) -> np.ndarray:
    y = np.full(blocks.shape, IGNORE, dtype=np.int64)
    y[:, :-1] = blocks[:, 1:]
    return y


def _blocks(tok: Any, eos: int, docs: list[str], key: str, path: str, length: int) -> np.ndarray:
    ids = tok(docs, add_special_tokens=False)["input_ids"]
    n = sum(len(d) + 1 for d in ids)
    blocks = pack(ids, eos, length)
    if not len(blocks):
        raise DataError(f"{key}: {path} is {n} tokens after tokenization (end-of-text ids included), fewer than one block of "
                        f"data.max_len {length}: add text or lower data.max_len")
    return blocks


@register_dataset("corpus", CorpusOptions, task="lm")
def corpus(opts: CorpusOptions, seed: int) -> Arrays:
    train = read_documents(opts.path, "data.path", opts)
    if opts.test_path:
        test = read_documents(opts.test_path, "data.test_path", opts)
    else:
        if len(train) < 2:
            raise DataError(f"data.path: {opts.path} holds one document: too few to split off a test set by documents "
                            "(set data.test_path, or documents: paragraphs for a .txt split by blank lines)")
        keep, held = test_split(len(train), opts.test_fraction, [seed, 13])
        train, test = [train[i] for i in sorted(keep)], [train[i] for i in sorted(held)]
    given = Path(opts.tokenizer_path) if opts.tokenizer_path else None
    folder = user_tokenizer(given, opts.max_len) if given else train_tokenizer(train, opts, lm=True)
    tok = load_tokenizer(folder, given)
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
    if eos is None:
        raise ConfigError(f"data.tokenizer_path: the tokenizer in '{given}' has no end-of-text token (eos_token), which kdx puts "
                          "between documents; add one (tok.add_special_tokens({'eos_token': '</s>'})) or use a tokenizer that has one")
    x_train = _blocks(tok, eos, train, "data.path", opts.path, opts.max_len)
    x_test = _blocks(tok, eos, test, "data.test_path" if opts.test_path else "data.path (its test documents)", opts.test_path or opts.path, opts.max_len)
    stamps = [file_stamp(Path(p)) for p in (opts.path, opts.test_path, opts.tokenizer_path) if p]
    info = TokenInfo(vocab_size=len(tok), pad_id=int(tok.pad_token_id), max_len=opts.max_len, tokenizer=str(Path(folder).resolve()),
                     samples=len(x_train) + len(x_test), task="lm")
    return Arrays(x_train, _labels(x_train), x_test, _labels(x_test), identity=fingerprint(stamps), tokens=info)
