"""report.html as a person reads it, in headless Debian chromium at 1280 pixels: the picture and the verdicts
first, the front table next, the rest folded away; no table wider than the window; numbers formatted for people."""

import os
import re
import shutil

import pytest

from analysis.report import _fmt, write_report
from test_importance import search

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def test_numbers_are_formatted_for_people():
    assert [_fmt(v) for v in (11850.0, 28170, 0.008653, 0.96549, 3.0, float("nan"), 0.0)] == \
        ["11,850", "28,170", "0.00865", "0.965", "3", "", "0"]


def _wide_search():
    """A search whose front carries many long searched keys: the table most likely to run off the page."""
    exp = search(n=12, vary=("train.lr", "mix.kd", "student.family", "losses.kd.temperature"))
    runs = exp.runs
    for key in ("losses.ce.label_smoothing", "train.weight_decay", "student.width", "student.depth", "mix.ce",
                "losses.rkd.distance_weight", "train.batch_size"):
        runs[key] = 0.123456789
        runs["sampled"] = [list(s) + [key] if isinstance(s, list) else s for s in runs["sampled"]]
    return exp


@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them; in CI a missing browser fails)")
def test_the_report_opens_on_the_picture_and_fits_a_1280_pixel_window(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    write_report(_wide_search(), tmp_path, log_to_mlflow=False)
    page = (tmp_path / "report.html").read_text()
    assert "{'" not in page and "e+0" not in page  # no Python reprs, no raw exponents
    assert re.search(r"Objectives: val_acc \(max\), params \(min\)", page)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get((tmp_path / "report.html").as_uri())
        for summary in driver.find_elements("css selector", "summary"):  # every folded section open: those must fit too
            summary.click()
        layout = driver.execute_script("""
            const top = el => el.getBoundingClientRect().top + window.scrollY;
            const tables = [...document.querySelectorAll('table')];
            return {page: document.documentElement.scrollWidth, window: window.innerWidth,
                    widest: Math.max(...tables.map(t => t.getBoundingClientRect().right)),
                    overflowing: tables.filter(t => t.scrollWidth > t.clientWidth + 1).length,
                    picture: top(document.querySelector('img')), firstTable: top(tables[0]),
                    firstH2: document.querySelector('h2').innerText, tables: tables.length};""")
    finally:
        driver.quit()
    assert layout["tables"] >= 3
    assert layout["page"] <= layout["window"] and layout["widest"] <= layout["window"], layout
    assert layout["overflowing"] == 0, layout
    assert layout["picture"] < layout["firstTable"], layout  # the frontier picture is above the first table
    assert layout["firstH2"] == "What distillation bought"
