"""A language model's search read back (analysis/): picked on validation cross-entropy, lower is
better, gains in nats per token (twin minus KD), a model at the uniform distribution's log V never
on a front; on a hand-built frame, so every rule is checked in milliseconds."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.frontier import frontier_info
from analysis.gains import gain_info, noise_line, verdict_line
from analysis.runs import Experiment, seed_stats, with_gains
from analysis.store import SearchRecord, search_params
from test_frontier import row

V = 65  # the hmm vocabulary: a model that learned nothing scores log 65 = 4.17 nats per token


def lm(run_id, role, arch=None, val=np.nan, test=np.nan, **extra):
    """A run's row with a language model's metrics: cross-entropies in nats, perplexities their exp."""
    return row(run_id, role, arch, val=0.2, test=0.2, **extra) | {schema.VAL_LOSS: val, schema.TEST_LOSS: test,
                                                                  schema.VAL_PPL: math.exp(val), schema.TEST_PPL: math.exp(test)}


def arm(run_id, role, name, val, test, seed, seed_of="", **extra):
    return lm(run_id, role, "tf:d1", val, test, params=4848, t=10 + seed, arm=name, gain_arch="tf:d1", seed=seed, seed_of=seed_of,
              candidate="1" if not seed_of else "", **extra)


@pytest.fixture
def searched():
    rows = [
        row("p", "search"),
        lm("t", "teacher", val=2.62, test=2.63, params=110912) | {schema.FLOOR: 2.55},
        lm("s1", "student", "tf:d1", 2.70, 2.71, params=4848, t=1, seed=0),
        lm("s2", "student", "tf:d2", 2.62, 2.62, params=22336, t=2, seed=0),
        lm("s3", "student", "tf:d2b", 2.66, 2.66, params=22336, t=3, seed=0),  # as big as s2 and worse: off the front
        lm("s4", "student", "tf:tiny", 4.30, 4.30, params=900, t=4, seed=0),  # worse than uniform: never on a front
        lm("b1", "baseline", "tf:d1", 2.72, 2.73, params=4848, seed=0),
        lm("b2", "baseline", "tf:d2", 2.64, 2.65, params=22336, seed=0),
        # the gain on tf:d1 over two seeds: KD 2.69 / 2.70 against the tuned twin's 2.66 / 2.68 on test
        arm("k1", "student", "kd", 2.68, 2.69, 0, **{"mix.gjsd": 0.5, "losses.gjsd.beta": 0.0, "losses.gjsd.temperature": 2.0,
                                                     "mix.ce": 0.5, "train.lr": 0.003}),
        arm("k1r", "student", "kd", 2.69, 2.70, 1, seed_of="k1"),
        arm("w1", "baseline", "twin", 2.65, 2.66, 0),
        arm("w1r", "baseline", "twin", 2.67, 2.68, 1, seed_of="w1"),
    ]
    settings = {"seeds": 2, "twins": "tuned", "recipe_trials": 1, "task": "lm"}
    record = SearchRecord.read(search_params(settings, {"val_ppl": "min", "params": "min"},
                                             {"val_acc": 1 / V, "val_loss": math.log(V), "val_ppl": float(V), "params": 30000}))
    return Experiment("lm", "1", "sqlite:///unused.db", pd.DataFrame(rows), "p", record)


def test_a_language_model_is_compared_in_nats_lower_better(searched):
    assert searched.score == schema.NEXT_TOKEN and SearchRecord.read({}).score == schema.ACCURACY  # a search logged before tasks: accuracy
    s = with_gains(searched).set_index("run_id")
    assert s.loc["s1", "gain"] == pytest.approx(2.73 - 2.71)  # the twin's cross-entropy minus the student's: > 0, KD better
    assert s.loc["s2", "gain"] == pytest.approx(2.65 - 2.62)
    assert schema.NEXT_TOKEN.diff(0.0123) == "+0.0123" and schema.ACCURACY.diff(0.0123) == "+1.23"


def test_the_front_is_picked_on_the_lowest_validation_cross_entropy(searched):
    info = frontier_info(searched)
    assert list(info.front.run_id) == ["s1", "s2"]  # s3 is as big and worse; s4 is below chance
    assert list(info.chance.run_id) == ["s4"]
    best = info.models.best.set_index("run_id")
    assert list(info.models.best.run_id) == ["w1", "s2"]  # at 4,848 params the tuned twin's mean 2.66 beats every KD model
    assert best.loc["w1", schema.VAL_LOSS] == pytest.approx(2.66) and best.loc["w1", "n_seeds"] == 2
    assert best.loc["w1", schema.TEST_LOSS] == pytest.approx(2.66)  # the shipped run's own, what export checks against
    assert info.teacher[schema.FLOOR] == 2.55 and info.score == schema.NEXT_TOKEN


def test_the_tuned_gain_reads_in_nats_and_says_when_the_twin_wins(searched):
    g = gain_info(searched)
    v = g.verdicts.iloc[0]
    assert v.gain_n == 2 and v.gain_mean == pytest.approx(-0.025)  # KD's cross-entropy is the higher one: a negative gain
    assert v.best_control == "twin" and "nats/token" in verdict_line(v, g.score)
    assert "gjsd, beta 0, T 2, weight 0.5" in v.kd_recipe
    assert "val_loss std" in noise_line(g) and "nats/token" in noise_line(g)
    stats = seed_stats(searched, with_gains(searched)).set_index("run_id")
    assert stats.loc["s1", "test_mean"] == pytest.approx(2.71)
