"""What the MLflow UI shows on a search's own pages: the search run's description (the
verdict and the front, linked to each student's run) and the front's tags, so a user who
opens the UI reads the answer without building a query. Written with every report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import schema
from .gains import no_gain_reason, verdict_line
from .store import VIEW_FRONT, Store

if TYPE_CHECKING:
    from .report import Report
    from .runs import Experiment

__all__ = ["search_note", "annotate"]

_ML = "workflowType=machine_learning"  # MLflow 3's model-training pages, not its GenAI ones


def _link(exp: "Experiment", run_id: str, text: str) -> str:
    return f"[{text.replace('|', '/')}](#/experiments/{exp.experiment_id}/runs/{run_id}?{_ML})"


def search_note(exp: "Experiment", report: "Report") -> str:
    """The search run's description, in markdown: counts, the verdict per front architecture, the front."""
    from .report import counts_line, running_note

    info, names = report.info, dict(zip(exp.runs.run_id, exp.runs["name"]))
    out = [f"### What `{exp.name}` found", ""]
    if running_note(info):
        out += [f"*{running_note(info)}.*", ""]
    out += [counts_line(info) + ".", ""]
    g = report.gains
    if g is None:
        out += [f"**Distillation gain:** {no_gain_reason(report.settings)}.", ""]
    else:
        out += [f"**What distillation bought** (test accuracy, paired by seed; each arm tuned with {g.recipe_trials} recipe(s) per "
                "architecture, selected on validation):", ""]
        out += [f"- `{v.arch}` ({int(v.params):,} params, {v.kd_recipe}): {verdict_line(v)}" for v in g.verdicts.itertuples()]
        if g.noise == g.noise:
            out.append(f"- objective noise: val_acc std {100 * g.noise:.2f} points over {g.seeds} seeds of one config")
        out.append("")
    out += [f"**Pareto front** (chosen on validation; [open it as a table](#/experiments/{exp.experiment_id}/runs?{_ML}&viewStateShareKey={VIEW_FRONT})):",
            "", "| | student | params | val_acc | test_acc | gain vs base-recipe twin |", "|---|---|---:|---:|---:|---:|"]
    for _, r in report.table.iterrows():
        gain = "" if r["gain"] != r["gain"] else f"{100 * r['gain']:+.2f}"
        out.append(f"| {r['pareto']} | {_link(exp, r['run_id'], str(names.get(r['run_id']) or r['arch']))} | {int(r[schema.PARAMS]):,} | "
                   f"{r[schema.VAL_ACC]:.4f} | {r[schema.TEST_ACC]:.4f} | {gain} |")
    if report.hypervolume is not None:
        out += ["", f"Hypervolume of the front: {report.hypervolume:.4g} (reference fixed before the first trial)."]
    out += ["", "Pictures and the whole table: the `report/` artifacts of this run (report.html)."]
    return "\n".join(out) + "\n"


def annotate(store: Store, exp: "Experiment", report: "Report") -> None:
    """The search run's description and the front's tags (`kdx.pareto`, `kdx.pareto_label`), as of this report."""
    store.describe(search_note(exp, report), run_id=exp.parent_id)
    store.mark_front(exp.experiment_id, exp.parent_id, dict(zip(report.table["run_id"], report.table["pareto"])))
