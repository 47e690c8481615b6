"""An experiment's MLflow runs as a pandas DataFrame, one row per run.

Columns: run_id, name, role, arch, status, stopped_early, parent, trial_id,
teacher_run, error, start_time; the metrics (val_acc, test_acc, params,
latency_ms, best_epoch); every param under its dotted key (student.width,
losses.kd.temperature, ...) parsed back to numbers and booleans. Reads
MLflow only (SQLite or a tracking server); never starts Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from distill.errors import KdxError

from . import schema
from .store import SearchRecord, Store, params_of

__all__ = ["Experiment", "load_runs", "with_gains", "seed_stats", "paired", "by_seed", "over_seeds", "seed_means", "column"]

METRICS = (schema.VAL_ACC, schema.TEST_ACC, schema.PARAMS, schema.LATENCY, schema.BEST_EPOCH, schema.TEACHER_PARAMS, schema.TEACHER_TEST_ACC,
           schema.AGREEMENT, schema.TEACHER_KL, schema.TRAIN_S, schema.TEACHER_TRAIN_S,
           schema.VAL_LOSS, schema.VAL_PPL, schema.TEST_LOSS, schema.TEST_PPL, schema.TEACHER_TEST_LOSS, schema.FLOOR,
           schema.VAL_SPEARMAN, schema.TEST_SPEARMAN, schema.TEST_RECALL10, schema.TEST_GOLD_SPEARMAN)


@dataclass
class Experiment:
    name: str
    experiment_id: str
    tracking_uri: str
    runs: pd.DataFrame
    parent_id: str | None  # the search run
    search: SearchRecord  # what the search run recorded: settings, objectives, hypervolume reference

    @property
    def score(self) -> schema.Score:
        """What its models are picked and compared on: accuracy, or a language model's nats per token."""
        return self.search.score

    @property
    def teacher(self) -> dict | None:
        rows = self.runs[self.runs.role == schema.ROLE_TEACHER]
        return None if rows.empty else rows.iloc[0].to_dict()

    @property
    def floors(self) -> list[dict]:
        """The finished reference models made with no training (`schema.ROLE_FLOOR`: a sentence encoder's model2vec table)."""
        rows = self.runs[(self.runs.role == schema.ROLE_FLOOR) & (self.runs.status == "FINISHED")]
        return [r.to_dict() for _, r in rows.iterrows()]


def load_runs(tracking_uri: str, experiment: str) -> Experiment:
    store = Store(tracking_uri, create=False)  # a read never makes a store
    try:
        exp = store.client.get_experiment_by_name(experiment)
    except Exception as e:
        raise KdxError(f"--tracking-uri: cannot read the MLflow store at {tracking_uri} ({type(e).__name__})") from None
    if exp is None or exp.lifecycle_stage == "deleted":
        raise KdxError(f"--experiment: no experiment named '{experiment}' in {tracking_uri}")
    rows = []
    parent_id, record = None, SearchRecord.read({})
    for r in store.runs(exp.experiment_id):
        tags = r.data.tags
        row = {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "role": tags.get(schema.TAG_ROLE, ""),
            "arch": tags.get(schema.TAG_ARCH),
            "status": r.info.status,
            "stopped_early": tags.get(schema.TAG_STOPPED) == "true",
            "parent": tags.get(schema.TAG_PARENT),
            "trial_id": tags.get(schema.TAG_TRIAL),
            "teacher_run": tags.get(schema.TAG_TEACHER_RUN),
            "error": tags.get(schema.TAG_ERROR),
            "control": tags.get(schema.TAG_CONTROL, ""),
            "seed_of": tags.get(schema.TAG_SEED_OF, ""),
            "duplicate_of": tags.get(schema.TAG_DUPLICATE_OF, ""),
            "config_key": tags.get(schema.TAG_CONFIG_KEY, ""),
            "arm": tags.get(schema.TAG_ARM, ""),
            "gain_arch": tags.get(schema.TAG_GAIN_ARCH, ""),
            "control_of": tags.get(schema.TAG_CONTROL_OF, ""),
            "textbook": tags.get(schema.TAG_TEXTBOOK) == "true",
            "start": tags.get(schema.TAG_START, "random"),  # runs before kdx.start all started at random
            "chain": tags.get(schema.TAG_CHAIN, ""),
            "stage": tags.get(schema.TAG_STAGE, ""),
            "lineage": tags.get(schema.TAG_LINEAGE, ""),
            "sampled": [k for k in tags.get(schema.TAG_SAMPLED, "").split(",") if k],
            "floor": tags.get(schema.TAG_FLOOR, ""),
            "start_time": r.info.start_time,
        }
        for m in METRICS:
            row[m] = r.data.metrics.get(m, np.nan)
        row.update(params_of(r))
        if row["role"] == schema.ROLE_SEARCH:
            parent_id, record = r.info.run_id, SearchRecord.read(r.data.params)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "name", "role", "arch", "status", "stopped_early", "parent", "start_time", *METRICS])
    frame = frame.sort_values("start_time", kind="stable").reset_index(drop=True)
    return Experiment(experiment, exp.experiment_id, tracking_uri, frame, parent_id, record)


def with_gains(exp: Experiment) -> pd.DataFrame:
    """Student rows with their scratch twin's score (`twin_test`, `twin_val`: test and validation
    accuracy, or a language model's cross-entropy), the distillation gain (how much better the
    student's test score is than its twin's, same architecture and budget: accuracy minus the
    twin's, or the twin's nats per token minus the student's) and the teacher/student parameter ratio."""
    df = exp.runs
    # repeats with other seeds are summarised by seed_stats; a duplicate trial is its earlier run again
    # and the equal-budget arms (analysis.gains) are read apart
    original = (column(df, "seed_of") == "") & (column(df, "duplicate_of") == "") & (column(df, "arm") == "")
    students = df[(df.role == schema.ROLE_STUDENT) & original].copy()
    twins = df[(df.role == schema.ROLE_TWIN) & (df.status == "FINISHED") & original]
    score = exp.score
    twin_test = twins.groupby("arch")[score.test].mean()
    twin_val = twins.groupby("arch")[score.val].mean()
    twin_run = twins.groupby("arch")["run_id"].first()
    students["twin_test"] = students["arch"].map(twin_test)
    students["twin_val"] = students["arch"].map(twin_val)
    students["twin_run"] = students["arch"].map(twin_run)
    students["gain"] = score.gain(students[score.test], students["twin_test"])
    teacher = exp.teacher
    teacher_params = pd.Series(teacher[schema.PARAMS] if teacher else np.nan, index=students.index, dtype=float)
    if schema.TEACHER_PARAMS in students:  # each student's own teacher where the search varied it
        teacher_params = students[schema.TEACHER_PARAMS].astype(float).fillna(teacher_params)
    students["ratio"] = teacher_params / students[schema.PARAMS]
    return students


def column(df: pd.DataFrame, name: str) -> pd.Series:
    """A text column as strings, "" where missing (and all "" when no run has it)."""
    return df[name].fillna("").astype(str) if name in df else pd.Series("", index=df.index)


def over_seeds(done: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """A run and its repeats with other seeds (`kdx.seed_of`), among `done`."""
    return done[(done.run_id == run_id) | (column(done, "seed_of") == run_id)]


def seed_means(runs: pd.DataFrame, rows: pd.DataFrame, metric: str) -> pd.Series:
    """Each row's `metric` as the mean over it and its finished repeats with other seeds (`over_seeds`): its own
    value where it has none, or where its own is missing (a failed run is no point)."""
    if rows.empty or (column(runs, "seed_of") == "").all():
        return rows[metric] if metric in rows else pd.Series(np.nan, index=rows.index)
    done = runs[(runs.status == "FINISHED") & (runs.role != schema.ROLE_ASSISTANT)]  # a repeated chain's assistants carry seed_of too
    mean = pd.Series([over_seeds(done, r)[metric].astype(float).mean() for r in rows.run_id], index=rows.index, dtype=float)
    return mean.where(rows[metric].notna() & mean.notna(), rows[metric])


def by_seed(done: pd.DataFrame, run_id: str | None, metric: str = schema.TEST_ACC) -> dict[int, float]:
    """{seed: metric} of a run and its repeats with other seeds (`kdx.seed_of`), among `done`."""
    if not isinstance(run_id, str):
        return {}
    runs = over_seeds(done, run_id)
    return {int(k): float(v) for k, v in zip(runs.get("seed", []), runs[metric]) if k == k}


def paired(a: dict, b: dict) -> dict:
    """Per-seed differences a - b over the seeds both have: n, mean, std and t = mean / (std / sqrt n); NaN below two pairs.

    Differences that are equal up to rounding have std 0 and t NaN: their float std (1e-17, say) would
    otherwise give a t of 1e14 (a search once printed t -351255681243381.0 for two equal differences)."""
    d = np.array([a[k] - b[k] for k in sorted(set(a) & set(b))], dtype=float)
    sd = d.std(ddof=1) if len(d) > 1 else np.nan
    if sd == sd and sd <= 1e-9 * max(1.0, float(np.abs(d).max())):  # a score's rounding, far below any test set's resolution
        sd = 0.0
    t = d.mean() / (sd / np.sqrt(len(d))) if len(d) > 1 and sd > 0 else np.nan
    return {"n": len(d), "mean": d.mean() if len(d) else np.nan, "std": sd, "t": t}


def seed_stats(exp: Experiment, students: pd.DataFrame) -> pd.DataFrame:
    """For each student row: its runs over seeds (itself and its repeats), and the
    gain paired by seed with its twin's runs: n, test mean and std (of the experiment's score), gain mean,
    std and paired t (mean / (std / sqrt n)), > 0 where the student is better; NaN where fewer than two pairs."""
    df, score = exp.runs, exp.score
    done = df[(df.status == "FINISHED") & (df.role != schema.ROLE_ASSISTANT)]  # a repeated chain's assistants carry seed_of too
    rows = []
    for _, s in students.iterrows():
        mine = by_seed(done, s.run_id, score.test)
        acc = np.array(list(mine.values()), dtype=float)
        twin = by_seed(done, s.get("twin_run"), score.test)
        gain = paired(mine, twin) if score.better == "max" else paired(twin, mine)
        rows.append({
            "run_id": s.run_id, "n_seeds": len(mine), "test_mean": acc.mean() if len(acc) else np.nan,
            "test_std": acc.std(ddof=1) if len(acc) > 1 else np.nan,
            "gain_n": gain["n"], "gain_mean": gain["mean"], "gain_std": gain["std"], "gain_t": gain["t"],
        })
    return pd.DataFrame(rows, columns=["run_id", "n_seeds", "test_mean", "test_std", "gain_n", "gain_mean", "gain_std", "gain_t"])
