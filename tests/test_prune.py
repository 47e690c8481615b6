"""Students cut from their teacher (train.init: prune): the cut, its importance scores, its refusals, its runs.

The family checks are generated from one table: every prunable family gets the same ones (a cut at the
teacher's own shape is the teacher exactly; a smaller cut runs and is smaller; its scores cover its units)."""

import dataclasses

import pytest
import torch
from torch import nn

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.job import distill_once
from distill.models import MODELS, TokenShape, build_model, count_params
from distill.prune import importance, importance_path, prune_from_teacher, teacher_importance
from distill.teacher import check_prune
from search_helpers import kdx

FEATURES, TOKENS, LM = (40,), TokenShape(12, 50, 0), TokenShape(12, 50, 0, "lm")
LLAMA = {"model_type": "llama", "config": {"max_position_embeddings": 32, "num_key_value_heads": 2, "head_dim": 8}}
# family, input, classes, the teacher's options, a smaller student's
CASES = {
    "mlp": ("mlp", FEATURES, 10, {"width": 32, "depth": 3}, {"width": 12, "depth": 3}),
    "cnn": ("cnn", FEATURES, 10, {"width": 16, "depth": 3}, {"width": 6, "depth": 3}),
    "cnn_residual": ("cnn", FEATURES, 10, {"width": 16, "depth": 3, "residual": True}, {"width": 6, "depth": 3, "residual": True}),
    "transformer_patches": ("transformer", FEATURES, 10, {"dim": 32, "depth": 4, "heads": 4}, {"dim": 16, "depth": 2, "heads": 2, "mlp_ratio": 1}),
    "transformer_tokens": ("transformer", TOKENS, 3, {"dim": 32, "depth": 3, "heads": 4}, {"dim": 24, "depth": 2, "heads": 3}),
    "transformer_lm": ("transformer", LM, 50, {"dim": 32, "depth": 3, "heads": 4}, {"dim": 16, "depth": 2, "heads": 2}),
    "bert": ("hf", TOKENS, 3, {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 4},
             {"model_type": "bert", "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 24, "num_hidden_layers": 2}),
    "llama": ("hf", LM, 50, {**LLAMA, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64, "num_hidden_layers": 3},
              {**LLAMA, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 24, "num_hidden_layers": 2,
               "config": {**LLAMA["config"], "num_key_value_heads": 1}}),
}


def _build(family, shape, classes, opts):
    return build_model(family, MODELS.get(family, "").options(**opts), shape, classes, "m").eval()


def _batch(shape, n=24):
    if isinstance(shape, TokenShape):
        x = torch.randint(1, shape.vocab, (n, shape[0]))
        x[: n // 2, 8:] = shape.pad_id  # padded tails: scores and outputs skip them
        return x
    return torch.randn(n, *shape)


@pytest.mark.parametrize("case", CASES)
def test_a_cut_at_the_teachers_own_shape_is_the_teacher_exactly(case):
    family, shape, classes, t_opts, _ = CASES[case]
    torch.manual_seed(0)
    teacher, copy = _build(family, shape, classes, t_opts), _build(family, shape, classes, t_opts)
    x = _batch(shape)
    kept = prune_from_teacher(copy, teacher, importance(teacher, x))
    with torch.no_grad():
        assert torch.equal(copy(x).logits, teacher(x).logits)
    assert all(v == list(range(len(v))) for v in kept.values())


@pytest.mark.parametrize("case", CASES)
def test_a_smaller_cut_runs_is_smaller_and_keeps_the_highest_scored_units(case):
    family, shape, classes, t_opts, s_opts = CASES[case]
    torch.manual_seed(0)
    teacher, student = _build(family, shape, classes, t_opts), _build(family, shape, classes, s_opts)
    x = _batch(shape)
    scores = importance(teacher, x)
    kept = prune_from_teacher(student, teacher, scores)
    assert count_params(student) < count_params(teacher)
    with torch.no_grad():
        assert torch.isfinite(student(x).logits).all()
    for axis, units in kept.items():
        if axis == "layers":
            continue
        score = scores[axis].reshape(-1)
        assert units == sorted(units)  # kept in the teacher's order
        dropped = [j for j in range(len(score)) if j not in units]
        assert not dropped or score[units].min() >= score[dropped].max()


def _dead(module: nn.Linear, rows) -> None:
    with torch.no_grad():
        module.weight[rows] = 0
        if module.bias is not None:
            module.bias[rows] = 0


def test_importance_keeps_the_units_a_hand_built_mlp_makes_important():
    """Hidden units 1, 4 and 6 of the first layer are the only live ones: a cut to 3 keeps them, and
    keeps the teacher's outputs exactly (the dropped units never reached the head)."""
    torch.manual_seed(0)
    teacher, student = _build("mlp", FEATURES, 10, {"width": 8, "depth": 1}), _build("mlp", FEATURES, 10, {"width": 3, "depth": 1})
    _dead(teacher.layers[0], [0, 2, 3, 5, 7])
    x = _batch(FEATURES, 64)
    kept = prune_from_teacher(student, teacher, importance(teacher, x))
    assert kept["n.0"] == [1, 4, 6]
    with torch.no_grad():
        assert torch.allclose(student(x).logits, teacher(x).logits, atol=1e-6)


def test_importance_finds_the_live_heads_neurons_and_blocks_of_a_hand_built_bert():
    family, shape, classes, t_opts, _ = CASES["bert"]
    torch.manual_seed(0)
    teacher = _build(family, shape, classes, t_opts)
    layers = teacher.hf.bert.encoder.layer
    for layer in layers:
        _dead(layer.attention.self.value, list(range(0, 8)) + list(range(16, 24)))  # heads 0 and 2 write nothing
        _dead(layer.intermediate.dense, [j for j in range(64) if j % 4])  # only every fourth neuron is live
    for part in (layers[1].attention.output.dense, layers[1].output.dense):  # block 1 adds nothing to its input
        _dead(part, list(range(32)))
    scores = importance(teacher, _batch(shape, 32))
    student = _build(family, shape, classes, {**t_opts, "num_hidden_layers": 3, "intermediate_size": 16, "hidden_size": 16,
                                              "num_attention_heads": 2})
    kept = prune_from_teacher(student, teacher, scores)
    assert kept["heads.0"] == [1, 3]
    assert kept["mlp.0"] == list(range(0, 64, 4))
    assert 1 not in kept["layers"]  # its influence is LayerNorm's alone, the lowest


def test_grouped_query_heads_are_pruned_with_their_key_value_head():
    family, shape, classes, t_opts, s_opts = CASES["llama"]
    torch.manual_seed(0)
    teacher = _build(family, shape, classes, t_opts)
    for layer in teacher.hf.model.layers:
        _dead(layer.self_attn.v_proj, list(range(0, 8)))  # key/value head 0 (query heads 0 and 1) writes nothing
    student = _build(family, shape, classes, s_opts)
    kept = prune_from_teacher(student, teacher, importance(teacher, _batch(shape)))
    assert kept["heads.0"] == [1]
    t, s = teacher.state_dict(), student.state_dict()
    q, layer = "hf.model.layers.{}.self_attn.q_proj.weight", kept["layers"][0]
    hidden = kept["hidden"]
    assert torch.equal(s[q.format(0)], t[q.format(layer)][16:32][:, hidden])  # query heads 2 and 3, head size 8


def test_a_pruned_hugging_face_student_reloads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    for case, auto in (("bert", AutoModelForSequenceClassification), ("llama", AutoModelForCausalLM)):
        family, shape, classes, t_opts, s_opts = CASES[case]
        torch.manual_seed(0)
        teacher, student = _build(family, shape, classes, t_opts), _build(family, shape, classes, s_opts)
        x = _batch(shape)
        prune_from_teacher(student, teacher, importance(teacher, x))
        student.hf.save_pretrained(tmp_path / case)
        again = auto.from_pretrained(tmp_path / case, local_files_only=True).eval()
        mask = (x != 0).long()
        with torch.no_grad():
            assert torch.allclose(again(input_ids=x, attention_mask=mask).logits, student(x).logits, atol=1e-6)


@pytest.mark.parametrize("teacher_opts, student_opts, says", [
    ({"family": "cnn", "width": 16}, {"family": "cnn", "width": 32}, "wider than its teacher (32 channels out of block 0, the teacher has 16"),
    ({"family": "cnn", "width": 16}, {"family": "cnn", "width": 8, "depth": 2}, "give the student the teacher's depth (3)"),
    ({"family": "cnn", "width": 16}, {"family": "mlp", "width": 8}, "must be of the teacher's family (CNN)"),
    ({"family": "transformer", "dim": 32, "heads": 4}, {"family": "transformer", "dim": 16, "heads": 4}, "head size (width / heads: 4) must be the teacher's (8)"),
    ({"family": "transformer", "dim": 32, "depth": 2, "heads": 4}, {"family": "transformer", "dim": 32, "depth": 3, "heads": 4},
     "a teacher of 2 blocks; the student asks for 3"),
    ({"family": "resnet", "depth": 8}, {"family": "resnet", "depth": 8}, "cuts the families mlp, cnn, transformer"),
])
def test_a_pruned_start_the_teacher_cannot_give_is_one_line(teacher_opts, student_opts, says):
    config = RunConfig.from_dict({"data": {"name": "mnist1d", "num_samples": 400}, "teacher": teacher_opts, "student": student_opts,
                                  "train": {"init": "prune"}})
    with pytest.raises(ConfigError, match="^train.init: prune") as e:
        check_prune(config, load_data(config.data))
    assert says in str(e.value) and "\n" not in str(e.value)


def test_kdx_validate_refuses_a_wider_pruned_student(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("data: {name: mnist1d, num_samples: 400}\nteacher: {family: mlp, width: 16, depth: 2}\n"
                   "student: {family: mlp, width: 32, depth: 2}\ntrain: {init: prune}\n")
    p = kdx("validate", str(cfg), cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["kdx: error: train.init: prune: the student is wider than its teacher (32 units in layer 0, "
                                             "the teacher has 16; tensor layers.0.weight): a pruned student is at most as wide as its teacher"]


def test_a_pruned_run_logs_its_start_and_its_twins_take_the_same_cut(one_torch_thread):
    config = RunConfig.from_dict({"data": {"name": "mnist1d", "num_samples": 600}, "teacher": {"family": "mlp", "width": 64, "depth": 2, "epochs": 8},
                                  "student": {"family": "mlp", "width": 16, "depth": 2}, "train": {"init": "prune", "epochs": 2, "prune": {"calibration": 64}}})
    job = distill_once(config, twin=True, log=lambda s: None)
    assert job.student.at_start is not None and job.twin.at_start == job.student.at_start  # same cut, same seed: the same start
    assert job.random_twin is not None and job.random_twin.at_start is None
    assert 0.0 <= job.student.at_start[0] <= 1.0
    assert importance_path(job.teacher.key, job.data.key, 64).is_file()  # computed once, cached for every other trial
    out = job.to_dict()
    assert out["start"] == "prune" and "start_val_acc" in out["student"]


def test_importance_is_read_from_the_cache_the_second_time(monkeypatch):
    config = RunConfig.from_dict({"data": {"name": "mnist1d", "num_samples": 400}, "teacher": {"family": "mlp", "width": 16}})
    data = load_data(config.data)
    teacher = _build("mlp", data.input_shape, data.num_classes, {"width": 16})
    first = teacher_importance(teacher, "key-for-this-test", data, 32)
    monkeypatch.setattr("distill.prune.importance", lambda *a, **k: pytest.fail("recomputed"))
    again = teacher_importance(teacher, "key-for-this-test", data, 32)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_calibration_and_layers_are_checked():
    with pytest.raises(ConfigError, match="train.prune.calibration"):
        RunConfig.from_dict({"train": {"init": "prune", "prune": {"calibration": 0}}})
    with pytest.raises(ConfigError, match="train.prune.layers"):
        RunConfig.from_dict({"train": {"init": "prune", "prune": {"layers": "sideways"}}})
    assert dataclasses.replace(RunConfig.from_dict({"train": {"init": "prune"}}).scratch_twin().train).init == "prune"
