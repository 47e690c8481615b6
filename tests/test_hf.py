"""Hugging Face models in kdx: a local folder in (weights as saved), a hub name refused in one line,
a model folder whose tokenizer is not the data's refused (cross-tokenizer distillation), and a
model kdx borrows for a run given back computing what it computed before."""

import json

import pytest
import torch

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.job import distill_once
from distill.models import TokenShape, build_model, expose
from distill.models.hf import HFOptions, check_same_tokenizer
from distill.datasets.text import TextOptions
from distill.text import load_tokenizer, train_tokenizer
from distill.train import run

SMALL = dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reviews(path, words):
    rows = [{"text": f"the {w} was {'good' if i % 2 else 'bad'}", "label": "pos" if i % 2 else "neg"} for i, w in enumerate(words * 20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _saved(folder, tokenizer_folder=None, vocab=30):
    model = build_model("hf", HFOptions(**SMALL), TokenShape(12, vocab), 2)
    model.hf.save_pretrained(folder)
    if tokenizer_folder is not None:
        load_tokenizer(tokenizer_folder).save_pretrained(folder)
    return model


def test_a_local_folder_loads_with_its_weights(tmp_path):
    torch.manual_seed(0)
    saved = _saved(tmp_path / "m").eval()
    again = build_model("hf", HFOptions(pretrained=str(tmp_path / "m")), TokenShape(12, 30), 2).eval()
    x = torch.randint(1, 30, (3, 12))
    torch.testing.assert_close(again(x).logits, saved(x).logits)


def test_a_hub_name_is_one_line_saying_where_the_files_go():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"data": {"name": "khop"}, "teacher": {"family": "hf", "pretrained": "bert-base-uncased"}})
    msg = str(e.value)
    assert msg.startswith("teacher.pretrained: no local folder 'bert-base-uncased'") and "downloads nothing" in msg and "\n" not in msg


def test_a_model_whose_tokenizer_is_not_the_datas_is_refused(tmp_path):
    data_file = _reviews(tmp_path / "r.jsonl", ["food", "room", "staff"])
    other = train_tokenizer(["completely different words here"] * 50, TextOptions(path=str(data_file), vocab_size=40))
    _saved(tmp_path / "teacher", other, vocab=len(load_tokenizer(other)))
    config = RunConfig.from_dict({
        "data": {"name": "text", "path": str(data_file), "vocab_size": 40, "max_len": 12},
        "teacher": {"family": "hf", "pretrained": str(tmp_path / "teacher"), "epochs": 1},
        "student": {"family": "hf", **SMALL}, "train": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"^teacher\.pretrained: the tokenizer in .* is not the data's .*cross-tokenizer distillation is not supported"):
        distill_once(config, log=lambda s: None)
    data = load_data(config.data)
    check_same_tokenizer({"teacher.pretrained": str(tmp_path / "teacher")}, str(other))  # its own tokenizer: fine
    check_same_tokenizer({"student.pretrained": str(tmp_path / "teacher")}, "")  # a built-in task's ids: nothing to compare
    with pytest.raises(ConfigError, match=r"^student\.pretrained: "):
        check_same_tokenizer({"student.pretrained": str(tmp_path / "teacher")}, data.tokens.tokenizer)


def test_a_run_gives_its_models_back_computing_what_they_did():
    """train.run asks the student and an online teacher for what the losses read, then gives them back:
    a patch transformer still returns its attention maps (its default), a token model none."""
    config = RunConfig.from_dict({
        "data": {"name": "khop", "train_samples": 60, "test_samples": 20},
        "teacher": {"family": "transformer", "dim": 8, "depth": 2, "heads": 2, "outputs": "online"},
        "student": {"family": "transformer", "dim": 8, "depth": 1, "heads": 2},
        "train": {"epochs": 1}, "mix": {"ce": 0.5, "minilm": 0.5}})
    data = load_data(config.data)
    teacher = config.teacher.model.build(data.input_shape, data.num_classes, "teacher")
    from distill.train import Teacher

    result = run(config, data, Teacher(teacher))
    x = data.x_test[:2]
    assert not result.model(x).parts and not teacher(x).parts
    patch = build_model("transformer", config.student.options, (1, 16), 3)
    assert patch(torch.randn(2, 1, 16)).attentions
    assert expose(patch, {"parts"}) == frozenset({"attentions"})
    expose(patch, frozenset({"attentions"}))
    assert patch(torch.randn(2, 1, 16)).attentions
