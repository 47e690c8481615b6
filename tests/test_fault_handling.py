"""The fault handling that a search's end does in the driver, tested without Ray: closing
the runs of trials a scheduler stopped, and never creating a store for a read."""

from types import SimpleNamespace

import pytest

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


@pytest.mark.slow  # three CLI processes
def test_reads_never_create_a_store(tmp_path):
    import subprocess

    from search_helpers import env_for, kdx_args

    for args in (["report", "--experiment", "nope", "--out", "r"], ["export", "--experiment", "nope", "--out", "x"], ["ui", "--port", "1"]):
        p = subprocess.run(kdx_args(*args), capture_output=True, text=True, cwd=tmp_path, env=env_for(tmp_path), timeout=120)
        assert p.returncode == 2 and "Traceback" not in p.stderr, (args, p.stderr)
        assert f"no MLflow store at {tmp_path / 'mlflow.db'}" in p.stderr, p.stderr
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.iterdir())


@pytest.mark.slow  # two processes and a new store
def test_two_processes_creating_one_new_store_both_succeed(tmp_path):
    """Without the lock, one of two processes creating a new SQLite store at once dies in a
    migration ("table ... already exists"): every time on a 2-core machine."""
    import subprocess
    import sys

    from search_helpers import ROOT

    code = ("import sys, time; from analysis.store import Store; t = float(sys.argv[2]); time.sleep(max(0.0, t - time.time())); "
            "s = Store(sys.argv[1]); print(s.experiment_id(f'e{sys.argv[3]}'))")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = str(__import__("time").time() + 4.0)  # both past their imports, then at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, start, str(i)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    store = Store(uri, create=False)
    assert {store.experiment_id("e0", create=False), store.experiment_id("e1", create=False)} == {o[0].strip() for o in outs}


def test_a_trial_opens_the_store_its_driver_made_without_the_lock(tmp_path, monkeypatch):
    """Trials open the store with made=True: it must exist (the session made it), and it opens
    without the creation lock, so trials that start together do not open it one at a time."""
    import analysis.store as store_module
    from distill.errors import KdxError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(KdxError, match=f"no MLflow store at {tmp_path / 'mlflow.db'}"):
        Store(uri, made=True)
    assert not list(tmp_path.iterdir())  # nothing made
    experiment = Store(uri).experiment_id("e")  # the driver makes it, under the lock

    def no_lock(path):
        raise AssertionError(f"a trial took the lock {path}")

    monkeypatch.setattr(store_module, "locked", no_lock)
    assert Store(uri, made=True).experiment_id("e", create=False) == experiment
