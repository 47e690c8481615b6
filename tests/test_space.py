"""Search spaces as data: parsing, define-by-run sampling, apply, validate, presets (the experiment
config around them: tests/test_experiment_config.py). No Ray: Optuna's FixedTrial and in-memory
studies stand in for the searcher."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial

from distill.config import RunConfig
from distill.errors import ConfigError
from space_helpers import BASE, PRESET_NAMES
from search_spaces.space import (
    PRESETS,
    Param,
    apply,
    define,
    flatten,
    load_space,
    parse_space,
    validate,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


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


# --- known issues (see the report) ------------------------------------------------------------


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


def test_entries_a_model_checks_together_are_validated_together():
    """Each of a transformer's dims and head counts passes alone; 4 heads and dim 30 do not (heads must divide dim)."""
    from search_spaces.space import parse_space, validate

    base = {"data": {"name": "khop"}, "student": {"family": "transformer", "dim": 16, "heads": 2}}
    with pytest.raises(ConfigError, match=r"space: student\.dim 30, student\.heads 4 together do not make a valid run "
                                          r"\(student\.heads: 4 heads do not divide dim 30\)"):
        validate(parse_space({"student.dim": {"choice": [16, 30]}, "student.heads": {"choice": [1, 4]}}), base)
    validate(parse_space({"student.dim": {"choice": [16, 32]}, "student.heads": {"choice": [1, 2, 4]}}), base)
    conditioned = {"student.dim": {"choice": [16, 30]}, "student.heads": {"choice": [1, 4], "when": {"student.dim": 16}}}
    validate(parse_space(conditioned), {**base, "student": {"family": "transformer", "dim": 16, "heads": 1}})


def test_a_param_says_what_it_may_take():
    """One wording for `kdx validate` and the search run's note."""
    space = parse_space({"student.width": {"int": [4, 64], "log": True}, "train.lr": {"float": [0.001, 0.03], "step": 0.001},
                         "student.family": {"choice": ["mlp", "cnn"]}, "mix.ce": {"fixed": 0.5}})
    assert [p.describe() for p in space] == ["int 4 .. 64, log", "float 0.001 .. 0.03, step 0.001", "mlp, cnn", "fixed 0.5"]
