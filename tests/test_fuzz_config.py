import pytest
"""Property: any mutation of a valid experiment config is either valid or one clean ConfigError.

Hypothesis replaces, deletes or adds keys anywhere in the config tree with values of the wrong
kind (numbers, strings, None, lists, mappings, YAML-looking strings); `load_experiment` (what
`kdx validate` and `kdx search` run first) must never fail any other way."""

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.errors import KdxError
from workflows.experiment import load_experiment

VALID = {
    "experiment": "fuzz",
    "seed": 0,
    "data": {"name": "hgmm", "classes": 20, "superclasses": 4, "dim": 16, "val_fraction": 0.1},
    "teacher": {"family": "mlp", "width": 64, "depth": 1, "epochs": 5},
    "student": {"family": "mlp", "width": 8, "depth": 1},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "epoch_policy": "last"},
    "losses": {"kd": {"temperature": 4.0}, "fitnet": {"student_layer": 0.5}},
    "mix": {"ce": 0.5, "kd": 0.5},
    "space": {
        "student.family": {"choice": ["mlp", "cnn"]},
        "student.width": {"int": [4, 32], "log": True},
        "losses.kd.temperature": {"float": [1.0, 8.0]},
        "student.heads": {"choice": [1, 2], "when": {"student.family": "transformer"}},
    },
    "search": {"num_samples": 4, "max_concurrent": 2, "sampler": "tpe", "objectives": {"val_acc": "max", "params": "min"},
               "scheduler": "asha", "baselines": True},
    "resources": {"cpu": 1, "gpu": 0},
}

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.sampled_from(["mlp", "cnn", "transformer", "1e-3", "max", "min", "asha", "none", "nsga2", "kd", "ce"]),
    st.lists(st.integers(-3, 10), max_size=3), st.dictionaries(st.sampled_from(["int", "float", "choice", "when", "x"]), st.integers(-2, 5), max_size=2),
)


def paths(tree, prefix=()):
    for key, value in tree.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from paths(value, prefix + (key,))


ALL_PATHS = list(paths(VALID))


@st.composite
def mutated(draw):
    config = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        node = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[path[-1]] = draw(junk)
        elif action == "delete":
            node.pop(path[-1], None)
        else:
            node[draw(st.text(min_size=1, max_size=6))] = draw(junk)
    return config


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=mutated())
def test_mutated_configs_are_valid_or_one_clean_error(config, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        load_experiment(str(path))
    except KdxError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message
