"""Writing kdx runs to MLflow, in batches, with the names of `analysis.schema`.

Everything goes through one `MlflowClient` with an explicit experiment id:
`mlflow.set_experiment` racing in two processes sent runs to "Default"
(STACK.md). Metrics are buffered and sent with `log_batch` (one call is about
8 ms on SQLite; one call per key made Ray's stock callback 7x slower).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

__all__ = ["Tracker", "RunLog"]

_MAX_PARAMS, _MAX_METRICS, _MAX_TAGS = 100, 1000, 100  # MLflow's log_batch limits
_MAX_VALUE = 6000


def _chunks(items: list, n: int) -> Iterable[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Tracker:
    def __init__(self, uri: str):
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

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

    def runs(self, experiment_id: str, filter_string: str = "", include_deleted: bool = False) -> list:
        from mlflow.entities import ViewType

        view = ViewType.ALL if include_deleted else ViewType.ACTIVE_ONLY
        out, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], filter_string, run_view_type=view, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def start(self, experiment_id: str, name: str, tags: Mapping[str, str]) -> "RunLog":
        run = self.client.create_run(experiment_id, run_name=name, tags=dict(tags))
        return RunLog(self.client, run.info.run_id)

    def resume(self, run_id: str) -> "RunLog":
        return RunLog(self.client, run_id)


class RunLog:
    """One MLflow run: params and tags at once, metrics buffered and flushed in batches."""

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

    def json(self, obj: Any, artifact_file: str) -> None:
        self.text(json.dumps(obj, indent=2, default=str), artifact_file)

    def weights(self, state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """The student's weights (safetensors) and the run config that rebuilds it."""
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "model"
            folder.mkdir()
            tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
            save_file(tensors, str(folder / "model.safetensors"))
            (folder / "config.json").write_text(json.dumps(config, indent=2))
            self.client.log_artifacts(self.run_id, str(folder), "model")

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

