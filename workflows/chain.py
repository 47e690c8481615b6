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

from analysis import schema
from analysis.store import Store, params_of
from distill.config import with_values
from distill.data import Dataset
from distill.errors import KdxError
from distill.teacher import Teacher, model_outputs
from search_spaces.stages import FINAL, stage_configs

from .experiment import ExperimentConfig
from .records import failed_report, timing, trial_number
from .session import SearchSummary, open_session, summarize, trial_settings
from .trial import Job, TrialContext, log_failed, replay_finished, run_job, train_logged
from .tune import fit_search, run_jobs, trial_ids

__all__ = ["ChainPlan", "chain_trial", "chain_job_trial", "run_chain", "ROLE_CHAIN"]

Log = Callable[[str], None]
ROLE_CHAIN = "chain"  # a Job that repeats a whole chain; never an MLflow role (its stages are assistant and student runs)


@dataclass(frozen=True)
class ChainPlan:
    bases: dict  # stage name -> base run config (plain data), teacher side first, "final" last
    keys: tuple  # the outputs each stage hands the next ("logits", plus features when a loss reads them)


def chain_trial(config: dict, data: Dataset = None, teacher: Teacher | None = None, ctx: TrialContext = None, plan: ChainPlan = None) -> None:
    """A chain Optuna sampled: `config` is its params."""
    _run_chain(Job(ROLE_CHAIN, dict(config)), data, teacher, ctx, plan)


def chain_job_trial(config: dict, data: Dataset = None, teacher: Teacher | None = None, ctx: TrialContext = None,
                    plan: ChainPlan = None) -> None:
    """A job of the later phases: a chain repeated with another seed, or a single run (the direct run, the twin, their repeats)."""
    job: Job = config["job"]
    if job.role == ROLE_CHAIN:
        _run_chain(job, data, teacher, ctx, plan)
    else:
        run_job(job, data, teacher, ctx)


def _run_chain(job: Job, data: Dataset, teacher: Teacher, ctx: TrialContext, plan: ChainPlan) -> None:
    import ray
    from ray import tune

    started = time.perf_counter()
    trial_id = tune.get_context().get_trial_id()
    store = Store(ctx.tracking_uri, made=True)  # the session made it before any trial ran
    if replay_finished(store, ctx, trial_id):
        return
    sampled = job.params
    tags = {schema.TAG_TRIAL: trial_id, schema.TAG_PARENT: ctx.parent_run_id, schema.TAG_CHAIN: trial_id,
            schema.TAG_NODE: ray.get_runtime_context().get_node_id(), **({schema.TAG_SEED_OF: job.repeat_of} if job.repeat_of else {})}
    student_tags = {schema.TAG_ROLE: schema.ROLE_STUDENT, schema.TAG_SAMPLED: ",".join(sampled)}
    name = f"chain-{trial_number(trial_id)}"
    try:
        configs = stage_configs(sampled, plan.bases, job.seed)
    except KdxError as e:  # a combination the space allowed but no stage config does
        log_failed(store, ctx, name, tags | student_tags, sampled, e)
        tune.report(failed_report())
        return
    lineage, train_s = [ctx.teacher_run_id], 0.0
    for k, config in enumerate(configs, 1):
        last = k == len(configs)
        stage_tags = tags | {schema.TAG_TEACHER_RUN: lineage[-1], schema.TAG_LINEAGE: ">".join(lineage)}
        stage_tags |= student_tags if last else {schema.TAG_ROLE: schema.ROLE_ASSISTANT, schema.TAG_STAGE: str(k)}
        done = train_logged(store, ctx, f"{name} student" if last else f"{name} a{k}", stage_tags, config, data, teacher,
                            extra_params=sampled if last else None, report_epochs=False, reference=teacher.module)
        if done is None:
            tune.report(failed_report())
            return
        result, run_id, metrics = done
        lineage.append(run_id)
        train_s += result.seconds
        if not last:  # each stage teaches the next, for train.init: teacher too; online under augmentation
            online = config.teacher.outputs == "online"
            teacher = Teacher(result.model, None, None if online else model_outputs(result.model, data, list(plan.keys)))
    tune.report(metrics | timing(started, train_s) | {"epoch": result.epochs})


def _best_chain(store: Store, experiment_id: str, parent_id: str) -> tuple[str, dict] | None:
    """(run id, sampled params) of the finished chain whose student has the best val_acc."""
    chains = [r for r in store.runs(experiment_id, role=schema.ROLE_STUDENT, parent=parent_id, status="FINISHED")
              if r.data.tags.get(schema.TAG_CHAIN, schema.CHAIN_DIRECT) != schema.CHAIN_DIRECT and not r.data.tags.get(schema.TAG_SEED_OF)]
    if not chains:
        return None
    best = max(chains, key=lambda r: (r.data.metrics.get(schema.VAL_ACC, -1), -r.info.start_time))
    sampled = [k for k in best.data.tags.get(schema.TAG_SAMPLED, "").split(",") if k]
    params = params_of(best)
    return best.info.run_id, {k: params[k] for k in sampled if k in params}


def _final_stage(params: dict) -> dict:
    return {k.removeprefix(f"{FINAL}."): v for k, v in params.items() if k.startswith(f"{FINAL}.")}


def _controls(store: Store, experiment_id: str, parent_id: str) -> dict[str, str]:
    """{"direct": run id, "twin": run id} of the controls that finished at the base seed; cut-off ones are deleted."""
    found = {}
    candidates = [r for r in store.runs(experiment_id, parent=parent_id) if not r.data.tags.get(schema.TAG_SEED_OF)
                  and (r.data.tags.get(schema.TAG_CHAIN) == schema.CHAIN_DIRECT or r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_TWIN)]
    for r in store.keep_finished(candidates):
        found["direct" if r.data.tags.get(schema.TAG_CHAIN) == schema.CHAIN_DIRECT else "twin"] = r.info.run_id
    return found


def _control_jobs(exp: ExperimentConfig, found: dict[str, str], best_params: dict) -> list[Job]:
    """Phase 2 jobs still to run: the direct run and the twin at the base seed."""
    jobs = []
    if "direct" not in found:
        jobs.append(Job(schema.ROLE_STUDENT, _final_stage(best_params), tags={schema.TAG_CHAIN: schema.CHAIN_DIRECT}, name="direct"))
    if "twin" not in found and exp.search.baselines:
        jobs.append(Job(schema.ROLE_TWIN, {}))
    return jobs


def _repeat_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str, best: tuple[str, dict],
                 found: dict[str, str]) -> list[Job]:
    """Phase 3: the best chain, the direct run and the twin with the other seeds, minus those done."""
    done = store.repeats_done(experiment_id, parent_id)
    best_id, best_params = best
    final = _final_stage(best_params)
    jobs = []
    for seed in range(exp.run.seed + 1, exp.run.seed + exp.search.seeds):
        if (best_id, seed) not in done:
            jobs.append(Job(ROLE_CHAIN, best_params, seed=seed, repeat_of=best_id))
        if "direct" in found and (found["direct"], seed) not in done:
            jobs.append(Job(schema.ROLE_STUDENT, final, seed=seed, repeat_of=found["direct"], tags={schema.TAG_CHAIN: schema.CHAIN_DIRECT},
                            name=f"direct seed {seed}"))
        if "twin" in found and (found["twin"], seed) not in done:
            jobs.append(Job(schema.ROLE_TWIN, {}, seed=seed, repeat_of=found["twin"]))
    return jobs


def _delete_unknown_chains(store: Store, experiment_id: str, parent_id: str, known: set[str]) -> None:
    """After a resumed search: runs left RUNNING are closed, and chains of trials Tune does
    not know (finished in the seconds before a kill, then sampled again) are deleted."""
    store.end_running(experiment_id, parent_id)
    for r in store.runs(experiment_id, parent=parent_id):
        chain = r.data.tags.get(schema.TAG_CHAIN)
        if chain and chain != schema.CHAIN_DIRECT and chain not in known and not r.data.tags.get(schema.TAG_SEED_OF):
            store.delete(r.info.run_id)


def run_chain(exp: ExperimentConfig, resume: bool = False, address: str | None = None, log: Log = print) -> SearchSummary:
    log(f"teacher-assistant chains: {exp.chain.assistants} assistant(s) between the teacher and the student")
    with open_session(exp, resume, address, log) as s:
        bases = {name: with_values(b, trial_settings(exp)) for name, b in exp.stage_bases.items()}
        shared = s.shared | {"plan": ChainPlan(bases, s.ctx.output_keys)}
        t0 = time.monotonic()
        grid = fit_search(exp, chain_trial, bases, s.storage, resume, log, **shared)
        s.timings["trials"] = time.monotonic() - t0
        _delete_unknown_chains(s.store, s.experiment_id, s.parent_id, trial_ids(grid))
        t0 = time.monotonic()
        best = _best_chain(s.store, s.experiment_id, s.parent_id)
        twins = 0
        if best is not None:
            found = _controls(s.store, s.experiment_id, s.parent_id)
            jobs = _control_jobs(exp, found, best[1])
            if jobs:
                log("the direct teacher -> student run" + (" and the scratch twin" if len(jobs) > 1 else "") + ", same budget")
                run_jobs(chain_job_trial, jobs, exp, s.storage, "control", log, **shared)
                found = _controls(s.store, s.experiment_id, s.parent_id)
            twins = int("twin" in found)
            if exp.search.seeds > 1:
                jobs = _repeat_jobs(exp, s.store, s.experiment_id, s.parent_id, best, found)
                if jobs:
                    log(f"seeds: {len(jobs)} repeats of the best chain, the direct run and the twin ({exp.search.seeds} seeds each)")
                    run_jobs(chain_job_trial, jobs, exp, s.storage, "seed", log, **shared)
        s.timings["controls"] = time.monotonic() - t0
    return summarize(exp, grid, s, twins)
