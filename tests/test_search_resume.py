"""A search killed with SIGKILL mid-way finishes with --resume: every trial logged exactly once."""

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from analysis import schema
from search_helpers import by_role, env_for, kdx, kdx_args, runs, write_config

pytestmark = pytest.mark.slow


def test_kill_then_resume_logs_every_trial_once(tmp_path):
    cfg = write_config(tmp_path, name="killme", epochs=400, samples=8)
    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen(kdx_args("search", str(cfg)), cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    finished_before_kill = 0
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if db.exists():
            try:
                students = by_role(runs(db, "killme"), schema.ROLE_STUDENT)
            except Exception:  # the store is being created
                continue
            finished_before_kill = sum(r.info.status == "FINISHED" for r in students)
            if finished_before_kill >= 2 and any(r.info.status == "RUNNING" for r in students):
                break
        assert proc.poll() is None, proc.stdout.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    assert 2 <= finished_before_kill < 8

    p = kdx("search", str(cfg), "--resume", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    all_runs = runs(db, "killme")
    students = by_role(all_runs, schema.ROLE_STUDENT)
    assert len(students) == 8, [(r.info.run_name, r.info.status) for r in students]
    assert max(Counter(r.data.tags[schema.TAG_TRIAL] for r in students).values()) == 1
    assert all(r.info.status == "FINISHED" for r in students)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    assert len(by_role(all_runs, schema.ROLE_SEARCH)) == 1 and len(by_role(all_runs, schema.ROLE_TEACHER)) == 1
    twins = by_role(all_runs, schema.ROLE_BASELINE)
    assert sorted(t.data.tags[schema.TAG_ARCH] for t in twins) == sorted({r.data.tags[schema.TAG_ARCH] for r in students})
