"""The MLflow store: the one module that writes and queries kdx's runs.

`analysis.schema` names the tags, params and metrics; this module is how
they are used: the filters (runs under a search by role, status, trial), the
params parsed back to typed values, the search run's settings, the layout of
a student's weights artifact, and the bookkeeping a resumed search needs
(runs a kill cut off). The search (workflows/) writes through it, the report
and export read through it; nobody else builds a filter string or parses a
param. Ray-free.

Everything goes through one `MlflowClient` with an explicit experiment id:
`mlflow.set_experiment` racing in two processes sent runs to "Default"
(2 of 3 tries, measured). Metrics are buffered and sent with `log_batch` (one call is about
8 ms on SQLite; one call per key made Ray's stock callback 7x slower).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag, ViewType

from distill.cache import locked
from distill.errors import KdxError
from distill.parsing import yaml_float

from . import schema

__all__ = ["Store", "RunLog", "SearchRecord", "parse_param", "params_of", "search_params", "FINISHED", "KILLED", "FAILED", "RUNNING", "VIEW_RUNS", "VIEW_FRONT", "has_views", "ui_path"]

FINISHED, KILLED, FAILED, RUNNING = "FINISHED", "KILLED", "FAILED", "RUNNING"
_MAX_PARAMS, _MAX_METRICS, _MAX_TAGS = 100, 1000, 100  # MLflow's log_batch limits
_MAX_VALUE = 6000
_MAX_NOTE, _MAX_EXPERIMENT_NOTE = 8000, 20000  # MLflow's longest run and experiment tag values
_SHARED_VIEW = "mlflow.sharedViewState."  # MLflow's UI reads a runs-table state from this experiment tag (?viewStateShareKey=)
VIEW_RUNS, VIEW_FRONT = "kdx-runs", "kdx-front"
_SEARCH, _REF = "search.", "ref."  # prefixes of the search run's params: its settings and its hypervolume reference


def parse_param(text: str) -> Any:
    """A logged param back to the value it was: 13, 0.5, true, null, [1, 2], or the text itself."""
    try:
        return yaml_float(yaml.safe_load(text))  # YAML 1.1 reads 1e-05 (no dot) as a string
    except yaml.YAMLError:
        return text


def params_of(run: Run) -> dict[str, Any]:
    """A run's params, typed (a DataFrame column would hold 13 as 13.0 where other rows lack it)."""
    return {k: parse_param(v) for k, v in run.data.params.items()}


@dataclass(frozen=True)
class SearchRecord:
    """What the search run records about the search: its settings, objectives and hypervolume reference."""

    settings: dict[str, str]  # search.* params, prefix removed, as logged
    objectives: dict[str, str]  # {"val_acc": "max", ...}
    reference: dict[str, float]  # fixed before any trial: chance accuracy, the largest student's size and latency

    @classmethod
    def read(cls, params: Mapping[str, str]) -> "SearchRecord":
        settings = {k.removeprefix(_SEARCH): v for k, v in params.items() if k.startswith(_SEARCH)}
        text = settings.get("objectives", f"{schema.VAL_ACC}:max")
        objectives = dict(item.split(":", 1) for item in text.split(",") if item)
        reference = {k.removeprefix(_REF): float(v) for k, v in params.items() if k.startswith(_REF)}
        return cls(settings, objectives, reference)

    @property
    def val_samples(self) -> int | None:
        """The validation split's size (logged since selection saw the split's noise); None for an older search."""
        return int(float(self.settings.get("val_samples") or 0)) or None

    @property
    def score(self) -> "schema.Score":
        """How this search's models are compared: in nats for a language model, else in accuracy."""
        return schema.score_of(self.settings.get("task"))


def search_params(settings: Mapping[str, Any], objectives: Mapping[str, str], reference: Mapping[str, float]) -> dict[str, Any]:
    """The search run's params, which `SearchRecord.read` reads back."""
    out = {f"{_SEARCH}{k}": v for k, v in settings.items()}
    out[f"{_SEARCH}objectives"] = ",".join(f"{k}:{v}" for k, v in objectives.items())
    return out | {f"{_REF}{k}": v for k, v in reference.items()}


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def ui_path(experiment_id: str, run_id: str | None = None, view: str | None = None) -> str:
    """Where MLflow's UI shows an experiment's runs table (on one of `set_views`' views) or one run,
    after the server's address: its model-training pages (`workflowType`), not MLflow 3's GenAI ones."""
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{page}?workflowType=machine_learning" + (f"&viewStateShareKey={view}" if view else "")


def has_views(experiment) -> bool:
    """Whether a search set the runs-table views on this MLflow experiment (`Store.set_views`)."""
    return f"{_SHARED_VIEW}{VIEW_RUNS}" in (experiment.tags or {})


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 60] + "\n\n*(cut here: the whole table is in the report)*"


def _where(role: str | None, parent: str | None, status: str | None, trial: str | None, tag: tuple[str, str] | None) -> str:
    parts = [f"tags.`{tag[0]}` = '{tag[1]}'"] if tag else []
    if role:
        parts.append(f"tags.`{schema.TAG_ROLE}` = '{role}'")
    if parent:
        parts.append(f"tags.`{schema.TAG_PARENT}` = '{parent}'")
    if trial:
        parts.append(f"tags.`{schema.TAG_TRIAL}` = '{trial}'")
    if status:
        parts.append(f"attributes.status = '{status}'")
    return " and ".join(parts)


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from distill.errors import ConfigError

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"--tracking-uri: cannot reach the MLflow server at {uri} ({getattr(e, 'reason', e)})") from None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for a server or another backend)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


class Store:
    """One tracking URI: experiments, runs and their artifacts.

    A SQLite store is opened under a lock file beside it: MLflow creates (and migrates) the
    database on first touch, and two processes doing that at once race (one dies in
    alembic's migration, "table ... already exists", every time on a 2-core machine). With `create=False` (what reads do) a missing database is an error, never made.
    `made=True` says the caller's driver made the database before this process ran (a trial):
    it must exist, and it is opened without the lock, which would make the trials that start
    together open it one at a time (about 1 s each: MLflow's SQLAlchemy store and its schema check)."""

    def __init__(self, uri: str, create: bool = True, made: bool = False):
        self.uri = uri
        check_tracking(uri)  # a server that is down: one line now, not MLflow's retries later
        path = sqlite_path(uri)
        if path is not None and (made or not create) and not path.is_file():
            raise KdxError(f"--tracking-uri: no MLflow store at {path} (nothing has been logged there)")
        if path is None or made:
            self.client = MlflowClient(tracking_uri=uri)
            return
        with locked(path.with_name(path.name + ".lock")):  # the client's first touch creates and migrates: one process at a time
            self.client = MlflowClient(tracking_uri=uri)
            self.client.search_experiments(max_results=1)

    # --- experiments and runs ---------------------------------------------------

    def experiment_id(self, name: str, create: bool = True) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        if not create:
            return None
        # Tell MLflow 3's UI this is model training, so it opens on the runs table, not the GenAI overview.
        return self.client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"})

    def runs(self, experiment_id: str, role: str | None = None, parent: str | None = None, status: str | None = None,
             trial: str | None = None, tag: tuple[str, str] | None = None) -> list[Run]:
        """Every active run of the experiment that matches (`tag`: a (name, value) it carries), all pages."""
        where = _where(role, parent, status, trial, tag)
        out, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], where, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def get(self, run_id: str) -> Run:
        return self.client.get_run(run_id)

    def start(self, experiment_id: str, name: str, tags: Mapping[str, str]) -> "RunLog":
        run = self.client.create_run(experiment_id, run_name=name, tags=dict(tags))
        return RunLog(self.client, run.info.run_id)

    def log(self, run_id: str) -> "RunLog":
        """A RunLog onto a run that exists (another process began it)."""
        return RunLog(self.client, run_id)

    def set_status(self, run_id: str, status: str) -> None:
        if status == RUNNING:
            self.client.update_run(run_id, status=RUNNING)
        else:
            self.client.set_terminated(run_id, status=status)

    def delete(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def search_run(self, experiment_id: str) -> Run | None:
        found = self.runs(experiment_id, role=schema.ROLE_SEARCH)
        return found[0] if found else None

    # --- what a resumed search needs -----------------------------------------------

    def end_running(self, experiment_id: str, parent: str) -> None:
        """Runs still RUNNING under the search belong to trials that will never report: KILLED, with a reason."""
        for r in self.runs(experiment_id, parent=parent, status=RUNNING):
            self.client.set_tag(r.info.run_id, schema.TAG_ERROR, "left running by an interrupted search")
            self.client.set_terminated(r.info.run_id, status=KILLED)

    def keep_finished(self, runs: Iterable[Run]) -> list[Run]:
        """The FINISHED runs among `runs`; every other one was cut off by a kill (or failed)
        and is deleted, so that its job runs again and leaves exactly one run."""
        kept = []
        for r in runs:
            if r.info.status == FINISHED:
                kept.append(r)
            else:
                self.delete(r.info.run_id)
        return kept

    def repeats_done(self, experiment_id: str, parent: str) -> set[tuple[str, int]]:
        """(repeated run id, seed) of every finished repeat under the search; cut-off repeats are deleted.
        A repeated chain's assistants carry the tag too, but its student run is the one that ends it."""
        repeats = [r for r in self.runs(experiment_id, parent=parent)
                   if r.data.tags.get(schema.TAG_SEED_OF) and r.data.tags.get(schema.TAG_ROLE) != schema.ROLE_ASSISTANT]
        return {(r.data.tags[schema.TAG_SEED_OF], int(params_of(r)["seed"])) for r in self.keep_finished(repeats)}

    # --- what the MLflow UI opens on -----------------------------------------------------

    def describe(self, markdown: str, run_id: str | None = None, experiment_id: str | None = None) -> None:
        """A run's or an experiment's description (MLflow renders it as markdown at the top of its page)."""
        if run_id:
            self.client.set_tag(run_id, schema.TAG_NOTE, _cut(markdown, _MAX_NOTE))
        if experiment_id:
            self.client.set_experiment_tag(experiment_id, schema.TAG_NOTE, _cut(markdown, _MAX_EXPERIMENT_NOTE))

    def set_views(self, experiment_id: str, columns: list[str]) -> None:
        """The runs-table views `kdx ui` links to (MLflow's shared view states, an experiment tag each):
        every run, and the Pareto front alone, best validation accuracy first, with `columns` shown."""
        for key, where in ((VIEW_RUNS, ""), (VIEW_FRONT, f"tags.`{schema.TAG_PARETO}` = 'true'")):
            state = {"searchFilter": where, "orderByKey": f"metrics.`{schema.VAL_ACC}`", "orderByAsc": False,
                     "selectedColumns": columns, "runsExpanded": {}}
            self.client.set_experiment_tag(experiment_id, f"{_SHARED_VIEW}{key}", json.dumps(state))

    def mark_front(self, experiment_id: str, parent: str, labels: Mapping[str, str]) -> None:
        """Tag the front's runs (`labels`: run id -> P1, P2, ...) and untag those an earlier report put there."""
        for r in self.runs(experiment_id, parent=parent, tag=(schema.TAG_PARETO, "true")):
            if r.info.run_id not in labels:
                self.client.set_tag(r.info.run_id, schema.TAG_PARETO, "false")
                self.client.delete_tag(r.info.run_id, schema.TAG_PARETO_LABEL)
        for run_id, label in labels.items():
            self.log(run_id).tags({schema.TAG_PARETO: "true", schema.TAG_PARETO_LABEL: label})

    # --- artifacts --------------------------------------------------------------------

    def log_artifact(self, run_id: str, path: str | Path, folder: str) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def read_weights(self, run_id: str, into: Path) -> tuple[dict, Path]:
        """(run config as plain data, path of the safetensors file) of a run's weights artifact."""
        into.mkdir(parents=True, exist_ok=True)
        folder = Path(self.client.download_artifacts(run_id, schema.MODEL_DIR, str(into)))
        return json.loads((folder / schema.MODEL_CONFIG_FILE).read_text()), folder / schema.MODEL_WEIGHTS_FILE


class RunLog:
    """One MLflow run being written: params and tags at once, metrics buffered and flushed in batches."""

    def __init__(self, client: MlflowClient, run_id: str, flush_every_s: float = 10.0):
        self.client, self.run_id = client, run_id
        self._metrics: list[Metric] = []
        self._flush_every_s, self._last_flush = flush_every_s, time.monotonic()

    def params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:_MAX_VALUE]) for k, v in params.items()]
        for chunk in _chunks(items, _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=chunk)

    def tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, str(v)[:_MAX_VALUE]) for k, v in tags.items()]
        for chunk in _chunks(items, _MAX_TAGS):
            self.client.log_batch(self.run_id, tags=chunk)

    def metrics(self, values: Mapping[str, float], step: int = 0, flush: bool = False) -> None:
        now = int(time.time() * 1000)
        self._metrics += [Metric(k, float(v), now, step) for k, v in values.items()]
        if flush or time.monotonic() - self._last_flush > self._flush_every_s:
            self.flush()

    def flush(self) -> None:
        for chunk in _chunks(self._metrics, _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk)
        self._metrics = []
        self._last_flush = time.monotonic()

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def weights(self, state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """The model's weights (safetensors) and the run config that rebuilds it (`Store.read_weights`)."""
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / schema.MODEL_DIR
            folder.mkdir()
            tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
            save_file(tensors, str(folder / schema.MODEL_WEIGHTS_FILE))
            (folder / schema.MODEL_CONFIG_FILE).write_text(json.dumps(config, indent=2))
            self.client.log_artifacts(self.run_id, str(folder), schema.MODEL_DIR)

    def end(self, status: str = FINISHED) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
