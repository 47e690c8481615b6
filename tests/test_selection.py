"""Selection that sees the validation split's noise (analysis.gains.run_race): the textbook recipe races whatever its rank,
and wins when the best searched recipe leads it by less than the noise of seeds and validation split together."""

import math

import pandas as pd
import pytest

from analysis.gains import Candidate, gain_info, noise_line, race_gap, run_race, split_error
from analysis.runs import Experiment
from analysis.store import SearchRecord
from distill.config import RunConfig
from distill.data import load_data, small_split_line

SEARCHED = Candidate("found", 0.62, 1.0, 0, {1: 0.63, 2: 0.61})
THIRD = Candidate("third", 0.60, 2.0, 0, {1: 0.58, 2: 0.57})
TEXTBOOK = Candidate("book", 0.58, 3.0, 0, {1: 0.60, 2: 0.59}, textbook=True)  # last at the base seed


def test_the_textbook_recipe_races_and_wins_a_lead_inside_the_split_noise():
    r = run_race([SEARCHED, THIRD, TEXTBOOK], race=2, seeds=3, val_samples=200)
    assert [c.key for c in r.raced] == ["found", "third", "book"]  # the best 2 at the base seed, and the textbook one
    assert r.best == "found" and r.tie and r.winner == "book"
    # the lead: 2.67 points over 3 seeds; the split's part alone: McNemar's bound on 200 samples
    assert r.gap == pytest.approx(0.62 - 0.59)
    assert r.noise >= math.sqrt(((1 - 0.62) + (1 - 0.59) - 0.03 ** 2) / 200) > r.gap / 2


def test_a_lead_beyond_the_noise_keeps_the_searched_recipe():
    big = run_race([SEARCHED, THIRD, TEXTBOOK], race=2, seeds=3, val_samples=100_000)
    assert big.winner == "found" and not big.tie and big.gap > 2 * big.noise
    unknown = run_race([SEARCHED, THIRD, TEXTBOOK], race=2, seeds=3)  # a search that did not log its split: the mean decides, as before
    assert unknown.winner == "found" and unknown.gap != unknown.gap


def test_the_seeds_part_of_the_noise_is_paired_by_seed():
    a = Candidate("a", 0.80, 0.0, 0, {1: 0.70, 2: 0.90})
    b = Candidate("b", 0.78, 0.0, 0, {1: 0.68, 2: 0.88}, textbook=True)  # 2 points behind on every seed: no seed noise at all
    gap, noise = race_gap(a, b, 3, 10_000)
    assert gap == pytest.approx(0.02) and noise == pytest.approx(math.sqrt((0.2 + 0.22 - 0.02 ** 2) / 10_000))


def _frame(kd: dict[str, list[float]], val_samples: int | None) -> Experiment:
    """A gain on one architecture: KD's candidates (the textbook one marked), a twin, each at seeds 0..2."""
    rows, t = [], 0
    for arm, cands in (("kd", kd), ("twin", {"w": [0.50, 0.51, 0.52]})):
        for name, vals in cands.items():
            for seed, v in enumerate(vals):
                t += 1
                rows.append({"run_id": f"{name}-{seed}", "arm": arm, "gain_arch": "mlp:w24", "arch": "mlp:w24", "status": "FINISHED",
                             "role": "student" if arm == "kd" else "baseline", "seed": seed, "seed_of": "" if seed == 0 else f"{name}-0",
                             "control_of": "", "duplicate_of": "", "start": "random", "textbook": name == "book",
                             "val_acc": v, "test_acc": v, "params": 2500.0, "start_time": t, "train_s": 1.0,
                             "train.lr": 0.01, "train.weight_decay": 0.0, "losses.kd.temperature": 4.0 if name == "book" else 9.58,
                             "mix.kd": 0.9 if name == "book" else 0.655, "mix.ce": 0.1 if name == "book" else 0.245})
    settings = {"seeds": "3", "recipe_trials": "2", "race": "2", "race_seeds": "3", "twins": "tuned"}
    if val_samples:
        settings["val_samples"] = str(val_samples)
    return Experiment("x", "1", "sqlite://", pd.DataFrame(rows), "p", SearchRecord(settings, {"val_acc": "max"}, {}))


def test_the_gain_reports_the_tie_and_measures_the_textbook_recipe():
    exp = _frame({"found": [0.62, 0.63, 0.61], "book": [0.58, 0.60, 0.59]}, val_samples=200)
    g = gain_info(exp)
    v = g.verdicts.iloc[0]
    assert v.kd_recipe.startswith("T 4, kd 0.9, ce 0.1")  # the winner, whose seeds the gain is measured on
    assert v.kd_pick.startswith("the textbook recipe, tied with the best searched one (+3.00 ±")
    assert "within the noise of seeds and validation split" in v.kd_pick
    assert "the validation split's own sampling error 3.52 points (binomial, 200 samples at 55%)" in noise_line(g)
    before = gain_info(_frame({"found": [0.62, 0.63, 0.61], "book": [0.58, 0.60, 0.59]}, val_samples=None))
    assert before.verdicts.iloc[0].kd_recipe.startswith("T 9.58") and before.verdicts.iloc[0].kd_pick == ""


def test_split_error_is_the_binomial_std():
    assert split_error(0.5, 2500) == pytest.approx(0.01) and split_error(0.97, 1600) == pytest.approx(math.sqrt(0.97 * 0.03 / 1600))


def test_a_small_validation_split_is_named_with_the_fraction_that_fixes_it():
    hgmm = load_data(RunConfig.from_dict({"data": {"name": "hgmm", "classes": 100, "superclasses": 20, "noise": 4.0}}).data)
    line = small_split_line(hgmm)
    assert line.startswith("data: the validation split has 200 samples (2 per class): an accuracy on it is off by up to 3.5 points")
    assert line.endswith("data.val_fraction: 0.5 would give 1,000")
    big = load_data(RunConfig.from_dict({"data": {"name": "mnist1d", "num_samples": 10000, "val_fraction": 0.2}}).data)
    assert small_split_line(big) == ""  # 1,600 samples, 160 a class


def test_a_front_neighbour_within_the_splits_noise_is_said_so():
    """Two front points 0.5 points apart on a 200-sample split: the larger one is not better as far as the split can tell,
    and the report says so in words; 15 points apart it is, and nothing is said."""
    import pandas as pd

    from analysis import schema
    from analysis.models import ModelsInfo, close_lines, within_noise

    best = pd.DataFrame({"params": [1000, 5000, 20000], "val_acc": [0.800, 0.805, 0.955], "val_std": [0.01, 0.01, float("nan")],
                         "n_seeds": [3, 3, 1]})
    close = within_noise(best, schema.ACCURACY, 200)
    assert list(zip(close.smaller, close.larger)) == [(0, 1)]
    # 2 std: seeds (0.01^2 / 3, twice) and McNemar's bound at 200 samples, (0.2 + 0.195 - 0.005^2) / 200
    assert close.noise.iloc[0] == pytest.approx(2 * math.sqrt(2 * 0.01**2 / 3 + (0.395 - 0.005**2) / 200))
    line = close_lines(ModelsInfo(best, best, best, best, close=close), schema.ACCURACY)
    assert line == [f"P2 (5,000 params) leads P1 (1,000 params) by +0.50 points of val_acc, within the noise (2 std "
                    f"{schema.ACCURACY.size(close.noise.iloc[0])}: seeds and validation split): this split cannot tell the larger model better"]
    assert len(within_noise(best, schema.ACCURACY, None)) == 1  # the seeds alone still see the first pair as a tie
    one_seed = best.assign(val_std=float("nan"), n_seeds=1)
    assert within_noise(one_seed, schema.ACCURACY, None).empty  # no noise known: nothing to say
