"""`kdx report`: the frontier pictures (and depth.png for a transformer search), the
front as pareto.csv, and one self-contained report.html, also logged on the search's
parent run; then analysis/annotate.py writes what the MLflow UI shows on the search's own pages."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from distill.cache import atomic_write
from distill.errors import KdxError

from . import schema
from .chains import ChainInfo, chain_info, plot_chains
from .depth import DepthInfo, depth_info, plot_depth
from .gains import ARMS, GainInfo, protocol, no_gain_reason, noise_line, t_critical, tell, verdict_line
from .frontier import FrontierInfo, frontier_info, gain_by_arch, plot_frontier, plot_gain_vs_ratio
from .models import LABELS_ONLY, beaten_lines, close_lines, method_sentence
from .importance import FEW_TRIALS, ImportanceInfo, importance_info, plot_importance
from .pareto import front_hypervolume
from .annotate import annotate, counts_line, running_note
from .runs import Experiment
from .store import Store, ui_path

__all__ = ["Report", "write_report", "front_table", "counts_line", "running_note"]

PICTURES = ("frontier.png", "gain_vs_ratio.png", "importance.png")


@dataclass
class Report:
    folder: Path
    info: FrontierInfo
    table: pd.DataFrame
    hypervolume: float | None
    chains: ChainInfo | None = None
    gains: GainInfo | None = None
    pictures: tuple[str, ...] = PICTURES  # those drawn: a picture with nothing to show is left out
    settings: dict = field(default_factory=dict)  # the search run's settings (search.*)
    left_out: tuple[str, ...] = ()  # why, one sentence each
    importance: ImportanceInfo | None = None  # fANOVA over the search's finished trials
    depth: DepthInfo | None = None  # transformer students by layers (None: no student has a depth)


def front_table(info: FrontierInfo, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The exported front, one row per model: P-label, run, how it was trained, metrics (the score's val
    metric the mean over its seeds, its test metric the shipped run's; a language model's in nats per
    token, with test_ppl beside), the gain over its base-recipe twin for a search trial,
    and the searched params (from `runs`, the experiment's runs frame)."""
    f = info.models.best if info.models is not None else info.front
    students = info.students.set_index("run_id")
    score = info.score
    cols = ["run_id", "method", "source", "start", "arch", schema.PARAMS, schema.LATENCY, score.val, "val_std", "n_seeds",
            score.test, "test_mean", "test_std"]
    table = f[[c for c in cols if c in f]].copy()
    if score.test == schema.TEST_LOSS and score.test in table:  # what a language-model user reads first
        table[schema.TEST_PPL] = np.exp(table[score.test].astype(float))
    of = dict(zip(runs.run_id, runs["seed_of"].fillna(""))) if runs is not None and "seed_of" in runs else {}
    trial = [of.get(r) or r for r in table.run_id]  # a point that ships one of its repeats reads its trial's row
    for c in ("twin_test", "gain", "ratio", "twin_run"):
        if c in students:
            table[c] = [students[c].get(r) if r in students.index else np.nan for r in trial]
    trials = info.front.set_index("run_id")  # a search trial's gain over its base-recipe twin, paired over seeds
    for c in ("gain_n", "gain_mean", "gain_std", "gain_t"):
        if c in trials:
            table[c] = [trials[c].get(r) if r in trials.index else np.nan for r in trial]
    by_id = runs.set_index("run_id") if runs is not None and not runs.empty else pd.DataFrame()
    for c in (schema.AGREEMENT, schema.TEACHER_KL):  # the shipped model's own fidelity
        if c in by_id or c in students:
            every = by_id if c in by_id else students
            table[c] = [every[c].get(r) if r in every.index else np.nan for r in table.run_id]
    for c in schema.STARTS:  # a start from the teacher before training: how much of it survived the cut
        if c in by_id and by_id[c].notna().any():
            table[c] = [by_id[c].get(r) if r in by_id.index else np.nan for r in table.run_id]
    if schema.TRAIN_S in by_id:  # the compute behind the point: its own training, and its teacher's where it read one
        teacher_s = by_id[schema.TEACHER_TRAIN_S].astype(float).fillna(0.0) if schema.TEACHER_TRAIN_S in by_id else 0.0 * by_id[schema.TRAIN_S]
        table["compute_s"] = [float(by_id[schema.TRAIN_S].get(r, np.nan)) + (float(teacher_s.get(r, 0.0)) if m == "kd" else 0.0)
                              for r, m in zip(table.run_id, table.method)]
    sampled = sorted({k for keys in info.students.get("sampled", []) for k in keys} | set(RECIPE_KEYS))
    for key in sampled:
        if key in by_id:
            table[key] = [by_id[key].get(r) for r in table.run_id]
    table.insert(0, "pareto", [f"P{k}" for k in range(1, len(f) + 1)])
    return table.reset_index(drop=True)


RECIPE_KEYS = ("train.lr", "train.weight_decay", "losses.ce.label_smoothing", "mix.kd", "mix.ce", "losses.kd.temperature")


def _methods_line(table: pd.DataFrame, score: schema.Score) -> str:
    """The sentences for front points that were trained without the teacher (the reader's first question)."""
    rows = [r for _, r in table.iterrows() if r.get("method") in LABELS_ONLY]
    if "method" not in table or not rows:
        return "Every point of it was distilled from the teacher."
    return " ".join(f"{r['pareto']}: {method_sentence(r, score)}." for r in rows)


def _teacher_words(t: dict, score: schema.Score) -> str:
    if score.val == schema.VAL_ACC:
        return f"validation accuracy {_fmt(t.get(schema.VAL_ACC))}, test accuracy {_fmt(t.get(schema.TEST_ACC))}"
    if score.val != schema.VAL_LOSS:  # a score the teacher is the reference of (an embedding's Spearman with it): 1 by definition
        gold = t.get(schema.TEST_GOLD_SPEARMAN)
        return (f"the reference every student is scored against ({score.words}: {_fmt(t.get(score.val))})"
                + (f"; its gold Spearman on data.pairs: {_fmt(gold)}" if gold is not None and gold == gold else ""))
    floor = t.get(schema.FLOOR)
    return (f"validation cross-entropy {_fmt(t.get(schema.VAL_LOSS))}, test {_fmt(t.get(schema.TEST_LOSS))} nats per token"
            + (f" (the source's entropy floor: {_fmt(floor)}; no model can go below it)" if floor is not None and floor == floor else ""))


def _floor_lines(info: FrontierInfo) -> str:
    """The reference models made with no training (the green star of the frontier picture), one sentence each."""
    return "".join(f"<p>Static floor ({html.escape(f['name'])}): {int(f[schema.PARAMS]):,} params, {info.score.test} {_fmt(f.get(info.score.test))}: "
                   "what a trained student must beat to be worth its training.</p>" for f in info.floors)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{path.stem}">'


def _fmt(value) -> str:
    """A number for people: thousands separators from 1,000 up, else 3 significant digits; '' for NaN."""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v != v:
            return ""
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return "0" if v == 0 else f"{v:.3g}"
    return html.escape(str(value))


def _words(d: dict) -> str:
    """{'val_acc': 'max', 'params': 'min'} as 'val_acc (max), params (min)'; numbers through `_fmt`."""
    return ", ".join(f"{html.escape(str(k))} {('(' + html.escape(v) + ')') if isinstance(v, str) else _fmt(v)}" for k, v in d.items())


def _head(name: str) -> str:
    """A column header that may wrap after its dots and underscores (losses.kd.temperature)."""
    return html.escape(name).replace(".", ".<wbr>").replace("_", "_<wbr>")


def _rows(table: pd.DataFrame, columns: list[str], link) -> str:
    """A table of the front's rows in these columns; the P label links to the run in the MLflow UI."""
    cols = [c for c in columns if c in table]
    head = "".join(f"<th>{_head(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(
        f'<td><a href="{link(r["run_id"])}">{_fmt(r[c])}</a></td>' if c == "pareto" else
        f'<td class="text">{_fmt(r[c])}</td>' if c in TEXT_COLUMNS else f"<td>{_fmt(r[c])}</td>" for c in cols) + "</tr>"
        for _, r in table.iterrows())
    return f"<table><tr>{head}</tr>{body}</table>"


TEXT_COLUMNS = ("method", "source", "start", "arch", "student.family")

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;font-size:13px;margin:.5em 0;max-width:100%} td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3;font-weight:600} td.text{text-align:left;overflow-wrap:anywhere} img{max-width:100%} figure{margin:1em 0}
details{margin:.8em 0} summary{cursor:pointer;font-weight:600} ul.verdicts li{margin:.3em 0}"""


def _html(exp: Experiment, report: Report, folder: Path, ui_url: str) -> str:
    """The page a person reads: the picture and one verdict line per size, the front, then everything else folded away."""
    info, table = report.info, report.table
    score = info.score
    k = score.scale
    link = lambda run_id: f"{ui_url.rstrip('/')}/{ui_path(exp.experiment_id, run_id)}"  # noqa: E731
    t = info.teacher or {}
    main = ["pareto", "method", "start", "arch", schema.PARAMS, schema.LATENCY, score.val, "val_std", "n_seeds", score.test]
    main += [schema.TEST_PPL, "gain"] if schema.TEST_PPL in table else ["gain"]
    seeds = ["pareto", "source", "test_mean", "test_std", "twin_test", "ratio", "gain_n", "gain_mean", "gain_std", "gain_t",
             schema.AGREEMENT, schema.TEACHER_KL, "compute_s"]
    recipe = ["pareto"] + [c for c in table.columns if "." in c]
    gains = gain_by_arch(info.students)
    gain_rows = "".join(
        f"<tr><td class=\"text\">{html.escape(str(r.arch))}</td><td>{int(r.params):,}</td><td>{_fmt(r.ratio)}</td>"
        f"<td>{_fmt(k * r.gain_mean)}</td><td>{_fmt(k * r.gain_std) if r.n > 1 else ''}</td><td>{r.n}</td></tr>"
        for r in gains.itertuples())
    hv = _fmt(report.hypervolume) if report.hypervolume is not None else "n/a (no reference point logged)"
    first = "frontier.png" if "frontier.png" in report.pictures else None
    others = "".join(f"<figure>{_img(folder / name)}</figure>" for name in report.pictures if name != first)
    others += "".join(f"<p><em>{html.escape(why)}</em></p>" for why in report.left_out)
    beaten = "".join(f"<li>{html.escape(line)}</li>" for line in beaten_lines(info.models, score) + close_lines(info.models, score))
    sections = (_depth_section(report.depth, folder, link) if report.depth else "") + _control_section(info)
    sections += _chain_section(report.chains, folder, link) if report.chains else ""
    settings = ", ".join(f"{html.escape(k)}: {html.escape(str(v))}" for k, v in sorted(exp.search.settings.items()))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kdx report: {html.escape(exp.name)}</title>
<style>{STYLE}</style></head>
<body><h1>kdx report: {html.escape(exp.name)}</h1>
{f"<p><b>{html.escape(running_note(info))}.</b></p>" if running_note(info) else ""}
{f"<figure>{_img(folder / first)}</figure>" if first else ""}
{_verdicts(report.gains, exp)}
<h2>The Pareto front</h2>
<p>{len(table)} models, chosen on {score.words} over every model the search trained (its trials, the scratch twins and each
gain arm's winner), at the mean over a model's seeds where it has several; <code>{score.test}</code> is the shipped model's own.
{html.escape(_methods_line(table, score))} <code>gain</code>: a search trial over its base-recipe twin, in {score.unit} (this favours KD:
the trial's recipe was searched, the twin's was not). Each P links to its run in the MLflow UI (<code>kdx ui</code>).</p>
{_rows(table, main, link)}
{f"<p>Not exported:</p><ul>{beaten}</ul>" if beaten else ""}
<p>Teacher: {int(t.get(schema.PARAMS) or 0):,} params, {_teacher_words(t, score)}.</p>
{_floor_lines(info)}
<details><summary>How each front model was trained (its recipe) and its seeds</summary>
{_rows(table, recipe, link) if len(recipe) > 1 else ""}
{_rows(table, seeds, link)}
</details>
{_gain_details(report.gains)}
<details><summary>The search</summary>
<p>{counts_line(info)}, {len(info.twins)} scratch twins. Objectives: {_words(info.objectives)}. The search trials' own front:
{len(info.front)} students, hypervolume {hv} against the reference {_words(info.reference)}, fixed before the search.</p>
<p>Settings: {settings}.</p>
</details>
<details><summary>More pictures and gains by architecture</summary>
{others}
{_importance_section(report.importance)}
<h3>Gains with spread</h3>
<p>Per architecture, over every distilled run of it (seeds, temperatures, mixes). A gain within about two standard
deviations of zero, or a t below about 2, is seed noise.</p>
<table><tr><th>arch</th><th>params</th><th>teacher/<wbr>student</th><th>gain ({score.short})</th><th>std</th><th>runs</th></tr>{gain_rows}</table>
</details>
{f"<details><summary>Depth, controls and chains</summary>{sections}</details>" if sections else ""}
</body></html>
"""

def _verdicts(g: GainInfo | None, exp: Experiment) -> str:
    """The answer first: one line per front size, what KD bought over the tuned twin and against the best control."""
    if g is None:
        return f"<h2>What distillation bought</h2><p>{html.escape(no_gain_reason(exp.search.settings))}.</p>"
    lines = "".join(f"<li><b>{html.escape(str(v.arch))}</b> ({int(v.params):,} params): {html.escape(verdict_line(v, g.score))}"
                    + (f" KD's recipe: {html.escape(v.kd_pick)}." if getattr(v, "kd_pick", "") else "") + "</li>"
                    for v in g.verdicts.itertuples())
    noise = f"<p>{html.escape(noise_line(g))}.</p>" if noise_line(g) else ""
    return f"""<h2>What distillation bought</h2>
<ul class="verdicts">{lines}</ul>
{noise}"""


def _gain_details(g: GainInfo | None) -> str:
    """The gain's protocol, its arms and its paired differences, folded away under the verdicts."""
    if g is None:
        return ""
    k, unit = g.score.scale, g.score.short
    rows = "".join(
        f"<tr><td class=\"text\">{html.escape(str(v.arch))}</td><td>{int(v.params):,}</td><td class=\"text\">{html.escape(v.kd_recipe)}</td>"
        f"<td>{_fmt(v.compute_s)}</td></tr>" for v in g.verdicts.itertuples())
    arms = "".join(
        f"<tr><td class=\"text\">{html.escape(str(a.arch))}</td><td class=\"text\">{html.escape(ARMS[a.arm])}</td>"
        f"<td class=\"text\">{html.escape(a.recipe)}</td><td>{a.n}</td><td>{_fmt(a.test_mean)}</td><td>{_fmt(a.test_std)}</td></tr>"
        for a in g.arms.itertuples())
    pairs = "".join(
        f"<tr><td class=\"text\">{html.escape(str(p.arch))}</td><td class=\"text\">{html.escape(p.comparison)}</td><td>{p.n}</td>"
        f"<td>{_fmt(k * p.mean)}</td><td>{_fmt(k * p.std)}</td><td>{'' if tell(p.n, p.std) else _fmt(p.t)}</td>"
        f"<td>{'' if tell(p.n, p.std) else _fmt(t_critical(p.n))}</td>"
        f"<td class=\"text\">{tell(p.n, p.std) or ('yes' if p.distinguishable else 'no, within the noise')}</td></tr>"
        for p in g.pairs.itertuples())
    noise = ("n/a (one seed)" if g.noise != g.noise else
             f"{_fmt(k * g.noise)} {unit} (median std of {g.score.val} over {g.seeds} seeds of one config); recipes closer than about "
             f"twice that on one seed's validation are not told apart"
             + (f", so each arm's pick was made on the mean of {g.race_seeds} seeds (std of that mean about "
                f"{_fmt(k * g.noise / g.race_seeds ** 0.5)} {unit})" if g.race > 1 and g.race_seeds > 1 else ", and each pick was made on one seed"))
    return f"""<details><summary>How the gain was measured: the protocol, the arms and the paired differences</summary>
<p>{html.escape(protocol(g))}</p>
<p>The search objective's noise: {noise}.</p>
<table><tr><th>arch</th><th>params</th><th>KD recipe</th><th>compute (s)</th></tr>{rows}</table>
<p>Compute: the teacher's training plus every run of that architecture (search, twins, recipes, seeds), in seconds.</p>
<h3>The arms</h3>
<table><tr><th>arch</th><th>arm</th><th>winner's recipe</th><th>seeds</th><th>{g.score.test}</th><th>std</th></tr>{arms}</table>
<h3>Paired differences ({g.score.unit}; &gt; 0: KD better)</h3>
<table><tr><th>arch</th><th>difference</th><th>n</th><th>mean</th><th>std</th><th>t</th><th>95% critical</th><th>distinguishable</th></tr>{pairs}</table>
</details>
"""


def _importance_section(imp: ImportanceInfo | None) -> str:
    """The importance table under its picture; nothing when there is none (the left-out line says why)."""
    if imp is None or imp.table is None:
        return ""
    t = imp.table
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    rows = "".join(f"<tr><td style=\"text-align:left\">{html.escape(str(k))}</td>" + "".join(f"<td>{v:.2f}</td>" for v in r) + "</tr>"
                   for k, r in zip(t.index, t.to_numpy()))
    noisy = (f" <b>With only {imp.n_trials} trials the forest is fitted to few points: these importances are noisy, "
             "a hint of what mattered rather than a ranking.</b>" if imp.n_trials < FEW_TRIALS else "")
    out = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(why)}.</li>" for k, why in imp.left_out.items())
    return f"""<h3>Which searched parameters mattered</h3>
<p>Parameter importance by {imp.evaluator} (Hutter, Hoos &amp; Leyton-Brown 2014, through Optuna), computed from the
{imp.n_trials} finished search trials: each parameter's share of the variance it explains on its own in each objective,
each column summing to 1 (interactions not shown).{noisy}</p>
<table><tr><th>parameter</th>{head}</tr>{rows}</table>
{f"<p>Not in the table:</p><ul>{out}</ul>" if out else ""}
"""


def _depth_section(d: DepthInfo, folder: Path, link) -> str:
    """Accuracy against layers at fixed width: KD beside its twin, and where the student fails whatever it is taught."""
    def cell(mean, std, n):
        return f"<td>{n}</td><td>{_fmt(mean)}</td><td>{_fmt(std)}</td>"

    def width(w):
        return "default" if w is None else w

    def run(run_id, text):
        return f'<a href="{link(run_id)}">{html.escape(text)}</a>' if isinstance(run_id, str) else html.escape(text)

    rows = "".join(
        f"<tr><td>{html.escape(f'{r.family} {r.width_key} {width(r.width)}')}</td><td>{r.depth}</td>"
        f"<td>{f'{int(r.params):,}' if r.params == r.params else ''}</td>"
        f"<td style=\"text-align:left\">{run(r.kd_run, r.kd_protocol if r.kd_n else '')}</td>{cell(r.kd_mean, r.kd_std, r.kd_n)}"
        f"<td style=\"text-align:left\">{run(r.twin_run, r.twin_protocol)}</td>{cell(r.twin_mean, r.twin_std, r.twin_n)}"
        f"<td>{r.diff_n}</td><td>{_fmt(100 * r.diff_mean)}</td><td>{_fmt(100 * r.diff_std)}</td><td>{'' if tell(r.diff_n, r.diff_std) else _fmt(r.diff_t)}</td>"
        f"<td>{'yes' if r.distinguishable else tell(r.diff_n, r.diff_std) or 'no'}</td><td>{r.best_arm}</td>"
        f"<td>{'fails' + (' (at chance)' if r.at_chance else '') if r.fails else 'reaches'}</td></tr>" for r in d.table.itertuples())
    others = "".join(f"<li>{html.escape(v.sentence)}.</li>" for v in d.verdicts.iloc[1:].itertuples())
    bar = (f"{d.fraction:.0%} of the teacher's test accuracy ({_fmt(d.bar)})" if d.bar is not None else "chance (no teacher test accuracy)")
    return f"""<h2>Depth</h2>
<p><b>{html.escape(d.sentence)}.</b></p>
{f"<p>Other widths:</p><ul>{others}</ul>" if others else ""}
<figure>{_img(folder / "depth.png")}</figure>
<p>Test accuracy over seeds by number of layers, at fixed width. Where the equal-budget gain step ran on the architecture, the
row reads its winners (KD with its recipe searched, against the <b>tuned twin</b>); elsewhere the search's best student on
validation against its <b>base-recipe twin</b> (not tuned, so the weaker arm by construction): the protocol columns say which.
A depth fails when the better of its two arms stays below {html.escape(bar)}, or cannot be told from chance (one-sample t over
seeds below the 95% critical value). Differences are KD minus twin in points, paired by seed.</p>
<table><tr><th>width</th><th>layers</th><th>params</th><th>KD</th><th>seeds</th><th>test_acc</th><th>std</th>
<th>twin</th><th>seeds</th><th>test_acc</th><th>std</th><th>pairs</th><th>KD - twin</th><th>std</th><th>t</th>
<th>distinguishable</th><th>best arm</th><th>verdict</th></tr>{rows}</table>
"""


def _control_section(info: FrontierInfo) -> str:
    """KD gain against the dark-knowledge control's gain, architecture by architecture."""
    if info.controls.empty:
        return ""
    real, ctrl = gain_by_arch(info.students), gain_by_arch(info.controls)
    both = ctrl.merge(real, on="arch", how="left", suffixes=("_ctrl", ""))
    rows = "".join(
        f"<tr><td>{html.escape(str(r.arch))}</td><td>{r.ratio_ctrl:.1f}</td><td>{_fmt(100 * r.gain_mean)}</td><td>{_fmt(r.n)}</td>"
        f"<td>{_fmt(100 * r.gain_mean_ctrl)}</td><td>{r.n_ctrl}</td><td>{_fmt(100 * (r.gain_mean - r.gain_mean_ctrl))}</td></tr>"
        for r in both.itertuples())
    return f"""<h2>Dark-knowledge control</h2>
<p>Control runs distil from the teacher's probabilities with the non-target classes shuffled per sample: the same
confidence in the true class, no class relations. What survives the control is not dark knowledge; the difference is.</p>
<table><tr><th>arch</th><th>teacher/student</th><th>KD gain</th><th>runs</th><th>control gain</th><th>runs</th>
<th>dark knowledge (KD - control)</th></tr>{rows}</table>
"""


def _chain_section(c: ChainInfo, folder: Path, link) -> str:
    arms = "".join(f"<tr><td>{html.escape(a.arm)}</td><td>{a.n}</td><td>{_fmt(a.test_acc_mean)}</td><td>{_fmt(a.test_acc_std)}</td></tr>"
                   for a in c.arms.itertuples())
    pairs = "".join(f"<tr><td>{html.escape(p.comparison)}</td><td>{p.n}</td><td>{_fmt(100 * p.mean)}</td><td>{_fmt(100 * p.std)}</td>"
                    f"<td>{_fmt(p.t)}</td></tr>" for p in c.pairs.itertuples())
    chains = "".join(
        f"<tr><td><a href=\"{link(r.run_id)}\">{html.escape(str(r.chain))}</a>{' (best)' if r.run_id == c.best else ''}</td>"
        f"<td>{' > '.join(f'{p:,}' for p in r.assistant_params)}</td><td>{_fmt(r.val_acc)}</td><td>{_fmt(r.test_acc)}</td><td>{r.status}</td></tr>"
        for r in c.chains.sort_values(schema.VAL_ACC, ascending=False).itertuples())
    return f"""<h2>Teacher-assistant chains</h2>
<p>Teacher &rarr; assistant(s) &rarr; student against the direct teacher &rarr; student run (the best chain's final-stage
settings, same budget) and the scratch twin. The best chain is picked on validation; the arms below are test accuracy
over seeds, differences paired by seed (points), t = mean / (std / &radic;n).</p>
<figure>{_img(folder / "chain.png")}</figure>
<table><tr><th>arm</th><th>seeds</th><th>test_acc</th><th>std</th></tr>{arms}</table>
<table><tr><th>paired difference</th><th>n</th><th>mean (points)</th><th>std</th><th>t</th></tr>{pairs}</table>
<h3>Every chain searched</h3>
<table><tr><th>chain</th><th>assistant params</th><th>student val_acc</th><th>test_acc</th><th>status</th></tr>{chains}</table>
"""


def write_report(exp: Experiment, out: str | Path, ui_url: str = "http://127.0.0.1:5000", log_to_mlflow: bool = True) -> Report:
    info = frontier_info(exp)
    if info.students.empty:
        raise KdxError(f"--experiment: '{exp.name}' has no finished full-budget students to report on" + (running_note(info) and f" yet; {running_note(info)}"))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    drawn, left_out = [], []
    importance = importance_info(info)
    for name, draw in zip(PICTURES, (plot_frontier, plot_gain_vs_ratio, lambda _, p: plot_importance(importance, p))):
        why = None
        if name == "importance.png" and importance.table is None:
            why = f"importance.png is left out: {importance.why}."
        elif name == "gain_vs_ratio.png" and gain_by_arch(info.students).empty and info.controls.empty:
            why = "gain_vs_ratio.png is left out: no student has a finished scratch twin (search.baselines: false, or the twins did not run)."
        if why:
            left_out.append(why)
            (folder / name).unlink(missing_ok=True)
            continue
        atomic_write(folder / name, lambda p, draw=draw: draw(info, p))
        drawn.append(name)
    objectives, reference = info.objectives, info.reference
    hv = front_hypervolume(info.students, objectives, reference) if set(objectives) <= set(reference) else None
    table = front_table(info, exp.runs)
    chains = chain_info(exp)
    extra = []
    if chains is not None:
        atomic_write(folder / "chain.png", lambda p: plot_chains(chains, p))
        extra.append("chain.png")
    depth = depth_info(exp)
    if depth is not None:
        atomic_write(folder / "depth.png", lambda p: plot_depth(depth, p))
        extra.append("depth.png")
    else:
        (folder / "depth.png").unlink(missing_ok=True)  # an earlier report's picture in the same folder
    report = Report(folder, info, table, hv, chains, gains=info.models.gains, pictures=tuple(drawn), left_out=tuple(left_out),
                    settings=dict(exp.search.settings), importance=importance, depth=depth)
    atomic_write(folder / "pareto.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(folder / "report.html", lambda p: p.write_text(_html(exp, report, folder, ui_url)))
    if log_to_mlflow and exp.parent_id:
        store = Store(exp.tracking_uri, create=False)
        for name in (*drawn, *extra, "pareto.csv", "report.html"):
            store.log_artifact(exp.parent_id, folder / name, "report")
        annotate(store, exp, report)  # the UI's view of the same report (analysis/annotate.py): the search run's description, the front's tags
    return report
