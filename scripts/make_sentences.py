"""Writes examples/data/topics.txt: 3,000 short English sentences about eight topics, the text
examples/embed.yaml ships with (the file is committed; this script says how it was made).

Each sentence draws its subject, verb, object and place mostly (85%) from one topic's words and
otherwise from any topic's, so sentences of a topic share words without repeating a template:
a sentence encoder trained on them has neighbourhoods to keep, and a student can keep them or not.
Run: python scripts/make_sentences.py [out] (seeded: the same file every time).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

TOPICS = {
    "kitchen": ("cook baker chef waiter", "chops bakes stirs serves tastes", "onions bread soup pasta butter", "kitchen oven bakery market"),
    "sea": ("sailor captain diver fisherman", "steers sails dives nets rows", "boat anchor fish waves sail", "harbour coast island bay"),
    "school": ("teacher student pupil tutor", "reads writes teaches studies grades", "book lesson essay exam chalk", "classroom library school campus"),
    "farm": ("farmer shepherd rancher gardener", "plants harvests feeds ploughs waters", "wheat sheep cattle corn apples", "field barn orchard meadow"),
    "music": ("singer drummer pianist violinist", "plays sings tunes hums records", "song melody piano drum chorus", "concert stage studio hall"),
    "city": ("driver officer clerk banker", "parks drives files counts crosses", "car ticket taxi report bus", "street office station square"),
    "hospital": ("doctor nurse surgeon patient", "treats heals examines bandages rests", "wound fever medicine pulse bandage", "ward clinic hospital pharmacy"),
    "mountain": ("climber hiker guide ranger", "climbs hikes camps descends maps", "rope trail summit tent boots", "peak ridge valley glacier"),
}
ADJECTIVES = "old young quiet busy tired careful proud patient".split()
FORMS = ("the {a} {s} {v} the {o} in the {p}", "a {s} {v} {o} near the {p}", "every morning the {s} {v} the {o}",
         "in the {p} the {a} {s} {v} some {o}", "the {s} {v} the {o} before leaving the {p}")


def sentence(rng: random.Random, topic: str) -> str:
    words = [w.split() for w in TOPICS[topic]]
    pick = lambda i: rng.choice(words[i] if rng.random() < 0.85 else TOPICS[rng.choice(list(TOPICS))][i].split())  # noqa: E731
    return rng.choice(FORMS).format(a=rng.choice(ADJECTIVES), s=pick(0), v=pick(1), o=pick(2), p=pick(3)).capitalize() + "."


def main(out: str = "examples/data/topics.txt", n: int = 3000, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = [sentence(rng, rng.choice(list(TOPICS))) for _ in range(n)]
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {n} sentences, {len(set(lines))} distinct")


if __name__ == "__main__":
    main(*sys.argv[1:2])
