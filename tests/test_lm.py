"""Language models end to end below the search (issue 22): the causal transformer, Hugging Face causal
LMs, training and evaluation per predicted token, the GPT-2 export, the top-k teacher cache, and
the one-line errors a user can cause."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from distill.config import RunConfig
from distill.data import IGNORE, load_data
from distill.errors import ConfigError
from distill.models import TokenShape, build_model
from distill.models.causal import save_causal_lm, to_gpt2
from distill.models.hf import HFOptions
from distill.models.transformer import TransformerOptions
from distill.teacher import prepare_teacher
from distill.train import evaluate, fidelity, run

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "hmm", "symbols": 12, "length": 12, "train_samples": 240, "test_samples": 60}
LM = TokenShape(12, vocab=20, task="lm")


def config(**over) -> RunConfig:
    base = {"data": TINY, "student": {"family": "transformer", "dim": 16, "depth": 1, "heads": 2},
            "teacher": {"family": "transformer", "dim": 16, "depth": 2, "heads": 2, "epochs": 2, "batch_size": 32},
            "train": {"epochs": 2, "batch_size": 32, "lr": 3e-3, "device": "cpu"}, "mix": {"ce": 1.0}}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key not in ("mix", "student") else value
    return RunConfig.from_dict(base)


@pytest.fixture(scope="module")
def data():
    return load_data(config().data)


def test_the_causal_transformer_reads_the_past_only_and_gives_a_distribution_per_position():
    m = build_model("transformer", TransformerOptions(dim=16, depth=2, heads=4), LM, 20).eval()
    x = torch.randint(1, 20, (3, 12))
    out = m(x)
    assert out.logits.shape == (3, 12, 20) and out.features["embedding"].shape == (3, 16, 12)
    later = x.clone()
    later[:, 7:] = torch.randint(1, 20, (3, 5))
    assert torch.equal(m(later).logits[:, :7], out.logits[:, :7])  # the future changes nothing before it
    assert m.head.bias is None  # GPT-2's lm_head


def test_a_family_that_is_no_language_model_is_refused_in_one_line():
    from distill.models.mlp import MLPOptions

    with pytest.raises(ConfigError, match="mlp is not a language model.*use hf, transformer"):
        build_model("mlp", MLPOptions(), LM, 20, "student")


@pytest.mark.parametrize("model_type, extra", [(None, {}), ("llama", {"intermediate_size": 32})])
def test_hugging_face_causal_lms_from_a_config(model_type, extra):
    import pickle

    opts = HFOptions(model_type=model_type, num_hidden_layers=2, hidden_size=16, num_attention_heads=2, **extra)
    m = build_model("hf", opts, LM, 20).eval()
    assert type(m.hf).__name__ == ("LlamaForCausalLM" if model_type else "GPT2LMHeadModel")
    x = torch.randint(1, 20, (2, 12))
    out = m(x)
    assert out.logits.shape == (2, 12, 20) and out.features["embedding"].shape == (2, 16, 12)
    back = pickle.loads(pickle.dumps(m)).eval()
    assert torch.equal(back(x).logits, out.logits)


def test_gpt2_export_gives_the_same_logits_and_generates():
    from transformers import AutoModelForCausalLM

    m = build_model("transformer", TransformerOptions(dim=16, depth=2, heads=4, mlp_ratio=3), LM, 20).eval()
    x = torch.randint(1, 20, (2, 12))
    assert torch.allclose(to_gpt2(m, 0)(input_ids=x).logits, m(x).logits, atol=1e-5)


def test_training_scores_per_predicted_token_and_the_export_reloads_to_the_logged_perplexity(data, tmp_path):
    from transformers import AutoModelForCausalLM

    assert data.task == "lm" and data.input_shape.lm and data.num_classes == 13 and 0 < data.tokens.floor < math.log(12)
    r = run(config(train={"epoch_policy": "best_val", "epochs": 3}), data)
    assert all(e.val_ppl == pytest.approx(math.exp(e.val_loss)) for e in r.history)
    assert r.val_loss == min(e.val_loss for e in r.history)  # best_val keeps the lowest cross-entropy
    assert r.test_ppl == pytest.approx(math.exp(r.test_loss))
    folder = save_causal_lm(r.model, tmp_path / "hf", data.tokens.pad_id, data.x_test[:4])
    back = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        logits = back(input_ids=data.x_test).logits
    ce = F.cross_entropy(logits.flatten(0, 1), data.y_test.flatten(), ignore_index=IGNORE)
    assert float(ce) == pytest.approx(r.test_loss, rel=1e-5)


def test_evaluation_and_fidelity_skip_ignored_positions():
    m = build_model("transformer", TransformerOptions(dim=8, depth=1, heads=2), LM, 20)
    x = torch.randint(1, 20, (4, 12))
    y = torch.randint(1, 20, (4, 12))
    y[:, 6:] = IGNORE
    acc, loss = evaluate(m, x, y)
    m.eval()
    with torch.no_grad():
        logits = m(x).logits[:, :6]
    assert loss == pytest.approx(float(F.cross_entropy(logits.flatten(0, 1), y[:, :6].flatten())), rel=1e-5)
    assert acc == pytest.approx(float((logits.argmax(-1) == y[:, :6]).float().mean()))
    assert fidelity(m, m, x, y=y) == (1.0, 0.0)


def test_mlp_on_next_token_data_is_refused_before_training(data):
    with pytest.raises(ConfigError, match="student: mlp is not a language model"):
        run(config(student={"family": "mlp"}), data)


def test_a_teacher_keeps_its_validation_and_test_cross_entropy_trained_and_cached(data):
    first = prepare_teacher(config(), data, keys=["logits"], log=lambda s: None).info
    again = prepare_teacher(config(), data, keys=["logits"], log=lambda s: None).info
    assert first.val_loss is not None and first.test_loss is not None  # the frontier draws the teacher on the validation axis
    assert again.source == "cache" and again.val_loss == pytest.approx(first.val_loss) and again.test_loss == first.test_loss


def test_the_top_k_cache_is_smaller_and_errors_are_one_line(data):
    cfg = config(mix={"ce": 1.0}, teacher={"topk": 4})
    top = prepare_teacher(cfg, data, keys=["logits"], log=lambda s: None).outputs
    full = prepare_teacher(config(), data, keys=["logits"], log=lambda s: None).outputs
    n, length = data.x_train.shape
    assert full.logits.shape == (n, length, 13) and top.logits.shape == (n, length, 5)
    assert top.parts["topk.index"].shape == (n, length, 4) and top.parts["topk.index"].dtype == torch.int64
    log_p = F.log_softmax(full.logits, -1)
    assert torch.allclose(top.logits[..., :4], log_p.gather(-1, top.parts["topk.index"]), atol=1e-5)
    assert torch.allclose(torch.logsumexp(top.logits, -1), torch.zeros(n, length), atol=1e-4)  # top-k plus the tail: all the mass
    with pytest.raises(ConfigError, match="teacher.topk: 40 is more than the vocabulary"):
        prepare_teacher(config(teacher={"topk": 40}), data, keys=["logits"], log=lambda s: None)
    with pytest.raises(ConfigError, match="teacher.topk"):
        config(teacher={"topk": 4, "outputs": "online"})
    with pytest.raises(ConfigError, match="teacher.vocab"):
        config(teacher={"vocab": "slice"})


def test_language_model_objectives_and_searches_say_what_to_do(tmp_path):
    from workflows.experiment import load_experiment

    def write(search: dict) -> str:
        path = tmp_path / "lm.yaml"
        path.write_text(yaml.safe_dump({"data": {"name": "hmm"}, "student": {"family": "transformer"}, "teacher": {"family": "transformer"},
                                        "mix": {"ce": 1.0}, "space": {"train.lr": {"float": [1e-3, 1e-2], "log": True}}, "search": search}))
        return str(path)

    with pytest.raises(ConfigError, match=r"search.objectives: .*val_acc is next-token accuracy.*val_ppl: min.*objectives for this task: val_ppl"):
        load_experiment(write({"objectives": {"val_acc": "max"}}))
    exp = load_experiment(write({"objectives": {"val_ppl": "min", "params": "min"}}))
    assert exp.lm and exp.quality == "val_ppl"
    assert load_experiment(write({})).search.objectives == {"val_ppl": "min"}  # a language model is scored by perplexity unless told
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(open(write({}))), "chain": {"assistants": 1}}))
    with pytest.raises(ConfigError, match="^chain: .*language modelling"):
        load_experiment(str(path))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "mnist1d"}, "space": "capacity_gap", "search": {"objectives": {"val_ppl": "min"}}}))
    with pytest.raises(ConfigError, match="val_ppl is a language model's"):
        load_experiment(str(path))


def test_kdx_run_prints_perplexity_the_floor_and_the_gain_in_nats(tmp_path):
    cfg = tmp_path / "lm.yaml"
    cfg.write_text(yaml.safe_dump({"data": TINY, "student": {"family": "transformer", "dim": 8, "depth": 1, "heads": 2},
                                   "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}, "mix": {"ce": 1.0}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "workflows.cli", "run", str(cfg), "--twin", "--out", str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "test_ppl" in p.stdout and "entropy floor" in p.stdout and "nats/token" in p.stdout and "val_ppl" in p.stdout


def test_a_causal_lm_folder_is_used_as_it_stands(data, tmp_path):
    """teacher.train: false on a language model: the folder's weights exactly, scored in nats per token, never trained."""
    torch.manual_seed(0)
    saved = build_model("hf", HFOptions(model_type="gpt2", num_hidden_layers=1, hidden_size=16, num_attention_heads=2),
                        data.input_shape, data.num_classes).eval()
    saved.hf.save_pretrained(tmp_path / "lm")
    cfg = RunConfig.from_dict({**config().to_dict(), "teacher": {"family": "hf", "pretrained": str(tmp_path / "lm"), "train": False},
                               "losses": {}, "mix": {"ce": 0.5, "token_kd": 0.5}})
    teacher = prepare_teacher(cfg, data, keys=["logits"], log=lambda s: None)
    assert teacher.info.source == "pretrained" and teacher.info.train_s == 0 and teacher.info.val_loss is not None
    with torch.no_grad():
        torch.testing.assert_close(teacher.module(data.x_val[:3]).logits, saved(data.x_val[:3]).logits)
    assert teacher.info.test_loss == pytest.approx(evaluate(saved, data.x_test, data.y_test)[1])
