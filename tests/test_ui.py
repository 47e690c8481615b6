"""`kdx ui` in a real browser: headless Debian chromium, driven by Selenium, finds the trial runs.

The screenshot is saved as a test artifact (KDX_TEST_ARTIFACTS, default test-artifacts/)."""

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from search_helpers import ROOT, env_for, kdx, kdx_args, write_config
from test_cluster import free_port, stop, wait_for

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them; in CI a missing browser fails)")
def test_the_mlflow_ui_shows_the_trial_runs(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    cfg = write_config(tmp_path, name="browse", samples=3)
    p = kdx("search", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    port = free_port()
    ui = subprocess.Popen(kdx_args("ui", "--port", str(port)), cwd=tmp_path, env=env_for(tmp_path),
                          stdout=open(tmp_path / "ui.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1100"):
        options.add_argument(arg)  # the background-networking flags: this machine's closed network refuses them
    driver = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(base + "/health", timeout=2).read() == b"OK", 90, "kdx ui")
        outside = [ip for ip in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() if not ip.startswith("127.")]
        for ip in outside[:1]:  # bound to 127.0.0.1 by default: not reachable on the machine's other addresses
            with pytest.raises(OSError):
                urllib.request.urlopen(f"http://{ip}:{port}/health", timeout=3)
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
        driver.get(f"{base}/#/experiments/1/runs")
        deadline = time.monotonic() + 60
        expanders = []
        while time.monotonic() < deadline and not expanders:
            expanders = driver.find_elements(By.CSS_SELECTOR, "div[role='gridcell'][col-id*='Run Name'] button")
            time.sleep(0.5)
        assert expanders, "the runs table did not show the search run"
        expanders[0].click()  # trial runs are nested under the search's parent run
        wait_for(lambda: driver.page_source.count("student-") >= 3, 30, "the trial runs in the page")
        page = driver.page_source
        assert "teacher" in page and page.count(">twin ") >= 1
        folder = Path(os.environ.get("KDX_TEST_ARTIFACTS", ROOT / "test-artifacts"))
        folder.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(folder / "mlflow-ui-runs.png"))
        assert (folder / "mlflow-ui-runs.png").read_bytes().startswith(b"\x89PNG")
    finally:
        if driver is not None:
            driver.quit()
        stop(ui)
