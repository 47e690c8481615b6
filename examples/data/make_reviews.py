"""Writes examples/data/reviews.jsonl: 3,000 short synthetic reviews, labelled positive, negative or mixed.

Generated from a seed (this file is the licence: redistribute freely). The
label needs more than a bag of words: "not" flips the adjective after it, and
a "but" clause with the other polarity makes the review mixed.

    python examples/data/make_reviews.py
"""

import json
import random
from pathlib import Path

GOOD = ["good", "great", "tasty", "friendly", "fast", "lovely", "fresh", "excellent", "clean", "cheap"]
BAD = ["bad", "awful", "bland", "rude", "slow", "dirty", "stale", "terrible", "noisy", "pricey"]
THINGS = ["the food", "the service", "the staff", "the coffee", "the room", "the pasta", "the price", "the music", "the bread", "the view"]
OPENERS = ["", "honestly ", "overall ", "i think ", "to be fair ", "well "]
VERBS = ["was", "is", "seemed", "felt"]


def clause(rng: random.Random) -> tuple[str, int]:
    """A clause and its polarity (+1 / -1)."""
    good = rng.random() < 0.5
    negated = rng.random() < 0.3
    word = rng.choice(GOOD if good else BAD)
    text = f"{rng.choice(THINGS)} {rng.choice(VERBS)} {'not ' if negated else ''}{'very ' if rng.random() < 0.3 else ''}{word}"
    return text, (1 if good else -1) * (-1 if negated else 1)


def review(rng: random.Random) -> dict:
    first, p = clause(rng)
    text = rng.choice(OPENERS) + first
    if rng.random() < 0.4:
        second, q = clause(rng)
        text += f" but {second}"
        label = "mixed" if q != p else ("positive" if p > 0 else "negative")
    else:
        if rng.random() < 0.3:
            more, q = clause(rng)
            while q != p:
                more, q = clause(rng)
            text += f" and {more}"
        label = "positive" if p > 0 else "negative"
    return {"text": text, "label": label}


def main() -> None:
    rng = random.Random(0)
    rows = [review(rng) for _ in range(3000)]
    out = Path(__file__).with_name("reviews.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out} ({len(rows)} rows)")


if __name__ == "__main__":
    main()
