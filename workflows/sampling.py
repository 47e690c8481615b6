"""Which Optuna sampler a search runs, chosen for its budget (`search.sampler: auto`, the default).

At the budgets kdx runs (tens of trials), NSGA-II is random search: Optuna counts only
completed trials toward its first generation, and its population is 50, so a 24-trial search
never leaves generation 0 (issue 23 measured it on the demo). Optuna 5 made multi-objective TPE
its default for this reason, and OptunaHub's AutoSampler picks GP or TPE below a few hundred
trials. kdx's rule:

- every searched key numeric (int or float) and unconditional, and at most `GP_MAX_TRIALS`
  trials: **GP** (log expected hypervolume improvement with several objectives; it conditions on
  running trials, so concurrent trials do not propose the same point). A Gaussian process is the
  most sample-efficient model of a smooth numeric space; its fit costs cubic time in the trials,
  hence the cap;
- several objectives and at least `NSGA_POPULATIONS` populations of trials: **NSGA-II**, the
  evolutionary sampler that needs generations to work;
- otherwise **TPE**, multivariate (it models the keys jointly, so a learning rate that suits
  one family is not averaged with another's), `group` when the space has conditional keys
  (each branch modelled apart), and the constant liar when trials run concurrently (a running
  trial counts as a bad one, so two workers are not handed the same point).

An explicit `search.sampler` (tpe, gp, nsga2, random) is run as asked. The choice and its
reason are printed, written into the search run's description and its `search.sampler` param.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SamplerChoice", "choose_sampler", "make_sampler", "GP_MAX_TRIALS", "NSGA_POPULATIONS", "NSGA_POPULATION"]

GP_MAX_TRIALS = 200  # GPSampler refits on every ask, O(n^3): a few seconds an ask by 200 trials on 2 cores
NSGA_POPULATION = 50  # Optuna's default population_size
NSGA_POPULATIONS = 4  # generations NSGA-II needs before it beats a model-based sampler


@dataclass(frozen=True)
class SamplerChoice:
    name: str  # tpe | gp | nsga2 | random
    reason: str  # one line for the log and the search run's description
    multivariate: bool = True  # TPE only
    group: bool = False  # TPE only: conditional keys
    constant_liar: bool = False  # TPE only: concurrent trials

    def describe(self) -> str:
        opts = [o for o, on in (("multivariate", self.name == "tpe" and self.multivariate), ("group", self.group),
                                ("constant liar", self.constant_liar)) if on]
        return f"{self.name}" + (f" ({', '.join(opts)})" if opts else "") + f": {self.reason}"


def choose_sampler(sampler: str, space: list, num_samples: int, objectives: int, max_concurrent: int) -> SamplerChoice:
    """The sampler for a search: `sampler` as given unless it is "auto" (the rule in the module doc)."""
    searched = [p for p in space if p.kind != "fixed"]
    conditional = any(p.when for p in searched)
    liar = max_concurrent > 1
    if sampler != "auto":
        return SamplerChoice(sampler, "as search.sampler asks", group=sampler == "tpe" and conditional, constant_liar=sampler == "tpe" and liar)
    numeric = bool(searched) and all(p.kind in ("int", "float") for p in searched)
    if numeric and not conditional and num_samples <= GP_MAX_TRIALS:
        return SamplerChoice("gp", f"every searched key is numeric and unconditional, {num_samples} trials (<= {GP_MAX_TRIALS})")
    if objectives > 1 and num_samples >= NSGA_POPULATIONS * NSGA_POPULATION:
        return SamplerChoice("nsga2", f"{num_samples} trials are {num_samples // NSGA_POPULATION} populations of {NSGA_POPULATION}")
    why = ("a choice among the searched keys" if not numeric else "conditional keys" if conditional else f"{num_samples} trials")
    if objectives > 1:
        why += f"; {num_samples} trials are under {NSGA_POPULATIONS} NSGA-II populations of {NSGA_POPULATION}"
    return SamplerChoice("tpe", why, group=conditional, constant_liar=liar)


OPTUNA_STARTUP = 10  # TPESampler's and GPSampler's default n_startup_trials


def make_sampler(choice: SamplerChoice, seed: int, startup: int = OPTUNA_STARTUP):
    """The Optuna sampler of a choice, seeded; a model-based one draws `startup` random trials
    before it models (Optuna's 10 by default; fewer after a warm start, workflows/warm.py)."""
    import optuna

    if choice.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=choice.multivariate, group=choice.group,
                                          constant_liar=choice.constant_liar, n_startup_trials=startup)
    if choice.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, n_startup_trials=startup)
    if choice.name == "nsga2":
        from .study import PicklableNSGAII

        return PicklableNSGAII(seed=seed, population_size=NSGA_POPULATION)
    return optuna.samplers.RandomSampler(seed=seed)
