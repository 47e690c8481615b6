import pytest

from distill.config import RunConfig, apply_overrides, load_yaml
from distill.errors import ConfigError


def parse(d):
    return RunConfig.from_dict(d)


def test_defaults_are_a_valid_run():
    c = parse({})
    assert c.data.name == "mnist1d" and c.student.family == "mlp"
    assert c.mix == {"ce": 0.1, "kd": 0.9}
    assert set(c.losses) == {"ce", "kd"}


def test_round_trip_through_plain_dict():
    c = parse({"student": {"family": "transformer", "dim": 16, "heads": 2}, "mix": {"ce": 0.5, "dkd": 0.5}, "losses": {"dkd": {"nckd": 2.0}}})
    assert parse(c.to_dict()) == c


@pytest.mark.parametrize(
    "data, words",
    [
        ({"train": {"lerning_rate": 0.1}}, ["train.lerning_rate", "did you mean 'lr'"]),
        ({"trian": {}}, ["'trian'", "'train'"]),
        ({"student": {"family": "mlp", "widht": 3}}, ["student.widht", "'width'"]),
        ({"data": {"name": "hgmm", "noize": 3}}, ["data.noize", "'noise'"]),
        ({"losses": {"kd": {"temprature": 2}}}, ["losses.kd.temprature", "'temperature'"]),
        ({"student": {"family": "mlpp"}}, ["student.family", "'mlp'"]),
        ({"data": {"name": "mnist"}}, ["data.name", "mnist1d"]),
        ({"mix": {"kdd": 1.0}}, ["mix.kdd", "'kd'"]),
    ],
)
def test_unknown_keys_name_path_and_nearest(data, words):
    with pytest.raises(ConfigError) as e:
        parse(data)
    msg = str(e.value)
    assert all(w in msg for w in words), msg


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"train\.learning_rate' \(did you mean 'lr'"):
        parse({"train": {"learning_rate": 0.1}})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        parse({"train": {"epoch": 3}})


@pytest.mark.parametrize(
    "data, key",
    [
        ({"losses": {"kd": {"temperature": 0}}}, "losses.kd.temperature"),
        ({"losses": {"kd": {"temperature": -1.0}}}, "losses.kd.temperature"),
        ({"mix": {"ce": -0.1, "kd": 1.0}}, "mix.ce"),
        ({"mix": {"ce": 0.0, "kd": 0.0}}, "mix"),
        ({"student": {"family": "mlp", "width": 0}}, "student.width"),
        ({"student": {"family": "cnn", "depth": 0}}, "student.depth"),
        ({"student": {"family": "transformer", "dim": 30, "heads": 4}}, "student.heads"),
        ({"train": {"lr": 0}}, "train.lr"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
        ({"data": {"name": "hgmm", "classes": 10, "superclasses": 3}}, "data.classes"),
        ({"teacher": {"epochs": 0}}, "teacher.epochs"),
    ],
)
def test_out_of_range_values_name_their_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse(data)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"bf16": "yes"}}, "train.bf16"),
        ({"train": {"optimizer": "adamm"}}, "train.optimizer"),
        ({"student": {"family": "mlp", "width": True}}, "student.width"),
        ({"seed": "0"}, "seed"),
        ({"train": [1, 2]}, "train"),
        ({"mix": {"kd": "high"}}, "mix.kd"),
    ],
)
def test_wrong_types_name_their_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse(data)


def test_ints_are_accepted_where_floats_are_expected():
    assert parse({"train": {"lr": 1}}).train.lr == 1.0


def test_mixed_terms_get_default_options_and_twin_is_ce_only():
    c = parse({"mix": {"ce": 1.0, "fitnet": 1.0, "rkd": 0.5}})
    assert set(c.losses) >= {"ce", "fitnet", "rkd"}
    twin = c.scratch_twin()
    assert twin.mix == {"ce": 1.0} and not twin.needs_teacher
    assert twin.student == c.student and twin.train == c.train and twin.seed == c.seed


def test_fitnet_layer_takes_a_name_or_a_relative_depth():
    assert parse({"losses": {"fitnet": {"student_layer": "layer1"}}}).losses["fitnet"].student_layer == "layer1"
    assert parse({"losses": {"fitnet": {"student_layer": 1}}}).losses["fitnet"].student_layer == 1.0
    with pytest.raises(ConfigError, match="losses.fitnet.teacher_layer"):
        parse({"losses": {"fitnet": {"teacher_layer": 1.5}}})


def test_overrides_apply_on_top_and_are_checked():
    raw = apply_overrides({"train": {"lr": 0.1}}, ["train.lr=0.01", "student.width=8", "losses.kd.temperature=2", "train.bf16=true"])
    c = parse(raw)
    assert c.train.lr == 0.01 and c.student.options.width == 8 and c.losses["kd"].temperature == 2.0 and c.train.bf16
    with pytest.raises(ConfigError, match="train.lerning_rate"):
        parse(apply_overrides({}, ["train.lerning_rate=3"]))


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train..lr=3", "train.lr=[1"])
def test_overrides_that_do_not_parse(bad):
    with pytest.raises(ConfigError, match="--set"):
        apply_overrides({}, [bad])


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="'seed' is not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_experiment_sections_are_ignored_only_when_asked():
    data = {"experiment": "x", "search": {"num_samples": 3}}
    RunConfig.from_dict(data, ignore=("experiment", "search"))
    with pytest.raises(ConfigError, match="unknown key 'experiment'"):
        RunConfig.from_dict(data)


def test_yaml_files(tmp_path):
    good = tmp_path / "a.yaml"
    good.write_text("train: {lr: 0.5}\n")
    assert load_yaml(str(good)) == {"train": {"lr": 0.5}}
    bad = tmp_path / "b.yaml"
    bad.write_text("train: {lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"b\.yaml:.*line \d+, column \d+"):
        load_yaml(str(bad))
    with pytest.raises(ConfigError, match="no such file"):
        load_yaml(str(tmp_path / "missing.yaml"))
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_yaml(str(empty))
    listy = tmp_path / "l.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(str(listy))
    evil = tmp_path / "evil.yaml"
    evil.write_text("x: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_yaml(str(evil))


def test_config_is_frozen():
    c = parse({})
    with pytest.raises(Exception):
        c.train.lr = 3.0  # type: ignore[misc]
