"""Multi-objective ASHA (workflows/rungs.py): the rung decision on real per-epoch results, and the scheduler."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from distill.config import RunConfig
from distill.data import load_data
from distill.train import run
from workflows.rungs import MOASHA, front_ranks, rung_decision, rungs

WIDTHS = (2, 8, 16, 32, 48, 64)  # six students of one family, smallest first


@pytest.fixture(scope="module")
def at_rung():
    """Each student's (val_acc, params) after 2 of its epochs on digits, labels only: what a rung at epoch 2 sees."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data, out = None, {}
    for w in WIDTHS:
        c = RunConfig.from_dict({"data": {"name": "digits"}, "student": {"family": "mlp", "width": w, "depth": 1},
                                 "train": {"epochs": 2, "batch_size": 64, "lr": 0.01}, "mix": {"ce": 1.0}})
        data = data or load_data(c.data)
        seen = []
        run(c, data, None, report=seen.append)
        out[f"w{w}"] = {"val_acc": seen[1].val_acc, "params": seen[1].params}
    torch.set_num_threads(threads)
    return out


def min_form(results: dict) -> dict:
    return {k: np.array([-r["val_acc"], r["params"]], dtype=float) for k, r in results.items()}


def test_a_small_student_on_the_front_survives_the_rung_that_val_acc_asha_stops(at_rung):
    small = "w2"
    vals = {k: r["val_acc"] for k, r in at_rung.items()}
    # ASHA on val_acc alone keeps the top ceil(6 / 3) = 2 (Ray's cutoff is a quantile: the same here); the small one is not among them
    by_val = sorted(vals, key=vals.get, reverse=True)
    assert small not in by_val[:2] and vals[small] == min(vals.values()), vals  # the premise, on real numbers
    points = min_form(at_rung)
    assert rung_decision(points, small, reduction_factor=3)  # the fewest parameters: on the first front, kept
    # a student both bigger and worse than another at the rung is off the first front; with the budget spent it stops
    worse = dict(at_rung) | {"w64bad": {"val_acc": vals[small] - 0.01, "params": at_rung["w64"]["params"]}}
    assert not rung_decision(min_form(worse), "w64bad", reduction_factor=3)


def test_non_dominated_sorting_and_the_rungs():
    pts = np.array([[0, 3], [1, 1], [3, 0], [2, 2], [3, 3]], dtype=float)
    assert list(front_ranks(pts)) == [0, 0, 0, 1, 2]
    assert rungs(2, 3, 20) == [2, 6, 18] and rungs(1, 2, 1) == []
    assert rung_decision({"a": np.array([0.0, 0.0])}, "a", 3)  # the first trial at a rung always goes on


def test_the_scheduler_stops_by_the_rung_and_records_each_trial_once(at_rung):
    s = MOASHA({"val_acc": "max", "params": "min"}, "epoch", max_t=10, grace_period=2, reduction_factor=3)
    decisions = {}
    for name, r in sorted(at_rung.items(), key=lambda kv: -kv[1]["val_acc"]):  # the best arrive first
        decisions[name] = s.on_trial_result(None, SimpleNamespace(trial_id=name), {"epoch": 2, **r})
    assert decisions["w2"] == TrialScheduler.CONTINUE  # the small student survives however late it comes
    assert set(s.recorded[2]) == set(at_rung) and s.recorded[6] == {}
    again = s.on_trial_result(None, SimpleNamespace(trial_id="w2"), {"epoch": 3, **at_rung["w2"]})
    assert again == TrialScheduler.CONTINUE and len(s.recorded[2]) == len(at_rung)  # between rungs: nothing new recorded
    assert s.on_trial_result(None, SimpleNamespace(trial_id="x"), {"epoch": 2, "val_acc": math.nan, "params": 5}) == TrialScheduler.CONTINUE


def test_a_search_with_two_objectives_gets_mo_asha(tmp_path):
    from search_helpers import write_config
    from workflows.experiment import load_experiment
    from workflows.tune import make_scheduler

    two = load_experiment(str(write_config(tmp_path, scheduler="asha")))
    assert isinstance(make_scheduler(two), MOASHA)
    one = load_experiment(str(write_config(tmp_path, name="one", scheduler="asha", objectives="{val_acc: max}")))
    assert not isinstance(make_scheduler(one), MOASHA)
