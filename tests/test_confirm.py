"""The front confirmed on seeds (search.confirm, workflows/confirm.py): means rank, repeats cost, new points get their turn."""

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.frontier import frontier_info
from analysis.pareto import hypervolume, hypervolume_history
from analysis.runs import Experiment, load_runs, seed_means
from analysis.store import SearchRecord, search_params
from distill.errors import ConfigError
from test_frontier import row


def trial(run_id, arch, val, params, t, seed=0, seed_of=""):
    return row(run_id, "student", arch, val=val, test=val - 0.01, params=params, t=t, seed=seed, seed_of=seed_of)


def searched(rows) -> Experiment:
    record = SearchRecord.read(search_params({"confirm": 3}, {"val_acc": "max", "params": "min"}, {"val_acc": 0.1, "params": 10000}))
    return Experiment("synthetic", "1", "sqlite:///unused.db", pd.DataFrame([row("p", "search"), *rows]), "p", record)


LUCKY = [trial("s1", "mlp:w8", 0.60, 500, 1), trial("s2", "mlp:w16", 0.80, 1000, 2), trial("s3", "cnn:w8", 0.78, 1100, 3)]
# s2's first seed was its luckiest: on seeds 1 and 2 it scores 0.70 and 0.72, a mean of 0.74
REPEATS = [trial("s2r1", "mlp:w16", 0.70, 1000, 4, seed=1, seed_of="s2"), trial("s2r2", "mlp:w16", 0.72, 1000, 5, seed=2, seed_of="s2")]


def test_a_lucky_seed_averaged_away_lets_its_neighbour_onto_the_front():
    before = frontier_info(searched(LUCKY))
    assert list(before.front.run_id) == ["s1", "s2"]  # s3 is dominated by s2's one lucky seed
    after = frontier_info(searched(LUCKY + REPEATS))
    assert list(after.front.run_id) == ["s1", "s2", "s3"]  # s2 at its mean 0.74 no longer hides s3's 0.78
    front = after.front.set_index("run_id")
    assert front.loc["s2", schema.VAL_ACC] == pytest.approx(0.74) and front.loc["s2", "n_seeds"] == 3
    assert front.loc["s3", "n_seeds"] == 1  # the newcomer stands on one seed: the next round's to confirm
    best = after.models.best.set_index("run_id")
    assert best.loc["s2", schema.VAL_ACC] == pytest.approx(0.74) and best.loc["s2", "n_seeds"] == 3
    assert "s2r1" not in set(after.models.models.run_id)  # a repeat is a seed of its trial, never a point of its own


def test_seed_means_pool_a_run_with_its_finished_repeats_of_the_same_role():
    runs = pd.DataFrame(LUCKY + REPEATS + [row("a1", "assistant", val=0.10, seed_of="s1"),  # a chain's assistant: not s1's seed
                                           trial("s1x", "mlp:w8", 0.00, 500, 6, seed=1, seed_of="s1") | {"status": "FAILED"}])
    students = runs[(runs.role == "student") & (runs.seed_of == "")]
    means = seed_means(runs, students, schema.VAL_ACC)
    assert list(means.round(6)) == [0.60, 0.74, 0.78]


def test_hypervolume_history_charges_a_repeat_as_a_run_and_counts_its_trial_at_the_mean():
    objectives, reference = {"val_acc": "max", "params": "min"}, {"val_acc": 0.0, "params": 10.0}
    rows = [trial("a", "x", 0.8, 5.0, 1), trial("ar", "x", 0.6, 5.0, 2, seed=1, seed_of="a"), trial("b", "y", 0.5, 2.0, 3)]
    hv = hypervolume_history(pd.DataFrame(rows), objectives, reference)
    assert list(hv.trial) == [1, 2, 3]  # three runs of budget, two points
    # a alone: (10 - 5) * 0.8; at its mean 0.7 after the repeat; then b adds (5 - 2) * 0.5
    assert np.allclose(hv.hypervolume, [4.0, 3.5, 3.5 + 1.5])


def test_confirm_is_checked_and_the_smoke_budget_caps_it(tmp_path):
    from search_helpers import write_config
    from workflows.experiment import load_experiment

    path = write_config(tmp_path, confirm=0)
    with pytest.raises(ConfigError, match="confirm"):
        load_experiment(str(path))
    assert load_experiment(str(write_config(tmp_path, confirm=5))).search.confirm == 5
    assert load_experiment(str(write_config(tmp_path, confirm=5)), smoke=True).search.confirm == 2


def test_the_search_confirms_its_front_on_a_second_seed(tiny_search):
    """The real search (confirm 2): every point of the trials' front stands on two seeds, and its repeat is a seed-1 run of it."""
    exp = load_runs(f"sqlite:///{tiny_search.folder / 'mlflow.db'}", "tiny")
    info = frontier_info(exp)
    assert "confirm:" in tiny_search.process.stdout
    assert (info.front.n_seeds >= 2).all(), info.front[["run_id", "n_seeds"]]
    runs = exp.runs
    repeats = runs[(runs.seed_of.fillna("") != "") & (runs.arm.fillna("") == "") & (runs.role == schema.ROLE_STUDENT)]
    assert set(info.front.run_id) <= set(repeats.seed_of)
    assert set(repeats.seed.astype(int)) == {1}


def test_the_gains_front_is_confirmed_too_where_a_twin_beats_its_trial():
    from workflows.confirm import front_points

    rows = [trial("s1", "mlp:w8", 0.60, 500, 1), trial("s2", "cnn:w8", 0.70, 1000, 2),
            row("b1", "baseline", "mlp:w12", val=0.80, test=0.79, params=600, seed=0)]  # beats s2 at fewer params
    info = frontier_info(searched(rows))
    assert list(info.models.best.run_id) == ["s1", "b1"] and list(info.front.run_id) == ["s1", "s2"]
    assert front_points(info) == {"s1": "student", "b1": "baseline", "s2": "student"}  # s2's architecture goes to the gain


def test_a_language_models_front_ranks_on_the_mean_cross_entropy_and_its_perplexity_follows():
    record = SearchRecord.read(search_params({"task": "lm"}, {"val_ppl": "min", "params": "min"}, {"val_ppl": 65.0, "val_loss": 4.17, "params": 1e5}))

    def lm(run_id, loss, params, t, seed=0, seed_of=""):
        return row(run_id, "student", f"tf:{params}", params=params, t=t, seed=seed, seed_of=seed_of,
                   **{"val_loss": loss, "val_ppl": float(np.exp(loss)), "test_loss": loss, "test_ppl": float(np.exp(loss))})

    rows = [row("p", "search"), lm("s1", 2.6, 500, 1), lm("s2", 2.0, 1000, 2), lm("s3", 2.1, 1100, 3),
            lm("s2r1", 2.4, 1000, 4, seed=1, seed_of="s2"), lm("s2r2", 2.4, 1000, 5, seed=2, seed_of="s2")]
    info = frontier_info(Experiment("lm", "1", "sqlite:///unused.db", pd.DataFrame(rows), "p", record))
    front = info.front.set_index("run_id")
    assert list(front.index) == ["s1", "s2", "s3"]  # s2's lucky 2.0 averaged to 2.27 no longer hides s3's 2.1
    assert front.loc["s2", "val_loss"] == pytest.approx(6.8 / 3) and front.loc["s2", "val_ppl"] == pytest.approx(np.exp(6.8 / 3))
    hv = hypervolume_history(pd.DataFrame(rows), {"val_ppl": "min", "params": "min"}, {"val_ppl": 65.0, "params": 1e5})
    # at the end: s2 counts at exp(mean cross-entropy), not at the mean of its perplexities
    pts = np.array([[np.exp(2.6), 500], [np.exp(6.8 / 3), 1000], [np.exp(2.1), 1100]])
    assert hv.hypervolume.iloc[-1] == pytest.approx(hypervolume(pts, np.array([65.0, 1e5])))


def test_a_confirmed_point_is_ranked_on_its_mean_and_ships_its_best_validated_seed():
    rows = LUCKY[:1] + [trial("s2", "mlp:w16", 0.70, 1000, 2), trial("s2r1", "mlp:w16", 0.76, 1000, 4, seed=1, seed_of="s2") | {"test_acc": 0.77},
                        trial("s2r2", "mlp:w16", 0.73, 1000, 5, seed=2, seed_of="s2")]
    best = frontier_info(searched(rows)).models.best
    point = best.iloc[1]
    assert point["run_id"] == "s2r1" and point[schema.TEST_ACC] == pytest.approx(0.77)  # the seed that validated best, its own test
    assert point[schema.VAL_ACC] == pytest.approx((0.70 + 0.76 + 0.73) / 3) and point["n_seeds"] == 3  # ranked on the mean
    assert point["test_mean"] == pytest.approx((0.69 + 0.77 + 0.72) / 3) and len(best) == 2


def test_confirm_is_off_by_default_and_smoke_leaves_it_off(tmp_path):
    from workflows.experiment import load_experiment

    path = tmp_path / "plain.yaml"
    path.write_text("experiment: plain\nspace: {student.width: {int: [4, 32]}}\n")
    assert load_experiment(str(path)).search.confirm == 1
    assert load_experiment(str(path), smoke=True).search.confirm == 1
