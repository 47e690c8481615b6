"""`kdx ui` as a user meets it: headless Debian chromium, driven by Selenium, lands on the runs
table the search set up and reads the Pareto front's runs and their val_acc off the screen;
the search run's page carries the verdict. And `kdx ui` ended by a signal frees its port.

The screenshots are saved as test artifacts (KDX_TEST_ARTIFACTS, default test-artifacts/)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from analysis import schema
from search_helpers import ROOT, by_role, env_for, kdx, kdx_args, runs, write_config
from test_cluster import free_port, stop, wait_for

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("KDX_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def _browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,1000"):
        options.add_argument(arg)  # the background-networking flags: this machine's closed network refuses them
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _table(driver) -> dict[str, dict[str, str]]:
    """The runs table on screen: run id -> {column id: the cell's text}.

    Read in one script inside the page: the grid re-renders while it settles, and element handles
    read one at a time from here go stale between two calls (StaleElementReferenceException in CI)."""
    return driver.execute_script("""
        const rows = {};
        for (const cell of document.querySelectorAll("div[role='row'] div[role='gridcell']")) {
            const id = cell.parentElement.getAttribute("row-id");
            if (id) (rows[id] = rows[id] || {})[cell.getAttribute("col-id")] = cell.innerText.trim();
        }
        return rows;""")


def _settled(driver, ok, what: str) -> dict[str, dict[str, str]]:
    """The table once `ok` holds for it: the one that was checked, not a later read."""
    seen: list[dict[str, dict[str, str]]] = []
    wait_for(lambda: ok(seen.append(_table(driver)) or seen[-1]), 60, what)
    return seen[-1]


def _shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / name))
    assert (ARTIFACTS / name).read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them; in CI a missing browser fails)")
def test_the_mlflow_ui_opens_on_the_front_and_its_val_acc(tmp_path):
    from selenium.webdriver.common.by import By

    cfg = write_config(tmp_path, name="browse", samples=4)
    p = kdx("search", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    all_runs = runs(tmp_path / "mlflow.db", "browse")
    students = {r.info.run_id: r for r in by_role(all_runs, schema.ROLE_STUDENT)}
    front = {k: r for k, r in students.items() if r.data.tags.get(schema.TAG_PARETO) == "true"}
    assert front and all(r.data.tags[schema.TAG_PARETO_LABEL].startswith("P") for r in front.values())
    assert all(" · " in r.info.run_name and not r.info.run_name.startswith("student-") for r in students.values())  # names that speak

    port = free_port()
    ui = subprocess.Popen(kdx_args("ui", "--port", str(port)), cwd=tmp_path, env=env_for(tmp_path),
                          stdout=open(tmp_path / "ui.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(base + "/health", timeout=2).read() == b"OK", 90, "kdx ui")
        outside = [ip for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() if not ip.startswith("127.")]
        for ip in outside[:1]:  # bound to 127.0.0.1 by default: not reachable on the machine's other addresses
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{ip}:{port}/health", timeout=3)
        urls = re.findall(r"(http://\S+viewStateShareKey=\S+)", (tmp_path / "ui.log").read_text())
        assert len(urls) == 2, (tmp_path / "ui.log").read_text()  # every run, and the front

        driver = _browser(tmp_path)
        driver.get(urls[1])  # the front, as kdx ui printed it: no expanding, no column picking
        table = _settled(driver, lambda t: set(t) == set(front) and all(t[k].get(f"metrics.`{schema.VAL_ACC}`") for k in front),
                         "the front's runs in the table with their val_acc")
        for run_id, r in front.items():
            cells = table[run_id]
            assert r.info.run_name in cells["attributes.`Run Name`"]
            assert abs(float(cells[f"metrics.`{schema.VAL_ACC}`"]) - r.data.metrics[schema.VAL_ACC]) < 1e-3
            assert cells[f"tags.`{schema.TAG_PARETO_LABEL}`"] == r.data.tags[schema.TAG_PARETO_LABEL]
        _shot(driver, "mlflow-ui-front.png")

        driver.get(urls[0])  # every run: each student with its val_acc, the teacher and twins beside them
        _settled(driver, lambda t: all(t.get(k, {}).get(f"metrics.`{schema.VAL_ACC}`") for k in students),
                 "every student in the table with its val_acc")
        _shot(driver, "mlflow-ui-runs.png")

        parent = by_role(all_runs, schema.ROLE_SEARCH)[0]
        driver.get(f"{base}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning")
        wait_for(lambda: "What browse found" in driver.find_element(By.TAG_NAME, "body").text, 60, "the search run's description")
        assert "Pareto front" in parent.data.tags[schema.TAG_NOTE] and all(k in parent.data.tags[schema.TAG_NOTE] for k in front)
        _shot(driver, "mlflow-ui-search-run.png")
    finally:
        if driver is not None:
            driver.quit()
        stop(ui)


def _holding(port: int) -> list[str]:
    """Processes whose command line serves `port` (mlflow ui, its uvicorn worker)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(port).encode() in cmd and any(b"mlflow" in c or b"uvicorn" in c for c in cmd):
            found.append(f"{proc.name}: {b' '.join(cmd).decode(errors='replace')[:120]}")
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_kdx_ui_ended_by_a_signal_ends_its_server_and_frees_the_port(tmp_path, sig):
    from mlflow import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # a store to serve
    port = free_port()
    ui = subprocess.Popen(kdx_args("ui", "--port", str(port)), cwd=tmp_path, env=env_for(tmp_path),
                          stdout=open(tmp_path / "ui.log", "w"), stderr=subprocess.STDOUT)  # not its own session: as a supervisor runs it
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read() == b"OK", 90, "kdx ui")
        assert _holding(port)
        ui.send_signal(sig)  # to kdx alone, as a supervisor, a terminal multiplexer or a test ends it
        ui.wait(timeout=30)
        deadline = time.monotonic() + 5
        while _holding(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _holding(port), _holding(port)
        with pytest.raises(ConnectionRefusedError):  # nobody answers there
            socket.create_connection(("127.0.0.1", port), timeout=3).close()
        with socket.socket() as s:  # and a server can take the port again (SO_REUSEADDR, as uvicorn binds: the
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # health checks' closed connections sit in TIME_WAIT)
            s.bind(("127.0.0.1", port))
            s.listen()
        assert "stopping the MLflow UI" in (tmp_path / "ui.log").read_text()
    finally:
        if ui.poll() is None:
            ui.kill()
