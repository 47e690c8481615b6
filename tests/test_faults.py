"""Faults a long search meets, each probed the way a user meets it (slow step): ASHA's stop
against the trial's own bookkeeping, two processes on one new store, a search read while it
runs, a tracking server that dies mid-search."""

import os
import signal
import subprocess
import sys
import time

import pytest

from analysis import schema
from search_helpers import by_role, env_for, kdx, kdx_args, runs, write_config

pytestmark = pytest.mark.slow


def test_a_trial_asha_stops_keeps_its_last_val_acc_and_no_error(tmp_path):
    cfg = write_config(tmp_path, name="asha", epochs=6, samples=6, scheduler="asha", objectives="{val_acc: max}")
    cfg.write_text(cfg.read_text().replace("scheduler: asha", "scheduler: asha\n  grace_period: 1").replace("baselines: true", "baselines: false"))
    p = kdx("search", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    students = by_role(runs(tmp_path / "mlflow.db", "asha"), "student")
    stopped = [r for r in students if r.data.tags.get("kdx.stopped_early") == "true"]
    assert len(students) == 6 and stopped, [(r.info.status, r.data.tags.get("kdx.stopped_early")) for r in students]
    for r in stopped:
        assert r.info.status == "KILLED" and "kdx.error" not in r.data.tags, r.data.tags
        assert "val_acc" in r.data.metrics
    assert all(r.info.status == "FINISHED" for r in students if r not in stopped)


def _server(tmp_path, port):
    from test_cluster import start

    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return start([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                  "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                 env, tmp_path / f"server-{time.time():.0f}.log")


def test_a_tracking_server_that_dies_stops_the_search_in_seconds_and_resume_finishes_it(tmp_path):
    import urllib.request

    from mlflow import MlflowClient
    from test_cluster import free_port, stop, wait_for

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    up = lambda: urllib.request.urlopen(uri + "/health", timeout=2).read() == b"OK"  # noqa: E731
    server = _server(tmp_path, port)
    wait_for(up, 90, "the MLflow server")
    cfg = write_config(tmp_path, name="dies", epochs=150, samples=6)
    cfg.write_text(cfg.read_text().replace("baselines: true", "baselines: false"))
    search = subprocess.Popen(kdx_args("search", str(cfg), "--tracking-uri", uri), cwd=tmp_path, env=env_for(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        client = MlflowClient(uri)

        def two_finished_one_running() -> bool:
            exp = client.get_experiment_by_name("dies")
            rs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kdx.role") == "student"]
            return sum(r.info.status == "FINISHED" for r in rs) >= 2 and any(r.info.status == "RUNNING" for r in rs)

        wait_for(two_finished_one_running, 300, "two finished students and one in flight")
        os.killpg(server.pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = search.communicate(timeout=240)
        stopped_s = time.monotonic() - killed
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
        stop(server)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert search.returncode == 2, err[-3000:]
    assert lines[-1].startswith(f"kdx: error: tracking: the MLflow server at {uri} stopped answering") and "Traceback" not in err, err[-3000:]
    assert stopped_s < 60, stopped_s
    print(f"\nkill -> one-line stop: {stopped_s:.1f} s")
    t0 = time.monotonic()
    p = kdx("report", "--experiment", "dies", "--out", "rep", "--tracking-uri", uri, cwd=tmp_path)  # the server still down
    assert p.returncode == 2 and p.stderr.strip() == f"kdx: error: --tracking-uri: cannot reach the MLflow server at {uri} ([Errno 111] Connection refused)"
    print(f"kdx report against the dead server: one line after {time.monotonic() - t0:.1f} s")

    server = _server(tmp_path, port)
    try:
        wait_for(up, 90, "the MLflow server, again")
        p = kdx("search", str(cfg), "--tracking-uri", uri, "--resume", cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("dies")
        students = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kdx.role") == "student"]
        finished = [r for r in students if r.info.status == "FINISHED"]
        trials = [r.data.tags.get(schema.TAG_TRIAL) for r in finished]
        print(f"after --resume: {len(finished)} finished student runs for {len(set(trials))} trials, {len(students)} student runs in all")
        assert len(finished) == 6 and len(set(trials)) == 6 and len(students) == 6, [(r.info.run_name, r.data.tags.get(schema.TAG_TRIAL), r.info.status)
                                                                                      for r in students]
    finally:
        stop(server)


def test_a_degenerate_search_puts_each_model_on_the_front_once_and_nothing_at_chance(tmp_path):
    cfg = tmp_path / "degenerate.yaml"
    cfg.write_text("""
experiment: degenerate
data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}
teacher: {family: mlp, width: 64, depth: 1, epochs: 5}
student: {family: mlp, width: 8, depth: 1}
train: {epochs: 3, batch_size: 64}
space:
  student.width: {choice: [4, 8]}
  train.lr: {choice: [0.01, 1000.0]}
search: {num_samples: 6, max_concurrent: 2, sampler: random, objectives: {val_acc: max, params: min}, baselines: false, seeds: 1,
         enqueue: [{student.width: 4, train.lr: 1000.0}, {student.width: 4, train.lr: 0.01}, {student.width: 4, train.lr: 0.01}]}
""")
    p = kdx("search", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    students = [r for r in by_role(runs(tmp_path / "mlflow.db", "degenerate"), "student") if r.info.status == "FINISHED"]
    assert any(r.data.metrics["val_acc"] <= 1 / 20 for r in students), [r.data.metrics["val_acc"] for r in students]  # lr 1000 finished at chance
    p = kdx("report", "--experiment", "degenerate", "--out", "rep", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "no better than chance, never on the front" in p.stdout, p.stdout
    import csv

    front = list(csv.DictReader(open(tmp_path / "rep" / "pareto.csv")))
    assert front and all(float(r["val_acc"]) > 1 / 20 for r in front), front  # chance is 1/20
    assert len({(r["arch"], r.get("train.lr")) for r in front}) == len(front)
    p = kdx("export", "--experiment", "degenerate", "--out", "ship", "--formats", "safetensors", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    shipped = sorted((tmp_path / "ship").iterdir())
    assert len(shipped) == len(front)
    digests = [(f / "model.safetensors").read_bytes() for f in shipped]
    assert len(set(digests)) == len(digests)  # no model shipped twice
