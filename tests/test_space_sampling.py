"""Search spaces sampled: define-by-run functions under Optuna's FixedTrial (conditions,
fixed entries, pickling) and real in-memory studies over every preset. No Ray."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import FixedTrial

from distill.errors import ConfigError
from space_helpers import BASE, PRESET_NAMES
from search_spaces.space import (
    apply,
    define,
    load_space,
    parse_space,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def fails(match: str):
    return pytest.raises(ConfigError, match=match)


# --- define (with FixedTrial) ----------------------------------------------------------------


def capacity_gap():
    return load_space("capacity_gap")


def test_define_skips_inactive_transformer_keys():
    sample = define(capacity_gap(), BASE)
    out = sample(FixedTrial({"student.family": "mlp", "student.width": 16, "student.depth": 2}))
    assert out == {"student.family": "mlp", "student.width": 16, "student.depth": 2}
    out = sample(FixedTrial({"student.family": "cnn", "student.width": 4, "student.depth": 3, "student.heads": 2}))
    assert out == {"student.family": "cnn", "student.width": 4, "student.depth": 3}  # heads not asked for


def test_define_transformer_branch():
    sample = define(capacity_gap(), BASE)
    out = sample(FixedTrial({"student.family": "transformer", "student.depth": 1, "student.dim": 16, "student.heads": 4, "student.width": 99}))
    assert out == {"student.family": "transformer", "student.depth": 1, "student.dim": 16, "student.heads": 4}


def test_define_missing_active_value_raises():
    sample = define(capacity_gap(), BASE)
    with pytest.raises(ValueError, match="student.heads"):
        sample(FixedTrial({"student.family": "transformer", "student.depth": 1, "student.dim": 16}))
    with pytest.raises(ValueError, match="student.width"):
        sample(FixedTrial({"student.family": "mlp", "student.depth": 1}))


def test_define_condition_from_base_config():
    space = parse_space({"losses.fitnet.student_layer": {"float": [0.25, 1.0], "when": {"mix.fitnet": {"gt": 0}}}})
    trial = FixedTrial({"losses.fitnet.student_layer": 0.5})
    assert define(space, BASE)(trial) == {}  # the base has no fitnet term
    assert define(space, {**BASE, "mix": {"ce": 0.1, "kd": 0.9, "fitnet": 0.0}})(trial) == {}
    on = {**BASE, "mix": {"ce": 0.1, "kd": 0.9, "fitnet": 0.5}}
    assert define(space, on)(trial) == {"losses.fitnet.student_layer": 0.5}
    with pytest.raises(ValueError):
        define(space, on)(FixedTrial({}))


def test_define_condition_from_sampled_key():
    space = parse_space(
        {
            "mix.fitnet": {"choice": [0.0, 0.1, 1.0]},
            "losses.fitnet.student_layer": {"float": [0.25, 1.0], "when": {"mix.fitnet": {"gt": 0}}},
        }
    )
    sample = define(space, {**BASE, "mix": {"ce": 0.1, "kd": 0.9, "fitnet": 1.0}})
    # the sampled value wins over the base's
    assert sample(FixedTrial({"mix.fitnet": 0.0, "losses.fitnet.student_layer": 0.5})) == {"mix.fitnet": 0.0}
    assert sample(FixedTrial({"mix.fitnet": 0.1, "losses.fitnet.student_layer": 0.5})) == {"mix.fitnet": 0.1, "losses.fitnet.student_layer": 0.5}


def test_define_fixed_entries_appear():
    space = parse_space({"seed": {"fixed": 7}, "train.epochs": 3, "train.lr": {"float": [0.001, 0.1], "log": True},
                         "train.optimizer": {"fixed": "sgd", "when": {"student.family": "cnn"}}})
    out = define(space, BASE)(FixedTrial({"train.lr": 0.01}))
    assert out == {"seed": 7, "train.epochs": 3, "train.lr": 0.01}
    cnn = {**BASE, "student": {"family": "cnn"}}
    assert define(space, cnn)(FixedTrial({"train.lr": 0.01}))["train.optimizer"] == "sgd"


@pytest.mark.parametrize(
    "cond, active_for",
    [
        ({"in": ["mlp", "cnn"]}, {"mlp", "cnn"}),
        ({"ne": "transformer"}, {"mlp", "cnn"}),
        ("cnn", {"cnn"}),
    ],
)
def test_define_conditions_on_choices(cond, active_for):
    space = parse_space({"student.family": {"choice": ["mlp", "cnn", "transformer"]},
                         "train.lr": {"float": [0.001, 0.1], "when": {"student.family": cond}}})
    sample = define(space, BASE)
    for family in ("mlp", "cnn", "transformer"):
        out = sample(FixedTrial({"student.family": family, "train.lr": 0.01}))
        assert ("train.lr" in out) == (family in active_for), (family, out)


@pytest.mark.parametrize(
    "op, active_for",
    [("gt", {0.5, 1.0}), ("ge", {0.1, 0.5, 1.0}), ("lt", {0.0}), ("le", {0.0, 0.1}), ("ne", {0.0, 0.5, 1.0}), ("in", set())],
)
def test_define_numeric_conditions(op, active_for):
    arg = [] if op == "in" else 0.1
    space = parse_space({"mix.rkd": {"choice": [0.0, 0.1, 0.5, 1.0]},
                         "losses.rkd.angle": {"float": [0.0, 50.0], "when": {"mix.rkd": {op: arg}}}})
    sample = define(space, BASE)
    for w in (0.0, 0.1, 0.5, 1.0):
        out = sample(FixedTrial({"mix.rkd": w, "losses.rkd.angle": 10.0}))
        assert ("losses.rkd.angle" in out) == (w in active_for), (op, w, out)


def test_define_two_conditions_all_must_hold():
    space = parse_space({"student.family": {"choice": ["mlp", "cnn"]}, "mix.at": {"choice": [0.0, 10.0]},
                         "losses.at.p": {"float": [1.0, 4.0], "when": {"student.family": "cnn", "mix.at": {"gt": 0}}}})
    sample = define(space, BASE)
    t = {"losses.at.p": 2.0}
    assert "losses.at.p" in sample(FixedTrial({**t, "student.family": "cnn", "mix.at": 10.0}))
    assert "losses.at.p" not in sample(FixedTrial({**t, "student.family": "mlp", "mix.at": 10.0}))
    assert "losses.at.p" not in sample(FixedTrial({**t, "student.family": "cnn", "mix.at": 0.0}))


def test_define_comparison_on_unset_key_is_false():
    # gt/ge/lt/le on a key neither sampled nor in the base never hold (no TypeError on None)
    for op in ("gt", "ge", "lt", "le"):
        space = parse_space({"train.lr": {"float": [0.001, 0.1], "when": {"mix.fitnet": {op: 0}}}})
        assert define(space, BASE)(FixedTrial({"train.lr": 0.01})) == {}


def test_define_is_picklable_and_works_after():
    sampler = define(load_space("full"), BASE)
    clone = pickle.loads(pickle.dumps(sampler))
    params = {"student.family": "cnn", "student.width": 8, "student.depth": 2, "losses.kd.temperature": 2.0, "mix.ce": 0.5,
              "mix.kd": 0.5, "mix.dkd": 0.0, "mix.rkd": 0.1, "mix.at": 10.0, "train.lr": 0.01}
    assert clone(FixedTrial(params)) == sampler(FixedTrial(params)) == params


# --- sampling through a real study ---------------------------------------------------------


def test_random_study_over_full_preset_gives_valid_runs():
    space = load_space("full")
    sample = define(space, BASE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: list[dict] = []

    def objective(trial):
        params = sample(trial)
        seen.append(params)
        return 0.0

    study.optimize(objective, n_trials=30)
    assert len(seen) == 30
    families = set()
    for params in seen:
        c = apply(params, BASE)
        family = params["student.family"]
        families.add(family)
        assert c.student.family == family
        opts = c.student.options
        assert opts.depth == params["student.depth"]
        assert c.losses["kd"].temperature == params["losses.kd.temperature"]
        assert c.train.lr == params["train.lr"]
        assert 1.0 <= params["losses.kd.temperature"] <= 16.0
        assert c.mix["ce"] == params["mix.ce"] and c.mix["kd"] == params["mix.kd"]
        if family == "transformer":
            assert {"student.dim", "student.heads"} <= params.keys() and "student.width" not in params
            assert not hasattr(opts, "width") and (opts.dim, opts.heads) == (params["student.dim"], params["student.heads"])
        else:
            assert "student.width" in params and "student.heads" not in params and "student.dim" not in params
            assert opts.width == params["student.width"] and 4 <= opts.width <= 128
        assert ("mix.at" in params) == (family == "cnn")
    assert families == {"mlp", "cnn", "transformer"}
    # the study's recorded params are the sampled ones
    assert [t.params for t in study.trials] == [{k: v for k, v in p.items()} for p in seen]


def test_study_over_every_preset_applies():
    for name in PRESET_NAMES:
        sample = define(load_space(name), BASE)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
        study.optimize(lambda t: (apply(sample(t), BASE), 0.0)[1], n_trials=10)
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), name
