"""`kdx search`: a Ray Tune + Optuna search over students, every trial an MLflow run.

Inside `session.open_session` (checks first, data and teacher once, then Ray and
the MLflow parent and teacher runs), Tune runs the trials, sharing data and
teacher outputs through the object store; then the scratch twins of every
distinct student architecture run as a second batch, and with `search.seeds`
the Pareto students and their twins repeat with more seeds. A config with a
`chain:` section runs `workflows.chain` instead.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable

import yaml

from analysis import schema
from distill.errors import ConfigError
from search_spaces.space import apply, flatten, holds

from .experiment import Experiment
from .session import SearchSummary, close_running, fit_search, open_session, run_jobs, summarize, trial_ids
from .tracking import Tracker
from .trial import FAILED, baseline_trial, seed_trial, student_trial

__all__ = ["run_search", "reference_point"]

Log = Callable[[str], None]


def reference_point(exp: Experiment, data) -> dict[str, float]:
    """The hypervolume reference, fixed before any trial: chance accuracy and the
    size and latency of the largest student the space can make (every numeric
    entry at its high end, every combination of choices, up to 256)."""
    from distill.models import build_model, count_params, measure_latency

    choices = [p for p in exp.space if p.kind == "choice"]
    largest, size = None, -1
    for combo in itertools.islice(itertools.product(*(p.choices for p in choices)), 256):
        picked = dict(zip((p.key for p in choices), combo))
        params: dict = {}
        base_flat = flatten(exp.base)
        for p in exp.space:
            if all(holds(cond, params.get(k, base_flat.get(k))) for k, cond in p.when.items()):
                params[p.key] = picked[p.key] if p.kind == "choice" else p.value if p.kind == "fixed" else p.high
        try:
            student = apply(params, exp.base).student
        except ConfigError:
            continue
        model = build_model(student.family, student.options, data.input_shape, data.num_classes, "student")
        if count_params(model) > size:
            largest, size = model, count_params(model)
    ref = {schema.VAL_ACC: 1.0 / data.num_classes}
    if largest is not None:
        ref[schema.PARAMS] = float(size)
        ref[schema.LATENCY] = measure_latency(largest, data.input_shape)
    return ref


def _parse_param(value: str):
    return yaml.safe_load(value)


def _twin_archs(tracker: Tracker, experiment_id: str, parent_id: str) -> list[dict]:
    """Student architectures (as student.* params) that have no finished twin yet."""
    under = f"tags.`{schema.TAG_PARENT}` = '{parent_id}'"
    students = tracker.runs(experiment_id, f"{under} and tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDENT}'")
    twins = tracker.runs(experiment_id, f"{under} and tags.`{schema.TAG_ROLE}` = '{schema.ROLE_BASELINE}'")
    done = set()
    for t in twins:
        if t.info.status == "FINISHED":
            done.add(t.data.tags.get(schema.TAG_ARCH))
        else:
            tracker.client.delete_run(t.info.run_id)  # cut off by a kill: it runs again
    archs: dict[str, dict] = {}
    for r in students:
        arch = r.data.tags.get(schema.TAG_ARCH)
        if r.info.status in ("FINISHED", "KILLED") and arch not in done and arch not in archs:
            archs[arch] = {k: _parse_param(v) for k, v in r.data.params.items() if k.startswith("student.")}
    return list(archs.values())


def _seed_jobs(exp: Experiment, tracker: Tracker, experiment_id: str, parent_id: str) -> list[dict]:
    """Repeats still to run: each Pareto student and its twin with the other seeds, paired by seed."""
    from analysis.frontier import frontier_info
    from analysis.runs import load_runs

    front = frontier_info(load_runs(exp.tracking_uri, exp.name)).front
    done = set()
    for r in tracker.runs(experiment_id, f"tags.`{schema.TAG_PARENT}` = '{parent_id}'"):
        if r.data.tags.get(schema.TAG_SEED_OF):
            if r.info.status == "FINISHED":
                done.add((r.data.tags[schema.TAG_SEED_OF], r.data.params.get("seed")))
            else:
                tracker.client.delete_run(r.info.run_id)  # cut off by a kill: it runs again
    jobs = []
    for _, row in front.iterrows():
        # the run's own params, typed: a DataFrame column holds 13 as 13.0 where other rows lack it
        params = {k: _parse_param(v) for k, v in tracker.client.get_run(row["run_id"]).data.params.items()}
        sampled = {k: params[k] for k in row["sampled"]}
        shape = {k: v for k, v in params.items() if k.startswith("student.")}
        for k in range(1, exp.search.seeds):
            seed = exp.run.seed + k
            if (row["run_id"], str(seed)) not in done:
                jobs.append({"role": schema.ROLE_STUDENT, "params": {**sampled, "seed": seed}, "seed_of": row["run_id"]})
            twin = row.get("twin_run")
            if isinstance(twin, str) and (twin, str(seed)) not in done:
                jobs.append({"role": schema.ROLE_BASELINE, "params": {**shape, "seed": seed}, "seed_of": twin})
    return jobs


def _close_leftovers(tracker: Tracker, experiment_id: str, parent_id: str, known: set[str]) -> None:
    """After a resumed search: runs still RUNNING belong to trials that will never
    report, and student runs of trials that Tune's last snapshot did not know
    (finished in the seconds before a kill) were sampled again: delete those,
    so every trial Tune and Optuna know has exactly one run."""
    under = close_running(tracker, experiment_id, parent_id)
    for r in tracker.runs(experiment_id, f"{under} and tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDENT}'"):
        if r.data.tags.get(schema.TAG_TRIAL) not in known and not r.data.tags.get(schema.TAG_SEED_OF):
            tracker.client.delete_run(r.info.run_id)


def run_search(exp: Experiment, resume: bool = False, address: str | None = None, log: Log = print) -> SearchSummary:
    if exp.chain is not None:
        from .chain import run_chain

        return run_chain(exp, resume, address, log)
    with open_session(exp, resume, address, log, lambda data: reference_point(exp, data)) as s:
        t0 = time.monotonic()
        grid = fit_search(exp, student_trial, s.ctx.base, s.storage, resume, log, **s.shared)
        s.timings["trials"] = time.monotonic() - t0
        _close_leftovers(s.tracker, s.experiment_id, s.parent_id, trial_ids(grid))
        baselines = 0
        t0 = time.monotonic()
        if exp.search.baselines:
            archs = _twin_archs(s.tracker, s.experiment_id, s.parent_id)
            if archs:
                log(f"scratch twins: {len(archs)} architecture(s)")
                twins = run_jobs(baseline_trial, "arch", archs, exp, s.storage, "twin", log, data=s.data, ctx=s.ctx)
                baselines = sum(1 for r in twins if r.error is None and not r.metrics.get(FAILED))
        s.timings["twins"] = time.monotonic() - t0
        if exp.search.seeds > 1:
            jobs = _seed_jobs(exp, s.tracker, s.experiment_id, s.parent_id)
            if jobs:
                log(f"seeds: {len(jobs)} repeats of the Pareto students and their twins ({exp.search.seeds} seeds each)")
                run_jobs(seed_trial, "job", jobs, exp, s.storage, "seed", log, **s.shared)
    return summarize(exp, grid, s.experiment_id, s.parent_id, baselines, s.started, s.timings)
