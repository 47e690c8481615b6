"""Each search's Optuna study, persisted where Optuna's users look: `optuna-dashboard` and
`optuna.load_study` open it while the search runs and after.

Ray's `OptunaSearch` keeps its study in memory and pickles it into Tune's snapshots, which
is what a resumed search restores. Handing it a persistent storage instead would make the
file and the snapshot disagree after a kill: trials asked after the last snapshot would stay
RUNNING in the file forever and Tune would ask new ones beside them. So the sampler's study
stays Ray's, and every trial Tune finishes is copied, once (keyed by its Tune trial id), into
the persisted study (`MirroredOptunaSearch`); after a resumed search, a trial Tune no longer
knows (it finished in the seconds between the last snapshot and the kill, and was sampled
again) is dropped (`keep_only`). So the study holds one trial per Tune trial, with its
parameters, distributions and objective values; a trial a scheduler stopped is PRUNED with
its last value as an intermediate one (kept off the dashboard's front, as off kdx's), a
failed one FAIL.

The default storage is a journal file beside Tune's state (`<search.storage>/<name>.optuna.journal`,
Optuna's recommendation for one machine: measured, Optuna on SQLite with 2 processes ran one queued
trial twice in about 1 of 6 runs, the journal had no failure in 13); `search.study` may name another journal
file or a database URL (sqlite:///..., postgresql://...). Only the driver writes it.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.samplers import NSGAIISampler
from ray.tune.search.optuna import OptunaSearch

from .tune import DUPLICATE, FAILED, LOCAL_STORAGE

__all__ = ["StudyRef", "study_ref", "MirroredOptunaSearch", "PicklableNSGAII", "TRIAL_ATTR"]

TRIAL_ATTR = "kdx.trial_id"  # on each persisted trial: its Tune trial id (the same as the MLflow run's kdx.trial_id tag)
_open: dict[tuple[str, str], Any] = {}  # one loaded study per (storage, name) in this process


@dataclass(frozen=True)
class StudyRef:
    """Where a search's study lives: picklable (it travels in Tune's snapshot with the searcher)."""

    storage: str  # a journal file's path, or a database URL
    name: str
    directions: tuple[str, ...]  # "maximize" / "minimize", in the objectives' order
    objectives: tuple[str, ...]
    epochs: int  # a trial that reported fewer was stopped early

    @property
    def is_journal(self) -> bool:
        return "://" not in self.storage

    def _storage(self):
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if self.is_journal:
            Path(self.storage).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(self.storage))
        return optuna.storages.RDBStorage(self.storage)

    def exists(self) -> bool:
        import optuna

        if self.is_journal and not Path(self.storage).exists():
            return False
        return self.name in optuna.get_all_study_names(self._storage())

    def open(self):
        """The persisted study, made when missing (in the driver, before any trial: two processes creating one store race)."""
        import optuna

        key = (self.storage, self.name)
        if key not in _open:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            _open[key] = optuna.create_study(storage=self._storage(), study_name=self.name, directions=list(self.directions),
                                             load_if_exists=True)
            with warnings.catch_warnings():  # "experimental since v3.2": the dashboard labels axes with these names
                warnings.simplefilter("ignore")
                _open[key].set_metric_names(list(self.objectives))
        return _open[key]

    def record(self, trial_id: str, frozen, result: dict | None, error: bool) -> None:
        """Copy one finished Tune trial (Optuna's in-memory `frozen` trial of it) into the persisted study, once."""
        from optuna.trial import TrialState, create_trial

        study = self.open()
        if any(t.user_attrs.get(TRIAL_ATTR) == trial_id for t in study.get_trials(deepcopy=False)):
            return  # a resumed trial reported again
        result = result or {}
        values = [result.get(k) for k in self.objectives]
        failed = error or result.get(FAILED) or any(v is None for v in values)
        stopped = not failed and result.get("epoch", self.epochs) < self.epochs
        attrs = {TRIAL_ATTR: trial_id, "epochs": result.get("epoch")}
        if result.get(DUPLICATE):
            attrs["duplicate"] = True  # Optuna sampled a finished config again: that run's result, not trained again
        state = TrialState.FAIL if failed else TrialState.PRUNED if stopped else TrialState.COMPLETE
        inter = {int(result["epoch"]): float(values[0])} if stopped else None
        study.add_trial(create_trial(state=state, values=None if failed or stopped else values, params=frozen.params,
                                     distributions=frozen.distributions, user_attrs=attrs, intermediate_values=inter))

    def keep_only(self, known: set[str]) -> int:
        """Drop trials Tune does not know (see the module doc); returns how many were dropped."""
        import optuna

        study = self.open()
        trials = study.get_trials(deepcopy=False)
        kept = [t for t in trials if t.user_attrs.get(TRIAL_ATTR) in known]
        if len(kept) == len(trials):
            return 0
        optuna.delete_study(study_name=self.name, storage=study._storage)
        _open.pop((self.storage, self.name), None)
        self.open().add_trials(kept)
        return len(trials) - len(kept)


def study_ref(exp, storage: Path | str) -> StudyRef:
    """The search's study: `search.study` when given, else a journal file beside Tune's state
    (on the driver's disk when Tune's storage is a URI: only the driver writes it)."""
    where = exp.search.study
    if not where:
        folder = storage if isinstance(storage, Path) else Path(LOCAL_STORAGE).resolve()
        where = str(folder / f"{exp.name}.optuna.journal")
    elif "://" not in where:
        where = str(Path(where).expanduser().resolve())
    objectives = tuple(exp.search.objectives)
    directions = tuple("maximize" if exp.search.objectives[k] == "max" else "minimize" for k in objectives)
    return StudyRef(where, exp.name, directions, objectives, exp.run.train.epochs)


class MirroredOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, copying every finished trial into the persisted study (`StudyRef.record`)."""

    def __init__(self, *args, study: StudyRef | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kdx_study = study

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        study, ot = getattr(self, "_kdx_study", None), self._ot_trials.get(trial_id)  # a Tune snapshot saved before the study was persisted has none
        if study is not None and ot is not None:
            study.record(trial_id, self._ot_study.get_trials(deepcopy=False)[ot.number], result, error)



class PicklableNSGAII(NSGAIISampler):
    """Optuna 5's NSGA-II sampler holds a thread lock, which no pickle takes, and Tune pickles its
    searcher (sampler included) into every snapshot: `sampler: nsga2` failed before the first trial
    with "cannot pickle '_thread.lock' object". The lock guards its generation cache within one
    process, so a copy gets a new one."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()
