"""Pareto fronts and hypervolumes on hand-built frames, against values worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.pareto import (
    eligible, front_hypervolume, hypervolume, hypervolume_history, pareto_mask, reference_to_min_form, to_min_form,
)

ACC_SIZE = {schema.VAL_ACC: "max", schema.PARAMS: "min"}
ACC_SIZE_LATENCY = {schema.VAL_ACC: "max", schema.PARAMS: "min", schema.LATENCY: "min"}


def row(run_id, val=np.nan, params=np.nan, latency=1.0, role="student", status="FINISHED", stopped=False, t=0):
    return {"run_id": run_id, "role": role, "status": status, "stopped_early": stopped, "start_time": t,
            schema.VAL_ACC: val, schema.TEST_ACC: np.nan, schema.PARAMS: params, schema.LATENCY: latency}


def frame(*rows, index=None):
    return pd.DataFrame(list(rows), index=index)


def on_front(df, objectives=ACC_SIZE):
    mask = pareto_mask(df, objectives)
    assert mask.index.equals(df.index) and mask.dtype == bool
    return set(df.run_id[mask])


# --- the front -------------------------------------------------------------

def test_mixed_directions_keep_the_tradeoff_and_drop_the_dominated():
    df = frame(row("a", 0.90, 1000), row("b", 0.80, 500), row("c", 0.70, 800), row("d", 0.95, 5000))
    # c is beaten by b on both (less accurate and bigger); a, b, d trade accuracy for size
    assert on_front(df) == {"a", "b", "d"}


def test_a_tie_in_one_objective_is_decided_by_the_other():
    # p ties q on accuracy with fewer params, and ties r on params with more accuracy
    df = frame(row("p", 0.80, 500), row("q", 0.80, 600), row("r", 0.70, 500))
    assert on_front(df) == {"p"}


def test_exact_duplicates_are_all_kept():
    df = frame(row("a", 0.80, 500), row("b", 0.80, 500), row("c", 0.70, 600))
    assert on_front(df) == {"a", "b"}


def test_three_objectives_with_latency():
    df = frame(row("a", 0.9, 1000, latency=2.0), row("b", 0.9, 1000, latency=1.0), row("c", 0.8, 500, latency=3.0),
               row("d", 0.7, 600, latency=0.5), row("e", 0.7, 600, latency=3.0))
    # b beats its twin a only on latency; d is on the front for latency alone; e loses to d (and to c)
    assert on_front(df, ACC_SIZE_LATENCY) == {"b", "c", "d"}
    # without latency a and b are duplicates, and d, e are both beaten by c
    assert on_front(df, ACC_SIZE) == {"a", "b", "c"}


def test_nan_and_infinite_objectives_are_not_eligible():
    df = frame(row("ok", 0.80, 500), row("nan-acc", np.nan, 10), row("nan-size", 0.99, np.nan),
               row("inf-acc", np.inf, 10), row("nan-test-acc-only", 0.70, 600))
    assert list(eligible(df, ACC_SIZE)) == [True, False, False, False, True]
    assert on_front(df) == {"ok"}
    # a NaN in an objective that is not asked for does not matter
    assert eligible(frame(row("x", 0.8, np.nan)), {schema.VAL_ACC: "max"}).all()


def test_failed_killed_running_and_stopped_early_never_enter_nor_dominate():
    best = dict(val=0.99, params=10)  # would dominate every other row
    df = frame(row("a", 0.90, 1000), row("b", 0.80, 500),
               row("failed", **best, status="FAILED"), row("killed", **best, status="KILLED"),
               row("running", **best, status="RUNNING"), row("asha", **best, stopped=True),
               row("asha-killed", **best, status="KILLED", stopped=True))
    assert set(df.run_id[eligible(df, ACC_SIZE)]) == {"a", "b"}
    assert on_front(df) == {"a", "b"}


def test_only_students_enter_the_front():
    df = frame(row("s", 0.80, 500), row("twin", 0.99, 10, role="baseline"), row("t", 0.99, 10, role="teacher"),
               row("ta", 0.99, 10, role="assistant"), row("p", 0.99, 10, role="search"))
    assert on_front(df) == {"s"}


def test_a_single_eligible_row_is_the_front_and_its_box_the_hypervolume():
    df = frame(row("s", 0.60, 300), row("f", 0.99, 10, status="FAILED"))
    assert on_front(df) == {"s"}
    # (0.60 - 0.10) * (500 - 300) = 0.5 * 200 = 100
    assert front_hypervolume(df, ACC_SIZE, {schema.VAL_ACC: 0.1, schema.PARAMS: 500}) == pytest.approx(100.0)


def test_mask_aligns_with_a_shuffled_index():
    # an ineligible row in the middle: the front must land on the right labels, not the first positions
    df = frame(row("c", 0.70, 800), row("f", 0.99, 10, status="FAILED"), row("a", 0.90, 1000), row("b", 0.80, 500),
               index=[7, 42, 3, 0])
    mask = pareto_mask(df, ACC_SIZE)
    assert mask.to_dict() == {7: False, 42: False, 3: True, 0: True}


def test_empty_frames():
    reference = {schema.VAL_ACC: 0.1, schema.PARAMS: 500}
    for df in (pd.DataFrame(), frame(row("x")).iloc[:0]):
        assert len(eligible(df, ACC_SIZE)) == 0 and len(pareto_mask(df, ACC_SIZE)) == 0
        assert front_hypervolume(df, ACC_SIZE, reference) == 0.0
        assert list(hypervolume_history(df, ACC_SIZE, reference).columns) == ["trial", "hypervolume"]
        assert len(hypervolume_history(df, ACC_SIZE, reference)) == 0
    # rows, none of them eligible: all False, nothing dominated, volume 0
    df = frame(row("f", 0.9, 100, status="FAILED"), row("t", 0.9, 100, role="teacher"))
    assert not pareto_mask(df, ACC_SIZE).any()
    assert front_hypervolume(df, ACC_SIZE, reference) == 0.0


def test_unknown_direction_is_an_error():
    with pytest.raises(ValueError, match="max' or 'min"):
        pareto_mask(frame(row("a", 0.8, 500)), {schema.VAL_ACC: "maximize"})


# --- minimisation form -----------------------------------------------------

def test_min_form_negates_max_objectives_only():
    df = frame(row("a", 0.9, 1000, latency=2.0))
    assert to_min_form(df, ACC_SIZE_LATENCY).tolist() == [[-0.9, 1000.0, 2.0]]
    assert reference_to_min_form({schema.PARAMS: 500, schema.VAL_ACC: 0.1}, ACC_SIZE).tolist() == [-0.1, 500.0]
    with pytest.raises(KeyError, match="params"):
        reference_to_min_form({schema.VAL_ACC: 0.1}, ACC_SIZE)


# --- hypervolume -----------------------------------------------------------

def test_2d_staircase():
    # reference (4, 4); sweep along x: [1,2) height 4-3=1, [2,3) height 4-2=2, [3,4) height 4-1=3 -> 1+2+3 = 6
    assert hypervolume(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), np.array([4.0, 4.0])) == pytest.approx(6.0)
    # a dominated point (3, 3) and a duplicate add nothing
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0], [2.0, 2.0]])
    assert hypervolume(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)


def test_2d_staircase_uneven_steps():
    # reference (10, 5): (0, 4) gives [0,2) * (5-4) = 2; (2, 1) gives [2,10) * (5-1) = 32 -> 34
    assert hypervolume(np.array([[2.0, 1.0], [0.0, 4.0]]), np.array([10.0, 5.0])) == pytest.approx(34.0)


def test_3d_boxes():
    # one point: a box 2 * 3 * 4 = 24
    assert hypervolume(np.array([[1.0, 1.0, 1.0]]), np.array([3.0, 4.0, 5.0])) == pytest.approx(24.0)
    # reference (3,3,3): (1,2,2) box 2*1*1 = 2, (2,1,1) box 1*2*2 = 4, overlap [2,3]^3 = 1 -> 2 + 4 - 1 = 5
    assert hypervolume(np.array([[1.0, 2.0, 2.0], [2.0, 1.0, 1.0]]), np.array([3.0, 3.0, 3.0])) == pytest.approx(5.0)


def test_points_not_strictly_inside_the_reference_are_dropped():
    ref = np.array([4.0, 4.0])
    # only (1, 1) is inside: 3 * 3 = 9; (5, 0.5) and (1, 5) are outside, (4, 1) on the boundary, NaN nowhere
    pts = np.array([[1.0, 1.0], [5.0, 0.5], [1.0, 5.0], [4.0, 1.0], [np.nan, 0.0]])
    assert hypervolume(pts, ref) == pytest.approx(9.0)
    assert hypervolume(np.array([[5.0, 5.0]]), ref) == 0.0
    assert hypervolume(np.empty((0, 2)), ref) == 0.0


def test_one_objective_and_one_dimensional_input():
    # one objective: the length from the best point to the reference, 1.0 - 0.3
    assert hypervolume(np.array([[0.3], [0.5]]), np.array([1.0])) == pytest.approx(0.7)
    assert hypervolume(np.array([0.3, 0.5]), np.array([1.0])) == pytest.approx(0.7)
    # a 1-D array against a k > 1 reference is one point: 3 * 2 = 6
    assert hypervolume(np.array([1.0, 2.0]), np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert front_hypervolume(frame(row("a", 0.9), row("b", 0.6)), {schema.VAL_ACC: "max"}, {schema.VAL_ACC: 0.1}) \
        == pytest.approx(0.8)


def test_max_objectives_through_the_reference_mapping():
    df = frame(row("a", 0.9, 300), row("b", 0.6, 100), row("c", 0.5, 400), row("f", 0.99, 10, status="FAILED"))
    reference = {schema.VAL_ACC: 0.1, schema.PARAMS: 500}  # chance accuracy, the largest student
    # acc 0.1..0.6 is covered for params 100..500: 0.5 * 400 = 200; acc 0.6..0.9 for params 300..500: 0.3 * 200 = 60
    # c (0.5, 400) is dominated by b; the failed row would add a lot if it counted -> 260
    assert front_hypervolume(df, ACC_SIZE, reference) == pytest.approx(260.0)


def test_latency_volume_against_a_3d_reference():
    df = frame(row("a", 0.6, 300, latency=1.0), row("b", 0.9, 400, latency=3.0))
    reference = {schema.VAL_ACC: 0.1, schema.PARAMS: 500, schema.LATENCY: 4.0}
    # a: 0.5 * 200 * 3 = 300; b: 0.8 * 100 * 1 = 80; overlap acc 0.1..0.6, params 400..500, latency 3..4: 0.5 * 100 * 1 = 50
    assert front_hypervolume(df, ACC_SIZE_LATENCY, reference) == pytest.approx(330.0)


# --- history ---------------------------------------------------------------

def history_frame(start_times):
    # rows deliberately out of start order; reference (acc 0, params 10)
    t = dict(zip("12345", start_times))
    return frame(row("s4", 0.8, 8, t=t["4"]), row("teacher", 0.99, 1, role="teacher", t=t["1"]),
                 row("s1", 0.5, 6, t=t["1"]), row("s5", 0.9, 2, stopped=True, t=t["5"]),
                 row("s3", 0.4, 8, t=t["3"]), row("s2", 1.0, 1, status="FAILED", t=t["2"]))


@pytest.mark.parametrize("start_times", [
    [1, 2, 3, 4, 5],
    list(pd.to_datetime([1_700_000_000_000 + k for k in range(5)], unit="ms")),
], ids=["ms", "timestamp"])
def test_history_counts_trials_in_start_order(start_times):
    df = history_frame(start_times)
    reference = {schema.VAL_ACC: 0.0, schema.PARAMS: 10}
    h = hypervolume_history(df, ACC_SIZE, reference)
    assert list(h.columns) == ["trial", "hypervolume"]
    assert h.trial.tolist() == [1, 2, 3, 4, 5]  # five students; the teacher is not a trial
    # 1: s1 (0.5, 6) -> 0.5 * 4 = 2.0
    # 2: s2 failed -> unchanged 2.0
    # 3: s3 (0.4, 8) is dominated by s1 -> 2.0
    # 4: s4 (0.8, 8) -> 2.0 + (0.8 - 0.5) * (10 - 8) = 2.6
    # 5: s5 stopped early -> unchanged 2.6
    assert h.hypervolume.tolist() == pytest.approx([2.0, 2.0, 2.0, 2.6, 2.6])
    assert (np.diff(h.hypervolume) >= 0).all()
    assert h.hypervolume.iloc[-1] == pytest.approx(front_hypervolume(df, ACC_SIZE, reference))


def test_history_is_unchanged_by_a_failed_trial():
    reference = {schema.VAL_ACC: 0.0, schema.PARAMS: 10}
    df = history_frame([1, 2, 3, 4, 5])
    without = hypervolume_history(df[df.run_id != "s2"], ACC_SIZE, reference)
    with_failed = hypervolume_history(df, ACC_SIZE, reference)
    # the failed trial takes a slot (trial 2) and repeats the value before it; the rest shift by one
    assert with_failed.hypervolume.drop(index=1).tolist() == pytest.approx(without.hypervolume.tolist())
    assert with_failed.hypervolume[1] == with_failed.hypervolume[0]


def test_the_exact_2d_sweep_equals_wfg_on_random_fronts():
    """2-D hypervolumes are kdx's own sweep (no private Optuna module); WFG stays for 3 objectives and checks it here."""
    from analysis.pareto import _sweep_2d, _wfg

    rng = np.random.default_rng(0)
    for _ in range(100):
        points = rng.uniform(0, 1, (int(rng.integers(1, 30)), 2))
        assert _sweep_2d(points, np.array([1.0, 1.0])) == pytest.approx(_wfg(points, np.array([1.0, 1.0])), abs=1e-12)
    assert _sweep_2d(np.array([[0.5, 0.5], [0.5, 0.5]]), np.array([1.0, 1.0])) == pytest.approx(0.25)  # duplicates count once
