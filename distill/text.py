"""Tokenizers and text files, shared by the token datasets (`distill/datasets/text.py`,
`corpus.py`) and the export.

The tokenizer is trained on the training split (WordPiece or byte-level BPE,
the `tokenizers` library) unless the data names one: a local Hugging Face
tokenizer folder or a bare `tokenizer.json`. Either way it ends up as a folder
`AutoTokenizer.from_pretrained` loads, named in `TokenInfo.tokenizer`, and that
folder is what encodes the samples, so the export and every trial encode
alike. Trained and converted tokenizers live under <KDX_CACHE>/tokenizers,
keyed by a fingerprint of what built them, written once under a lock and
renamed into place.

`transformers` and `tokenizers` are imported inside the functions that use
them: `distill` loads this module whatever the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cache_dir, fingerprint, locked, sha256_file
from .errors import ConfigError, DataError

__all__ = ["decode_file", "train_tokenizer", "load_tokenizer", "user_tokenizer", "encode", "test_split", "file_stamp"]

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # a trained tokenizer's, in id order: [PAD] is 0


def decode_file(path: Path, key: str) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as Excel writes, is not part of the first field
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{key}: {path} line {line}: not UTF-8 (byte 0x{raw[e.start]:02x} at byte offset {e.start}); "
                        "save the file as UTF-8") from None


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


def encode(tok: Any, texts: list[str], max_len: int) -> tuple[np.ndarray, int]:
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


