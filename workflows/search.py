"""`kdx search`: a Ray Tune + Optuna search over students, every trial an MLflow run.

Inside `session.open_session` (checks first, data and teacher once, then Ray and
the MLflow parent and teacher runs), Tune runs the trials, sharing data and
the teacher through the object store; then the scratch twins of every
distinct student architecture run as a batch of jobs, the front's single-run
points repeat on `search.confirm` seeds (workflows/confirm.py), and with
`search.seeds` the gain's arms (or the Pareto students and their twins) repeat with more seeds. A config with a
`chain:` section runs `workflows.chain` instead.
"""

from __future__ import annotations

import itertools
import time
from typing import Callable

from analysis import schema
from analysis.store import KILLED, RUNNING, Store, params_of
from distill.errors import ConfigError
from search_spaces.space import apply, flatten, holds

from .confirm import ROUNDS, confirm_jobs
from .experiment import ExperimentConfig
from .gain import race_jobs, recipe_jobs, seed_jobs
from .session import SearchSummary, open_session, summarize
from .trial import Job, job_trial, student_trial
from .tune import FAILED, fit_search, run_jobs, trial_ids
from .warm import describe, warm_start

__all__ = ["run_search", "reference_point"]

Log = Callable[[str], None]


def reference_point(exp: ExperimentConfig, data) -> dict[str, float]:
    """The hypervolume reference, fixed before any trial: chance accuracy (a language model's: the
    uniform distribution's cross-entropy and perplexity, log V and V) and the
    size and latency of the largest student the space can make (every numeric
    entry at its high end, every combination of choices, up to 256)."""
    from distill.models import count_params, measure_latency

    choices = [p for p in exp.space if p.kind == "choice"]
    largest, size = None, -1
    base_flat = flatten(exp.base)
    for combo in itertools.islice(itertools.product(*(p.choices for p in choices)), 256):
        picked = dict(zip((p.key for p in choices), combo))
        params: dict = {}
        for p in exp.space:
            if all(holds(cond, params.get(k, base_flat.get(k))) for k, cond in p.when.items()):
                params[p.key] = picked[p.key] if p.kind == "choice" else p.value if p.kind == "fixed" else p.high
        try:
            student = apply(params, exp.base).student
        except ConfigError:
            continue
        model = student.build(data.input_shape, data.num_classes, "student")
        if count_params(model) > size:
            largest, size = model, count_params(model)
    ref = data.task_type.reference(data)  # what a model that learned nothing scores
    if largest is not None:
        ref[schema.PARAMS] = float(size)
        ref[schema.LATENCY] = measure_latency(largest, data.input_shape)
    return ref


def _twin_jobs(store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """A twin job for every student architecture that has no finished twin yet."""
    twins = store.keep_finished(store.runs(experiment_id, role=schema.ROLE_TWIN, parent=parent_id))
    done = {t.data.tags.get(schema.TAG_ARCH) for t in twins}
    jobs: dict[str, Job] = {}
    for r in store.runs(experiment_id, role=schema.ROLE_STUDENT, parent=parent_id):
        arch = r.data.tags.get(schema.TAG_ARCH)
        if r.info.status in ("FINISHED", "KILLED") and arch not in done and arch not in jobs:
            jobs[arch] = Job(schema.ROLE_TWIN, {k: v for k, v in params_of(r).items() if k.startswith("student.")})
    return list(jobs.values())


def _repeat_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Repeats still to run: each Pareto student and its twin with the other seeds, paired by seed."""
    from analysis.frontier import frontier_info
    from analysis.runs import load_runs

    front = frontier_info(load_runs(exp.tracking_uri, exp.name)).front
    done = store.repeats_done(experiment_id, parent_id)
    jobs = []
    for _, row in front.iterrows():
        params = params_of(store.get(row["run_id"]))
        sampled = {k: params[k] for k in row["sampled"]}
        shape = {k: v for k, v in params.items() if k.startswith("student.")}
        twin = row.get("twin_run")
        for seed in range(exp.run.seed + 1, exp.run.seed + exp.search.seeds):
            if (row["run_id"], seed) not in done:
                jobs.append(Job(schema.ROLE_STUDENT, sampled, seed=seed, repeat_of=row["run_id"]))
            if isinstance(twin, str) and (twin, seed) not in done:
                jobs.append(Job(schema.ROLE_TWIN, shape, seed=seed, repeat_of=twin))
    return jobs


def _close_stopped(store: Store, experiment_id: str, parent_id: str, grid, epochs: int) -> int:
    """Trials a scheduler stopped whose run is still RUNNING (Tune may end the trial's process
    before its own end-of-run logging): KILLED, tagged stopped-early, with the last objectives
    Tune saw, never an error. Returns how many were closed here."""
    closed = 0
    for result in grid:
        m = result.metrics or {}
        if result.error is not None or m.get(FAILED) or m.get("epoch", epochs) >= epochs or "trial_id" not in m:
            continue
        for r in store.runs(experiment_id, parent=parent_id, trial=m["trial_id"], status=RUNNING):
            log = store.log(r.info.run_id)
            log.tags({schema.TAG_STOPPED: "true"})
            log.metrics({k: m[k] for k in schema.OBJECTIVES if k in m}, step=int(m["epoch"]))
            log.end(KILLED)
            closed += 1
    return closed


def _delete_unknown_trials(store: Store, experiment_id: str, parent_id: str, known: set[str]) -> None:
    """After a resumed search: runs still RUNNING belong to trials that will never
    report, and student runs of trials that Tune's last snapshot did not know
    (finished in the seconds before a kill) were sampled again: delete those,
    so every trial Tune and Optuna know has exactly one run."""
    store.end_running(experiment_id, parent_id)
    for r in store.runs(experiment_id, role=schema.ROLE_STUDENT, parent=parent_id):
        t = r.data.tags
        if t.get(schema.TAG_TRIAL) not in known and not t.get(schema.TAG_SEED_OF) and not t.get(schema.TAG_ARM):  # the gain's runs are not trials
            store.delete(r.info.run_id)


def _confirm_front(exp: ExperimentConfig, s, log: Log) -> None:
    """The front's single-run points again on `search.confirm` seeds, round by round while new ones enter (workflows/confirm.py)."""
    for _ in range(ROUNDS):
        jobs = confirm_jobs(exp, s.store, s.experiment_id, s.parent_id)
        if not jobs:
            return
        points = len({j.repeat_of for j in jobs})
        log(f"confirm: {points} front point(s) short of {exp.search.confirm} seeds run again ({len(jobs)} runs): "
            "each ranked at its mean, shipping its best-validated seed")
        run_jobs(job_trial, jobs, exp, s.storage, "confirm", log, **s.shared)


def _measure_gain(exp: ExperimentConfig, s, log: Log) -> None:
    """Both arms tuned on the front's architectures, the best recipes raced over seeds, then the winners' seeds (workflows/gain.py)."""
    jobs = recipe_jobs(exp, s.store, s.experiment_id, s.parent_id)
    if jobs:
        k = exp.search.recipe_trials
        archs = len({j.tags[schema.TAG_GAIN_ARCH] for j in jobs})
        start = any(j.tags.get(schema.TAG_ARM) == "random" for j in jobs)
        words = {"kd": "KD", "twin": "the same-start tuned twin" if start else "the tuned twin", "smooth": "the label-smoothing control",
                 "random": "the random-start twin", "kd_random": "KD from random weights"}
        named = [w for arm, w in words.items() if any(j.tags.get(schema.TAG_ARM) == arm for j in jobs)]
        arms = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
        log(f"gain: {k} recipe(s) each for {arms} on {archs} front architecture(s) ({len(jobs)} runs)")
        run_jobs(job_trial, jobs, exp, s.storage, "recipe", log, **s.shared)
    jobs = race_jobs(exp, s.store, s.experiment_id, s.parent_id)
    if jobs:
        log(f"gain: each arm's {exp.search.race} best recipes raced over {min(exp.search.race_seeds, exp.search.seeds)} seeds before a "
            f"winner is picked on their mean ({len(jobs)} runs)")
        run_jobs(job_trial, jobs, exp, s.storage, "race", log, **s.shared)
    jobs = seed_jobs(exp, s.store, s.experiment_id, s.parent_id)
    if jobs:
        log(f"gain: the winners and the controls over {exp.search.seeds} seed(s) ({len(jobs)} runs)")
        run_jobs(job_trial, jobs, exp, s.storage, "seed", log, **s.shared)


def run_search(exp: ExperimentConfig, resume: bool = False, address: str | None = None, log: Log = print) -> SearchSummary:
    if exp.chain is not None:
        from .chain import run_chain

        return run_chain(exp, resume, address, log)
    with open_session(exp, resume, address, log, lambda data: reference_point(exp, data)) as s:
        t0 = time.monotonic()
        first = warm_start(exp)
        if first:
            log(f"warm start: {len(first)} known-good point(s) first ({describe(first)})")
        grid = fit_search(exp, student_trial, s.ctx.base, s.storage, resume, log, first, **s.shared)
        s.timings["trials"] = time.monotonic() - t0
        _close_stopped(s.store, s.experiment_id, s.parent_id, grid, exp.run.train.epochs)
        _delete_unknown_trials(s.store, s.experiment_id, s.parent_id, trial_ids(grid))
        twins = 0
        t0 = time.monotonic()
        if exp.search.baselines:
            jobs = _twin_jobs(s.store, s.experiment_id, s.parent_id)
            if jobs:
                log(f"scratch twins: {len(jobs)} architecture(s)")
                done = run_jobs(job_trial, jobs, exp, s.storage, "twin", log, **s.shared)
                twins = sum(1 for r in done if r.error is None and not r.metrics.get(FAILED))
        s.timings["twins"] = time.monotonic() - t0
        t0 = time.monotonic()
        _confirm_front(exp, s, log)  # before the gain: it measures the front's architectures, chosen on the confirmed means
        s.timings["confirm"] = time.monotonic() - t0
        t0 = time.monotonic()
        if exp.search.twins == "tuned" and exp.search.baselines:  # baselines: false turns every scratch arm off
            _measure_gain(exp, s, log)
        elif exp.search.seeds > 1:
            jobs = _repeat_jobs(exp, s.store, s.experiment_id, s.parent_id)
            if jobs:
                log(f"seeds: {len(jobs)} repeats of the Pareto students and their twins ({exp.search.seeds} seeds each)")
                run_jobs(job_trial, jobs, exp, s.storage, "seed", log, **s.shared)
        s.timings["gain"] = time.monotonic() - t0
    return summarize(exp, grid, s, twins)
