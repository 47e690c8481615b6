"""Unlabelled text for a sentence encoder: the `sentences` dataset (the embed task).

A `.txt` with a sentence or passage per line (or per blank-line-separated block with
`documents: paragraphs`), or a `.jsonl` with a text column, split into train and test by line
with the data seed (`load_data` then carves validation out of train), tokenized as the `text`
dataset is: a WordPiece or BPE tokenizer trained on the training split, or `tokenizer_path`
(a sentence-transformers teacher's own folder, so teacher and student read the same ids).
Every sample is [CLS] ... [SEP], padded to `max_len`.

There are no labels: the task scores a model against its teacher's embeddings
(distill/tasks/embed.py). `pairs:` adds a labelled similarity set (STS-style: two texts and a
human score per row, `.csv`, `.tsv` or `.jsonl`), tokenized alike and never trained on: the gold
Spearman of a model's cosine similarities against its scores (`test_gold_spearman`). kdx does not
check that its texts are absent from the training lines; a gold set drawn from them measures less.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..cache import fingerprint
from ..errors import DataError, check
from ..text import SPECIALS, decode_file, encode, file_stamp, load_tokenizer, test_split, train_tokenizer, user_tokenizer
from . import Arrays, Pairs, TokenInfo, register_dataset
from .corpus import SUFFIXES, read_documents

__all__ = ["SentencesOptions", "read_pairs"]

PAIR_SUFFIXES = (".csv", ".tsv", ".jsonl")
MIN_PAIRS = 3  # Spearman's rho of two numbers is always +-1


@dataclass(frozen=True)
class SentencesOptions:
    path: str = ""  # required: the text (a default so that leaving it out is a one-line error)
    test_fraction: float = 0.2
    documents: Literal["lines", "paragraphs"] = "lines"  # a .txt's samples: one per line, or blocks between blank lines
    text_column: str = "text"  # a .jsonl's
    tokenizer: Literal["wordpiece", "bpe"] = "wordpiece"  # trained on the training split; ignored with tokenizer_path
    vocab_size: int = 2000
    lowercase: bool = True
    tokenizer_path: str | None = None  # a local Hugging Face tokenizer folder (a sentence-transformers model's) or a tokenizer.json
    max_len: int = 32  # ids per sample, [CLS] and [SEP] included; longer samples are cut and counted
    pairs: str | None = None  # a gold similarity set (.csv, .tsv, .jsonl) scored on test; none: no gold score
    pair_columns: list[str] = field(default_factory=lambda: ["text1", "text2", "score"])  # its two texts' and its score's columns

    def __post_init__(self) -> None:
        check(bool(self.path), "path", f"name the text file ({', '.join(SUFFIXES)})")
        check(Path(self.path).suffix.lower() in SUFFIXES, "path", f"'{self.path}' is not .txt or .jsonl (kdx reads the format from the suffix)")
        check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        check(self.vocab_size >= 2 * len(SPECIALS), "vocab_size", f"must be >= {2 * len(SPECIALS)}, got {self.vocab_size}")
        check(self.max_len >= 3, "max_len", f"must be >= 3 ([CLS], one token, [SEP]), got {self.max_len}")
        if self.pairs:
            check(Path(self.pairs).suffix.lower() in PAIR_SUFFIXES, "pairs", f"'{self.pairs}' is not {', '.join(PAIR_SUFFIXES)}")
        check(len(self.pair_columns) == 3 and len(set(self.pair_columns)) == 3 and all(self.pair_columns), "pair_columns",
              f"names three different columns (first text, second text, score), got {self.pair_columns}")


def _number(value: Any, where: str, column: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: the score '{column}' is {value!r:.40}, not a number") from None
    if not math.isfinite(x):
        raise DataError(f"{where}: the score '{column}' is {x}")
    return x


def _pair(record: dict, where: str, columns: list[str]) -> tuple[str, str, float]:
    for column in columns[:2]:
        text = record[column]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: '{column}' is {'empty' if isinstance(text, str) or text is None else f'{text!r:.40}, not a string'}")
    return record[columns[0]], record[columns[1]], _number(record[columns[2]], where, columns[2])


def read_pairs(path: str | Path, key: str, columns: list[str]) -> tuple[list[str], list[str], list[float]]:
    """(texts1, texts2, scores) of a gold similarity file; a bad file or row is a one-line DataError naming `key` and the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: no such file '{path}'")
    text, rows = decode_file(path, key), []
    missing = lambda have: next((c for c in columns if c not in have), None)  # noqa: E731
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            where = f"{key}: {path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(obj, dict) or missing(obj):
                have = ", ".join(map(repr, obj)) if isinstance(obj, dict) else type(obj).__name__
                raise DataError(f"{where}: no '{missing(obj) if isinstance(obj, dict) else columns[0]}' field (it has {have or 'none'}); "
                                "set data.pair_columns")
            rows.append(_pair(obj, where, columns))
    else:
        tsv = path.suffix.lower() == ".tsv"  # STS files quote nothing: a quote mark is part of a sentence
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        try:
            if reader.fieldnames is not None and missing(reader.fieldnames):
                raise DataError(f"{key}: {path}: no column '{missing(reader.fieldnames)}' (it has {', '.join(map(repr, reader.fieldnames))}); "
                                "set data.pair_columns")
            for record in reader:
                if all(v in (None, "") for v in record.values()):
                    continue
                rows.append(_pair(record, f"{key}: {path} line {reader.line_num}", columns))
        except csv.Error as e:
            raise DataError(f"{key}: {path} line {reader.line_num}: not valid {'TSV' if tsv else 'CSV'} ({e})") from None
    if len(rows) < MIN_PAIRS:
        raise DataError(f"{key}: {path} has {len(rows)} pair{'s' if len(rows) != 1 else ''}: too few to rank (at least {MIN_PAIRS})")
    if len({r[2] for r in rows}) < 2:
        raise DataError(f"{key}: {path}: every score is {rows[0][2]}: nothing to rank")
    a, b, score = zip(*rows)
    return list(a), list(b), list(score)


@register_dataset("sentences", SentencesOptions, task="embed")
def sentences(opts: SentencesOptions, seed: int) -> Arrays:
    texts = read_documents(opts.path, "data.path", opts)
    if len(texts) < 4:
        raise DataError(f"data.path: {opts.path} has {len(texts)} sentences: too few to hold some out and compare their similarities")
    keep, held = test_split(len(texts), opts.test_fraction, [seed, 13])
    train, test = [texts[i] for i in keep], [texts[i] for i in held]
    given = Path(opts.tokenizer_path) if opts.tokenizer_path else None
    folder = user_tokenizer(given, opts.max_len) if given else train_tokenizer(train, opts)
    tok = load_tokenizer(folder, given)
    x_train, cut_train = encode(tok, train, opts.max_len)
    x_test, cut_test = encode(tok, test, opts.max_len)
    pairs = None
    if opts.pairs:
        a, b, score = read_pairs(opts.pairs, "data.pairs", opts.pair_columns)
        pairs = Pairs(encode(tok, a, opts.max_len)[0], encode(tok, b, opts.max_len)[0], np.asarray(score, dtype=np.float64), opts.pairs)
    stamps = [file_stamp(Path(p)) for p in (opts.path, opts.tokenizer_path, opts.pairs) if p]
    info = TokenInfo(vocab_size=len(tok), pad_id=int(tok.pad_token_id), max_len=opts.max_len, tokenizer=str(Path(folder).resolve()),
                     truncated=cut_train + cut_test, samples=len(texts), task="embed")
    # labels are row ids: the task replaces them by the teacher's embeddings (distill/tasks/embed.py)
    return Arrays(x_train, list(range(len(x_train))), x_test, list(range(len(x_test))), identity=fingerprint(stamps), tokens=info,
                  pairs=pairs)
