"""Teacher-assistant chains read back: did an assistant beat distilling directly?

`chain_info(exp)` gathers, from a chain search's runs, every searched chain
(its assistants' sizes and its student's accuracy), the best chain by the
student's validation accuracy, and three arms over seeds: the best chain, the
direct teacher -> student run (same final-stage settings and budget) and the
scratch twin. Differences between arms are paired by seed; t is
mean / (std / sqrt(n)) of the paired differences, NaN below two pairs.

The verdict reads on test accuracy (the best chain was picked on validation,
so its own val_acc is optimistic), and a lone seed decides nothing: with
fewer than three pairs, the table says so rather than calling a winner.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import schema
from .runs import Experiment, by_seed, column, paired

__all__ = ["ChainInfo", "chain_info", "plot_chains"]


class ChainInfo(NamedTuple):
    chains: pd.DataFrame  # one row per searched chain: run_id, chain, assistant_params, val_acc, test_acc
    best: str | None  # the best chain's student run (validation accuracy)
    arms: pd.DataFrame  # arm (best chain, direct, twin), n, test_acc mean/std, by_seed {seed: test_acc}
    pairs: pd.DataFrame  # comparison, n, mean, std, t of the per-seed differences
    teacher: dict | None


def chain_info(exp: Experiment) -> ChainInfo | None:
    """None when the experiment holds no chains."""
    df = exp.runs
    chain, seed_of = column(df, "chain"), column(df, "seed_of")
    students = df[(df.role == schema.ROLE_STUDENT) & (chain != "") & (chain != schema.CHAIN_DIRECT) & (seed_of == "")]
    if students.empty:
        return None
    assistants = df[(df.role == schema.ROLE_ASSISTANT) & (df.status == "FINISHED")]
    rows = []
    for _, s in students.iterrows():
        mine = assistants[column(assistants, "chain") == s["chain"]].sort_values("stage")
        rows.append({"run_id": s.run_id, "chain": s["chain"], "status": s.status,
                     "assistant_params": tuple(int(p) for p in mine[schema.PARAMS]),
                     schema.PARAMS: s[schema.PARAMS], schema.VAL_ACC: s[schema.VAL_ACC], schema.TEST_ACC: s[schema.TEST_ACC]})
    chains = pd.DataFrame(rows)
    ok = chains[chains.status == "FINISHED"].sort_values([schema.VAL_ACC, schema.PARAMS], ascending=[False, True])
    best = ok.run_id.iloc[0] if not ok.empty else None

    done = df[(df.status == "FINISHED") & (df.role != schema.ROLE_ASSISTANT)]  # a repeated chain's assistants carry seed_of too
    done_chain, done_seed_of = column(done, "chain"), column(done, "seed_of")
    first = lambda rows: rows.run_id.iloc[0] if not rows.empty else None  # noqa: E731
    by_arm = {
        "best chain": by_seed(done, best),
        "direct": by_seed(done, first(done[(done_chain == schema.CHAIN_DIRECT) & (done_seed_of == "")])),
        "scratch twin": by_seed(done, first(done[(done.role == schema.ROLE_TWIN) & (done_seed_of == "")])),
    }
    arms = pd.DataFrame([{"arm": name, "n": len(v), "test_acc_mean": np.mean(list(v.values())) if v else np.nan,
                          "test_acc_std": np.std(list(v.values()), ddof=1) if len(v) > 1 else np.nan, "by_seed": v}
                         for name, v in by_arm.items()])
    pairs = pd.DataFrame([{"comparison": f"{a} - {b}", **paired(by_arm[a], by_arm[b])}
                          for a, b in (("best chain", "direct"), ("best chain", "scratch twin"), ("direct", "scratch twin"))])
    teacher = exp.teacher
    return ChainInfo(chains, best, arms, pairs, None if teacher is None else {k: teacher.get(k) for k in (schema.PARAMS, schema.TEST_ACC)})


def plot_chains(info: ChainInfo, path: str | Path) -> None:
    """The student's test accuracy against its (first) assistant's size; direct and twin as lines."""
    from .frontier import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    c = info.chains[info.chains.status == "FINISHED"]
    x = [p[0] if p else np.nan for p in c["assistant_params"]]
    ax.scatter(x, c[schema.TEST_ACC], color="tab:blue", label="student via assistant (one chain each)", zorder=3)
    if info.best is not None:
        b = c[c.run_id == info.best]
        ax.scatter([b["assistant_params"].iloc[0][0]], b[schema.TEST_ACC], s=90, facecolors="none", edgecolors="tab:red",
                   lw=1.5, label="best chain (validation)", zorder=4)
    colors = {"direct": "tab:green", "scratch twin": "tab:gray"}
    for _, a in info.arms.iterrows():
        if a["arm"] in colors and a["n"]:
            ax.axhline(a["test_acc_mean"], color=colors[a["arm"]], ls="--", lw=1.2, label=f"{a['arm']} (mean of {a['n']} seeds)")
    if info.teacher and info.teacher.get(schema.PARAMS):
        ax.axvline(info.teacher[schema.PARAMS], color="black", lw=1, ls=":", label="teacher size")
    ax.set_xscale("log")
    ax.set_xlabel("assistant parameters (log)")
    ax.set_ylabel("student test accuracy")
    ax.set_title("teacher -> assistant -> student")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
