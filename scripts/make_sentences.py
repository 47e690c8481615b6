"""Writes examples/data/topics.txt: 3,000 short English sentences about eight topics, the text
examples/embed.yaml ships with, and examples/data/topics_pairs.tsv, a gold similarity set for it
(the files are committed; this script says how they were made).

Each sentence draws its subject, verb, object and place mostly (85%) from one topic's words and
otherwise from any topic's, so sentences of a topic share words without repeating a template:
a sentence encoder trained on them has neighbourhoods to keep, and a student can keep them or not.
The gold set: 400 pairs of new sentences (another seed; a short sentence may still repeat a
training line), half of one topic, half of two, scored by how alike the topics of their four
content words are (the cosine of the two sentences' topic counts, 0 to 1): a stand-in for an
STS set's human scores, which the data's generator knows and no model sees.
Run: python scripts/make_sentences.py [out] (seeded: the same files every time).
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
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


def sentence(rng: random.Random, topic: str, topics: list[str] | None = None) -> str:
    """A sentence mostly of `topic`'s words; `topics` collects the topic of each content word drawn."""
    words = [w.split() for w in TOPICS[topic]]

    def pick(i: int) -> str:
        t = topic if rng.random() < 0.85 else rng.choice(list(TOPICS))
        (topics if topics is not None else []).append(t)
        return rng.choice(words[i] if t == topic else TOPICS[t][i].split())

    return rng.choice(FORMS).format(a=rng.choice(ADJECTIVES), s=pick(0), v=pick(1), o=pick(2), p=pick(3)).capitalize() + "."


def topic_similarity(a: list[str], b: list[str]) -> float:
    """The cosine of two sentences' topic counts over their content words."""
    ca, cb = Counter(a), Counter(b)
    return sum(ca[t] * cb[t] for t in ca) / math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()))


def pairs(n: int = 400, seed: int = 1) -> list[tuple[str, str, float]]:
    rng, out = random.Random(seed), []
    for k in range(n):
        first = rng.choice(list(TOPICS))
        second = first if k % 2 == 0 else rng.choice([t for t in TOPICS if t != first])
        ta, tb = [], []
        a, b = sentence(rng, first, ta), sentence(rng, second, tb)
        out.append((a, b, round(topic_similarity(ta, tb), 4)))
    return out


def main(out: str = "examples/data/topics.txt", n: int = 3000, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = [sentence(rng, rng.choice(list(TOPICS))) for _ in range(n)]
    Path(out).write_text("\n".join(lines) + "\n")
    print(f"wrote {out}: {n} sentences, {len(set(lines))} distinct")
    gold = Path(out).with_name(Path(out).stem + "_pairs.tsv")
    rows = pairs()
    gold.write_text("text1\ttext2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    print(f"wrote {gold}: {len(rows)} scored pairs")


if __name__ == "__main__":
    main(*sys.argv[1:2])
