"""`kdx ui`: MLflow's UI for this tracking store, opened on a search's runs table, and
ended with everything it started.

`mlflow ui` runs as a child in its own session (process group): it starts a uvicorn
worker of its own, and SIGTERM to kdx alone used to leave both holding the port
(measured with MLflow 3). On SIGTERM, SIGINT or SIGHUP kdx ends the whole group, waits, and kills
what is left, so the port is free when kdx has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

from analysis.store import VIEW_FRONT, VIEW_RUNS, Store, has_views, ui_path

__all__ = ["runs_url", "serve_ui"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def runs_url(base: str, experiment_id: str, view: str | None = VIEW_RUNS) -> str:
    """The experiment's runs table on a view a search set (`Store.set_views`: objectives and sampled
    params as columns, best validation accuracy first); `view=None` for a plain table."""
    return f"{base}/{ui_path(experiment_id, view=view)}"


def _searches(store: Store, name: str | None) -> list[tuple[str, str, bool]]:
    """(name, id, has kdx's views) of the experiment asked for, else of every experiment holding a kdx search, newest first."""
    if name:
        found = store.client.get_experiment_by_name(name)
        if found is None:
            from distill.errors import ConfigError

            raise ConfigError(f"--experiment: no experiment '{name}' in {store.uri}")
        return [(name, found.experiment_id, has_views(found))]
    found = [e for e in store.client.search_experiments(order_by=["creation_time DESC"]) if store.search_run(e.experiment_id)]
    return [(e.name, e.experiment_id, has_views(e)) for e in found]


class _Stopped(Exception):
    pass


def _on_signal(signum, frame) -> None:
    raise _Stopped(signum)


def _signal_group(pgid: int, sig: int) -> bool:
    """False when the group is gone (signal 0 only asks)."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _end_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever outlives the grace."""
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _signal_group(proc.pid, 0):
        proc.poll()  # reap the leader: a zombie still counts as a member of its group
        time.sleep(0.1)
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_healthy(base: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(base + "/health", timeout=2).read() == b"OK":
                return True
        except OSError:
            time.sleep(0.5)
    return False


def serve_ui(uri: str, host: str, port: int, experiment: str | None = None, open_browser: bool = False) -> int:
    store = Store(uri, create=False)  # mlflow ui would make a missing store, racing a search that is starting
    base = f"http://{host}:{port}"
    searches = _searches(store, experiment)
    print(f"MLflow UI for {uri} on {base}", flush=True)
    for name, eid, views in searches:
        if views:
            print(f"  {name}: {runs_url(base, eid)}\n  {name}, the Pareto front: {runs_url(base, eid, VIEW_FRONT)}", flush=True)
        else:  # a search from before kdx set views
            print(f"  {name}: {runs_url(base, eid, None)}", flush=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner child to outlive us
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    handlers = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its own group: a terminal's ^C reaches kdx, which ends it
        if open_browser and searches and _wait_healthy(base, proc):
            import webbrowser

            webbrowser.open(runs_url(base, searches[0][1], VIEW_RUNS if searches[0][2] else None))
        return proc.wait()
    except _Stopped as stop:
        print(f"kdx ui: {signal.Signals(stop.args[0]).name}: stopping the MLflow UI", file=sys.stderr, flush=True)
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second signal while we clean up must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        if proc is not None:
            _end_group(proc)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
