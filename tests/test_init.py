"""Students initialised from the teacher's layers (train.init: teacher, DistilBERT's every other layer)."""

import dataclasses

import pytest
import torch

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.init import _STACK, init_from_teacher, layer_map
from distill.job import distill_once
from distill.models import MODELS, TokenShape, build_model
from distill.teacher import get_teacher
from search_helpers import kdx, runs
from distill.train import run

SHAPES = {"mlp": {"width": 16}, "cnn": {"width": 8}, "transformer": {"dim": 16, "heads": 2}, "resnet": {}, "wrn": {"width": 1},
          "hf": {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}}
DEPTHS = {"resnet": (26, 14), "wrn": (28, 16)}  # 4 and 2 blocks per stage (6n+2, 6n+4)
DEPTH_KEY = {"hf": "num_hidden_layers"}
HEADS = {"resnet": "fc", "wrn": "fc", "hf": "hf.classifier"}


def _model(family, depth, **extra):
    opts = MODELS.get(family, "").options(**{**SHAPES[family], **extra, DEPTH_KEY.get(family, "depth"): depth})
    shape = TokenShape(12, 30) if "features" not in MODELS.get(family, "").reads else (1, 40)
    return build_model(family, opts, shape, 10, "m")


def test_layer_map_takes_every_other_layer_at_half_depth():
    assert layer_map(2, 4) == [0, 2]
    assert layer_map(3, 6) == [0, 2, 4]
    assert layer_map(4, 4) == [0, 1, 2, 3]
    assert layer_map(1, 3) == [0]


def test_named_layer_maps():
    assert layer_map(6, 12, "distilbert") == [0, 2, 4, 7, 9, 11]  # DistilBERT's extraction script, BERT-base -> 6 layers
    assert layer_map(3, 6, "distilbert") == [0, 2, 5]
    assert layer_map(3, 6, "first") == [0, 1, 2]
    assert layer_map(2, 6, [1, 5]) == [1, 5]
    with pytest.raises(ConfigError, match="train.init_layers: distilbert takes half"):
        layer_map(2, 6, "distilbert")
    with pytest.raises(ConfigError, match="train.init_layers: the teacher has layers 0..5, the list names 6"):
        layer_map(2, 6, [0, 6])
    with pytest.raises(ConfigError, match="the student has 2 layers, the list names 3"):
        layer_map(2, 6, [0, 1, 2])


def test_a_hugging_face_student_takes_the_distilbert_layers():
    torch.manual_seed(0)
    teacher, student = _model("hf", 6), _model("hf", 3)
    init_from_teacher(student, teacher, "distilbert")
    s, t = student.state_dict(), teacher.state_dict()
    for i, j in enumerate([0, 2, 5]):
        key = f"hf.bert.encoder.layer.{{}}.attention.self.query.weight"
        assert torch.equal(s[key.format(i)], t[key.format(j)])
    assert torch.equal(s["hf.bert.embeddings.word_embeddings.weight"], t["hf.bert.embeddings.word_embeddings.weight"])


@pytest.mark.parametrize("family", sorted(MODELS.names()))
def test_every_family_starts_from_every_other_teacher_layer(family):
    torch.manual_seed(0)
    deep, shallow = DEPTHS.get(family, (4, 2))
    teacher, student = _model(family, deep), _model(family, shallow)
    copied = init_from_teacher(student, teacher)
    s, t = student.state_dict(), teacher.state_dict()
    stacks = set()
    for key in copied:
        m = _STACK.match(key)
        source = f"{m.group(1)}.{2 * int(m.group(2))}.{m.group(3)}" if m else key
        stacks |= {m.group(1)} if m else set()
        assert torch.equal(s[key], t[source]), key
    assert stacks and all(any(k.startswith(f"{stack}.1.") for k in copied) for stack in stacks)  # the second layer came from the third
    head = HEADS.get(family, "head")
    assert f"{head}.bias" in copied
    if family != "cnn":  # a CNN's head sees a longer sequence when fewer blocks downsample it: its weight does not fit
        assert f"{head}.weight" in copied


def test_a_student_nothing_fits_is_a_clear_error():
    with pytest.raises(ConfigError, match="train.init: 'teacher'.*no teacher tensor fits"):
        init_from_teacher(_model("mlp", 2, width=8), _model("cnn", 3))


def test_the_run_and_its_twin_start_from_the_teacher_and_a_random_twin_measures_the_start():
    base = {"data": {"name": "hgmm", "classes": 10, "superclasses": 2, "dim": 8}, "teacher": {"family": "mlp", "width": 32, "depth": 2, "epochs": 3},
            "student": {"family": "mlp", "width": 32, "depth": 1}, "train": {"epochs": 1, "init": "teacher", "lr": 1e-9}}
    config = RunConfig.from_dict(base)
    assert config.needs_teacher and config.scratch_twin().train.init == "teacher"  # the same start: the gain is KD's alone
    assert config.scratch_twin("random").train.init == "random" and not config.scratch_twin().distills
    job = distill_once(config, twin=True, log=lambda s: None)
    # with a vanishing lr the student and its same-start twin are still the teacher's first layer and head
    data = load_data(config.data)
    teacher, _ = get_teacher(config, data, log=lambda s: None)
    assert torch.allclose(job.student.model.layers[0].weight.cpu(), teacher.layers[0].weight, atol=1e-6)
    assert torch.allclose(job.twin.model.layers[0].weight.cpu(), teacher.layers[0].weight, atol=1e-6)
    assert not torch.allclose(job.random_twin.model.layers[0].weight.cpu(), teacher.layers[0].weight, atol=1e-3)
    out = job.to_dict()
    assert out["start"] == "teacher"
    assert out["gain"] == pytest.approx(job.student.test_acc - job.twin.test_acc)
    assert out["start_gain"] == pytest.approx(job.twin.test_acc - job.random_twin.test_acc)
    plain = distill_once(dataclasses.replace(config, train=dataclasses.replace(config.train, init="random")), twin=True, log=lambda s: None)
    assert plain.random_twin is None and "start_gain" not in plain.to_dict()  # a random start has one twin
    with pytest.raises(ConfigError, match="train.init: 'teacher' needs the teacher model"):
        run(config, data, None)


INIT_SEARCH = """
experiment: init
data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}
teacher: {family: mlp, width: 64, depth: 2, epochs: 3}
student: {family: mlp, width: 64, depth: 1}
train: {epochs: 2, init: teacher}
space: {student.width: {choice: [32, 64]}}
search: {num_samples: 2, max_concurrent: 2, sampler: random, objectives: {val_acc: max}, baselines: false,
         enqueue: [{student.width: 32}, {student.width: 64}]}
"""


@pytest.mark.slow  # a whole search of its own
def test_a_search_ships_the_teacher_to_trials_that_start_from_it(tmp_path):
    (tmp_path / "init.yaml").write_text(INIT_SEARCH)
    p = kdx("search", "init.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    students = {r.data.params["student.width"]: r for r in runs(tmp_path / "mlflow.db", "init") if r.data.tags.get("kdx.role") == "student"}
    assert students["64"].info.status == "FINISHED" and students["64"].data.params["train.init"] == "teacher"
    assert students["32"].info.status == "FAILED" and "no teacher tensor fits" in students["32"].data.tags["kdx.error"]


SAME_START = """
experiment: same
data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}
teacher: {family: mlp, width: 32, depth: 2, epochs: 5}
student: {family: mlp, width: 32, depth: 1}
train: {epochs: 2, init: teacher, batch_size: 64}
space: {losses.kd.temperature: {float: [1.0, 8.0], log: true}}
search: {num_samples: 2, max_concurrent: 2, sampler: random, objectives: {val_acc: max, params: min}, twins: tuned,
         seeds: 2, recipe_trials: 2, gain_archs: 1}
"""


@pytest.mark.slow  # a whole search with the gain's four arms
def test_a_search_whose_students_start_from_the_teacher_splits_its_gain(tmp_path):
    """Every labels-only arm (base-recipe twin, tuned twin, smoothing, same-recipe control) takes the teacher start;
    the random-start twin and KD from random weights alone start at random; the report splits the gain in two."""
    (tmp_path / "same.yaml").write_text(SAME_START)
    p = kdx("search", "same.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "teacher outputs: " in p.stdout and "teacher outputs: made once in this process" in p.stdout
    done = [r for r in runs(tmp_path / "mlflow.db", "same") if r.data.tags.get("kdx.role") in ("student", "baseline")]
    start = {r.info.run_id: r.data.tags["kdx.start"] for r in done}
    random_arms = [r for r in done if r.data.tags.get("kdx.arm") in ("random", "kd_random")]
    assert random_arms and all(start[r.info.run_id] == "random" and r.data.params["train.init"] == "random" for r in random_arms)
    others = [r for r in done if r.data.tags.get("kdx.arm") not in ("random", "kd_random")]
    assert {start[r.info.run_id] for r in others} == {"teacher"}
    assert {r.data.tags.get("kdx.arm") for r in done} >= {"kd", "twin", "smooth", "random", "kd_random", "same_recipe"}
    assert "the start (teacher's layers) bought" in p.stdout and "over the same-start tuned twin" in p.stdout
    assert "over KD from random weights" in p.stdout
    teacher = next(r for r in runs(tmp_path / "mlflow.db", "same") if r.data.tags.get("kdx.role") == "teacher")
    assert teacher.data.tags["kdx.teacher_recipe"].startswith("trained from random weights")
