"""End-to-end searches on the image path (slow step): a resnet8x4 student from a resnet32x4
teacher with augmentation and an online teacher, and a user's student factory whose
kwarg the space searches."""

import json
import textwrap

import pytest

from search_helpers import ROOT, by_role, kdx, runs

pytestmark = pytest.mark.slow

IMAGES = "data: {name: shifted_digits, canvas: 8, test_fraction: 0.8, augment: {crop: 1, flip: true}}"


def test_resnet8x4_from_resnet32x4_with_augmentation_runs_a_search(tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text(textwrap.dedent(f"""
        experiment: resnets
        {IMAGES}
        teacher: {{family: resnet, depth: 32, width: 4, epochs: 1, outputs: online}}
        student: {{family: resnet, depth: 8, width: 4}}
        train: {{epochs: 1, batch_size: 64, optimizer: sgd, lr: 0.05, weight_decay: 5.0e-4, schedule: step, milestones: [1]}}
        mix: {{ce: 0.1, kd: 0.9}}
        space:
          losses.kd.temperature: {{choice: [2.0, 4.0]}}
        search: {{num_samples: 2, max_concurrent: 2, sampler: random, objectives: {{val_acc: max}}, baselines: false, seeds: 1,
                 enqueue: [{{losses.kd.temperature: 2.0}}, {{losses.kd.temperature: 4.0}}]}}
    """))
    p = kdx("search", str(cfg), cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    students = [r for r in by_role(runs(tmp_path / "mlflow.db", "resnets"), "student") if r.info.status == "FINISHED"]
    assert len(students) == 2
    for r in students:
        assert r.data.params["student.family"] == "resnet" and r.data.params["student.width"] == "4"
        assert r.data.params["teacher.outputs"] == "online" and r.data.params["data.augment.crop"] == "1"
        assert 1_100_000 < r.data.metrics["params"] < 1_300_000  # resnet8x4 on 10 classes
        assert r.data.metrics["val_acc"] >= 0
    teacher = by_role(runs(tmp_path / "mlflow.db", "resnets"), "teacher")[0]
    assert teacher.data.metrics["params"] > 7_000_000  # resnet32x4


def test_a_user_student_factory_with_a_searched_kwarg_runs_in_a_search(tmp_path):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent('''
        from torch import nn

        def student(input_shape, num_classes, width=8):
            n = 1
            for d in input_shape:
                n *= d
            return nn.Sequential(nn.Flatten(), nn.Linear(n, width), nn.ReLU(), nn.Linear(width, num_classes))
    '''))
    cfg = tmp_path / "f.yaml"
    cfg.write_text(textwrap.dedent("""
        experiment: mine
        data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}
        teacher: {family: mlp, width: 64, depth: 1, epochs: 5}
        student: {factory: "my_nets:student", width: 8}
        train: {epochs: 2, batch_size: 64}
        space:
          student.width: {choice: [4, 16]}
        search: {num_samples: 2, max_concurrent: 2, sampler: random, objectives: {val_acc: max, params: min}, baselines: true, seeds: 1,
                 twins: base_recipe, enqueue: [{student.width: 4}, {student.width: 16}]}
    """))
    env = {"PYTHONPATH": f"{ROOT}:{tmp_path}"}
    p = kdx("search", str(cfg), cwd=tmp_path, extra_env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    all_runs = runs(tmp_path / "mlflow.db", "mine")
    students = [r for r in by_role(all_runs, "student") if r.info.status == "FINISHED"]
    assert sorted(r.data.params["student.width"] for r in students) == ["16", "4"]
    assert {r.data.params["student.factory"] for r in students} == {"my_nets:student"}
    sizes = {r.data.params["student.width"]: r.data.metrics["params"] for r in students}
    assert sizes == {"4": 16 * 4 + 4 + 4 * 20 + 20, "16": 16 * 16 + 16 + 16 * 20 + 20}
    assert len([r for r in by_role(all_runs, "baseline") if r.info.status == "FINISHED"]) == 2  # each width's scratch twin
    p = kdx("export", "--experiment", "mine", "--out", "out", "--formats", "safetensors", cwd=tmp_path, extra_env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    cards = [json.loads(c.read_text()) for c in (tmp_path / "out").glob("*/card.json")]
    assert cards and all(c["config"]["student"]["factory"] == "my_nets:student" for c in cards)
