"""Parameter importance (Optuna's fANOVA) on hand-built searches: the info object, not the picture."""

import numpy as np
import pandas as pd
import pytest

from analysis.frontier import frontier_info
from analysis.importance import MIN_TRIALS, importance_info
from analysis.report import write_report
from analysis.runs import Experiment
from analysis.store import SearchRecord, search_params
from test_frontier import row

PNG = b"\x89PNG\r\n\x1a\n"


def search(n=30, *, lr_matters=True, vary=("train.lr", "mix.kd", "student.family", "losses.kd.temperature"), extra=()):
    """n finished students: val_acc peaks at lr 1e-2 (or not at all) and ignores mix.kd; params follow the family;
    the temperature is sampled for mlp students only (a conditional key); train.epochs is sampled but fixed."""
    rng = np.random.default_rng(0)
    rows = [row("p", "search"), row("t", "teacher", val=0.95, test=0.94, params=28000)]
    for i in range(n):
        family = ("mlp", "cnn")[i % 2]
        values = {"train.lr": float(10 ** rng.uniform(-4, 0)), "mix.kd": float(rng.uniform(0, 1)), "student.family": family,
                  "losses.kd.temperature": float(rng.uniform(1, 8)), "train.epochs": 5}
        val = 0.9 - (0.15 * abs(np.log10(values["train.lr"]) + 2) if lr_matters else 0.0) + 0.005 * rng.normal()
        sampled = [k for k in (*vary, "train.epochs") if k != "losses.kd.temperature" or family == "mlp"]
        if family == "cnn":
            values["losses.kd.temperature"] = 4.0  # the base config's value, logged though not sampled
        rows.append(row(f"s{i}", "student", f"{family}:w8", val=val, test=val, params=500 if family == "mlp" else 2000, t=i + 1,
                        sampled=sampled, **{k: v for k, v in values.items() if k in vary or k == "train.epochs"}))
    rows += list(extra)
    record = SearchRecord.read(search_params({}, {"val_acc": "max", "params": "min"}, {"val_acc": 0.1, "params": 10000}))
    return Experiment("synthetic", "1", "sqlite:///unused.db", pd.DataFrame(rows), "p", record)


def test_the_parameter_val_acc_follows_ranks_first_and_each_column_sums_to_one():
    imp = importance_info(frontier_info(search()))
    assert imp.evaluator == "fANOVA" and imp.n_trials == 30 and imp.why == ""
    t = imp.table
    assert set(imp.params) == set(t.index) == {"train.lr", "mix.kd", "student.family"}
    assert list(t.columns) == ["val_acc", "params"]
    assert t.index[0] == "train.lr" and t.loc["train.lr", "val_acc"] > 0.6 > t.loc["mix.kd", "val_acc"]
    assert t.loc["student.family", "params"] > 0.9  # a categorical parameter: params is its family's
    assert np.allclose(t.sum(), 1.0) and (t >= 0).all().all()


def test_constant_and_conditional_parameters_are_left_out_and_said_so():
    imp = importance_info(frontier_info(search()))
    assert "train.epochs" not in imp.params and imp.left_out["train.epochs"] == "the same value, 5, in every trial: it carries no information"
    # sampled for the mlp half only: the cnn runs' logged base value does not count as sampled
    assert "losses.kd.temperature" not in imp.params
    assert imp.left_out["losses.kd.temperature"].startswith("sampled in 15 of 30 trials only, a conditional parameter")


def test_only_the_searchs_own_finished_trials_count():
    extra = [row("c1", "student", "mlp:w8", val=0.5, test=0.5, params=500, t=90, control="dark_knowledge", sampled=["train.lr"], **{"train.lr": 1.0}),
             row("r1", "student", "mlp:w8", val=0.5, test=0.5, params=500, t=91, seed_of="s0", sampled=["train.lr"], **{"train.lr": 1.0}),
             row("a1", "student", "mlp:w8", val=0.5, test=0.5, params=500, t=92, arm="kd", sampled=["train.lr"], **{"train.lr": 1.0}),
             row("f1", "student", "mlp:w8", val=0.5, test=0.5, params=500, t=93, status="FAILED", sampled=["train.lr"], **{"train.lr": 1.0})]
    imp = importance_info(frontier_info(search(extra=extra)))
    assert imp.n_trials == 30 and "train.lr" in imp.params  # controls, seed repeats, gain arms and failed runs are not trials


def test_fewer_than_two_varied_parameters_or_too_few_trials_give_a_reason_and_no_table():
    one = importance_info(frontier_info(search(vary=("train.lr",))))
    assert one.table is None and one.params == ("train.lr",)
    assert one.why == "fewer than two searched parameters varied across the 30 finished trials (train.lr did)"
    few = importance_info(frontier_info(search(n=MIN_TRIALS - 1)))
    assert few.table is None and few.why.startswith(f"importance needs at least {MIN_TRIALS} finished search trials")


def test_an_objective_that_never_moved_is_left_out():
    exp = search()
    exp.runs.loc[exp.runs.role == "student", "params"] = 500.0
    imp = importance_info(frontier_info(exp))
    assert list(imp.table.columns) == ["val_acc"] and "same in every trial" in imp.left_out["params"]


@pytest.mark.parametrize("vary, drawn", [(("train.lr", "mix.kd", "student.family"), True), (("train.lr",), False)])
def test_the_report_draws_importance_only_when_two_parameters_varied(tmp_path, vary, drawn):
    report = write_report(search(n=12, vary=vary), tmp_path, log_to_mlflow=False)
    page = (tmp_path / "report.html").read_text()
    assert ("importance.png" in report.pictures) is drawn and (tmp_path / "importance.png").exists() is drawn
    if drawn:
        assert (tmp_path / "importance.png").read_bytes().startswith(PNG)
        assert "fANOVA (Hutter, Hoos &amp; Leyton-Brown 2014" in page and "computed from the\n12 finished search trials" in page
        assert "these importances are noisy" in page
        assert f"<td style=\"text-align:left\">{report.importance.table.index[0]}</td>" in page
        assert "<li><code>train.epochs</code>: the same value, 5, in every trial: it carries no information.</li>" in page
    else:
        why = "importance.png is left out: fewer than two searched parameters varied across the 12 finished trials (train.lr did)."
        assert why in report.left_out and why in page
