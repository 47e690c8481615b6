"""A search killed with SIGKILL mid-way finishes with --resume: every trial logged exactly once."""

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from analysis import schema
from search_helpers import TINY_TASK, by_role, env_for, kdx, kdx_args, runs, study, write_config

pytestmark = pytest.mark.slow


def test_kill_then_resume_logs_every_trial_once(tmp_path):
    cfg = write_config(tmp_path, name="killme", epochs=400, samples=8)
    db = tmp_path / "mlflow.db"
    runs(db, "killme")  # make the store now: this test polling it while the search creates it races (two processes creating one SQLite store: one dies in MLflow's migration)
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
                mid = study(tmp_path, "killme").trials  # optuna.load_study while the search runs
                if len(mid) >= 1:
                    break
        assert proc.poll() is None, proc.stdout.read().decode()
    assert {t.user_attrs["kdx.trial_id"] for t in mid} <= {r.data.tags[schema.TAG_TRIAL] for r in students}
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
    trials = study(tmp_path, "killme").trials  # the resumed search continued the same study: one trial per Tune trial
    assert sorted(t.user_attrs["kdx.trial_id"] for t in trials) == sorted(r.data.tags[schema.TAG_TRIAL] for r in students)
    assert all(t.state.name == "COMPLETE" and len(t.values) == 2 for t in trials)
    twins = by_role(all_runs, schema.ROLE_TWIN)
    assert sorted(t.data.tags[schema.TAG_ARCH] for t in twins) == sorted({r.data.tags[schema.TAG_ARCH] for r in students})


CHAIN = TINY_TASK + """
experiment: killchain
student: {family: mlp, width: 4, depth: 1}
train: {epochs: 250, batch_size: 64}
chain: {assistants: 1}
space: {a1.student.width: {int: [8, 64], log: true}}
search: {num_samples: 4, max_concurrent: 2, sampler: random}
"""


def test_a_killed_chain_search_resumes_without_orphans_or_duplicates(tmp_path):
    (tmp_path / "chain.yaml").write_text(CHAIN)
    db = tmp_path / "mlflow.db"
    runs(db, "killchain")  # make the store now: this test polling it while the search creates it races (two processes creating one SQLite store: one dies in MLflow's migration)
    proc = subprocess.Popen(kdx_args("search", "chain.yaml"), cwd=tmp_path, env=env_for(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if db.exists():
            try:
                all_runs = runs(db, "killchain")
            except Exception:  # the store is being created
                continue
            chains = [r for r in by_role(all_runs, schema.ROLE_STUDENT) if r.data.tags.get(schema.TAG_CHAIN) != schema.CHAIN_DIRECT]
            if any(r.info.status == "FINISHED" for r in chains) and any(r.info.status == "RUNNING" for r in all_runs):
                break
        assert proc.poll() is None, proc.stdout.read().decode()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    p = kdx("search", "chain.yaml", "--resume", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    all_runs = runs(db, "killchain")
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    students = by_role(all_runs, schema.ROLE_STUDENT)
    chains = [r for r in students if r.data.tags.get(schema.TAG_CHAIN) != schema.CHAIN_DIRECT]
    assert len(chains) == 4 and all(r.info.status == "FINISHED" for r in chains)
    assert max(Counter(r.data.tags[schema.TAG_TRIAL] for r in chains).values()) == 1
    assistants = by_role(all_runs, schema.ROLE_ASSISTANT)
    # one finished assistant per chain, none left from a chain the kill cut off
    assert sorted(a.data.tags[schema.TAG_CHAIN] for a in assistants) == sorted(s.data.tags[schema.TAG_CHAIN] for s in chains)
    assert all(a.info.status == "FINISHED" for a in assistants)
    assert len([r for r in students if r.data.tags.get(schema.TAG_CHAIN) == schema.CHAIN_DIRECT]) == 1
    assert len(by_role(all_runs, schema.ROLE_TWIN)) == 1
