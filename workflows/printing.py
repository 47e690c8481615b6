"""What `kdx search` and `kdx report` print: the gains first, then the front over every model, then any chains."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.report import Report

__all__ = ["print_table", "print_report"]


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def print_report(report: Report) -> None:
    """A written `analysis.report.Report` on stdout, in the order a reader asks: what KD bought, the depth, the front, the chains."""
    _gains(report.gains, report.settings)
    if report.depth:
        print(f"\ndepth: {report.depth.sentence}")
    print("\nPareto front:")
    _front(report.table, report.info.score)
    from analysis.models import beaten_lines, close_lines

    for line in beaten_lines(report.info.models, report.info.score) + close_lines(report.info.models, report.info.score):
        print(f"  {line}")
    if report.chains is not None:
        _chains(report.chains)


def _gains(g, settings: dict) -> None:
    """The answer first: per front size, the gain over the tuned twin and against the best control."""
    from analysis.gains import no_gain_reason, noise_line, verdict_line

    if g is None:
        print(f"\ngains: {no_gain_reason(settings)}")
        return
    print(f"\nwhat distillation bought ({g.score.unit}, paired by seed; KD and its labels-only arms each searched "
          f"with {g.recipe_trials} recipe(s) per architecture):")
    for v in g.verdicts.itertuples():
        print(f"  {v.arch} ({int(v.params):,} params, {v.kd_recipe}): {verdict_line(v, g.score)}")
        if getattr(v, "kd_pick", ""):
            print(f"    KD's recipe: {v.kd_pick}")
    if noise_line(g):
        print(f"  {noise_line(g)}")


def _front(table, score) -> None:
    from analysis import schema
    from analysis.gains import tell
    from analysis.models import LABELS_ONLY, method_label, method_sentence

    ppl = schema.TEST_PPL in table
    rows = [("", "method", "params", "latency_ms", score.val, "seeds", score.test) + ((schema.TEST_PPL,) if ppl else ())
            + ("gain vs base-recipe twin", "arch")]
    for _, r in table.iterrows():
        gain = "" if r.get("gain") is None or r["gain"] != r["gain"] else score.diff(r["gain"])
        if r.get("gain_n", 0) == r.get("gain_n", 0) and r.get("gain_n", 0) > 1:  # paired over seeds
            why = tell(int(r["gain_n"]), r["gain_std"])
            gain = (f"{score.diff(r['gain_mean'])} ({why})" if why else
                    f"{score.diff(r['gain_mean'])} ± {score.diff(r['gain_std']).lstrip('+')} (t {r['gain_t']:.1f}, {int(r['gain_n'])} seeds)")
        rows.append((r["pareto"], method_label(r), f"{int(r['params']):,}", f"{r['latency_ms']:.3f}", _spread(r, score.val),
                     str(int(r.get("n_seeds") or 1)), f"{r[score.test]:.4f}") + ((f"{r[schema.TEST_PPL]:.3f}",) if ppl else ())
                    + (gain, str(r["arch"])))
    print_table(rows)
    for _, r in table.iterrows():
        if r.get("method") in LABELS_ONLY:
            print(f"  {r['pareto']}: {method_sentence(r, score)}")
    # the start read as the task scores it: its validation score where the run logged one (accuracy, Spearman); a language
    # model's on test cross-entropy
    start_val = f"start_{score.val}"
    metric, key, after = ((score.val, start_val, score.val) if start_val in table else ("test nats/token", schema.START_TEST_LOSS, score.test))
    for _, r in table.iterrows():
        before = r.get(key)
        if r.get("start") in schema.START_SHORT and before is not None and before == before:
            print(f"  {r['pareto']}: started from {schema.START_WORDS[r['start']]}, which scored {metric} {before:.4f} before training "
                  f"({r[after]:.4f} after)")


def _spread(r, val: str) -> str:
    """A point's validation score, with its std over seeds where it stands on several: the noise behind its pick."""
    std = r.get("val_std")
    return f"{r[val]:.4f}" + (f" ± {std:.4f}" if std is not None and std == std and int(r.get("n_seeds") or 1) > 1 else "")


def _chains(c) -> None:
    print("\nteacher-assistant chains (test accuracy over seeds; differences paired by seed):")
    rows = [("arm", "seeds", "test_acc", "std")]
    rows += [(a.arm, str(a.n), f"{a.test_acc_mean:.4f}", "" if a.test_acc_std != a.test_acc_std else f"{a.test_acc_std:.4f}")
             for a in c.arms.itertuples()]
    rows += [("", "", "", "")] + [("difference", "pairs", "points", "t")]
    rows += [(p.comparison, str(p.n), "" if p.mean != p.mean else f"{100 * p.mean:+.2f}", "" if p.t != p.t else f"{p.t:.1f}")
             for p in c.pairs.itertuples()]
    print_table(rows)
