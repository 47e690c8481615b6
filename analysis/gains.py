"""What distillation bought, per front architecture, with both arms tuned (workflows/gain.py).

`gain_info(exp)` reads the arm runs (`kdx.arm`, `kdx.gain_arch`): each searched
arm's winner is its best candidate on validation, followed over its seeds; the
controls are the KD winner's. Every comparison is a paired difference of test
accuracy over the seeds both arms have, with t = mean / (std / sqrt n), and is
called distinguishable from zero only when |t| reaches the two-sided 95%
critical value of Student's t with n - 1 degrees of freedom; otherwise the
report says the difference is within the noise. Below `MIN_SEEDS` pairs, or with
zero spread, there is no verdict at all: the report says the seeds cannot tell
and prints no t (`tell`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from distill.tasks import task_named

from . import schema
from .runs import Experiment, column, paired

__all__ = ["GainInfo", "gain_info", "no_gain_reason", "ARMS", "PROTOCOL", "verdict_line", "t_critical", "protocol", "Candidate", "race_pick",
           "race_mean", "race_settings", "noise_line", "start_part", "MIN_SEEDS", "tell", "distinguishable", "difference", "Race", "run_race",
           "race_gap", "race_vals", "split_error", "pick_line"]

ARMS = {
    "kd": "KD, recipe searched",
    "twin": "tuned twin (labels only, the student's own start, lr and weight decay searched)",
    "random": "random-start twin (labels only, from random weights, lr and weight decay searched)",
    "kd_random": "KD from random weights (recipe searched as KD's)",
    "smooth": "label-smoothing control (smoothing searched too)",
    "shuffled": "dark-knowledge control (KD winner, non-target probabilities shuffled)",
    "same_recipe": "same-recipe twin (KD winner's recipe, labels only)",
}
SEARCHED = ("kd", "twin", "smooth", "random", "kd_random")
CONTROLS = ("twin", "smooth", "shuffled")  # what KD must beat: the best of them

PROTOCOL = (
    "Equal-budget protocol: for every architecture on the Pareto front, KD and two labels-only arms each get "
    "{k} recipe run(s) of the search's epochs at the base seed, candidate i of every arm on the same lr and weight decay "
    "(the front student's own lr, the base config's, then draws): KD adds its temperature and kd weight (ce = 1 - kd), "
    "starting from the front student's own recipe and the textbook ones (T 4 with kd 0.9; T 20; the base config); the "
    "tuned twin trains on hard labels; the label-smoothing control adds its smoothing. {race}Each arm's winner is "
    "repeated over {s} seed(s), beside two controls of the KD winner at the same seeds (its teacher's non-target "
    "probabilities shuffled; its recipe on labels only). Differences are of test accuracy, paired by seed (same init "
    "and batch order)."
)


PROTOCOL_LM = (
    "Equal-budget protocol: for every architecture on the Pareto front, KD and two labels-only arms each get "
    "{k} recipe run(s) of the search's epochs at the base seed, candidate i of every arm on the same lr and weight decay "
    "(the front student's own lr, the base config's, then draws): KD adds its next-token loss's temperature and weight "
    "(ce = 1 - weight), starting from the front student's own recipe and kdx's next-token textbook ones (T 1 with weight 1; "
    "T 2 with weight 0.5; the base config); the tuned twin trains on the next tokens alone; the label-smoothing control adds "
    "its smoothing. {race}Each arm's winner is repeated over {s} seed(s), beside the KD winner's recipe on labels only at the "
    "same seeds (no shuffled control: shuffling non-target classes has no next-token meaning). Differences are of test "
    "cross-entropy in nats per predicted token, twin minus KD (> 0: KD better), paired by seed (same init and batch order)."
)


PROTOCOL_EMBED = (
    "Equal-budget protocol: for every architecture on the Pareto front, KD and the tuned twin each get {k} run(s) of the "
    "search's epochs at the base seed, candidate i of each arm on the same lr and weight decay (the front student's own lr, "
    "the base config's, then draws): KD keeps the front student's own loss mix (kdx has no textbook embedding-distillation "
    "recipe to start a recipe search from), and the tuned twin learns from the text alone (unsupervised SimCSE). {race}Each "
    "arm's winner is repeated over {s} seed(s). Differences are of test Spearman with the teacher's similarities, paired by "
    "seed (same init and batch order): a score that reads the teacher, which only KD sees, so a gain here is expected; the "
    "gold Spearman (data.pairs) is the score that does not."
)
PROTOCOLS = {schema.VAL_ACC: PROTOCOL, schema.VAL_LOSS: PROTOCOL_LM, schema.VAL_SPEARMAN: PROTOCOL_EMBED}  # by the task's score


START = ("Students start from {words} (train.init: {start}), and every labels-only arm takes that same start, so "
         "KD minus the tuned twin is what distillation bought on top of the start; a random-start twin, tuned alike on the same "
         "draws, measures what the start bought (tuned twin minus random-start twin). ")
START_KD = ("KD from random weights, on KD's own candidates, measures it under distillation (KD minus KD from random weights). ")


def protocol(g: "GainInfo") -> str:
    """The protocol sentence of a gain, with its budget, race and seeds."""
    race = ("Each arm's best on validation at the base seed is its winner (one seed: no race). " if g.race < 2 or g.race_seeds < 2 else
            f"Each arm's {g.race} best candidates on validation at the base seed are raced over {g.race_seeds} seeds, and the "
            f"best mean {g.score.words} is its winner. ")
    text = PROTOCOLS[g.score.val].format(k=g.recipe_trials, s=g.seeds, race=race)
    if g.start == "random":
        return text
    kd_random = "arm" in g.arms and (g.arms.arm == "kd_random").any()  # searches before the arm existed ran without it
    return text + " " + (START.format(words=schema.START_WORDS.get(g.start, g.start), start=g.start) + (START_KD if kd_random else "")).strip()


class GainInfo(NamedTuple):
    arms: pd.DataFrame  # arch, params, arm, run_id (its base seed's), ships (its best-validated seed's run), recipe, n, test_mean, test_std, val_mean, val_std
    pairs: pd.DataFrame  # arch, comparison, n, mean, std, t, distinguishable
    verdicts: pd.DataFrame  # one row per front architecture: the gain, the best control, the compute behind it
    noise: float  # the objective's noise: median std of val_acc over seeds of one config (NaN with one seed)
    recipe_trials: int
    seeds: int
    race: int = 1  # candidates per arm raced over seeds before the pick
    race_seeds: int = 1  # the seeds of that race (1: the pick was made on one seed)
    score: schema.Score = schema.ACCURACY  # what the arms are picked on and compared in; a pair's mean > 0 is KD better
    start: str = "random"  # the KD students' start (train.init); from the teacher, the verdicts split the gain
    val_samples: int | None = None  # the validation split's size, where the search logged it: its sampling error is a noise of its own


def t_critical(n: int) -> float:
    """The two-sided 95% critical value of Student's t with n - 1 degrees of freedom."""
    if n < 2:
        return float("inf")
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


# Two seeds give one degree of freedom: the std is estimated from a single difference (it can land
# anywhere from 0 to several times the true spread), and two differences that happen to be equal give
# std 0 and an infinite t. A verdict needs at least three pairs and some spread.
MIN_SEEDS = 3


def tell(n: int, std: float) -> str:
    """Why n paired differences with this spread cannot give a verdict, in words; '' when they can."""
    if n < 1:
        return "no seeds in common"
    if n == 1:
        return "one seed: no spread, so no verdict"
    if n < MIN_SEEDS:
        return f"{n} seeds: too few to tell"
    if not std > 0:
        return f"{n} seeds with zero spread: the seeds cannot tell"
    return ""


def distinguishable(p: dict) -> bool:
    """Whether a paired difference (`analysis.runs.paired`) is told apart from zero: enough seeds, some spread,
    and |t| at the two-sided 95% critical value."""
    return not tell(p["n"], p["std"]) and bool(abs(p["t"]) >= t_critical(p["n"]))


def difference(score: schema.Score, mean: float, std: float, t: float, n: int, what: str = "") -> str:
    """'+1.20 ± 0.40 points{what} (t 3.0, 5 seeds): distinguishable from zero', 'within the noise (...)', or,
    where the seeds cannot tell, the mean and the reason with no t."""
    why = tell(n, std)
    if why:
        return f"{score.diff(mean)} {score.short}{what} ({why})"
    words = "distinguishable from zero" if abs(t) >= t_critical(n) else f"within the noise (|t| < {t_critical(n):.2f})"
    return f"{score.diff(mean)} ± {score.size(std)} {score.short}{what} (t {t:.1f}, {n} seeds): {words}"


def _recipe(row: pd.Series, arm: str) -> str:
    def g(key: str) -> float:
        v = row.get(key)
        return float(v) if v is not None and v == v else float("nan")

    if arm in ("kd", "kd_random", "shuffled"):
        terms = [k[4:] for k in row.index if k.startswith("mix.") and k not in ("mix.ce", "mix.kd") and g(k) > 0]
        if g("mix.kd") > 0 or not terms:
            return f"T {g('losses.kd.temperature'):.3g}, kd {g('mix.kd'):.3g}, ce {g('mix.ce'):.3g}, lr {g('train.lr'):.3g}"
        name = terms[0]  # a next-token loss: its name, and gjsd's beta (0 forward KL, 1 reverse)
        if len(terms) == 1 and g(f"losses.{name}.temperature") == g(f"losses.{name}.temperature"):
            beta = f", beta {g(f'losses.{name}.beta'):.3g}" if f"losses.{name}.beta" in row.index else ""
            return f"{name}{beta}, T {g(f'losses.{name}.temperature'):.3g}, weight {g(f'mix.{name}'):.3g}, ce {g('mix.ce'):.3g}, lr {g('train.lr'):.3g}"
        # a mix of losses, some without a temperature (an embedding's emb_mse beside sim_kl): each with its weight
        temps = {n: g(f"losses.{n}.temperature") for n in terms}
        mix = ", ".join(f"{n} {g(f'mix.{n}'):.3g}" + (f" (T {temps[n]:.3g})" if temps[n] == temps[n] else "") for n in terms)
        return mix + (f", ce {g('mix.ce'):.3g}" if g("mix.ce") > 0 else "") + f", lr {g('train.lr'):.3g}"
    smooth = g("losses.ce.label_smoothing")
    return f"lr {g('train.lr'):.3g}, wd {g('train.weight_decay'):.3g}" + (f", smoothing {smooth:.3g}" if smooth > 0 else "")


class Candidate(NamedTuple):
    """One recipe of an arm, as racing sees it: its validation accuracy at its seed and at the seeds after."""

    key: str  # its run id at the base seed
    val: float
    start_time: float  # earlier first on a tie
    seed: int
    repeats: dict[int, float]  # seed -> val_acc of its finished repeats
    textbook: bool = False  # the arm's textbook recipe (kdx.textbook): always raced, and it wins a tie inside the noise


class Race(NamedTuple):
    """An arm's race: its winner, the candidates raced, and how the best recipe by mean fared against the textbook one."""

    winner: str | None
    raced: list[Candidate]
    best: str | None = None  # the best mean over the race seeds
    gap: float = float("nan")  # the best mean minus the textbook's (validation, higher better); NaN where not compared
    noise: float = float("nan")  # the std of that gap: the seeds' part and the validation split's
    tie: bool = False  # the gap was within 2 x noise, so the textbook recipe won


def race_settings(settings: dict) -> tuple[int, int]:
    """(candidates raced per arm, seeds they race on), as the search run logged them; 1 each for searches before racing."""
    seeds = int(settings.get("seeds", 1) or 1)
    race, on = int(settings.get("race", 1) or 1), int(settings.get("race_seeds", 1) or 1)
    return (race, min(on, seeds)) if seeds > 1 else (1, 1)


def race_pick(candidates: list[Candidate], race: int, seeds: int, val_samples: int | None = None) -> tuple[str | None, list[Candidate]]:
    """The winner of an arm's recipes and the candidates raced (best first at the base seed); `run_race` says why."""
    r = run_race(candidates, race, seeds, val_samples)
    return r.winner, r.raced


def run_race(candidates: list[Candidate], race: int, seeds: int, val_samples: int | None = None) -> Race:
    """An arm's race, confirmed on seeds, with ties inside the noise going to the textbook recipe.

    One seed's validation accuracy is as noisy as the differences between good recipes (0.9
    points median std in the demo), so a pick on it picks the luckiest seed. The `race` best
    candidates at the base seed go on to `seeds` seeds in all (successive halving over seeds,
    one cut), and the arm's textbook candidate with them wherever it ranked; the best is the
    best mean over the seeds each has finished (ties: the better base-seed rank).

    Racing over seeds does not average the validation split's own sampling error: every seed
    reads the same samples (a 100-class case with 200 validation samples picked a searched
    recipe that then lost 0.9 points of test accuracy to the textbook one, t -7.1 over 5 fresh
    seeds). So where the split's size is known (`val_samples`, a classifier's), the best is
    compared with the textbook recipe: its lead's std has the seeds' part (the paired
    differences over the seeds both ran, / sqrt n) and the split's (McNemar's variance of two
    accuracies a, b on the same n samples, (p10 + p01 - (a - b)^2) / n, bounded by taking every
    error as a disagreement: p10 + p01 <= min(1, (1 - a) + (1 - b))). The bound is loose where
    accuracy is low (two 47% models that mostly agree are counted as disagreeing on every
    error), so there ties are many: the split cannot tell them apart. A lead within twice that std is a
    tie, and the tie goes to the textbook recipe: the better-known one wins unless the search
    found better beyond the noise."""
    ranked = sorted(candidates, key=lambda c: (-c.val, c.start_time))
    raced = ranked[:max(1, race)]
    book = next((c for c in ranked if c.textbook), None)
    if book is not None and book not in raced:
        raced.append(book)
    if not raced:
        return Race(None, [])
    best = raced[max(range(len(raced)), key=lambda i: (race_mean(raced[i], seeds), -i))]
    if book is None or book is best or not val_samples:
        return Race(best.key, raced, best.key)
    gap, noise = race_gap(best, book, seeds, val_samples)
    tie = bool(gap < 2 * noise)
    return Race(book.key if tie else best.key, raced, best.key, gap, noise, tie)


def race_vals(c: Candidate, seeds: int) -> dict[int, float]:
    """A candidate's validation score at each of its race seeds that has finished."""
    return {c.seed: c.val} | {s: v for s, v in c.repeats.items() if c.seed < s < c.seed + seeds}


def race_mean(c: Candidate, seeds: int) -> float:
    """A candidate's mean val_acc over its race seeds that have finished."""
    return float(np.mean(list(race_vals(c, seeds).values())))


def race_gap(a: Candidate, b: Candidate, seeds: int, val_samples: int) -> tuple[float, float]:
    """a's mean validation accuracy minus b's over their race seeds, and the std of that difference: the seeds'
    part (paired by seed) and the validation split's (McNemar's bound; `run_race`)."""
    va, vb = race_vals(a, seeds), race_vals(b, seeds)
    ma, mb = float(np.mean(list(va.values()))), float(np.mean(list(vb.values())))
    d = np.array([va[s] - vb[s] for s in sorted(set(va) & set(vb))])
    seed_var = float(d.var(ddof=1)) / len(d) if len(d) > 1 else 0.0
    split_var = max(0.0, min(1.0, (1 - ma) + (1 - mb)) - (ma - mb) ** 2) / val_samples  # no more than every sample disagrees
    return ma - mb, float(np.sqrt(seed_var + split_var))


def split_error(accuracy: float, val_samples: int) -> float:
    """The binomial std of one accuracy measured on `val_samples` samples: the validation split's own sampling error."""
    return float(np.sqrt(max(accuracy * (1 - accuracy), 0.0) / val_samples))


def _by_seed(runs: pd.DataFrame, metric: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in zip(runs["seed"], runs[metric])}


def _arm_runs(df: pd.DataFrame, arch: str, arm: str, race: tuple[int, int] = (1, 1), score: schema.Score = schema.ACCURACY,
              val_samples: int | None = None) -> pd.DataFrame:
    """The arm's runs over seeds: a searched arm's winner and its repeats; a control's runs
    (those of the current KD winner)."""
    mine = df[(df.gain_arch == arch) & (df.arm == arm)]
    if arm not in SEARCHED:
        winner = _arm_race(df, arch, "kd", race, score, val_samples).winner  # the KD winner's run id at its base seed
        return mine[column(mine, "control_of") == winner].drop_duplicates("seed", keep="last")
    r = _arm_race(df, arch, arm, race, score, val_samples)
    if r.winner is None:
        return mine.iloc[:0]
    return pd.concat([mine[(mine.run_id == r.winner) & (column(mine, "seed_of") == "")], mine[column(mine, "seed_of") == r.winner]])


def _arm_race(df: pd.DataFrame, arch: str, arm: str, race: tuple[int, int], score: schema.Score, val_samples: int | None) -> Race:
    """A searched arm's race over its candidates (`run_race`); the split's noise only for a classifier's accuracy."""
    mine = df[(df.gain_arch == arch) & (df.arm == arm)]
    candidates = mine[column(mine, "seed_of") == ""]
    if candidates.empty:
        return Race(None, [])
    return run_race(_candidates(mine, candidates, score), *race, val_samples if score == schema.ACCURACY else None)


def _candidates(mine: pd.DataFrame, candidates: pd.DataFrame, score: schema.Score) -> list[Candidate]:
    """Each candidate's validation score, signed so that higher is better (a language model's cross-entropy negated)."""
    seed_of, textbook = column(mine, "seed_of"), column(candidates, "textbook")
    return [Candidate(c.run_id, score.sign * float(c[score.val]), float(c.start_time), int(c.seed),
                      {k: score.sign * v for k, v in _by_seed(mine[seed_of == c.run_id], score.val).items()}, book == "True")
            for (_, c), book in zip(candidates.iterrows(), textbook)]


def pick_line(r: Race, score: schema.Score = schema.ACCURACY) -> str:
    """How the KD arm's recipe was picked, where the textbook recipe raced against the best: '' otherwise."""
    if r.gap != r.gap:
        return ""
    lead = f"{score.diff(r.gap)} ± {score.size(r.noise)} {score.short} of validation"
    if r.tie:
        return f"the textbook recipe, tied with the best searched one ({lead}, within the noise of seeds and validation split)"
    return f"the searched recipe, ahead of the textbook one by {lead} (beyond twice its noise)"


def gain_info(exp: Experiment) -> GainInfo | None:
    """None when the search measured no gain this way (see `no_gain_reason`)."""
    df = exp.runs
    if "arm" not in df or "gain_arch" not in df or (column(df, "arm") == "").all():
        return None
    done = df[(column(df, "arm") != "") & (df.status == "FINISHED")]
    race, score = race_settings(exp.search.settings), exp.score
    val_samples = exp.search.val_samples  # searches before it was logged: no split noise, picked on the mean as they were
    arms, pairs, verdicts, noise = [], [], [], []
    for arch in dict.fromkeys(done.gain_arch):
        test: dict[str, dict[int, float]] = {}
        gold: dict[str, dict[int, float]] = {}  # an embedding's gold Spearman (data.pairs): the score that does not read the teacher
        for arm in ARMS:
            runs = _arm_runs(done, arch, arm, race, score, val_samples)
            if runs.empty:
                continue
            test[arm] = {k: score.sign * v for k, v in _by_seed(runs, score.test).items()}  # higher is better: a difference is a gain
            if schema.TEST_GOLD_SPEARMAN in runs:
                gold[arm] = {k: v for k, v in _by_seed(runs, schema.TEST_GOLD_SPEARMAN).items() if v == v}
            acc, val = runs[score.test].astype(float), runs[score.val].astype(float)
            if len(runs) > 1:
                noise.append(float(val.std(ddof=1)))
            first = runs.loc[runs["seed"].astype(float).idxmin()]  # the base seed's run: the arm's key
            # the model that ships: the seed that validated best, as for a repeated trial (analysis/models.py: _shipped);
            # the base seed once shipped at 48% validation beside its repeat's 85%
            signed = score.sign * val
            ships = first.run_id if signed.isna().all() else runs.loc[signed.idxmax()].run_id
            arms.append({"arch": arch, "params": float(runs[schema.PARAMS].iloc[0]), "arm": arm, "run_id": first.run_id, "ships": ships,
                         "recipe": _recipe(runs.iloc[0], arm), "n": len(runs), "test_mean": float(acc.mean()), "val_mean": float(val.mean()),
                         "test_std": float(acc.std(ddof=1)) if len(runs) > 1 else np.nan,
                         "val_std": float(val.std(ddof=1)) if len(runs) > 1 else np.nan})
        if "kd" not in test:
            continue
        for other in ARMS:
            if other != "kd" and other in test:
                p = paired(test["kd"], test[other])
                pairs.append({"arch": arch, "comparison": f"kd - {other}", **p,
                              "distinguishable": distinguishable(p)})
        if "twin" in test and "random" in test:  # the start's own part of the gain, in the same table
            p = paired(test["twin"], test["random"])
            pairs.append({"arch": arch, "comparison": "twin - random", **p, "distinguishable": distinguishable(p)})
        mine = pd.DataFrame([a for a in arms if a["arch"] == arch]).set_index("arm")
        present = [c for c in CONTROLS if c in test]
        best = max(present, key=lambda c: score.sign * mine.loc[c, "test_mean"]) if present else None
        trained = df[((df.arch == arch) | (column(df, "gain_arch") == arch)) & (column(df, "duplicate_of") == "")]  # a replay cost nothing
        compute = float(trained[schema.TRAIN_S].fillna(0).sum()) if schema.TRAIN_S in trained else 0.0
        teacher_s = float(np.nan_to_num(df.get(schema.TEACHER_TRAIN_S, pd.Series([0.0])).max()))
        gain = paired(test["kd"], test.get("twin", {}))
        vs = paired(test["kd"], test[best]) if best else paired({}, {})
        start = paired(test.get("twin", {}), test.get("random", {}))  # what the start bought: same-start twin minus random-start twin
        kd_start = paired(test["kd"], test.get("kd_random", {}))  # ... and under KD: KD from the start minus KD from random weights
        on_gold = paired(gold.get("kd", {}), gold.get("twin", {}))
        verdicts.append({"arch": arch, "params": mine.loc["kd", "params"], "kd_recipe": mine.loc["kd", "recipe"],
                         "kd_pick": pick_line(_arm_race(done, arch, "kd", race, score, val_samples), score),
                         "gain_n": gain["n"], "gain_mean": gain["mean"], "gain_std": gain["std"], "gain_t": gain["t"],
                         "gain_distinguishable": distinguishable(gain),
                         "best_control": best, "vs_control_mean": vs["mean"], "vs_control_std": vs["std"], "vs_control_t": vs["t"],
                         "vs_control_distinguishable": distinguishable(vs),
                         "start_n": start["n"], "start_mean": start["mean"], "start_std": start["std"], "start_t": start["t"],
                         "start_distinguishable": distinguishable(start),
                         "kd_start_n": kd_start["n"], "kd_start_mean": kd_start["mean"], "kd_start_std": kd_start["std"],
                         "kd_start_t": kd_start["t"], "kd_start_distinguishable": distinguishable(kd_start),
                         "gold_n": on_gold["n"], "gold_mean": on_gold["mean"], "gold_std": on_gold["std"], "gold_t": on_gold["t"],
                         "compute_s": compute + teacher_s, "start": _start(done, arch)})
    if not verdicts:
        return None
    settings = exp.search.settings
    return GainInfo(pd.DataFrame(arms), pd.DataFrame(pairs), pd.DataFrame(verdicts).sort_values("params").reset_index(drop=True),
                    float(np.median(noise)) if noise else float("nan"), int(settings.get("recipe_trials", 0) or 0),
                    int(settings.get("seeds", 1) or 1), *race, score, _start(done) if "random" in set(done.arm) else "random", val_samples)


def _start(done: pd.DataFrame, arch: str | None = None) -> str:
    """The KD arm's start (train.init), over every architecture or one."""
    kd = done[(done.arm == "kd") & ((done.gain_arch == arch) if arch is not None else True)]
    starts = column(kd, "start").replace("", "random")
    return str(starts.mode().iloc[0]) if len(starts) else "random"


def no_gain_reason(settings: dict) -> str:
    """Why a search has no tuned gain to report, in words."""
    if settings.get("twins", "base_recipe") != "tuned":
        return ("measured against base-recipe twins only (search.twins: base_recipe): one twin per architecture with the "
                f"base config's settings, learning {task_named(settings.get('task')).twin_words}, while the student's recipe was searched; "
                "this favours KD")
    if str(settings.get("baselines", "True")) == "False":
        return "no gain was measured: search.baselines is false, so no scratch arm ran"
    return "no gain was measured: no front architecture has a finished KD arm (its runs failed or have not run yet)"


def noise_line(g: "GainInfo") -> str:
    """'objective noise: val_acc std 0.94 points over 5 seeds of one config; the validation split's own sampling error
    0.43 points (binomial, 1,600 samples at 97%)', either part alone where the other is unknown, or ''."""
    parts = []
    if g.noise == g.noise:
        parts.append(f"{g.score.val} std {g.score.size(g.noise)} {g.score.short} over {g.seeds} seeds of one config")
    if g.val_samples and g.score == schema.ACCURACY and not g.arms.empty:
        acc = float(np.median(g.arms.val_mean))
        parts.append(f"the validation split's own sampling error {g.score.size(split_error(acc, g.val_samples))} {g.score.short} "
                     f"(binomial, {g.val_samples:,} samples at {acc:.0%}), shared by every seed and never averaged away")
    return ("objective noise: " + "; ".join(parts)) if parts else ""


def verdict_line(v, score: schema.Score = schema.ACCURACY) -> str:
    """One line a person reads: the gain over the tuned twin, then against the best control (> 0: KD better,
    in points of accuracy, or a language model's nats per test token)."""
    twin = "the same-start tuned twin" if _split(v) else "the tuned twin"
    gain = "KD " + difference(score, v.gain_mean, v.gain_std, v.gain_t, v.gain_n, f" over {twin}")
    if getattr(v, "gold_n", 0):  # where a gold set scored every run: the gain on the score that does not read the teacher
        gain += "; on the gold set (data.pairs) " + difference(score, v.gold_mean, v.gold_std, v.gold_t, v.gold_n, " of gold Spearman")
    start = f"; {start_part(v, score)}" if _split(v) else ""
    if v.best_control is None:
        return gain + start
    ctrl = f"against the best control ({v.best_control}) {score.diff(v.vs_control_mean)}"
    if not tell(v.gain_n, getattr(v, "vs_control_std", 1.0)):
        ctrl += (f" (t {v.vs_control_t:.1f}): " + ("KD beats it" if v.vs_control_distinguishable and v.vs_control_mean > 0
                                                  else "the control wins" if v.vs_control_distinguishable else "within the noise"))
    return f"{gain}; {ctrl}{start}"


def _split(v) -> bool:
    n = getattr(v, "start_n", 0)
    return bool(n) and n == n


def start_part(v, score: schema.Score = schema.ACCURACY) -> str:
    """What the start bought (the same-start tuned twin minus the random-start twin), with its verdict."""
    words = {"prune": "teacher pruned to the student's shape"}.get(getattr(v, "start", "teacher"), "teacher's layers")
    line = f"the start ({words}) bought " + difference(score, v.start_mean, v.start_std, v.start_t, v.start_n, " over a random start")
    n = getattr(v, "kd_start_n", 0)
    if n and n == n:
        line += ", and under KD " + difference(score, v.kd_start_mean, v.kd_start_std, v.kd_start_t, n, " over KD from random weights")
    return line
