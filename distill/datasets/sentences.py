"""Unlabelled text for a sentence encoder: the `sentences` dataset (the embed task).

A `.txt` with a sentence or passage per line (or per blank-line-separated block with
`documents: paragraphs`), or a `.jsonl` with a text column, split into train and test by line
with the data seed (`load_data` then carves validation out of train), tokenized as the `text`
dataset is: a WordPiece or BPE tokenizer trained on the training split, or `tokenizer_path`
(a sentence-transformers teacher's own folder, so teacher and student read the same ids).
Every sample is [CLS] ... [SEP], padded to `max_len`.

There are no labels: the task scores a model against its teacher's embeddings
(distill/tasks/embed.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..cache import fingerprint
from ..errors import DataError, check
from ..text import SPECIALS, encode, file_stamp, load_tokenizer, test_split, train_tokenizer, user_tokenizer
from . import Arrays, TokenInfo, register_dataset
from .corpus import SUFFIXES, read_documents

__all__ = ["SentencesOptions"]


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

    def __post_init__(self) -> None:
        check(bool(self.path), "path", f"name the text file ({', '.join(SUFFIXES)})")
        check(Path(self.path).suffix.lower() in SUFFIXES, "path", f"'{self.path}' is not .txt or .jsonl (kdx reads the format from the suffix)")
        check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        check(self.vocab_size >= 2 * len(SPECIALS), "vocab_size", f"must be >= {2 * len(SPECIALS)}, got {self.vocab_size}")
        check(self.max_len >= 3, "max_len", f"must be >= 3 ([CLS], one token, [SEP]), got {self.max_len}")


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
    stamps = [file_stamp(Path(p)) for p in (opts.path, opts.tokenizer_path) if p]
    info = TokenInfo(vocab_size=len(tok), pad_id=int(tok.pad_token_id), max_len=opts.max_len, tokenizer=str(Path(folder).resolve()),
                     truncated=cut_train + cut_test, samples=len(texts), task="embed")
    # labels are row ids: the task replaces them by the teacher's embeddings (distill/tasks/embed.py)
    return Arrays(x_train, list(range(len(x_train))), x_test, list(range(len(x_test))), identity=fingerprint(stamps), tokens=info)
