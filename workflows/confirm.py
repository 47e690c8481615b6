"""The front confirmed on seeds (`search.confirm` = C): no point is Pareto-optimal on one lucky run.

A search's front is the best of many noisy scores: each trial's validation score is one
seed's, and its noise (about 1 point of accuracy in the demo) is as large as the gaps
between neighbours on the front. A front of single runs keeps the luckiest seeds, so it
promises more on validation than it delivers on test (the winner's curse). Issue 23's
bench_front saw it: TPE's exported front scored lower on test than random search's,
having put more near-equal candidates near the front; with the front on 3 seeds the gap
closed (test hypervolume 0.368 -> 0.376, random's 0.376).

So, after the trials and the base-recipe twins, before the gain picks its architectures:

1. the front over the search trials and the base-recipe twins (analysis/models.py, the
   models front as it stands before the gain) is read, each point at the mean of its seeds;
2. every point on it with fewer than C seeds runs again at seeds seed+1 .. seed+C-1
   (a repeat: same config, another seed; tag `kdx.seed_of`), and counts at its mean;
3. a mean that drops can let a neighbour onto the front, itself on one seed: the front
   is read again and the new points are confirmed in turn, for at most ROUNDS rounds.

The gain's arms are not touched here: they are raced over seeds on their own (gain.py).
A point's `n_seeds` in the report, the MLflow note and the export's card says how many
seeds stand behind it. Repeats pair by seed with nothing: they only sharpen the mean.
"""

from __future__ import annotations

from analysis import schema
from analysis.store import Store, params_of

from .experiment import ExperimentConfig
from .trial import Job

__all__ = ["confirm_jobs", "ROUNDS"]

ROUNDS = 3  # each round can admit a neighbour the last one's means uncovered; 3 bounds the compute on a long front
SOURCES = {"search trial": schema.ROLE_STUDENT, "base-recipe twin": schema.ROLE_TWIN}


def confirm_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Repeats still to run: every front point a single run put there (a search trial, a base-recipe twin)
    at the seeds it lacks of seed+1 .. seed+confirm-1. Empty with `search.confirm: 1`."""
    if exp.search.confirm < 2:
        return []
    from analysis.frontier import frontier_info
    from analysis.runs import load_runs

    info = frontier_info(load_runs(exp.tracking_uri, exp.name))
    if info.models is None:
        return []
    sampled = dict(zip(info.students.run_id, info.students.get("sampled", [])))
    done = store.repeats_done(experiment_id, parent_id)
    jobs = []
    for _, point in info.models.best.iterrows():
        role = SOURCES.get(point["source"])
        if role is None:
            continue
        params = params_of(store.get(point["run_id"]))
        if role == schema.ROLE_STUDENT:  # a trial repeats what was sampled; the base config supplies the rest, as it did
            params = {k: params[k] for k in sampled.get(point["run_id"], []) if k in params}
        else:
            params = {k: v for k, v in params.items() if k.startswith("student.")}
        for seed in range(exp.run.seed + 1, exp.run.seed + exp.search.confirm):
            if (point["run_id"], seed) not in done:
                jobs.append(Job(role, params, seed=seed, repeat_of=point["run_id"]))
    return jobs

