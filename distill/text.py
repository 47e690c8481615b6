"""A user's text classification files, tokenized: the `text` dataset.

One file per split (or one file and a seeded test split), JSONL, CSV or
Parquet by suffix, with a text column and a label column. Labels that are
integers stay as given; strings become ids in sorted order, their names kept
in `TokenInfo.labels`. CSV has no types, so a CSV label column whose every
value is an integer literal is read as integers.

The tokenizer is trained on the training split (WordPiece or byte-level BPE,
the `tokenizers` library) unless `tokenizer_path` names one: a local Hugging
Face tokenizer folder or a bare `tokenizer.json`. Either way it ends up as a
folder `AutoTokenizer.from_pretrained` loads, named in `TokenInfo.tokenizer`,
and that folder is what encodes the samples, so the export and every trial
encode alike. Trained and converted tokenizers live under
<KDX_CACHE>/tokenizers, keyed by a fingerprint of what built them, written
once under a lock and renamed into place.

`transformers` and `tokenizers` are imported inside the functions that use
them: `distill` loads this module whatever the dataset.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .cache import cache_dir, fingerprint, locked, sha256_file
from .data import Arrays, TokenInfo, register_dataset
from .errors import ConfigError, DataError, check

__all__ = ["TextOptions", "read_rows", "train_tokenizer", "load_tokenizer", "user_tokenizer", "test_split"]

SUFFIXES = (".jsonl", ".csv", ".parquet")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # a trained tokenizer's, in id order: [PAD] is 0


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


def decode_file(path: Path, key: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as Excel writes, is not part of the first field
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{key}: {path} line {line}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {e.start}); "
                        "save the file as UTF-8") from None


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


# --- the tokenizer -----------------------------------------------------------------------------


def _texts_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode()
        h.update(len(b).to_bytes(8, "little") + b)  # length-prefixed: ["ab", "c"] and ["a", "bc"] differ
    return h.hexdigest()


def _build(folder: Path, make: Any) -> Path:
    """`folder`, built once: under a lock, `make(tmp)` writes a temporary folder that is then renamed
    into place, so a killed build never leaves a half-written tokenizer that a later run would read."""
    with locked(folder.with_name(f".{folder.name}.lock")):
        if all((folder / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
            return folder
        if folder.exists():
            shutil.rmtree(folder)  # damaged since (a file gone): built again
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            make(tmp)
            os.rename(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return folder


def _wrap(tok: Any, max_len: int, **special: str | None) -> Any:
    from transformers import PreTrainedTokenizerFast

    # model_max_length: AutoTokenizer(folder)(text, truncation=True) then cuts where kdx did
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_len, **{k: v for k, v in special.items() if v})


def train_tokenizer(texts: list[str], opts: Any, lm: bool = False) -> Path:
    """A tokenizer trained on `texts` (the training split), saved as a Hugging Face folder keyed by the texts and options
    (`opts`: anything with tokenizer, vocab_size, lowercase and max_len, a TextOptions or a corpus's options).
    `lm`: a language model's, which wraps no text in [CLS] ... [SEP]; [SEP] is its end of document (eos_token)."""
    key = fingerprint([_texts_digest(texts), opts.tokenizer, opts.vocab_size, opts.lowercase, opts.max_len] + (["lm"] if lm else []))
    folder = cache_dir("tokenizers") / f"{opts.tokenizer}{'-lm' if lm else ''}-{key}"

    def make(tmp: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

        if opts.tokenizer == "wordpiece":  # BERT's: its normalizer and pre-tokenizer, "##" continuations
            tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
            tok.normalizer = normalizers.BertNormalizer(lowercase=opts.lowercase)
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(vocab_size=opts.vocab_size, special_tokens=list(SPECIALS), show_progress=False)
        else:  # byte-level BPE (GPT-2's): every byte is in the alphabet, so no text is [UNK]
            tok = Tokenizer(models.BPE(unk_token="[UNK]"))
            tok.normalizer = normalizers.Sequence([normalizers.NFC()] + ([normalizers.Lowercase()] if opts.lowercase else []))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=opts.vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        if opts.tokenizer == "wordpiece":
            tok.model = models.WordPiece(_canonical_ids(tok.get_vocab()), unk_token="[UNK]")
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if not lm:
            tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                               special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        _wrap(tok, opts.max_len, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
              mask_token="[MASK]", eos_token="[SEP]" if lm else None).save_pretrained(str(tmp))

    return _build(folder, make)


def _canonical_ids(vocab: dict[str, int]) -> dict[str, int]:
    """WordPiece ids in a fixed order (the specials, then the pieces sorted): the `tokenizers` trainer numbers
    "##" pieces in hash-map order, which changes from process to process; WordPiece encodes by the set of
    pieces alone, so renumbering changes no encoding, only makes the same vocabulary get the same ids."""
    rest = sorted(t for t in vocab if t not in SPECIALS)
    return {t: i for i, t in enumerate(list(SPECIALS) + rest)}


_NAMES = {  # a bare tokenizer.json says nothing of which token pads; these are the usual spellings
    "pad_token": ("[PAD]", "<pad>", "<|pad|>"),
    "unk_token": ("[UNK]", "<unk>"),
    "cls_token": ("[CLS]", "<s>"),
    "sep_token": ("[SEP]", "</s>"),
    "mask_token": ("[MASK]", "<mask>"),
}


def _from_json(path: Path, max_len: int) -> Path:
    """A bare tokenizer.json as a Hugging Face folder (special tokens found by name), cached by the file's hash."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exceptions
        raise ConfigError(f"data.tokenizer_path: '{path}' is not a tokenizers tokenizer.json ({str(e).splitlines()[0]})") from None
    special = {role: next((t for t in names if tok.token_to_id(t) is not None), None) for role, names in _NAMES.items()}
    if tok.padding and tok.padding.get("pad_token"):
        special["pad_token"] = tok.padding["pad_token"]
    if special["pad_token"] is None:
        raise ConfigError(_no_pad(path))
    tok.no_padding()
    tok.no_truncation()  # kdx pads and cuts to max_len itself
    folder = cache_dir("tokenizers") / f"file-{fingerprint([sha256_file(path), max_len])}"
    return _build(folder, lambda tmp: _wrap(tok, max_len, **special).save_pretrained(str(tmp)))


def user_tokenizer(given: Path, max_len: int) -> Path:
    """The folder of a user's tokenizer (`data.tokenizer_path`): the folder itself, or a bare tokenizer.json made one."""
    if given.is_dir():
        return given
    if given.is_file() and given.suffix == ".json":
        return _from_json(given, max_len)
    raise ConfigError(f"data.tokenizer_path: no tokenizer folder or tokenizer.json '{given}'")


def _no_pad(where: Path) -> str:
    return (f"data.tokenizer_path: the tokenizer in '{where}' has no pad token, and kdx pads every sample to max_len; "
            "add one (tok.add_special_tokens({'pad_token': '[PAD]'}); tok.save_pretrained(folder)) or use a tokenizer that has one")


def load_tokenizer(folder: Path, named: Path | None = None) -> Any:
    """The tokenizer in `folder`; one that does not load is a one-line ConfigError naming `named`, what the
    user gave (None: kdx trained it, and the cached folder was damaged since)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # OSError, ValueError, a missing backend: whatever it is, it is this folder's fault
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if named is None:
            raise ConfigError(f"data.tokenizer: the trained tokenizer '{folder}' does not load ({first}); delete that folder to rebuild it") from None
        raise ConfigError(f"data.tokenizer_path: cannot load a tokenizer from '{named}' ({first})") from None
    if tok.pad_token_id is None:
        raise ConfigError(_no_pad(named))
    tok.padding_side = tok.truncation_side = "right"  # pad and cut the tail, whatever the folder says (some LLM ones pad left)
    return tok


def _encode(tok: Any, texts: list[str], max_len: int) -> tuple[np.ndarray, int]:
    """(N, max_len) int64 ids, padded at the tail, and how many samples were longer than max_len."""
    longer = tok(texts, truncation=True, max_length=max_len + 1)["input_ids"]  # one past: enough to tell who was cut
    cut = sum(len(ids) > max_len for ids in longer)
    ids = tok(texts, truncation=True, max_length=max_len, padding="max_length")["input_ids"]
    return np.asarray(ids, dtype=np.int64), cut


def test_split(n: int, fraction: float, seed: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices: a seeded `fraction` of n rows held out, at least one, never all."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(n * fraction))))
    return order[n_test:], order[:n_test]


def file_stamp(path: Path) -> list:
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


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
    x_train, cut_train = _encode(tok, train.texts, opts.max_len)
    x_test, cut_test = _encode(tok, test.texts, opts.max_len)

    stamps = [file_stamp(Path(p)) for p in (opts.path, opts.test_path, opts.tokenizer_path) if p]
    info = TokenInfo(vocab_size=len(tok), pad_id=int(tok.pad_token_id), max_len=opts.max_len, tokenizer=str(Path(folder).resolve()),
                     labels=names, truncated=cut_train + cut_test, samples=len(x_train) + len(x_test))
    return Arrays(x_train, y_train, x_test, y_test, identity=fingerprint(stamps), tokens=info)
