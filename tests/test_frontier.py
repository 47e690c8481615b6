"""The frontier info on a hand-built frame (the info, not the picture), and valid PNGs."""

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.frontier import frontier_info, gain_by_arch, plot_frontier, plot_gain_vs_ratio
from analysis.store import SearchRecord, search_params
from analysis.runs import Experiment, with_gains

PNG = b"\x89PNG\r\n\x1a\n"


def row(run_id, role, arch=None, val=np.nan, test=np.nan, params=np.nan, status="FINISHED", stopped=False, t=0, **extra):
    return {"run_id": run_id, "name": run_id, "role": role, "arch": arch, "status": status, "stopped_early": stopped,
            "parent": "p", "trial_id": run_id, "start_time": t, schema.VAL_ACC: val, schema.TEST_ACC: test,
            schema.PARAMS: params, schema.LATENCY: 0.1, "sampled": ["student.width"], **extra}


@pytest.fixture
def exp():
    rows = [
        row("p", "search"),
        row("t", "teacher", val=0.95, test=0.94, params=28000),
        # small and big students; s2 and s3 share an arch (two temperatures), s4 is dominated
        row("s1", "student", "mlp:w8", val=0.60, test=0.58, params=500, t=1, **{"losses.kd.temperature": 2.0}),
        row("s2", "student", "mlp:w32", val=0.75, test=0.74, params=2700, t=2, **{"losses.kd.temperature": 4.0}),
        row("s3", "student", "mlp:w32", val=0.70, test=0.70, params=2700, t=3, **{"losses.kd.temperature": 8.0}),
        row("s4", "student", "mlp:w64", val=0.72, test=0.71, params=7000, t=4, **{"losses.kd.temperature": 4.0}),
        row("s5", "student", "mlp:w128", val=0.99, test=0.99, params=9000, status="FAILED", t=5),
        row("s6", "student", "mlp:w256", val=0.99, test=0.99, params=100, stopped=True, status="KILLED", t=6),
        row("b1", "baseline", "mlp:w8", val=0.55, test=0.55, params=500),
        row("b2", "baseline", "mlp:w32", val=0.72, test=0.70, params=2700),
    ]
    record = SearchRecord.read(search_params({}, {"val_acc": "max", "params": "min"}, {"val_acc": 0.1, "params": 10000}))
    return Experiment("synthetic", "1", "sqlite:///unused.db", pd.DataFrame(rows), "p", record)


def test_gains_pair_students_with_twins_by_arch(exp):
    s = with_gains(exp).set_index("run_id")
    assert s.loc["s1", "gain"] == pytest.approx(0.58 - 0.55)
    assert s.loc["s2", "gain"] == pytest.approx(0.74 - 0.70) and s.loc["s3", "gain"] == pytest.approx(0.0)
    assert np.isnan(s.loc["s4", "gain"])  # no twin
    assert s.loc["s2", "ratio"] == pytest.approx(28000 / 2700)


def test_frontier_info(exp):
    info = frontier_info(exp)
    assert info.teacher[schema.PARAMS] == 28000
    assert list(info.front.run_id) == ["s1", "s2"]  # sorted by size; s3 and s4 dominated by s2
    assert set(info.students.run_id) == {"s1", "s2", "s3", "s4"}
    assert set(info.excluded.run_id) == {"s5", "s6"}  # failed and stopped-early: never on the front
    assert set(info.twins.run_id) == {"b1", "b2"}
    assert info.objectives == {"val_acc": "max", "params": "min"} and info.reference == {"val_acc": 0.1, "params": 10000.0}
    g = gain_by_arch(info.students).set_index("arch")
    assert g.loc["mlp:w32", "n"] == 2 and g.loc["mlp:w32", "gain_mean"] == pytest.approx(0.02)
    assert g.loc["mlp:w32", "gain_std"] == pytest.approx(np.std([0.04, 0.0], ddof=1))


def test_pictures_are_valid_pngs(exp, tmp_path):
    info = frontier_info(exp)
    for draw, name in ((plot_frontier, "f.png"), (plot_gain_vs_ratio, "g.png")):
        draw(info, tmp_path / name)
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000


def test_dark_knowledge_controls_are_drawn_apart_and_never_on_the_front(exp, tmp_path):
    runs = exp.runs.copy()
    runs["control"] = ""
    control = row("c1", "student", "mlp:w8", val=0.99, test=0.50, params=100, t=7)  # would dominate everything
    control["control"] = "dark_knowledge"
    exp.runs = pd.concat([runs, pd.DataFrame([control])], ignore_index=True)
    info = frontier_info(exp)
    assert "c1" not in set(info.front.run_id) and "c1" not in set(info.students.run_id)
    assert list(info.front.run_id) == ["s1", "s2"]
    assert list(info.controls.run_id) == ["c1"]
    assert info.controls.iloc[0]["gain"] == pytest.approx(0.50 - 0.55)
    plot_gain_vs_ratio(info, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes().startswith(PNG)


def test_a_search_read_while_it_runs_counts_running_as_running(exp):
    from analysis.report import counts_line, running_note

    runs = exp.runs.copy()
    runs.loc[runs.run_id == "p", "status"] = "RUNNING"
    runs = pd.concat([runs, pd.DataFrame([row("s7", "student", "mlp:w16", status="RUNNING", t=7)])], ignore_index=True)
    info = frontier_info(Experiment(exp.name, exp.experiment_id, exp.tracking_uri, runs, exp.parent_id, exp.search))
    assert info.search_running and list(info.running.run_id) == ["s7"] and "s7" not in set(info.excluded.run_id)
    assert running_note(info) == "the search is still running (1 student(s) training): this is a snapshot"
    assert counts_line(info).startswith("4 finished students, 1 still running, 2 failed or stopped early")
    assert running_note(frontier_info(exp)) == ""


def test_the_front_holds_a_model_once_and_nothing_at_chance(exp):
    runs = exp.runs.copy()
    runs["config_key"] = ""
    runs.loc[runs.run_id == "s1", "config_key"] = "k1"
    extra = [row("s1b", "student", "mlp:w8", val=0.60, test=0.58, params=500, t=8, config_key="k1"),  # s1 again, trained again
             row("c1", "student", "mlp:w2", val=0.10, test=0.09, params=50, t=9, config_key="k9")]  # at chance (reference 0.1)
    runs = pd.concat([runs, pd.DataFrame(extra)], ignore_index=True)
    info = frontier_info(Experiment(exp.name, exp.experiment_id, exp.tracking_uri, runs, exp.parent_id, exp.search))
    assert list(info.front.run_id) == ["s1", "s2"]  # not s1b beside s1; not c1, though it is the smallest
    assert list(info.same_model.run_id) == ["s1b"] and list(info.chance.run_id) == ["c1"]
    assert "s1b" not in set(info.students.run_id) and "c1" in set(info.students.run_id)  # at chance: finished, never on the front


def test_a_search_where_nothing_beat_chance_still_draws_its_students(exp, tmp_path):
    """No model is better than chance, so no front and no model points: the picture shows the students faintly (it
    failed on a log axis with nothing on it)."""
    record = SearchRecord.read(search_params({}, {"val_acc": "max", "params": "min"}, {"val_acc": 0.999, "params": 10000}))
    info = frontier_info(Experiment(exp.name, exp.experiment_id, exp.tracking_uri, exp.runs, exp.parent_id, record))
    assert info.models.best.empty and info.front.empty and not info.chance.empty
    plot_frontier(info, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes().startswith(PNG)
