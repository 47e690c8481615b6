"""A user's text classification files, tokenized: the `text` dataset.

One file per split (or one file and a seeded test split), JSONL, CSV or
Parquet by suffix, with a text column and a label column. Labels that are
integers stay as given; strings become ids in sorted order, their names kept
in `TokenInfo.labels`. CSV has no types, so a CSV label column whose every
value is an integer literal is read as integers.

The tokenizer is trained on the training split (WordPiece or byte-level BPE)
unless `tokenizer_path` names one (`distill.text`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..cache import fingerprint
from ..errors import DataError, check
from ..text import SPECIALS, decode_file, encode, file_stamp, load_tokenizer, test_split, train_tokenizer, user_tokenizer
from . import Arrays, TokenInfo, register_dataset

__all__ = ["TextOptions", "read_rows"]

SUFFIXES = (".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class TextOptions:
    path: str = ""  # required: the training file (a default so that leaving it out is a one-line error, not a TypeError)
    test_path: str | None = None  # none: a seeded test_fraction of `path` is the test split
    test_fraction: float = 0.2
    text_column: str = "text"
    label_column: str = "label"
    tokenizer: Literal["wordpiece", "bpe"] = "wordpiece"  # trained on the training split; ignored with tokenizer_path
    vocab_size: int = 2000  # small: a few thousand training rows hold few more frequent pieces than this
    lowercase: bool = True
    tokenizer_path: str | None = None  # a local Hugging Face tokenizer folder or a tokenizer.json, used instead of training one
    max_len: int = 64  # ids per sample, [CLS] and [SEP] included; longer samples are cut and counted

    def __post_init__(self) -> None:
        check(bool(self.path), "path", f"name the training file ({', '.join(SUFFIXES)})")
        for key in ("path", "test_path"):
            value = getattr(self, key)
            if value:
                check(Path(value).suffix.lower() in SUFFIXES, key,
                      f"'{value}' is not {', '.join(SUFFIXES[:-1])} or {SUFFIXES[-1]} (kdx reads the format from the suffix)")
        check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        check(bool(self.text_column) and bool(self.label_column), "text_column", "the text and label columns need names")
        check(self.text_column != self.label_column, "label_column", f"is the text column too ('{self.text_column}')")
        check(self.vocab_size >= 2 * len(SPECIALS), "vocab_size", f"must be >= {2 * len(SPECIALS)}, got {self.vocab_size}")
        check(self.max_len >= 3, "max_len", f"must be >= 3 ([CLS], one token, [SEP]), got {self.max_len}")


# --- reading rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    texts: list[str]
    labels: list[int | str]
    where: list[str]  # "<key>: <file> line 3": where each row came from, for errors found later (an unseen label)


def _label(value: Any, where: str, column: str) -> int | str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: no label (column '{column}' is empty)")
    if isinstance(value, bool):
        raise DataError(f"{where}: label {value!r} is a boolean; use a class id (0, 1, ...) or a class name")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # Parquet written from pandas stores int labels with a NaN as floats
        return int(value)
    if isinstance(value, str):
        return value.strip()
    raise DataError(f"{where}: label {value!r} is neither a class id (an integer) nor a class name (a string)")


def _row(text: Any, label: Any, where: str, opts: TextOptions, rows: Rows) -> None:
    if text is None:
        raise DataError(f"{where}: no text ('{opts.text_column}' is null)")
    if not isinstance(text, str):
        raise DataError(f"{where}: '{opts.text_column}' is {type(text).__name__} {text!r:.40}, not a string")
    if not text.strip():
        raise DataError(f"{where}: '{opts.text_column}' is empty")
    rows.texts.append(text)
    rows.labels.append(_label(label, where, opts.label_column))
    rows.where.append(where)


def _jsonl(path: Path, key: str, opts: TextOptions, rows: Rows) -> None:
    for n, line in enumerate(decode_file(path, key).split("\n"), 1):
        if not line.strip():
            continue  # blank lines (a trailing newline) are no rows
        where = f"{key}: {path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object with '{opts.text_column}' and '{opts.label_column}', got {type(obj).__name__}")
        for column in (opts.text_column, opts.label_column):
            if column not in obj:
                raise DataError(f"{where}: no '{column}' field (it has {', '.join(map(repr, obj)) or 'none'}); "
                                f"set data.{'text' if column == opts.text_column else 'label'}_column")
        _row(obj[opts.text_column], obj[opts.label_column], where, opts, rows)


def _csv(path: Path, key: str, opts: TextOptions, rows: Rows) -> None:
    reader = csv.DictReader(io.StringIO(decode_file(path, key), newline=""))
    try:
        header = reader.fieldnames
        if header is None:
            return  # no header: an empty file, reported by the caller
        for column, option in ((opts.text_column, "text_column"), (opts.label_column, "label_column")):
            if column not in header:
                raise DataError(f"{key}: {path}: no column '{column}' (it has {', '.join(map(repr, header))}); set data.{option}")
        for record in reader:
            where = f"{key}: {path} line {reader.line_num}"
            if all(v in (None, "") for v in record.values()):
                continue  # an empty line
            _row(record[opts.text_column], record[opts.label_column], where, opts, rows)
    except csv.Error as e:
        raise DataError(f"{key}: {path} line {reader.line_num}: not valid CSV ({e})") from None


def _parquet(path: Path, key: str, opts: TextOptions, rows: Rows) -> None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow's errors (ArrowInvalid, OSError) for a file that is not Parquet
        raise DataError(f"{key}: {path}: not a Parquet file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    for column, option in ((opts.text_column, "text_column"), (opts.label_column, "label_column")):
        if column not in table.column_names:
            raise DataError(f"{key}: {path}: no column '{column}' (it has {', '.join(map(repr, table.column_names))}); set data.{option}")
    texts, labels = table[opts.text_column].to_pylist(), table[opts.label_column].to_pylist()
    for n, (text, label) in enumerate(zip(texts, labels), 1):
        _row(text, label, f"{key}: {path} row {n}", opts, rows)


def read_rows(path: str | Path, key: str, opts: TextOptions) -> Rows:
    """The texts and labels of one file; any bad row is a one-line DataError naming `key`, the file and the row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: no such file '{path}'")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{key}: '{path}' is not {', '.join(SUFFIXES)}")
    rows = Rows([], [], [])
    {".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}[suffix](path, key, opts, rows)
    if not rows.texts:
        raise DataError(f"{key}: {path} is empty (no rows)")
    return rows


_INT = re.compile(r"^[-+]?\d+$")


def _label_ids(train: Rows, test: Rows, csv_ints: bool, names_from: list[int | str]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Labels as int64 ids, and the class names when they were strings (ids in sorted order)."""
    every = train.labels + test.labels
    if csv_ints and all(isinstance(v, str) and _INT.match(v) for v in every):
        every = [int(v) for v in every]  # a CSV's "3" is the class id 3
    kinds = {isinstance(v, str) for v in every}
    if len(kinds) > 1:
        i = next(i for i, v in enumerate(every) if isinstance(v, str) != isinstance(every[0], str))
        where = (train.where + test.where)
        raise DataError(f"{where[i]}: label {every[i]!r} is a class {'name' if isinstance(every[i], str) else 'id'}, but "
                        f"{where[0].split(': ', 1)[1]} has {every[0]!r}; use class ids or class names, not both")
    n_train = len(train.labels)
    if kinds != {True}:
        y = np.asarray(every, dtype=np.int64)
        return y[:n_train], y[n_train:], ()
    names = tuple(sorted(set(names_from)))
    index = {name: i for i, name in enumerate(names)}
    for where, v in zip(test.where, every[n_train:]):
        if v not in index:
            raise DataError(f"{where}: label '{v}' never occurs in the training file (its labels: {', '.join(names[:10])}"
                            f"{' ...' if len(names) > 10 else ''})")
    y = np.asarray([index[v] for v in every], dtype=np.int64)
    return y[:n_train], y[n_train:], names


# --- the dataset -----------------------------------------------------------------------------------


@register_dataset("text", TextOptions)
def text(opts: TextOptions, seed: int) -> Arrays:
    train = read_rows(opts.path, "data.path", opts)
    csv_ints = Path(opts.path).suffix.lower() == ".csv"
    if opts.test_path:
        test = read_rows(opts.test_path, "data.test_path", opts)
        csv_ints = csv_ints and Path(opts.test_path).suffix.lower() == ".csv"
        names_from = train.labels  # a test label never seen in training is an error
    else:
        n = len(train.texts)
        if n < 2:
            raise DataError(f"data.path: {opts.path} has {n} row: too few to split off a test set (or set data.test_path)")
        keep, held = test_split(n, opts.test_fraction, [seed, 11])
        pick = lambda idx: Rows(*([getattr(train, f)[i] for i in idx] for f in ("texts", "labels", "where")))  # noqa: E731
        names_from = train.labels  # the whole file: a class the split put in test only still has a name
        train, test = pick(keep), pick(held)
    y_train, y_test, names = _label_ids(train, test, csv_ints, names_from)

    given = Path(opts.tokenizer_path) if opts.tokenizer_path else None
    folder = user_tokenizer(given, opts.max_len) if given else train_tokenizer(train.texts, opts)
    tok = load_tokenizer(folder, given)
    x_train, cut_train = encode(tok, train.texts, opts.max_len)
    x_test, cut_test = encode(tok, test.texts, opts.max_len)

    stamps = [file_stamp(Path(p)) for p in (opts.path, opts.test_path, opts.tokenizer_path) if p]
    info = TokenInfo(vocab_size=len(tok), pad_id=int(tok.pad_token_id), max_len=opts.max_len, tokenizer=str(Path(folder).resolve()),
                     labels=names, truncated=cut_train + cut_test, samples=len(x_train) + len(x_test))
    return Arrays(x_train, y_train, x_test, y_test, identity=fingerprint(stamps), tokens=info)
