"""The sampler chosen for a search's budget and keys (workflows/sampling.py)."""

from __future__ import annotations

import optuna
import pytest

from search_spaces.space import parse_space
from workflows.experiment import load_experiment
from workflows.sampling import GP_MAX_TRIALS, NSGA_POPULATION, NSGA_POPULATIONS, choose_sampler, make_sampler

NUMERIC = parse_space({"student.width": {"int": [8, 64], "log": True}, "train.lr": {"float": [1e-3, 3e-2], "log": True}})
MIXED = parse_space({"student.family": {"choice": ["mlp", "cnn"]}, "train.lr": {"float": [1e-3, 3e-2], "log": True}})
CONDITIONAL = parse_space({"student.width": {"int": [8, 64]},
                           "losses.kd.temperature": {"float": [1.0, 8.0], "when": {"mix.kd": {"gt": 0}}}})


@pytest.mark.parametrize("space, trials, objectives, concurrent, name, group, liar", [
    (NUMERIC, 24, 2, 2, "gp", False, False),  # small numeric budget: a Gaussian process
    (NUMERIC, GP_MAX_TRIALS + 1, 1, 2, "tpe", False, True),  # past GP's cubic cost, one objective: TPE
    (MIXED, 24, 2, 2, "tpe", False, True),  # a categorical key: TPE, constant liar with 2 concurrent
    (MIXED, 24, 2, 1, "tpe", False, False),  # one at a time: no liar needed
    (CONDITIONAL, 24, 1, 2, "tpe", True, True),  # conditional keys: TPE models each branch apart
    (MIXED, NSGA_POPULATIONS * NSGA_POPULATION - 1, 2, 2, "tpe", False, True),  # under 4 populations: not NSGA-II
    (MIXED, NSGA_POPULATIONS * NSGA_POPULATION, 2, 2, "nsga2", False, False),  # several populations, several objectives
    (MIXED, NSGA_POPULATIONS * NSGA_POPULATION, 1, 2, "tpe", False, True),  # one objective never gets NSGA-II
])
def test_auto_picks_the_sampler_for_the_budget_and_the_keys(space, trials, objectives, concurrent, name, group, liar):
    choice = choose_sampler("auto", space, trials, objectives, concurrent)
    assert (choice.name, choice.group, choice.constant_liar) == (name, group, liar)
    assert choice.reason and name in choice.describe()


def test_an_explicit_sampler_runs_as_asked():
    assert choose_sampler("nsga2", MIXED, 24, 2, 2).name == "nsga2"
    assert choose_sampler("random", NUMERIC, 24, 2, 2).reason == "as search.sampler asks"


@pytest.mark.parametrize("name, cls", [("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                       ("nsga2", optuna.samplers.NSGAIISampler), ("random", optuna.samplers.RandomSampler)])
def test_make_sampler_builds_the_choice_and_it_pickles(name, cls):
    """Tune pickles the searcher, sampler included, before the first trial (Optuna 5's NSGA-II holds a lock)."""
    import pickle

    sampler = make_sampler(choose_sampler(name, MIXED, 24, 2, 2), seed=0)
    assert isinstance(sampler, cls)
    again = pickle.loads(pickle.dumps(sampler))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=again)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("w", 1, 8)), n_trials=3)
    assert len(study.trials) == 3


def test_the_default_is_auto_and_the_demo_gets_tpe(tmp_path):
    """The demo's 24 trials over family x width x ... : NSGA-II there was random search (issue 23)."""
    from pathlib import Path

    demo = load_experiment(Path(__file__).parent.parent / "examples" / "demo.yaml")
    assert demo.search.sampler == "auto"
    assert demo.sampler.name == "tpe" and demo.sampler.multivariate and demo.sampler.constant_liar
    cfg = tmp_path / "c.yaml"
    cfg.write_text("experiment: x\ndata: {name: hgmm}\nteacher: {family: mlp}\nstudent: {family: mlp}\n"
                   "space: {student.width: {int: [4, 32]}}\nsearch: {objectives: {val_acc: max, params: min}}\n")
    assert load_experiment(cfg).sampler.name == "gp"


def test_tpe_choice_learns_a_two_objective_problem():
    """The TPE the rule builds is multi-objective and model-based: on a toy front it beats random search's hypervolume."""
    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        return x, (1 - x) + 4 * (y - 0.3) ** 2

    def volume(sampler) -> float:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
        study.optimize(objective, n_trials=40)
        from analysis.pareto import hypervolume
        import numpy as np

        return hypervolume(np.array([t.values for t in study.best_trials]), np.array([1.1, 5.0]))

    tpe = [volume(make_sampler(choose_sampler("auto", MIXED, 40, 2, 1), seed=s)) for s in range(3)]
    rnd = [volume(optuna.samplers.RandomSampler(seed=s)) for s in range(3)]
    assert sum(tpe) > sum(rnd)
