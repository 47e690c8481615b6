"""Teacher-assistant chains (Mirzadeh et al. 2020): teacher -> a1 -> ... -> student.

Across a large capacity gap a student may learn more from a mid-sized
assistant, itself distilled from the teacher, than from the teacher directly.
`kdx search` on a config with a `chain:` section runs three phases:

1. the search: every trial is one chain, its assistants' shapes (and, if the
   space says so, each stage's temperatures and weights) sampled by Optuna;
   each stage is an MLflow run (`assistant` runs, then the `student` run), each
   distilled from the stage before it on the same budget, and the trial's
   objective is the student's val_acc;
2. the controls: the direct teacher -> student run, with the best chain's
   final-stage settings (so that only the assistant differs), and the
   student's scratch twin;
3. with `search.seeds: K`, the best chain, the direct run and the twin again
   with seeds seed+1 .. seed+K-1, paired by seed (`kdx.seed_of`).

Assistant runs tag `kdx.chain` (the chain's trial id) and `kdx.stage`; every
run names its own teacher run in `kdx.teacher_run` and the line above it in
`kdx.lineage`. `analysis.chains` reads them back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import yaml
from torch import nn

from analysis import schema
from distill.config import with_values
from distill.data import Dataset
from distill.errors import KdxError
from distill.models import Outputs
from distill.teacher import model_outputs
from search_spaces.stages import FINAL, stage_configs

from .experiment import Experiment
from .session import SearchSummary, close_running, fit_search, open_session, run_jobs, summarize, trial_ids, trial_settings
from .tracking import Tracker
from .trial import TrialContext, failed_report, failed_run, final_metrics, replayed, seed_trial, timing, train_logged, trial_number

__all__ = ["ChainPlan", "chain_trial", "run_chain"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class ChainPlan:
    bases: dict  # stage name -> base run config (plain data), teacher side first, "final" last
    keys: tuple  # the outputs each stage hands the next ("logits", plus features when a loss reads them)


def chain_trial(params: dict, data: Dataset = None, teacher: Outputs | None = None, ctx: TrialContext = None, plan: ChainPlan = None,
                teacher_model: nn.Module | None = None) -> None:
    """One chain (sampled params), or a job of the later phases: {"job": {"role": "chain", params, seed, seed_of}}
    repeats a chain; any other role is a single run (the direct run, the twin, their repeats)."""
    job = params.get("job")
    if job is not None and job["role"] != "chain":
        seed_trial(params, data, teacher, ctx, teacher_model)
        return
    sampled = dict(job["params"]) if job else dict(params)
    _run_chain(sampled, job.get("seed") if job else None, job.get("seed_of") if job else None, data, teacher, ctx, plan, teacher_model)


def _run_chain(sampled: dict, seed: int | None, seed_of: str | None, data: Dataset, teacher: Outputs, ctx: TrialContext, plan: ChainPlan,
               teacher_model: nn.Module | None) -> None:
    import ray
    from ray import tune

    started = time.perf_counter()
    trial_id = tune.get_context().get_trial_id()
    tracker = Tracker(ctx.tracking_uri)
    if replayed(tracker, ctx, trial_id):
        return
    tags = {schema.TAG_TRIAL: trial_id, schema.TAG_PARENT: ctx.parent_run_id, schema.TAG_CHAIN: trial_id,
            schema.TAG_NODE: ray.get_runtime_context().get_node_id(), **({schema.TAG_SEED_OF: seed_of} if seed_of else {})}
    student_tags = {schema.TAG_ROLE: schema.ROLE_STUDENT, schema.TAG_SAMPLED: ",".join(sampled)}
    name = f"chain-{trial_number(trial_id)}"
    try:
        configs = stage_configs(sampled, plan.bases, seed)
    except KdxError as e:  # a combination the space allowed but no stage config does
        failed_run(tracker, ctx, name, tags | student_tags, sampled, e)
        tune.report(failed_report())
        return
    outputs, lineage, train_s = teacher, [ctx.teacher_run_id], 0.0
    for k, config in enumerate(configs, 1):
        last = k == len(configs)
        stage_tags = tags | {schema.TAG_TEACHER_RUN: lineage[-1], schema.TAG_LINEAGE: ">".join(lineage)}
        stage_tags |= student_tags if last else {schema.TAG_ROLE: schema.ROLE_ASSISTANT, schema.TAG_STAGE: str(k)}
        done = train_logged(tracker, ctx, f"{name} student" if last else f"{name} a{k}", stage_tags, config, data, outputs,
                            params=sampled if last else None, report_epochs=False, init_from=teacher_model)
        if done is None:
            tune.report(failed_report())
            return
        result, run_id = done
        lineage.append(run_id)
        train_s += result.seconds
        if not last:
            outputs = model_outputs(result.model, data, list(plan.keys))
            teacher_model = result.model  # each stage's teacher is the stage before it, for train.init: teacher too
    tune.report(final_metrics(result) | timing(started, train_s) | {"epoch": result.epochs})


def _stage_params(params: dict, sampled: list[str]) -> dict:
    return {k: yaml.safe_load(params[k]) for k in sampled if k in params}


def _best_chain(tracker: Tracker, experiment_id: str, parent_id: str) -> tuple[str, dict] | None:
    """(run id, sampled params) of the finished chain whose student has the best val_acc."""
    under = f"tags.`{schema.TAG_PARENT}` = '{parent_id}' and tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDENT}'"
    chains = [r for r in tracker.runs(experiment_id, under)
              if r.info.status == "FINISHED" and r.data.tags.get(schema.TAG_CHAIN, schema.CHAIN_DIRECT) != schema.CHAIN_DIRECT
              and not r.data.tags.get(schema.TAG_SEED_OF)]
    if not chains:
        return None
    best = max(chains, key=lambda r: (r.data.metrics.get(schema.VAL_ACC, -1), -r.info.start_time))
    sampled = [k for k in best.data.tags.get(schema.TAG_SAMPLED, "").split(",") if k]
    return best.info.run_id, _stage_params(best.data.params, sampled)


def _control_jobs(exp: Experiment, tracker: Tracker, experiment_id: str, parent_id: str, best_params: dict) -> tuple[list[dict], dict]:
    """Phase 2 jobs still to run (the direct run and the twin at the base seed), and the runs already there."""
    final = {k.removeprefix(f"{FINAL}."): v for k, v in best_params.items() if k.startswith(f"{FINAL}.")}
    found = {}
    for r in tracker.runs(experiment_id, f"tags.`{schema.TAG_PARENT}` = '{parent_id}'"):
        t = r.data.tags
        control = t.get(schema.TAG_CHAIN) == schema.CHAIN_DIRECT or t.get(schema.TAG_ROLE) == schema.ROLE_BASELINE
        if t.get(schema.TAG_SEED_OF) or not control:
            continue
        if r.info.status in ("RUNNING", "KILLED"):
            tracker.client.delete_run(r.info.run_id)  # cut off by a kill: it runs again
        elif r.info.status == "FINISHED":
            found["direct" if t.get(schema.TAG_CHAIN) == schema.CHAIN_DIRECT else "twin"] = r.info.run_id
    jobs = []
    if "direct" not in found:
        jobs.append({"role": schema.ROLE_STUDENT, "params": final, "tags": {schema.TAG_CHAIN: schema.CHAIN_DIRECT}, "name": "direct"})
    if "twin" not in found and exp.search.baselines:
        jobs.append({"role": schema.ROLE_BASELINE, "params": {}})
    return jobs, found


def _seed_jobs(exp: Experiment, tracker: Tracker, experiment_id: str, parent_id: str, best: tuple[str, dict], found: dict) -> list[dict]:
    """Phase 3: the best chain, the direct run and the twin with the other seeds, minus those done."""
    done = set()
    for r in tracker.runs(experiment_id, f"tags.`{schema.TAG_PARENT}` = '{parent_id}'"):
        of = r.data.tags.get(schema.TAG_SEED_OF)
        if of and r.data.tags.get(schema.TAG_ROLE) != schema.ROLE_ASSISTANT:
            if r.info.status == "FINISHED":
                done.add((of, r.data.params.get("seed")))
            else:
                tracker.client.delete_run(r.info.run_id)  # cut off by a kill: it runs again
    best_id, best_params = best
    final = {k.removeprefix(f"{FINAL}."): v for k, v in best_params.items() if k.startswith(f"{FINAL}.")}
    jobs = []
    for k in range(1, exp.search.seeds):
        seed = exp.run.seed + k
        if (best_id, str(seed)) not in done:
            jobs.append({"role": "chain", "params": best_params, "seed": seed, "seed_of": best_id})
        if "direct" in found and (found["direct"], str(seed)) not in done:
            jobs.append({"role": schema.ROLE_STUDENT, "params": {**final, "seed": seed}, "seed_of": found["direct"],
                         "tags": {schema.TAG_CHAIN: schema.CHAIN_DIRECT}, "name": f"direct seed {seed}"})
        if "twin" in found and (found["twin"], str(seed)) not in done:
            jobs.append({"role": schema.ROLE_BASELINE, "params": {"seed": seed}, "seed_of": found["twin"]})
    return jobs


def run_chain(exp: Experiment, resume: bool = False, address: str | None = None, log: Log = print) -> SearchSummary:
    log(f"teacher-assistant chains: {exp.chain.assistants} assistant(s) between the teacher and the student")
    with open_session(exp, resume, address, log) as s:
        bases = {name: with_values(b, trial_settings(exp)) for name, b in exp.stage_bases.items()}
        shared = s.shared | {"plan": ChainPlan(bases, s.ctx.output_keys)}
        t0 = time.monotonic()
        grid = fit_search(exp, chain_trial, bases, s.storage, resume, log, **shared)
        s.timings["trials"] = time.monotonic() - t0
        _close_chain_leftovers(s.tracker, s.experiment_id, s.parent_id, trial_ids(grid))
        t0 = time.monotonic()
        best = _best_chain(s.tracker, s.experiment_id, s.parent_id)
        baselines = 0
        if best is not None:
            jobs, found = _control_jobs(exp, s.tracker, s.experiment_id, s.parent_id, best[1])
            if jobs:
                log("the direct teacher -> student run" + (" and the scratch twin" if len(jobs) > 1 else "") + ", same budget")
                run_jobs(chain_trial, "job", jobs, exp, s.storage, "control", log, **shared)
                _, found = _control_jobs(exp, s.tracker, s.experiment_id, s.parent_id, best[1])
            baselines = int("twin" in found)
            if exp.search.seeds > 1:
                jobs = _seed_jobs(exp, s.tracker, s.experiment_id, s.parent_id, best, found)
                if jobs:
                    log(f"seeds: {len(jobs)} repeats of the best chain, the direct run and the twin ({exp.search.seeds} seeds each)")
                    run_jobs(chain_trial, "job", jobs, exp, s.storage, "seed", log, **shared)
        s.timings["controls"] = time.monotonic() - t0
    return summarize(exp, grid, s.experiment_id, s.parent_id, baselines, s.started, s.timings)


def _close_chain_leftovers(tracker: Tracker, experiment_id: str, parent_id: str, known: set[str]) -> None:
    """After a resumed search: runs left RUNNING are closed, and chains of trials Tune does
    not know (finished in the seconds before a kill, then sampled again) are deleted."""
    under = close_running(tracker, experiment_id, parent_id)
    for r in tracker.runs(experiment_id, under):
        chain = r.data.tags.get(schema.TAG_CHAIN)
        if chain and chain != schema.CHAIN_DIRECT and chain not in known and not r.data.tags.get(schema.TAG_SEED_OF):
            tracker.client.delete_run(r.info.run_id)
