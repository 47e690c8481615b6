"""Beyond one process: a two-node Ray cluster and an MLflow tracking server, as real processes on loopback.

Everything started here is stopped by process group, never with `ray stop` (which would kill every
Ray on the machine)."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from analysis import schema
from search_helpers import by_role, env_for, kdx_args, write_config

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def tracking_server(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner child outliving SIGTERM (measured)
    server = start([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                    "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1"], env, tmp_path / "server.log")
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(uri + "/health", timeout=2).read() == b"OK", 90, "the MLflow server")
        yield uri
    finally:
        stop(server)


@pytest.fixture
def two_nodes(tmp_path):
    """A head and a worker node, one CPU each, as separate `ray start --block` processes."""
    port = free_port()
    # Ray keeps its auth token in ~/.ray: keep it in the test's folder. A worker node cannot join with Ray's cluster support
    # off (conftest.py turns it off for loopback), and Ray 2.60 rewrites --node-ip-address 127.0.0.1 to the machine's
    # address for a cluster: these two nodes are the one place the tests listen beyond loopback
    env = {**env_for(tmp_path), "HOME": str(tmp_path), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    address = f"127.0.0.1:{port}"
    probe = [sys.executable, "-c", f"import ray; ray.init(address='{address}', logging_level='ERROR'); print(len([n for n in ray.nodes() if n['Alive']]))"]
    alive = lambda n: subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30).stdout.strip() == str(n)  # noqa: E731
    head = start([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common], env, tmp_path / "head.log")
    worker = None
    try:
        wait_for(lambda: alive(1), 90, "the head node")
        worker = start([RAY, "start", "--address", address, *common], env, tmp_path / "worker.log")
        wait_for(lambda: alive(2), 90, "the worker node")
        yield address, env, worker
    finally:
        stop(*[p for p in (worker, head) if p is not None])


def run_kdx(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(kdx_args(*args), capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_eight_concurrent_trials_log_everything_through_a_tracking_server(tmp_path, tracking_server):
    from mlflow import MlflowClient

    cfg = write_config(tmp_path, name="served", epochs=4, samples=8)
    cfg.write_text(cfg.read_text().replace("max_concurrent: 2", "max_concurrent: 8").replace("baselines: true", "baselines: false")
                   + "resources: {cpu: 0.25}\n")
    p = run_kdx(["search", str(cfg), "--tracking-uri", tracking_server], tmp_path, env_for(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("served")
    students = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDENT]
    assert len(students) == 8 and all(r.info.status == "FINISHED" for r in students)
    for r in students:
        for metric in (schema.TRAIN_LOSS, "loss/kd", "loss/ce"):
            assert sorted(m.step for m in client.get_metric_history(r.info.run_id, metric)) == [1, 2, 3, 4]
        assert {a.path for a in client.list_artifacts(r.info.run_id, "model")} == {"model/model.safetensors", "model/config.json"}
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server, not a local path


def test_a_search_spreads_over_a_two_node_cluster(tmp_path, tracking_server, two_nodes):
    from mlflow import MlflowClient

    address, env, _ = two_nodes
    cfg = write_config(tmp_path, name="cluster", epochs=30, samples=6)
    refused = run_kdx(["search", str(cfg), "--address", address, "--tracking-uri", tracking_server], tmp_path, env)
    assert refused.returncode == 2 and "search.storage" in refused.stderr and "2 nodes" in refused.stderr
    p = run_kdx(["search", str(cfg), "--address", address, "--tracking-uri", tracking_server,
                 "--set", f"search.storage={tmp_path / 'shared'}"], tmp_path, env)
    assert p.returncode == 0, p.stdout + p.stderr
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("cluster")
    all_runs = client.search_runs([exp.experiment_id])
    students = by_role(all_runs, schema.ROLE_STUDENT)
    assert len(students) == 6 and all(r.info.status == "FINISHED" for r in students)
    nodes = {r.data.tags[schema.TAG_NODE] for r in students + by_role(all_runs, schema.ROLE_TWIN)}
    assert len(nodes) == 2, nodes  # one CPU per node, two trials at a time: both nodes ran trials


def test_a_worker_node_dies_mid_search_and_its_trials_run_again(tmp_path, tracking_server, two_nodes):
    from mlflow import MlflowClient

    address, env, worker = two_nodes
    search = None
    try:
        cfg = write_config(tmp_path, name="nodeloss", epochs=400, samples=4)
        search = subprocess.Popen(kdx_args("search", str(cfg), "--address", address, "--tracking-uri", tracking_server,
                                           "--set", f"search.storage={tmp_path / 'shared'}"),
                                  cwd=tmp_path, env=env, stdout=open(tmp_path / "search.log", "w"), stderr=subprocess.STDOUT)
        client = MlflowClient(tracking_server)

        def running_on_two_nodes() -> bool:
            exp = client.get_experiment_by_name("nodeloss")
            rs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_STUDENT]
            return len({r.data.tags.get(schema.TAG_NODE) for r in rs if r.info.status == "RUNNING"}) == 2

        wait_for(running_on_two_nodes, 180, "trials running on both nodes")
        os.killpg(worker.pid, signal.SIGKILL)  # the worker node dies with a trial on it
        worker.wait()
        assert search.wait(timeout=600) == 0, (tmp_path / "search.log").read_text()
        exp = client.get_experiment_by_name("nodeloss")
        all_runs = client.search_runs([exp.experiment_id])
        students = by_role(all_runs, schema.ROLE_STUDENT)
        assert len(students) == 4 and all(r.info.status == "FINISHED" for r in students), [(r.info.run_name, r.info.status) for r in students]
        assert len({r.data.tags[schema.TAG_TRIAL] for r in students}) == 4  # the lost trial ran again, logged once
        assert not [r for r in all_runs if r.info.status == "RUNNING"]
    finally:
        if search is not None and search.poll() is None:
            search.kill()
