"""The front confirmed on seeds (`search.confirm` = C > 1): no point is Pareto-optimal on one lucky run.

A search's front is the best of many noisy scores: each trial's validation score is one
seed's, and its noise (about 1 point of accuracy in the demo) is as large as the gaps
between neighbours on the front. A front of single runs keeps the luckiest seeds, so its
validation figures promise more than its models give on test (the winner's curse).

It is off by default (C = 1), because bench_front measured what it buys at equal compute
(runs of the same epochs; the unconfirmed search given as many trials as the confirmed one
made runs, 5 search seeds, three runs of the benchmark): the exported front's test
hypervolume was within the noise of spending the runs on trials on hgmm (+0.005, t 2.3; -0.003
and +0.005 in two earlier runs) and behind on mnist1d (-0.033, t -1.9; -0.008 and -0.038),
where a search keeps finding better students with more trials, while C = 3 took 1.8-2.7x the
trials' runs. What it does buy is figures to trust: the confirmed front's validation
hypervolume was 0.030 / 0.001 above its test one, the unconfirmed front's 0.043 / 0.031. Turn it on where the front's numbers must hold
(a report, a paper), or where the validation split is small and the scores noisy.

With C > 1, after the trials and the base-recipe twins, before the gain picks its architectures:

1. two fronts are read, each point at the mean of its seeds: the one over the search trials
   and the base-recipe twins (analysis/models.py's, as it stands before the gain: what ships),
   and the trials' own (what the gain measures; a trial a twin beats is still on it);
2. every point on either with fewer than C seeds runs again at seeds seed+1 .. seed+C-1
   (a repeat: same config, another seed; tag `kdx.seed_of`), and is ranked at its mean
   (which config is good) while the model it ships is its seed that validated best (which
   model is good: analysis/models.py). Shipping the base seed of a config picked on its
   mean threw away real seed-to-seed differences: on mnist1d in bench_front the exported
   front's test hypervolume was 0.644 that way, 0.688 shipping the best-validated seed,
   from the same runs;
3. a mean that drops can let a neighbour onto the front, itself on one seed: the front
   is read again and the new points are confirmed in turn, for at most ROUNDS rounds.

Once the gain has begun (a resume) nothing more is repeated: the architectures it measures
were chosen on the means as they stood, and new repeats would move them. After the gain, its
winners join the exported front; where a KD candidate replayed a front trial, the arm's winner
stands for it, and a neighbour that this uncovers is shipped on the seeds it has (its card says
how many).

The gain's arms are not touched here: they are raced over seeds on their own (gain.py).
A point's `n_seeds` in the report, the MLflow note and the export's card says how many
seeds stand behind it. Repeats pair by seed with nothing: they only sharpen the mean.
"""

from __future__ import annotations

from analysis import schema
from analysis.frontier import FrontierInfo, frontier_info
from analysis.runs import column, load_runs
from analysis.store import Store, params_of

from .experiment import ExperimentConfig
from .trial import Job

__all__ = ["confirm_jobs", "front_points", "ROUNDS"]

ROUNDS = 3  # each round can admit a neighbour the last one's means uncovered; 3 bounds the compute on a long front
SOURCES = {"search trial": schema.ROLE_STUDENT, "base-recipe twin": schema.ROLE_TWIN}


def confirm_jobs(exp: ExperimentConfig, store: Store, experiment_id: str, parent_id: str) -> list[Job]:
    """Repeats still to run: every front point a single run put there (a search trial, a base-recipe twin)
    at the seeds it lacks of seed+1 .. seed+confirm-1. Empty with `search.confirm: 1`."""
    if exp.search.confirm < 2:
        return []
    found = load_runs(exp.tracking_uri, exp.name)
    if (column(found.runs, "arm") != "").any():  # the gain has begun (a resume): more repeats would move the means it chose on
        return []
    info = frontier_info(found)
    sampled = dict(zip(info.students.run_id, info.students.get("sampled", [])))
    done = store.repeats_done(experiment_id, parent_id)
    jobs = []
    for run_id, role in front_points(info).items():
        params = params_of(store.get(run_id))
        if role == schema.ROLE_STUDENT:  # a trial repeats what was sampled; the base config supplies the rest, as it did
            params = {k: params[k] for k in sampled.get(run_id, []) if k in params}
        else:
            params = {k: v for k, v in params.items() if k.startswith("student.")}
        for seed in range(exp.run.seed + 1, exp.run.seed + exp.search.confirm):
            if (run_id, seed) not in done:
                jobs.append(Job(role, params, seed=seed, repeat_of=run_id))
    return jobs


def front_points(info: FrontierInfo) -> dict[str, str]:
    """{run id: role} of the points to confirm, from a FrontierInfo read before the gain: the models front's
    search trials and base-recipe twins (what ships), and the trials' own front (what the gain measures: a trial
    that a twin beats is off the first and still on the second)."""
    points = {} if info.models is None else {p["run_id"]: SOURCES[p["source"]] for _, p in info.models.best.iterrows() if p["source"] in SOURCES}
    return points | {run_id: schema.ROLE_STUDENT for run_id in info.front.run_id}
