"""The search's first trials: the textbook recipes, then the size ladder (workflows/warm.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from workflows.experiment import load_experiment
from workflows.warm import size_ladder, startup_trials, warm_start

ROOT = Path(__file__).resolve().parents[1]


def _demo(tmp_path: Path, **search) -> object:
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["search"] |= search
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_experiment(str(path))


def test_the_demo_starts_from_the_textbook_recipes_then_the_base_student_at_small_sizes(tmp_path):
    points = warm_start(_demo(tmp_path))
    textbook = {"losses.kd.temperature": 4.0, "mix.kd": 0.9, "mix.ce": 0.1, "train.lr": 0.01}
    assert points[0] == textbook and points[1] == textbook | {"losses.kd.temperature": 16.0}  # T 20 clipped to the space's 16
    ladder = points[2:]
    assert [p["student.width"] for p in ladder] == [8, 13, 23, 38]  # 24 trials: 4 steps, geometric from the range's low end (8..64)
    assert [p["student.family"] for p in ladder] == ["mlp", "cnn", "mlp", "cnn"]  # each family its turn
    assert all(p == textbook | {"student.family": p["student.family"], "student.depth": 2, "student.width": p["student.width"]} for p in ladder)


def test_the_ladder_needs_a_size_to_minimise_a_size_key_and_room_in_the_budget(tmp_path):
    recipe = {"train.lr": 0.01}
    assert size_ladder(_demo(tmp_path, objectives={"val_acc": "max"}), recipe) == []  # nothing asks for small students
    assert size_ladder(_demo(tmp_path, num_samples=11), recipe) == []  # a sixth of 11 is one step: no ladder
    assert len(size_ladder(_demo(tmp_path, num_samples=200), recipe)) == 4  # at most 4 steps
    assert warm_start(_demo(tmp_path, warm_start=False)) == []


def test_a_base_value_outside_the_space_is_kept_inside_it(tmp_path):
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["student"] = {"family": "mlp", "width": 32, "depth": 5}
    data["space"]["student.family"] = {"choice": ["cnn", "mlp"]}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    ladder = size_ladder(load_experiment(str(path)), {})
    assert {p["student.depth"] for p in ladder} == {3} and [p["student.family"] for p in ladder][:2] == ["cnn", "mlp"]


def test_a_warm_start_shortens_the_random_start_up():
    assert startup_trials(0) == 10  # Optuna's default when nothing is known
    assert startup_trials(5) == 8 and startup_trials(9) == 10


def test_every_warm_start_value_lies_on_the_space_s_step_grid(tmp_path):
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data["space"]["student.width"] = {"int": [8, 64], "step": 8}  # the geometric 13, 23, 38 are off this grid
    data["space"]["train.lr"] = {"float": [0.004, 0.03], "step": 0.004}  # the base 0.01 is off it too
    data["space"]["losses.kd.temperature"] = {"float": [1.0, 16.0], "step": 2.0}  # Hinton's T 20 clipped to 16 is off it: 15 is the grid's last
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    exp = load_experiment(str(path))
    points = warm_start(exp)
    widths = [p["student.width"] for p in points if "student.width" in p]
    assert widths and all(w % 8 == 0 and 8 <= w <= 64 for w in widths)
    assert {p["train.lr"] for p in points} == {0.012}  # 0.01 to the nearest 0.004 above 0.004, without float residue
    assert sorted({p["losses.kd.temperature"] for p in points}) == [5.0, 15.0]  # T 4 lies midway between 3 and 5 (round: 5), T 20 goes to the last point, 15


def test_enqueued_points_leave_optuna_s_random_start_alone(tmp_path, monkeypatch):
    from workflows import sampling
    from workflows.tune import make_searcher

    seen, real = [], sampling.make_sampler
    monkeypatch.setattr(sampling, "make_sampler", lambda choice, seed, startup: seen.append(startup) or real(choice, seed, startup))
    exp = _demo(tmp_path, warm_start=False, enqueue=[{"student.width": 16}])
    make_searcher(exp, exp.base, warm_start(exp))
    exp = _demo(tmp_path, enqueue=[{"student.width": 16}])
    make_searcher(exp, exp.base, warm_start(exp))
    assert seen == [10, 9]  # no warm start: Optuna's 10, the enqueued point not counted; 6 warm-start points + 3
