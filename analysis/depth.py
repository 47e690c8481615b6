"""Depth on the frontier: transformer students read by layers, at fixed width.

`depth_info(exp)` gathers, for every (family, width, depth) cell of a
transformer search (kdx's `transformer` family: `student.depth` at width
`student.dim`; Hugging Face's `hf`: `student.num_hidden_layers` at
`student.hidden_size`), the KD arm and its labels-only twin, each as the mean,
std and count of test accuracy over seeds, and their difference paired by
seed. Where the equal-budget gain step ran on the cell's architecture
(`kdx.arm`, analysis.gains) its winners are read: the KD winner and the tuned
twin (the same-recipe twin when no tuned one finished). Elsewhere the cell
reads the search itself: its best student on validation and the base-recipe
twin of that architecture. The `kd_protocol` and `twin_protocol` columns say
which, row by row: a base-recipe twin was not tuned while the student's recipe
was searched, so it is the weaker arm by construction.

A depth *fails* when the best of its arms falls short of `fraction` (0.9) of
the teacher's test accuracy, or cannot be told from chance (a one-sample t of
the best arm's seeds above chance below the 95% critical value; with one seed,
at or below chance). `plot_depth` only draws the info, headless.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from . import schema
from .gains import _arm_runs, distinguishable, race_settings, t_critical
from .runs import Experiment, by_seed, column, paired
from .store import SearchRecord

__all__ = ["DepthInfo", "depth_info", "plot_depth", "FAIL_FRACTION", "DEPTH_KEYS"]

# family -> (depth key, width key), both params of the student run
DEPTH_KEYS = {"transformer": ("student.depth", "student.dim"), "hf": ("student.num_hidden_layers", "student.hidden_size")}

# A student that keeps under 90% of its teacher's accuracy has not inherited it: the depth results
# the field reports as distillation working keep far more (DistilBERT, half of BERT's layers, 97% of
# its GLUE score; TinyBERT-4 about 96%), so 0.9 marks a failure rather than a small shortfall. The
# bar is relative to the teacher because what is reachable differs from one dataset to the next.
FAIL_FRACTION = 0.9

TUNED, SAME_RECIPE, BASE_RECIPE = "tuned twin", "same-recipe twin", "base-recipe twin"
KD_GAIN, KD_SEARCH = "KD winner (recipe searched, gain step)", "best search student (on validation)"

COLUMNS = ["family", "width_key", "width", "depth", "arch", "params", "kd_protocol", "kd_run", "kd_n", "kd_mean", "kd_std",
           "twin_protocol", "twin_run", "twin_n", "twin_mean", "twin_std", "diff_n", "diff_mean", "diff_std", "diff_t",
           "distinguishable", "best_arm", "best_mean", "at_chance", "fails"]


class DepthInfo(NamedTuple):
    table: pd.DataFrame  # one row per (family, width, depth), COLUMNS; accuracies are test fractions
    verdicts: pd.DataFrame  # one row per (family, width): family, width_key, width, depths, threshold (N or None), shows_failure, sentence
    main: tuple  # (family, width) of the statement: the width with the most depths
    sentence: str  # the main width's verdict, one sentence
    teacher_acc: float | None  # the search teacher's test accuracy
    chance: float | None  # 1 / classes, as the search recorded it (its hypervolume reference)
    fraction: float  # a depth fails below fraction * teacher_acc
    bar: float | None  # fraction * teacher_acc


def _int(v: Any) -> int | None:
    """A logged size back to an int: 4, 4.0 or '4'; None for null, NaN or text."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if f == f else None


def _shape(row: pd.Series) -> tuple[str, str, int | None, int | None] | None:
    """(family, width key, width, depth) of a transformer student's run; None for other families or no depth."""
    family = str(row.get("student.family") or "")
    if family not in DEPTH_KEYS:
        return None
    depth_key, width_key = DEPTH_KEYS[family]
    depth = _int(row.get(depth_key))
    return None if depth is None else (family, width_key.removeprefix("student."), _int(row.get(width_key)), depth)


def _stats(seeds: dict[int, float]) -> tuple[int, float, float]:
    a = np.array(list(seeds.values()), dtype=float)
    return len(a), float(a.mean()) if len(a) else np.nan, float(a.std(ddof=1)) if len(a) > 1 else np.nan


def _seeds(runs: pd.DataFrame) -> dict[int, float]:
    """{seed: test accuracy} of an arm's runs; a run without a seed param counts as seed 0."""
    seeds = runs["seed"] if "seed" in runs else pd.Series(0, index=runs.index)
    return {int(s) if s == s else 0: float(v) for s, v in zip(seeds, runs[schema.TEST_ACC]) if v == v}


def _at_chance(seeds: dict[int, float], chance: float | None) -> bool:
    """Whether the arm's accuracy over seeds cannot be told from chance (one-sample t, two-sided 95%)."""
    if chance is None or not seeds:
        return False
    n, mean, std = _stats(seeds)
    if n < 2 or not std > 0:
        return bool(mean <= chance)
    return bool((mean - chance) / (std / np.sqrt(n)) < t_critical(n))


def _gain_cells(done: pd.DataFrame, search: SearchRecord | None = None) -> dict[tuple, dict]:
    """The gain step's winners per cell, picked as the gain picks them (its race, its split's noise): KD and the tuned
    (else same-recipe) twin, over seeds."""
    arm = column(done, "arm")
    if (arm == "").all():
        return {}
    race, val_samples = (race_settings(search.settings), search.val_samples) if search else ((1, 1), None)
    pick = lambda arch, a: _arm_runs(done, arch, a, race, schema.ACCURACY, val_samples)  # noqa: E731
    cells: dict[tuple, dict] = {}
    for arch in dict.fromkeys(column(done, "gain_arch")[arm != ""]):
        kd = pick(arch, "kd")
        twin, protocol = pick(arch, "twin"), TUNED
        if twin.empty:
            twin, protocol = pick(arch, "same_recipe"), SAME_RECIPE
        first = kd if not kd.empty else twin
        shape = None if first.empty else _shape(first.iloc[0])
        if shape is None:
            continue
        val = float(kd[schema.VAL_ACC].mean()) if not kd.empty else -np.inf
        if shape in cells and cells[shape]["val"] >= val:  # two front archs at one width and depth: the better KD on validation
            continue
        cells[shape] = {"arch": arch, "val": val, "params": float(first[schema.PARAMS].iloc[0]),
                        "kd": (KD_GAIN, None if kd.empty else kd.run_id.iloc[0], _seeds(kd)),
                        "twin": (protocol if not twin.empty else "", None if twin.empty else twin.run_id.iloc[0], _seeds(twin))}
    return cells


def _search_cells(done: pd.DataFrame) -> dict[tuple, dict]:
    """The search's own runs per cell: its best student on validation and that architecture's base-recipe twin."""
    original = ((column(done, "arm") == "") & (column(done, "seed_of") == "") & (column(done, "duplicate_of") == "")
                & (column(done, "control") == "") & (column(done, "stopped_early") != "True"))
    cands = done[original & done.role.isin([schema.ROLE_STUDENT, schema.ROLE_TWIN]) & done[schema.TEST_ACC].notna()]
    shapes = cands.apply(_shape, axis=1) if not cands.empty else pd.Series(dtype=object)
    cells: dict[tuple, dict] = {}
    for shape in dict.fromkeys(s for s in shapes if s is not None):
        mine = cands[shapes.map(lambda s, shape=shape: s == shape)].sort_values([schema.VAL_ACC, "start_time"], ascending=[False, True])
        students, twins = mine[mine.role == schema.ROLE_STUDENT], mine[mine.role == schema.ROLE_TWIN]
        kd = students.iloc[0] if not students.empty else None
        same = twins[twins.arch == kd.arch] if kd is not None else twins.iloc[0:0]
        twin = same.iloc[0] if not same.empty else (twins.iloc[0] if not twins.empty else None)
        first = kd if kd is not None else twin
        cells[shape] = {"arch": first.arch, "params": float(first[schema.PARAMS]),
                        "kd": (KD_SEARCH, None if kd is None else kd.run_id, by_seed(done, kd.run_id) if kd is not None else {}),
                        "twin": (BASE_RECIPE if twin is not None else "", None if twin is None else twin.run_id,
                                 by_seed(done, twin.run_id) if twin is not None else {}),
                        # seeds pair only within one architecture (same init and batch order)
                        "pairs": twin is not None and kd is not None and twin.arch == kd.arch}
    return cells


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _n(depth: int) -> str:
    return f"{int(depth)} layer{'s' * (int(depth) != 1)}"


def _layers(depths) -> str:
    depths = [int(d) for d in depths]
    return _n(depths[0]) if len(depths) == 1 else f"{', '.join(map(str, depths[:-1]))} and {depths[-1]} layers"


def _verdict(rows: pd.DataFrame, teacher: float | None, bar: float | None, chance: float | None, fraction: float) -> tuple[int | None, bool, str]:
    """(N, whether the runs show failure below N, the sentence) for one width's rows, sorted by depth."""
    family, key, width = rows.family.iloc[0], rows.width_key.iloc[0], rows.width.iloc[0]
    where = f"{family} students at {key} {width if width is not None else '(default)'}"
    ref = f"teacher {_pct(teacher)}" if teacher is not None else f"chance {_pct(chance)}" if chance is not None else "no reference"
    reach = (f"{fraction:.0%} of the teacher's test accuracy ({_pct(teacher)})" if bar is not None
             else "above chance (no teacher test accuracy: a depth fails only at chance)")
    tried = f"every depth tried ({_layers(rows.depth)})" if len(rows) > 1 else f"the one depth tried ({_n(rows.depth.iloc[0])})"
    passing, failing = rows[~rows.fails], rows[rows.fails]
    if passing.empty:
        deep = rows.iloc[-1]
        which = f"the deepest, {_n(deep.depth)}, has" if len(rows) > 1 else "it has"
        return None, False, (f"{where}: {tried.replace('every', 'no').replace('the one', 'no')} reaches {reach}; {which} best arm "
                             f"{_pct(deep.best_mean)} ({deep.best_arm}) vs {ref}: the student fails at every depth tried")
    n = int(passing.depth.min())
    top = passing.iloc[0]
    below, later = failing[failing.depth < n], failing[failing.depth > n]
    short = f"{_layers(later.depth)} fall{'s' * (len(later) == 1)} short" if not later.empty else ""
    if below.empty and later.empty:
        which = f"the shallowest, {_n(top.depth)}, has" if len(rows) > 1 else "it has"
        return n, False, (f"{where}: {tried} reaches {reach}; {which} best arm {_pct(top.best_mean)} ({top.best_arm}), "
                          "so these runs show no depth below which the student fails")
    if below.empty:
        return n, False, (f"{where}: the shallowest depth tried, {_n(top.depth)}, reaches {reach} (best arm {_pct(top.best_mean)}), "
                          f"but {short}, so these runs show no depth threshold")
    last = below.iloc[-1]
    tail = f" (though {short})" if not later.empty else ""
    reached = f"from {n} layers the best arm reaches {_pct(top.best_mean)}{tail}"
    missing = below[(below.kd_n == 0) | (below.twin_n == 0)]
    if not missing.empty:  # one arm alone cannot say "whatever it is taught"
        return n, False, (f"{where}: below {n} layers the arms that ran fall short (best {_pct(last.best_mean)} at {_n(last.depth)} "
                          f"vs {ref}), but at {_layers(missing.depth)} only one arm ran, so these runs do not show that the student "
                          f"fails whatever it is taught; {reached}")
    untuned = sorted(set(below.twin_protocol) - {TUNED})
    caveat = f"; the twins below {n} layers are {' and '.join(untuned)}s, not tuned" if untuned else ""
    return n, True, (f"{where}: below {n} layers the student fails whatever it is taught (best arm {_pct(last.best_mean)} at "
                     f"{_n(last.depth)} vs {ref}); {reached}{caveat}")


def depth_info(exp: Experiment, fraction: float = FAIL_FRACTION) -> DepthInfo | None:
    """None when no student run has a depth (not a transformer search), and for a language model's search,
    whose depth reads cross-entropy against the entropy floor, not accuracy against the teacher's (not built yet)."""
    if exp.score != schema.ACCURACY:
        return None
    df = exp.runs
    done = df[(df.status == "FINISHED") & (df.role != schema.ROLE_ASSISTANT)]
    if done.empty or "student.family" not in done:
        return None
    cells = _search_cells(done) | _gain_cells(done, exp.search)  # the gain step's winners where they exist
    if not cells:
        return None
    teacher = exp.teacher
    t_acc = _float(teacher.get(schema.TEST_ACC)) if teacher else None
    if t_acc is None and schema.TEACHER_TEST_ACC in done:
        t_acc = _float(done[schema.TEACHER_TEST_ACC].median())
    chance = exp.search.reference.get(schema.VAL_ACC)
    bar = fraction * t_acc if t_acc is not None else None
    rows = []
    for (family, key, width, depth), c in cells.items():
        (kd_p, kd_run, kd), (tw_p, tw_run, tw) = c["kd"], c["twin"]
        (kd_n, kd_mean, kd_std), (tw_n, tw_mean, tw_std) = _stats(kd), _stats(tw)
        d = paired(kd, tw) if c.get("pairs", True) else paired({}, {})
        arms = {a: (m, s) for a, m, s in (("kd", kd_mean, kd), ("twin", tw_mean, tw)) if m == m}
        if not arms:
            continue  # nothing finished with a test accuracy in this cell
        best = max(arms, key=lambda a: arms[a][0])
        best_mean, at_chance = arms[best][0], _at_chance(arms[best][1], chance)
        rows.append({"family": family, "width_key": key, "width": width, "depth": depth, "arch": c["arch"], "params": c["params"],
                     "kd_protocol": kd_p, "kd_run": kd_run, "kd_n": kd_n, "kd_mean": kd_mean, "kd_std": kd_std,
                     "twin_protocol": tw_p, "twin_run": tw_run, "twin_n": tw_n, "twin_mean": tw_mean, "twin_std": tw_std,
                     "diff_n": d["n"], "diff_mean": d["mean"], "diff_std": d["std"], "diff_t": d["t"],
                     "distinguishable": distinguishable(d),
                     "best_arm": best, "best_mean": best_mean, "at_chance": at_chance,
                     "fails": bool(at_chance or (bar is not None and best_mean < bar))})
    if not rows:
        return None
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["width"] = pd.Series([r["width"] for r in rows], dtype=object)  # an hf width may be None (the folder's own)
    table = table.sort_values(["family", "width", "depth"], key=lambda s: s.map(_wkey) if s.name == "width" else s,
                              kind="stable").reset_index(drop=True)
    verdicts = []
    for (family, _), mine in table.groupby(["family", table.width.map(_wkey)], sort=False):
        n, shows, sentence = _verdict(mine.reset_index(drop=True), t_acc, bar, chance, fraction)
        verdicts.append({"family": family, "width_key": mine.width_key.iloc[0], "width": mine.width.iloc[0],
                         "depths": tuple(int(d) for d in mine.depth), "threshold": n, "shows_failure": shows,
                         "runs": int(mine.kd_n.sum() + mine.twin_n.sum()), "sentence": sentence})
    # the main statement's width first: the most depths, then the most runs, then the wider
    verdicts.sort(key=lambda v: (-len(v["depths"]), -v["runs"], -_wkey(v["width"])))
    main, widths = verdicts[0], pd.Series([v["width"] for v in verdicts], dtype=object)
    verdicts = pd.DataFrame(verdicts)
    verdicts["width"] = widths
    return DepthInfo(table, verdicts, (main["family"], main["width"]), main["sentence"], t_acc, chance, fraction, bar)


def _float(v: Any) -> float | None:
    """A metric as a float; None when missing."""
    return None if v is None or v != v else float(v)


def _wkey(w: Any) -> float:
    """A width to sort and group by: a missing one (the folder's own) first."""
    return -1.0 if w is None or w != w else float(w)


def plot_depth(info: DepthInfo, path: str | Path) -> None:
    """Test accuracy against layers, one colour per width: KD solid, twin dashed, mean ± std over seeds."""
    from .frontier import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if info.teacher_acc is not None:
        ax.axhline(info.teacher_acc, color="black", ls="--", lw=1, label=f"teacher ({_pct(info.teacher_acc)})")
        ax.axhline(info.bar, color="tab:red", lw=0.8, alpha=0.5, label=f"{info.fraction:.0%} of the teacher: below it a depth fails")
    if info.chance is not None:
        ax.axhline(info.chance, color="tab:gray", ls=":", lw=1.2, label=f"chance ({_pct(info.chance)})")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t = info.table
    for k, v in enumerate(info.verdicts.itertuples()):
        mine = t[(t.family == v.family) & (t.width.map(_wkey) == _wkey(v.width))]
        color, name = colors[k % len(colors)], f"{v.width_key} {v.width if v.width is not None else 'default'}"
        kd, tw = mine[mine.kd_n > 0], mine[mine.twin_n > 0]
        if not kd.empty:
            ax.errorbar(kd.depth, kd.kd_mean, yerr=kd.kd_std.fillna(0), fmt="-o", capsize=3, color=color, label=f"KD, {name}")
        if not tw.empty:
            protocols = " / ".join(dict.fromkeys(tw.twin_protocol))
            ax.errorbar(tw.depth, tw.twin_mean, yerr=tw.twin_std.fillna(0), fmt="--x", capsize=3, color=color, alpha=0.8,
                        label=f"{protocols}, {name}")
    depths = sorted(set(int(d) for d in t.depth))
    ax.set_xticks(depths)
    ax.set_xlabel("layers")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title("depth on the frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
