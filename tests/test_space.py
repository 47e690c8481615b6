"""Search spaces as data: parsing, define-by-run sampling, apply, validate, presets,
and the experiment config around them. No Ray: Optuna's FixedTrial and in-memory
studies stand in for the searcher."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import FixedTrial

from distill.config import RunConfig
from distill.errors import ConfigError
from search_spaces.space import PRESETS, Param, apply, define, flatten, load_space, parse_space, validate
from workflows.experiment import load_experiment

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {"data": {"name": "mnist1d"}, "teacher": {"family": "cnn"}, "student": {"family": "mlp", "width": 32}}
PRESET_NAMES = ["capacity_gap", "temperature_mix", "loss_mix", "full"]


def one(data: dict) -> Param:
    (p,) = parse_space(data)
    return p


def fails(match: str):
    return pytest.raises(ConfigError, match=match)


# --- parse_space ---------------------------------------------------------------


def test_parse_int_float_choice_fixed_and_bare():
    space = parse_space(
        {
            "student.width": {"int": [4, 128], "log": True},
            "train.lr": {"float": ["1e-3", 3.0e-2], "log": True},  # YAML 1.1 reads 1e-3 as a string
            "losses.kd.temperature": {"float": [1, 8], "step": 0.5},
            "student.family": {"choice": ["mlp", "cnn"]},
            "seed": {"fixed": 3},
            "train.epochs": 5,
        }
    )
    by = {p.key: p for p in space}
    assert [p.key for p in space] == ["student.width", "train.lr", "losses.kd.temperature", "student.family", "seed", "train.epochs"]
    w = by["student.width"]
    assert (w.kind, w.low, w.high, w.log) == ("int", 4, 128, True)
    assert isinstance(w.low, int) and isinstance(w.high, int)
    lr = by["train.lr"]
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-3, 3e-2, True)
    assert by["losses.kd.temperature"].step == 0.5 and not by["losses.kd.temperature"].log
    assert by["student.family"].kind == "choice" and by["student.family"].choices == ("mlp", "cnn")
    assert (by["seed"].kind, by["seed"].value) == ("fixed", 3)
    assert (by["train.epochs"].kind, by["train.epochs"].value) == ("fixed", 5)
    assert all(p.when == {} for p in space)


def test_parse_keeps_when():
    p = one({"student.heads": {"choice": [1, 2], "when": {"student.family": "transformer"}}})
    assert p.when == {"student.family": "transformer"}
    q = one({"losses.fitnet.student_layer": {"float": [0.25, 1.0], "when": {"mix.fitnet": {"gt": 0}}}})
    assert q.when == {"mix.fitnet": {"gt": 0}}


def test_endpoints():
    assert one({"student.width": {"int": [4, 8]}}).endpoints() == [4, 8]
    assert one({"student.family": {"choice": ["mlp", "cnn"]}}).endpoints() == ["mlp", "cnn"]
    assert one({"seed": {"fixed": 7}}).endpoints() == [7]


@pytest.mark.parametrize("data", [None, {}, [], "capacity_gap"])
def test_empty_space(data):
    with fails(r"^space: the search space is empty"):
        parse_space(data)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"student.width": {"int": [8, 4]}}, ["space.student.width", "low 8 is above high 4"]),
        ({"train.lr": {"float": [0.1, 0.01]}}, ["space.train.lr", "above high"]),
        ({"train.lr": {"float": [0.0, 0.1], "log": True}}, ["space.train.lr", "low > 0"]),
        ({"train.lr": {"float": [-1.0, 0.1], "log": True}}, ["space.train.lr", "low > 0"]),
        ({"student.width": {"int": [0, 8], "log": True}}, ["space.student.width", "low > 0"]),
        ({"student.width": {"int": [1.5, 8]}}, ["space.student.width", "whole numbers"]),
        ({"student.width": {"int": [1, 8.25]}}, ["space.student.width", "whole numbers"]),
        ({"student.width": {"int": [1, 8], "lgo": True}}, ["space.student.width", "unknown field 'lgo'", "did you mean 'log'"]),
        ({"student.width": {"itn": [1, 8]}}, ["space.student.width", "unknown field 'itn'", "did you mean 'int'"]),
        ({"student.width": {"int": [1, 8], "whne": {}}}, ["space.student.width", "did you mean 'when'"]),
        ({"student.width": {"int": [1, 8], "choice": [1, 2]}}, ["space.student.width", "exactly one of"]),
        ({"student.width": {"fixed": 3, "choice": [1, 2]}}, ["space.student.width", "exactly one of"]),
        ({"student.width": {"log": True}}, ["space.student.width", "exactly one of"]),
        ({"student.family": {"choice": []}}, ["space.student.family", "non-empty list"]),
        ({"student.family": {"choice": "mlp"}}, ["space.student.family", "non-empty list"]),
        ({"student.family": {"choice": [{"a": 1}]}}, ["space.student.family", "plain values"]),
        ({"student.width": {"int": [1, 2, 3]}}, ["space.student.width", r"\[low, high\]"]),
        ({"student.width": {"int": ["a", 3]}}, ["space.student.width", "expected a number"]),
        ({"student.width": {"int": [True, 3]}}, ["space.student.width", "expected a number"]),
        ({"student.width": {"int": [1, 3], "log": "yes"}}, ["space.student.width.log", "true or false"]),
        ({"train.lr": {"float": [0.1, 1.0], "step": 0}}, ["space.train.lr.step", "must be > 0"]),
        ({"train.lr": {"float": [0.1, 1.0], "step": 0.1, "log": True}}, ["space.train.lr.step", "cannot go with log"]),
        ({"student.width": {"int": [1, 3], "when": ["student.family"]}}, ["space.student.width.when", "mapping"]),
    ],
)
def test_entry_errors_name_the_entry(data, words):
    with pytest.raises(ConfigError) as e:
        parse_space(data)
    msg = str(e.value)
    assert all(re.search(w, msg) for w in words), msg


@pytest.mark.parametrize(
    "key, words",
    [
        ("student.widht", ["space.student.widht", "no run config has this key", "did you mean 'width'"]),
        ("train.nope", ["space.train.nope", "no run config has this key", "train.nope"]),
        ("losses.kd.temprature", ["space.losses.kd.temprature", "did you mean 'temperature'"]),
        ("foo.bar", ["space.foo.bar", "no run config has this key", "'foo'"]),
        ("mix.notaloss", ["space.mix.notaloss", "no run config has this key"]),
        ("student", ["space.student", "is a section"]),
        ("losses.kd", ["space.losses.kd", "no run config has this key"]),
        ("student.width.extra", ["space.student.width.extra", "no run config has this key"]),
    ],
)
def test_unknown_keys_name_the_entry(key, words):
    with pytest.raises(ConfigError) as e:
        parse_space({"train.lr": {"float": [0.001, 0.01]}, key: {"choice": [1, 2]}})
    msg = str(e.value)
    assert msg.startswith(f"space.{key}:"), msg
    assert all(w in msg for w in words), msg


@pytest.mark.parametrize(
    "key", ["seed", "student.width", "student.heads", "teacher.epochs", "teacher.dim", "train.lr", "mix.fitnet",
            "losses.kd.temperature", "losses.fitnet.student_layer", "data.num_samples", "data.noise"],
)
def test_known_keys_parse(key):
    assert one({key: {"choice": [1, 2]}}).key == key


def test_unknown_condition_op():
    with pytest.raises(ConfigError) as e:
        parse_space({"student.heads": {"choice": [1, 2], "when": {"student.family": {"nq": "transformer"}}}})
    msg = str(e.value)
    assert "space.student.heads.when.student.family" in msg and "unknown test 'nq'" in msg
    assert "did you mean 'ne'" in msg


def test_all_condition_ops_parse():
    for op in ("in", "ne", "gt", "ge", "lt", "le"):
        assert one({"train.lr": {"float": [0.01, 0.1], "when": {"mix.kd": {op: 0}}}}).when == {"mix.kd": {op: 0}}


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": {}}) == {"a.b": 1, "a.c.d": 2, "e": 3, "f": {}}


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


# --- apply ------------------------------------------------------------------------------


def test_apply_round_trip():
    params = {"student.width": 8, "losses.kd.temperature": 2.5, "mix.ce": 0.3, "mix.kd": 0.7, "mix.rkd": 0.1, "train.lr": 0.02, "seed": 5}
    c = apply(params, BASE)
    assert isinstance(c, RunConfig)
    assert c.student.family == "mlp" and c.student.options.width == 8
    assert c.losses["kd"].temperature == 2.5
    assert c.mix == {"ce": 0.3, "kd": 0.7, "rkd": 0.1}
    assert "rkd" in c.losses  # every mixed term gets its default options
    assert c.train.lr == 0.02 and c.seed == 5
    assert c.teacher.model.family == "cnn"
    assert BASE["student"] == {"family": "mlp", "width": 32}  # the base is not changed


def test_apply_empty_params_is_the_base():
    assert apply({}, BASE) == RunConfig.from_dict(BASE)


def test_apply_switching_family_drops_keys_the_family_lacks():
    base = {**BASE, "student": {"family": "mlp", "width": 32, "depth": 3}}
    c = apply({"student.family": "transformer", "student.dim": 16, "student.heads": 2}, base)
    assert c.student.family == "transformer"
    assert not hasattr(c.student.options, "width")
    assert (c.student.options.dim, c.student.options.heads, c.student.options.depth) == (16, 2, 3)  # depth kept
    # the other way round: transformer -> cnn keeps depth, drops dim/heads
    tbase = {**BASE, "student": {"family": "transformer", "dim": 16, "heads": 2, "depth": 1}}
    c = apply({"student.family": "cnn", "student.width": 8}, tbase)
    assert (c.student.family, c.student.options.width, c.student.options.depth) == ("cnn", 8, 1)
    # mlp -> cnn: width exists in both, kept
    c = apply({"student.family": "cnn"}, base)
    assert (c.student.options.width, c.student.options.depth) == (32, 3)


def test_apply_switching_teacher_family_keeps_its_own_keys():
    base = {**BASE, "teacher": {"family": "cnn", "width": 64, "epochs": 5, "lr": 0.001}}
    c = apply({"teacher.family": "transformer"}, base)
    assert c.teacher.model.family == "transformer"
    assert (c.teacher.epochs, c.teacher.lr) == (5, 0.001)


def test_apply_same_family_keeps_base_shape():
    c = apply({"student.family": "mlp", "student.depth": 1}, BASE)
    assert (c.student.options.width, c.student.options.depth) == (32, 1)


@pytest.mark.parametrize(
    "params, key",
    [
        ({"student.width": 0}, "student.width"),
        ({"losses.kd.temperature": 0.0}, "losses.kd.temperature"),
        ({"mix.ce": 0.0, "mix.kd": 0.0}, "mix"),
        ({"train.lr": -1.0}, "train.lr"),
        ({"student.family": "transformer", "student.dim": 30, "student.heads": 4}, "student.heads"),
        ({"student.family": "transformer", "student.width": 8}, "student.width"),
        ({"student.family": "mlpp"}, "student.family"),
    ],
)
def test_apply_invalid_values_name_the_key(params, key):
    with pytest.raises(ConfigError) as e:
        apply(params, BASE)
    assert key in str(e.value), str(e.value)


def test_apply_ignore_passes_experiment_sections():
    base = {**BASE, "search": {"num_samples": 3}}
    with fails("search"):
        apply({}, base)
    assert apply({}, base, ignore=("search",)).student.options.width == 32


# --- validate ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_validate(name):
    space = load_space(name)
    assert space
    validate(space, BASE)


def test_preset_files_are_all_tested():
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == sorted(PRESET_NAMES)


@pytest.mark.parametrize(
    "data, words",
    [
        ({"student.width": {"int": [0, 8]}}, ["space.student.width", "value 0", "student.width"]),
        ({"student.width": {"int": [4, 8]}, "student.depth": {"choice": [1, 0]}}, ["space.student.depth", "value 0"]),
        ({"mix.ce": {"float": [0.0, 1.0]}, "mix.kd": {"float": [0.0, 1.0]}}, ["space.mix.ce", "value 0.0", "at least one"]),
        ({"losses.kd.temperature": {"float": [0.0, 4.0]}}, ["space.losses.kd.temperature", "value 0.0"]),
        ({"student.family": {"choice": ["mlp", "transformer"]}, "student.dim": {"choice": [6, 8], "when": {"student.family": "transformer"}},
          "student.heads": {"choice": [1, 4], "when": {"student.family": "transformer"}}}, ["space.student.heads", "value 4"]),
        ({"seed": {"fixed": "x"}}, ["space.seed", "'x'"]),
        ({"student.family": {"choice": ["mlp", "mlpp"]}}, ["space.student.family", "'mlpp'"]),
    ],
)
def test_validate_names_entry_and_value(data, words):
    with pytest.raises(ConfigError) as e:
        validate(parse_space(data), BASE)
    msg = str(e.value)
    assert all(w in msg for w in words), msg


def test_validate_checks_conditional_values_under_their_condition():
    # heads 4 is fine for dim 8, but only transformer has heads: validate must pick
    # family=transformer for it, not the first choice (mlp)
    space = parse_space({"student.family": {"choice": ["mlp", "transformer"]}, "student.dim": {"choice": [8], "when": {"student.family": "transformer"}},
                         "student.heads": {"choice": [1, 4], "when": {"student.family": "transformer"}}})
    validate(space, BASE)
    bad = parse_space({"student.family": {"choice": ["mlp", "transformer"]}, "student.dim": {"choice": [8], "when": {"student.family": "transformer"}},
                       "student.heads": {"choice": [1, 3], "when": {"student.family": "transformer"}}})
    with fails(r"space\.student\.heads: value 3"):
        validate(bad, BASE)


def test_validate_conditional_on_base_value():
    space = parse_space({"losses.fitnet.student_layer": {"float": [0.0, 1.0], "when": {"mix.fitnet": {"gt": 0}}}})
    validate(space, BASE)  # inactive: nothing to check
    with fails(r"space\.losses\.fitnet\.student_layer: value 0\.0"):
        validate(space, {**BASE, "mix": {"ce": 0.1, "kd": 0.9, "fitnet": 1.0}})


def test_validate_when_refers_to_later_key():
    space = parse_space({"student.heads": {"choice": [1, 2], "when": {"student.family": "transformer"}},
                         "student.family": {"choice": ["mlp", "transformer"]}})
    with fails(r"space\.student\.heads\.when: 'student\.family' is sampled after this entry"):
        validate(space, BASE)


def test_validate_when_refers_to_itself():
    space = parse_space({"student.width": {"int": [4, 8], "when": {"student.width": {"gt": 1}}}})
    with fails(r"space\.student\.width\.when"):
        validate(space, BASE)


def test_validate_when_on_unknown_key():
    space = parse_space({"student.width": {"int": [4, 8], "when": {"student.widht": 3}}})
    with fails("student.widht"):
        validate(space, BASE)


def test_validate_ok_for_valid_space_with_condition_on_base_key_absent():
    # a condition on a key no one sets: allowed, the entry simply never applies
    space = parse_space({"student.width": {"int": [4, 8], "when": {"mix.fitnet": {"gt": 0}}}})
    validate(space, BASE)  # does not raise
    assert define(space, BASE)(FixedTrial({"student.width": 6})) == {}  # and the entry is never sampled


# --- load_space ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["capacity_gap", "presets/capacity_gap.yaml", "capacity_gap.yaml"])
def test_load_space_preset(spec, tmp_path):
    space = load_space(spec, tmp_path)
    assert [p.key for p in space] == ["student.family", "student.width", "student.depth", "student.dim", "student.heads"]
    assert space[1].log and space[1].when == {"student.family": {"in": ["mlp", "cnn"]}}


def test_load_space_file_relative_to_base_dir(tmp_path, monkeypatch):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine.yaml").write_text("train.lr: {float: [1.0e-3, 1.0e-1], log: true}\nseed: 3\n")
    monkeypatch.chdir(Path(__file__).parent)  # not the base dir: the path must resolve against base_dir
    space = load_space("spaces/mine.yaml", tmp_path)
    assert [(p.key, p.kind) for p in space] == [("train.lr", "float"), ("seed", "fixed")]
    space = load_space(str(tmp_path / "spaces" / "mine.yaml"))  # absolute
    assert len(space) == 2


def test_load_space_file_shadows_preset(tmp_path):
    (tmp_path / "full.yaml").write_text("seed: 1\n")
    assert [p.key for p in load_space("full.yaml", tmp_path)] == ["seed"]
    assert len(load_space("full", tmp_path)) > 1  # the bare name is still the preset


def test_load_space_mapping():
    assert [p.key for p in load_space({"seed": 1})] == ["seed"]


def test_load_space_unknown_preset(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_space("capacity_gapp", tmp_path)
    msg = str(e.value)
    assert "capacity_gapp" in msg and "did you mean 'capacity_gap'" in msg
    with pytest.raises(ConfigError) as e:
        load_space("zzzz", tmp_path)
    assert "valid:" in str(e.value) and "loss_mix" in str(e.value)


def test_load_space_file_errors_name_entries(tmp_path):
    (tmp_path / "bad.yaml").write_text("student.widht: {int: [1, 4]}\n")
    with fails(r"space\.student\.widht"):
        load_space("bad.yaml", tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    with fails("empty"):
        load_space("empty.yaml", tmp_path)


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


# --- load_experiment ------------------------------------------------------------------------


def write(tmp_path: Path, data: dict, name: str = "exp.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def experiment(**extra) -> dict:
    return {"experiment": "t", **BASE, "train": {"epochs": 20}, "space": "capacity_gap", **extra}


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_load_experiment_basic(tmp_path):
    exp = load_experiment(write(tmp_path, experiment(search={"num_samples": 5, "objectives": {"val_acc": "max", "params": "min"}})))
    assert exp.name == "t"
    assert exp.search.num_samples == 5 and exp.search.objectives == {"val_acc": "max", "params": "min"}
    assert exp.objective_names == ["val_acc", "params"]
    assert [p.key for p in exp.space][0] == "student.family"
    assert "space" not in exp.base and "experiment" not in exp.base
    assert exp.run.train.epochs == 20


@pytest.mark.parametrize("mode", ["maximize", "MAX", "up", None])
def test_objective_direction_must_be_max_or_min(tmp_path, mode):
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, experiment(search={"objectives": {"val_acc": mode}})))
    msg = str(e.value)
    assert "search.objectives" in msg and "max or min" in msg, msg


def test_unknown_objective(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, experiment(search={"objectives": {"val_accc": "max"}})))
    msg = str(e.value)
    assert "search.objectives" in msg and "val_accc" in msg and "did you mean 'val_acc'" in msg, msg


def test_empty_objectives(tmp_path):
    with fails("search.objectives"):
        load_experiment(write(tmp_path, experiment(search={"objectives": {}})))


def test_asha_needs_val_acc(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_experiment(write(tmp_path, experiment(search={"scheduler": "asha", "objectives": {"params": "min"}})))
    assert "search.scheduler" in str(e.value) and "val_acc" in str(e.value)
    exp = load_experiment(write(tmp_path, experiment(search={"scheduler": "asha", "objectives": {"val_acc": "max", "params": "min"}})))
    assert exp.search.scheduler == "asha"


@pytest.mark.parametrize("search, key", [({"num_samples": 0}, "search.num_samples"), ({"sampler": "tpee"}, "search.sampler"),
                                         ({"reduction_factor": 1}, "search.reduction_factor"), ({"nope": 1}, "search.nope")])
def test_search_settings_errors(tmp_path, search, key):
    with fails(key.replace(".", r"\.")):
        load_experiment(write(tmp_path, experiment(search=search)))


@pytest.mark.parametrize("n, want", [(None, 4), (2, 2), (16, 4)])
def test_smoke_caps_budget(tmp_path, n, want):
    search = {} if n is None else {"num_samples": n}
    exp = load_experiment(write(tmp_path, experiment(search=search)), smoke=True)
    assert exp.search.num_samples == want
    assert exp.run.train.epochs == 2 and exp.run.teacher.epochs == 3
    assert exp.run.data.options.num_samples == 1000


def test_smoke_wins_over_num_samples_flag(tmp_path):
    exp = load_experiment(write(tmp_path, experiment()), num_samples=50, smoke=True)
    assert exp.search.num_samples == 4
    exp = load_experiment(write(tmp_path, experiment()), num_samples=50, max_concurrent=3)
    assert (exp.search.num_samples, exp.search.max_concurrent) == (50, 3)


def test_smoke_keeps_other_datasets_sizes(tmp_path):
    exp = load_experiment(write(tmp_path, experiment(data={"name": "hgmm", "classes": 10, "superclasses": 5})), smoke=True)
    assert exp.run.data.name == "hgmm" and exp.run.train.epochs == 2


def test_overrides(tmp_path):
    path = write(tmp_path, experiment())
    exp = load_experiment(path, overrides=["train.lr=0.05", "student.width=8", "search.num_samples=7", "experiment=other"])
    assert exp.run.train.lr == 0.05 and exp.run.student.options.width == 8
    assert exp.base["student"]["width"] == 8
    assert exp.search.num_samples == 7 and exp.name == "other"
    assert load_experiment(path, name="flag").name == "flag"
    with fails(r"train\.lrr"):
        load_experiment(path, overrides=["train.lrr=0.05"])
    with fails(r"student\.width"):
        load_experiment(path, overrides=["student.width=0"])


def test_override_space_to_preset(tmp_path):
    exp = load_experiment(write(tmp_path, experiment()), overrides=["space=loss_mix"])
    assert [p.key for p in exp.space][0] == "mix.ce"


def test_name_defaults_to_file_stem(tmp_path):
    data = experiment()
    del data["experiment"]
    assert load_experiment(write(tmp_path, data, "my-search.yaml")).name == "my-search"


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "sqlite:///runs/ml.db"])
def test_relative_sqlite_uri_made_absolute(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(write(tmp_path, experiment(tracking={"uri": uri})))
    rel = uri.removeprefix("sqlite:///")
    assert exp.tracking_uri == "sqlite:///" + str((tmp_path / rel).resolve())
    assert Path(exp.tracking_uri.removeprefix("sqlite:///")).is_absolute()


def test_tracking_uri_defaults_and_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, experiment())
    assert load_experiment(path).tracking_uri == "sqlite:///" + str(tmp_path.resolve() / "mlflow.db")
    absolute = "sqlite:///" + str(tmp_path / "x.db")
    assert load_experiment(path, tracking_uri=absolute).tracking_uri == absolute
    assert load_experiment(path, tracking_uri="http://localhost:5000").tracking_uri == "http://localhost:5000"
    assert load_experiment(path, tracking_uri="mlruns").tracking_uri == str(tmp_path.resolve() / "mlruns")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://h:1")
    assert load_experiment(path).tracking_uri == "http://h:1"


def test_need_space_without_space(tmp_path):
    data = experiment()
    del data["space"]
    path = write(tmp_path, data)
    with fails("search space is empty"):
        load_experiment(path)
    exp = load_experiment(path, need_space=False)
    assert exp.space == []


def test_space_is_validated_against_the_base(tmp_path):
    with fails(r"space\.student\.width: value 0"):
        load_experiment(write(tmp_path, experiment(space={"student.width": {"int": [0, 8]}})))
    # a transformer base: the family switch in the preset still validates
    exp = load_experiment(write(tmp_path, experiment(student={"family": "transformer", "dim": 16, "heads": 2})))
    assert exp.run.student.family == "transformer"


def test_space_file_relative_to_config(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "s.yaml").write_text("train.lr: {float: [1.0e-3, 1.0e-1], log: true}\n")
    monkeypatch.chdir(Path(__file__).parent)
    exp = load_experiment(write(tmp_path / "conf", experiment(space="s.yaml")))
    assert [p.key for p in exp.space] == ["train.lr"]


def test_unknown_top_level_key(tmp_path):
    with fails("serach"):
        load_experiment(write(tmp_path, experiment(serach={"num_samples": 1})))


# --- known issues (see the report) ------------------------------------------------------------


def test_smoke_with_null_data_section(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("data:\nspace: capacity_gap\n")
    exp = load_experiment(str(path), smoke=True)
    assert exp.run.train.epochs == 2


def test_int_step_must_be_whole():
    with fails(r"space\.student\.width"):
        parse_space({"student.width": {"int": [4, 8], "step": 0.5}})
        space = parse_space({"student.width": {"int": [4, 8], "step": 0.5}})
        validate(space, BASE)  # passes today
        define(space, BASE)(optuna.create_study().ask())  # ValueError from Optuna


def test_numeric_test_on_string_key_is_a_config_error():
    space = parse_space({"train.lr": {"float": [0.001, 0.1], "when": {"student.family": {"gt": 0}}}})
    with fails(r"space\.train\.lr"):
        validate(space, BASE)
