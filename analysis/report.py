"""`kdx report`: the frontier pictures, the front as pareto.csv, and one
self-contained report.html, also logged on the search's parent run."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

from distill.cache import atomic_write
from distill.errors import KdxError

from . import schema
from .frontier import FrontierInfo, frontier_info, gain_by_arch, plot_frontier, plot_gain_vs_ratio, plot_sensitivity
from .pareto import front_hypervolume
from .runs import Experiment

__all__ = ["Report", "write_report", "front_table"]

PICTURES = ("frontier.png", "gain_vs_ratio.png", "sensitivity.png")


@dataclass
class Report:
    folder: Path
    info: FrontierInfo
    table: pd.DataFrame
    hypervolume: float | None


def front_table(info: FrontierInfo) -> pd.DataFrame:
    """The front, one row per student: P-label, run, metrics, gain, sampled params."""
    f = info.front
    sampled = sorted({k for keys in f.get("sampled", []) for k in keys})
    cols = ["run_id", "arch", schema.PARAMS, schema.LATENCY, schema.VAL_ACC, schema.TEST_ACC, "twin_test_acc", "gain", "ratio", "twin_run",
            "n_seeds", "test_acc_mean", "test_acc_std", "gain_n", "gain_mean", "gain_std", "gain_t"]
    table = f[[c for c in cols if c in f]].copy()
    for key in sampled:
        table[key] = f[key] if key in f else None
    table.insert(0, "pareto", [f"P{k}" for k in range(1, len(f) + 1)])
    return table.reset_index(drop=True)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{path.stem}">'


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return html.escape(str(value))


def _html(exp: Experiment, report: Report, folder: Path, ui_url: str) -> str:
    info, table = report.info, report.table
    link = lambda run_id: f"{ui_url.rstrip('/')}/#/experiments/{exp.experiment_id}/runs/{run_id}"  # noqa: E731
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns if c not in ("run_id", "twin_run"))
    rows = []
    for _, row in table.iterrows():
        cells = []
        for c in table.columns:
            if c in ("run_id", "twin_run"):
                continue
            text = _fmt(row[c])
            if c == "pareto":
                text = f'<a href="{link(row["run_id"])}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    t = info.teacher or {}
    p = exp.parent.get("params", {})
    settings = ", ".join(f"{k.removeprefix('search.')}: {html.escape(v)}" for k, v in sorted(p.items()) if k.startswith("search."))
    gains = gain_by_arch(info.students)
    gain_rows = "".join(
        f"<tr><td>{html.escape(str(r.arch))}</td><td>{int(r.params):,}</td><td>{r.ratio:.1f}</td>"
        f"<td>{100 * r.gain_mean:+.2f}</td><td>{_fmt(100 * r.gain_std) if r.n > 1 else ''}</td><td>{r.n}</td></tr>"
        for r in gains.itertuples())
    hv = f"{report.hypervolume:.4g}" if report.hypervolume is not None else "n/a (no reference point logged)"
    pictures = "".join(f"<figure>{_img(folder / name)}</figure>" for name in PICTURES)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kdx report: {html.escape(exp.name)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}} th{{background:#f3f3f3}} img{{max-width:100%}} figure{{margin:1em 0}}</style></head>
<body><h1>kdx report: {html.escape(exp.name)}</h1>
<p>Teacher: {int(t.get(schema.PARAMS) or 0):,} params, validation accuracy {_fmt(t.get(schema.VAL_ACC))},
test accuracy {_fmt(t.get(schema.TEST_ACC))}. Search: {settings}.</p>
<p>{len(info.students)} finished students, {len(info.excluded)} failed or stopped early (never on the front),
{len(info.twins)} scratch twins. Pareto front over {html.escape(str(info.objectives))}: {len(info.front)} students;
hypervolume {hv} against the reference {html.escape(str(info.reference))}, fixed before the search.</p>
<h2>The Pareto front</h2>
<p>Chosen on validation accuracy; test accuracy shown for reporting only. Gain = student minus its scratch twin
(same architecture and budget, labels only), in test accuracy. Each P links to its run in the MLflow UI (<code>kdx ui</code>).</p>
<table><tr>{head}</tr>{''.join(rows)}</table>
{pictures}
<h2>Distillation gain by architecture</h2>
<table><tr><th>arch</th><th>params</th><th>teacher/student</th><th>gain (points)</th><th>std</th><th>runs</th></tr>{gain_rows}</table>
</body></html>
"""


def write_report(exp: Experiment, out: str | Path, ui_url: str = "http://127.0.0.1:5000", log_to_mlflow: bool = True) -> Report:
    info = frontier_info(exp)
    if info.students.empty:
        raise KdxError(f"--experiment: '{exp.name}' has no finished full-budget students to report on")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in zip(PICTURES, (plot_frontier, plot_gain_vs_ratio, plot_sensitivity)):
        atomic_write(folder / name, lambda p, draw=draw: draw(info, p))
    objectives, reference = info.objectives, info.reference
    hv = front_hypervolume(info.students, objectives, reference) if set(objectives) <= set(reference) else None
    table = front_table(info)
    report = Report(folder, info, table, hv)
    atomic_write(folder / "pareto.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(folder / "report.html", lambda p: p.write_text(_html(exp, report, folder, ui_url)))
    if log_to_mlflow and exp.parent:
        client = MlflowClient(exp.tracking_uri)
        for name in (*PICTURES, "pareto.csv", "report.html"):
            client.log_artifact(exp.parent["run_id"], str(folder / name), "report")
    return report
