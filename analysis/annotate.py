"""What the MLflow UI shows on a search's own pages, as of its latest report: the search run's
description (the verdict per front architecture and the front, each model linked to its run) and
the front's `kdx.pareto` tags, so a user who opens the UI reads the answer without building a query;
and the sentences about the search's runs that the report page and the CLI share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import schema
from .depth import DepthInfo
from .gains import no_gain_reason, noise_line, verdict_line
from .models import LABELS_ONLY, method_label, method_sentence
from .runs import Experiment
from .store import VIEW_FRONT, Store, ui_path

if TYPE_CHECKING:  # report.py imports this module: the type only, at check time
    from .report import Report

__all__ = ["annotate", "search_note", "depth_lines", "running_note", "counts_line"]


def running_note(info) -> str:
    """'' for a search that ended; else what is still running, so a snapshot is read as one."""
    if not info.search_running and info.running.empty:
        return ""
    return (f"the search is still running ({len(info.running)} student(s) training): this is a snapshot" if info.search_running
            else f"{len(info.running)} student run(s) still say RUNNING (a search cut off without --resume?)")


def counts_line(info) -> str:
    """How the students divide: finished, running, failed or stopped, and what is set apart."""
    parts = [f"{len(info.students)} finished students"]
    if not info.running.empty:
        parts.append(f"{len(info.running)} still running")
    parts.append(f"{len(info.excluded)} failed or stopped early (never on the front)")
    if not info.same_model.empty:
        parts.append(f"{len(info.same_model)} the same model as an earlier run (counted once)")
    if not info.chance.empty:
        parts[0] += f" ({len(info.chance)} of them no better than chance, never on the front)"
    return ", ".join(parts)


def _link(exp: Experiment, run_id: str, text: str) -> str:
    return f"[{text.replace('|', '/')}]({ui_path(exp.experiment_id, run_id)})"


def search_note(exp: Experiment, report: "Report") -> str:
    """The search run's description, in markdown: counts, the verdict per front architecture, the front."""
    info, names, score = report.info, dict(zip(exp.runs.run_id, exp.runs["name"])), report.info.score
    out = [f"### What `{exp.name}` found", ""]
    if running_note(info):
        out += [f"*{running_note(info)}.*", ""]
    out += [counts_line(info) + ".", ""]
    g = report.gains
    if g is None:
        out += [f"**Distillation gain:** {no_gain_reason(report.settings)}.", ""]
    else:
        out += [f"**What distillation bought** ({g.score.unit}, paired by seed; each arm tuned with {g.recipe_trials} recipe(s) per "
                "architecture, selected on validation):", ""]
        out += [f"- `{v.arch}` ({int(v.params):,} params, {v.kd_recipe}): {verdict_line(v, g.score)}"
                + (f" KD's recipe: {v.kd_pick}." if getattr(v, "kd_pick", "") else "") for v in g.verdicts.itertuples()]
        if noise_line(g):
            out.append(f"- {noise_line(g)}")
        out.append("")
    out += depth_lines(report.depth)
    out += [f"**Pareto front** (chosen on validation; [open it as a table]({ui_path(exp.experiment_id, view=VIEW_FRONT)})):",
            "", f"| | model | method | params | {score.val} | seeds | {score.test} | gain vs base-recipe twin |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for _, r in report.table.iterrows():
        gain = "" if r.get("gain") != r.get("gain") or r.get("gain") is None else score.diff(r["gain"])
        out.append(f"| {r['pareto']} | {_link(exp, r['run_id'], str(names.get(r['run_id']) or r['arch']))} | {method_label(r)} | "
                   f"{int(r[schema.PARAMS]):,} | {r[score.val]:.4f} | {int(r.get('n_seeds') or 1)} | {r[score.test]:.4f} | {gain} |")
    labels_only = [r for _, r in report.table.iterrows() if r.get("method") in LABELS_ONLY]
    out += [f"- {r['pareto']}: {method_sentence(r, score)}" for r in labels_only]
    if report.hypervolume is not None:
        out += ["", f"Hypervolume of the front: {report.hypervolume:.4g} (reference fixed before the first trial)."]
    out += ["", "Pictures and the whole table: the `report/` artifacts of this run (report.html)."]
    return "\n".join(out) + "\n"


def depth_lines(d: DepthInfo | None) -> list[str]:
    """The depth verdict in markdown: the main width's sentence, then the other widths'; nothing for a non-transformer search."""
    if d is None:
        return []
    out = [f"**Depth** (test accuracy by layers at fixed width, the better of KD and its twin): {d.sentence}.", ""]
    out += [f"- {v.sentence}" for v in d.verdicts.iloc[1:].itertuples()]
    return out + ([""] if len(d.verdicts) > 1 else [])


def annotate(store: Store, exp: Experiment, report: "Report") -> None:
    """The search run's description and the front's tags (`kdx.pareto`, `kdx.pareto_label`), as of this report."""
    store.describe(search_note(exp, report), run_id=exp.parent_id)
    store.mark_front(exp.experiment_id, exp.parent_id, dict(zip(report.table["run_id"], report.table["pareto"])))
