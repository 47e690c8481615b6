"""Faults a long search meets, each probed the way a user meets it (slow step): ASHA's stop
against the trial's own bookkeeping, two processes on one new store, a search read while it
runs, a tracking server that dies mid-search."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_helpers import ROOT, by_role, env_for, kdx, kdx_args, runs, write_config

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
