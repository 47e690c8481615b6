"""Where users look: run names that speak, the runs-table views and descriptions the MLflow UI
opens on, the front's tags, and the Optuna study `optuna.load_study` opens (workflows/study.py)."""

import json

import optuna
import pytest
from mlflow import MlflowClient

from analysis import schema
from analysis.store import VIEW_FRONT, VIEW_RUNS, Store
from search_helpers import by_role, study
from workflows.study import TRIAL_ATTR, StudyRef
from workflows.ui import runs_url


@pytest.mark.parametrize("student, mix, temperature, params, name", [
    ({"family": "cnn", "depth": 2, "width": 25, "kernel_size": 3, "residual": False}, {"ce": 0.1, "kd": 0.9}, 4.0, 4512,
     "cnn d2 w25 k3 · T4 kd.9 · 4.5k"),
    ({"family": "mlp", "depth": 1, "width": 12}, {"ce": 1.0}, 4.0, 464, "mlp d1 w12 · scratch · 464"),
    ({"family": "resnet", "depth": 8, "width": 4}, {"ce": 0.1, "kd": 0.9}, 2.21964, 1_233_540, "resnet d8 w4 · T2.22 kd.9 · 1.2M"),
    ({"factory": "pkg.mod:build", "width": 3, "residual": True}, {"ce": 0.5, "kd": 0.0, "fitnet": 1.0}, 4.0, 27_123,
     "build w3 residual · fitnet1 · 27k"),
])
def test_a_run_name_says_architecture_recipe_and_size(student, mix, temperature, params, name):
    assert schema.run_name(student, mix, temperature, params) == name


def test_the_ui_links_open_the_model_training_view_on_kdx_views():
    assert runs_url("http://127.0.0.1:5000", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=kdx-runs"
    assert runs_url("http://h:1", "7", VIEW_FRONT).endswith("viewStateShareKey=kdx-front")
    assert "viewStateShareKey" not in runs_url("http://h:1", "7", None)


def test_a_search_leaves_views_descriptions_and_front_tags(tiny_search):
    client = MlflowClient(f"sqlite:///{tiny_search.folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI overview
    views = {k: json.loads(exp.tags[f"mlflow.sharedViewState.{k}"]) for k in (VIEW_RUNS, VIEW_FRONT)}
    assert views[VIEW_FRONT]["searchFilter"] == "tags.`kdx.pareto` = 'true'" and views[VIEW_RUNS]["searchFilter"] == ""
    assert {"metrics.`val_acc`", "metrics.`params`", "tags.`kdx.pareto_label`", "params.`student.width`"} <= set(views[VIEW_RUNS]["selectedColumns"])
    assert "student.width" in exp.tags[schema.TAG_NOTE] and "viewStateShareKey=kdx-front" in exp.tags[schema.TAG_NOTE]

    all_runs = tiny_search.runs
    parent = by_role(all_runs, schema.ROLE_SEARCH)[0]
    note = client.get_run(parent.info.run_id).data.tags[schema.TAG_NOTE]
    table = (tiny_search.folder / "end-report" / "pareto.csv").read_text().splitlines()[1:]
    front_ids = [row.split(",")[1] for row in table]
    assert "What distillation bought" in note and "over the tuned twin" in note  # the verdict, in the words the CLI prints
    assert all(f"runs/{run_id}?" in note for run_id in front_ids)  # each front student linked
    tagged = {r.info.run_id: r.data.tags for r in (client.get_run(r.info.run_id) for r in all_runs)
              if r.data.tags.get(schema.TAG_PARETO) == "true"}
    assert sorted(tagged) == sorted(front_ids)
    assert sorted(t[schema.TAG_PARETO_LABEL] for t in tagged.values()) == [f"P{k}" for k in range(1, len(front_ids) + 1)]


def test_a_report_moves_the_front_tags_with_the_front(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid = store.experiment_id("moves")
    parent = store.start(eid, "s", {schema.TAG_ROLE: schema.ROLE_SEARCH})
    a, b = (store.start(eid, n, {schema.TAG_ROLE: schema.ROLE_STUDENT, schema.TAG_PARENT: parent.run_id}) for n in "ab")
    store.mark_front(eid, parent.run_id, {a.run_id: "P1", b.run_id: "P2"})
    store.mark_front(eid, parent.run_id, {b.run_id: "P1"})  # a left the front
    tags = {r: store.get(r).data.tags for r in (a.run_id, b.run_id)}
    assert tags[a.run_id][schema.TAG_PARETO] == "false" and schema.TAG_PARETO_LABEL not in tags[a.run_id]
    assert tags[b.run_id][schema.TAG_PARETO] == "true" and tags[b.run_id][schema.TAG_PARETO_LABEL] == "P1"
    store.describe("x" * 9000, run_id=parent.run_id)  # longer than MLflow takes: cut, with a pointer to the report
    assert store.get(parent.run_id).data.tags[schema.TAG_NOTE].endswith("*(cut here: the whole table is in the report)*")


def test_the_search_study_holds_one_trial_per_tune_trial(tiny_search):
    students = [r for r in by_role(tiny_search.runs, schema.ROLE_STUDENT) if schema.TAG_TRIAL in r.data.tags
                and not r.data.tags.get(schema.TAG_ARM) and not r.data.tags.get(schema.TAG_SEED_OF)]
    trials = study(tiny_search.folder, "tiny").trials
    assert sorted(t.user_attrs[TRIAL_ATTR] for t in trials) == sorted(r.data.tags[schema.TAG_TRIAL] for r in students)
    by_trial = {r.data.tags[schema.TAG_TRIAL]: r for r in students}
    for t in trials:
        run = by_trial[t.user_attrs[TRIAL_ATTR]]
        assert t.values == pytest.approx([run.data.metrics["val_acc"], run.data.metrics["params"]])
        assert set(t.params) == set(run.data.tags[schema.TAG_SAMPLED].split(","))
        assert isinstance(t.distributions["student.width"], optuna.distributions.IntDistribution)


def _frozen(params: dict) -> optuna.trial.FrozenTrial:
    dist = {"student.width": optuna.distributions.IntDistribution(4, 32, log=True)}
    return optuna.trial.create_trial(params=params, distributions=dist, values=[0.5, 100.0])


def test_the_study_records_each_trial_once_and_says_how_it_ended(tmp_path):
    ref = StudyRef(str(tmp_path / "s.optuna.journal"), "s", ("maximize", "minimize"), ("val_acc", "params"), epochs=10)
    assert not ref.exists()
    ref.record("t1", _frozen({"student.width": 8}), {"val_acc": 0.7, "params": 500, "epoch": 10}, error=False)
    ref.record("t1", _frozen({"student.width": 8}), {"val_acc": 0.7, "params": 500, "epoch": 10}, error=False)  # resumed: again
    ref.record("t2", _frozen({"student.width": 16}), {"val_acc": 0.4, "params": 900, "epoch": 3}, error=False)  # ASHA stopped it
    ref.record("t3", _frozen({"student.width": 32}), None, error=True)
    ref.record("t4", _frozen({"student.width": 4}), {"val_acc": 0.6, "params": 90, "epoch": 10, "kdx_failed": 1}, error=False)
    loaded = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.optuna.journal"))))  # as a user opens it
    states = {t.user_attrs[TRIAL_ATTR]: t for t in loaded.trials}
    assert sorted(states) == ["t1", "t2", "t3", "t4"] and loaded.metric_names == ["val_acc", "params"]
    assert states["t1"].state.name == "COMPLETE" and states["t1"].values == [0.7, 500]
    assert states["t2"].state.name == "PRUNED" and states["t2"].intermediate_values == {3: 0.4}  # off the dashboard's front
    assert states["t3"].state.name == "FAIL" and states["t4"].state.name == "FAIL"
    assert [t.number for t in loaded.best_trials] == [states["t1"].number]
    assert ref.exists()

    assert ref.keep_only({"t1", "t2", "t3", "t4"}) == 0
    assert ref.keep_only({"t1", "t3"}) == 2  # t2 and t4 finished after Tune's last snapshot and were sampled again
    again = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.optuna.journal"))))
    assert sorted(t.user_attrs[TRIAL_ATTR] for t in again.trials) == ["t1", "t3"]
    assert again.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
