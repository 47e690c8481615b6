"""The fault handling that a search's end does in the driver, tested without Ray: closing
the runs of trials a scheduler stopped, and never creating a store for a read."""

from types import SimpleNamespace

from analysis import schema
from analysis.store import RUNNING, Store
from workflows.search import _close_stopped


def test_a_stopped_trial_whose_process_ended_first_is_closed_stopped_not_interrupted(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = store.experiment_id("faults")
    parent = store.start(exp, "search", {schema.TAG_ROLE: schema.ROLE_SEARCH}).run_id
    cut = store.start(exp, "student-1", {schema.TAG_PARENT: parent, schema.TAG_TRIAL: "t_00001", schema.TAG_ROLE: schema.ROLE_STUDENT})
    done = store.start(exp, "student-2", {schema.TAG_PARENT: parent, schema.TAG_TRIAL: "t_00002", schema.TAG_ROLE: schema.ROLE_STUDENT})
    done.end()
    grid = [SimpleNamespace(error=None, metrics={"trial_id": "t_00001", "epoch": 2, schema.VAL_ACC: 0.25, schema.PARAMS: 100.0}),
            SimpleNamespace(error=None, metrics={"trial_id": "t_00002", "epoch": 6, schema.VAL_ACC: 0.5, schema.PARAMS: 100.0})]
    assert _close_stopped(store, exp, parent, grid, epochs=6) == 1
    store.end_running(exp, parent)  # what the search does next: nothing is left for it
    r = store.get(cut.run_id)
    assert r.info.status == "KILLED" and r.data.tags[schema.TAG_STOPPED] == "true" and schema.TAG_ERROR not in r.data.tags
    assert r.data.metrics[schema.VAL_ACC] == 0.25
    assert store.get(done.run_id).info.status == "FINISHED" and not store.runs(exp, parent=parent, status=RUNNING)
