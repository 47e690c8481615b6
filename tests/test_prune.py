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
    # depth 5 on 40 positions: the last block keeps its size (3 < 4), so its skip is the identity and ties its channels to the block before
    "cnn_identity": ("cnn", FEATURES, 10, {"width": 16, "depth": 5, "residual": True}, {"width": 6, "depth": 5, "residual": True}),
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
    q, layer = "hf.model.layers.{}.self_attn.q_proj.weight", kept["layers"][0]
    assert kept[f"heads.{layer}"] == [1]
    t, s = teacher.state_dict(), student.state_dict()
    hidden = kept["hidden"]
    assert torch.equal(s[q.format(0)], t[q.format(layer)][16:32][:, hidden])  # query heads 2 and 3, head size 8


def test_the_fused_qkv_rows_are_the_kept_heads_of_q_k_and_v():
    family, shape, classes, t_opts, s_opts = CASES["transformer_patches"]
    torch.manual_seed(0)
    teacher, student = _build(family, shape, classes, t_opts), _build(family, shape, classes, s_opts)
    kept = prune_from_teacher(student, teacher, importance(teacher, _batch(shape)))
    layer, heads, hidden = kept["layers"][1], kept["heads.{}".format(kept["layers"][1])], kept["hidden"]
    rows = [part * 32 + h * 8 + c for part in range(3) for h in heads for c in range(8)]  # q, k, v of each kept head (head size 8)
    t = teacher.state_dict()[f"blocks.{layer}.attn.qkv.weight"]
    assert torch.equal(student.state_dict()["blocks.1.attn.qkv.weight"], t[rows][:, hidden])


def test_dead_units_cut_away_leave_the_outputs_unchanged():
    """Units that carry nothing (zero weights in, or out) are the lowest scored and cutting them changes no output:
    a kdx transformer's MLP neurons, and a CNN's last channels read by the head over the flattened map."""
    torch.manual_seed(0)
    x = _batch(FEATURES, 32)
    teacher, student = _build("transformer", FEATURES, 10, {"dim": 32, "depth": 2, "heads": 4}), _build(
        "transformer", FEATURES, 10, {"dim": 32, "depth": 2, "heads": 4, "mlp_ratio": 1})
    for block in teacher.blocks:
        _dead(block.mlp[0], list(range(1, 64, 2)))  # odd neurons: GELU(0) = 0 reaches the down projection
    assert prune_from_teacher(student, teacher, importance(teacher, x))["mlp.0"] == list(range(0, 64, 2))
    with torch.no_grad():
        assert torch.allclose(student(x).logits, teacher(x).logits, atol=1e-5)
    teacher, student = _build("cnn", FEATURES, 10, {"width": 8, "depth": 2}), _build("cnn", FEATURES, 10, {"width": 5, "depth": 2})
    with torch.no_grad():  # ReLU(-1) = 0 at every position: channels 1, 2, 7 of block 0 and 0, 3, 6 of block 1 are dead
        for block, dead in ((teacher.blocks[0], [1, 2, 7]), (teacher.blocks[1], [0, 3, 6])):
            block.conv1.weight[dead] = 0
            block.conv1.bias[dead] = -1.0
    kept = prune_from_teacher(student, teacher, importance(teacher, x))
    assert kept["out.0"] == [0, 3, 4, 5, 6] and kept["out.1"] == [1, 2, 4, 5, 7]
    with torch.no_grad():  # the head read each kept channel's span of the flattened map
        assert torch.allclose(student(x).logits, teacher(x).logits, atol=1e-5)


@pytest.mark.parametrize("case", ["transformer_tokens", "bert"])
def test_padding_takes_no_part_in_the_scores(case):
    family, shape, classes, t_opts, _ = CASES[case]
    torch.manual_seed(0)
    teacher = _build(family, shape, classes, t_opts)
    x = torch.randint(1, shape.vocab, (16, shape[0]))
    x[:, 8:] = shape.pad_id
    padded, cut = importance(teacher, x), importance(teacher, x[:, :8])
    assert all(torch.allclose(padded[k], cut[k], atol=1e-5) for k in padded)


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


def test_a_front_student_from_its_teacher_gets_both_random_start_arms(tmp_path):
    """The gain of a pruned (or layer-subset) front student: labels only from random weights (what the start bought)
    and KD's own candidates from random weights (what it bought under KD), on the same draws."""
    import numpy as np

    from search_helpers import write_config
    from workflows.experiment import load_experiment
    from workflows.gain import _arm_candidates

    exp = load_experiment(str(write_config(tmp_path)))
    own = {"losses.kd.temperature": 2.5, "mix.kd": 0.5, "mix.ce": 0.5, "train.lr": 0.02}
    arms = _arm_candidates(exp, own, 4, np.random.default_rng(0), "prune")
    assert arms["kd_random"] == [r | {"train.init": "random"} for r in arms["kd"]]
    assert [(c["train.lr"], c["train.init"]) for c in arms["random"]] == [(c["train.lr"], "random") for c in arms["twin"]]
    assert "random" not in _arm_candidates(exp, own, 4, np.random.default_rng(0)) and "kd_random" not in _arm_candidates(
        exp, own, 4, np.random.default_rng(0), "random")


def test_the_verdict_says_what_the_pruned_start_bought_under_kd():
    from types import SimpleNamespace

    from analysis.gains import verdict_line

    v = SimpleNamespace(gain_mean=0.01, gain_std=0.005, gain_t=4.5, gain_n=5, best_control=None, start="prune",
                        start_n=5, start_mean=0.02, start_std=0.01, start_t=4.4, kd_start_n=5, kd_start_mean=0.018, kd_start_std=0.004, kd_start_t=10.0)
    line = verdict_line(v)
    assert "KD +1.00 ± 0.50 points over the same-start tuned twin" in line
    assert "the start (teacher pruned to the student's shape) bought +2.00 ± 1.00 points over a random start" in line
    assert "and under KD +1.80 ± 0.40 points over KD from random weights (t 10.0, 5 seeds): distinguishable from zero" in line


@pytest.mark.slow  # a real search with a pruned start and tuned arms (about a minute): the slow step
def test_a_search_from_a_pruned_start_measures_every_arm(tmp_path):
    import json

    from mlflow import MlflowClient

    from analysis import schema
    from search_helpers import TINY, runs

    cfg = tmp_path / "pruned.yaml"
    cfg.write_text(TINY.format(name="pruned", epochs=2, samples=3, sampler="random", objectives="{val_acc: max, params: min}",
                               scheduler="none", seeds=2, confirm=1, twins="tuned", gain_archs=1)
                   .replace("student.family: {choice: [mlp, cnn]}", "train.lr: {float: [0.003, 0.03], log: true}")
                   .replace("train: {epochs: 2, batch_size: 64}", "train: {epochs: 2, batch_size: 64, init: prune, prune: {calibration: 128}}"))
    p = kdx("search", str(cfg), "--report-dir", "report", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    found = runs(tmp_path / "mlflow.db", "pruned")
    students = [r for r in found if r.data.tags.get(schema.TAG_ROLE) in (schema.ROLE_STUDENT, schema.ROLE_TWIN) and r.info.status == "FINISHED"]
    for r in students:  # every run from the pruned start logs its score before training; the random-start arms do not
        assert (schema.START_VAL_ACC in r.data.metrics) == (r.data.tags[schema.TAG_START] == "prune"), r.data.tags
    teacher = next(r for r in found if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_TEACHER)
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").download_artifacts(teacher.info.run_id, schema.IMPORTANCE_ARTIFACT, str(tmp_path))
    scores = json.loads((tmp_path / schema.IMPORTANCE_ARTIFACT).read_text())
    assert scores["calibration"] == 128 and len(scores["scores"]["n.0"]) == 64  # the teacher's 64 hidden units
    assert {"kd", "twin", "random", "kd_random"} <= {r.data.tags.get(schema.TAG_ARM) for r in found}
    assert "the start (teacher pruned to the student's shape) bought" in p.stdout and "over KD from random weights" in p.stdout


def test_a_space_may_search_the_start(tmp_path):
    from search_helpers import write_config
    from workflows.experiment import load_experiment
    from workflows.session import may_prune

    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("student.family: {choice: [mlp, cnn]}", "train.init: {choice: [random, prune]}"))
    exp = load_experiment(str(cfg))
    assert may_prune(exp) and exp.run.train.init == "random"
