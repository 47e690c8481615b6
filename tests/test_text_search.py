"""BERT -> DistilBERT end to end, as a user runs it: a tiny Hugging Face BERT teacher built from
a config (nothing downloaded), a half-depth Hugging Face student initialised from every other
teacher layer, distilled with KD + cos in a real `kdx search` over a text file, exported, and
reloaded with `from_pretrained` (model and tokenizer) to the logged test accuracy. Slow step."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from search_helpers import ROOT, kdx, runs

pytestmark = pytest.mark.slow

CONFIG = """
experiment: tiny-distilbert
data: {name: text, path: reviews.jsonl, vocab_size: 200, max_len: 20}
teacher: {family: hf, model_type: bert, num_hidden_layers: 4, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64, epochs: 4,
          lr: 0.002, batch_size: 32}
student: {family: hf, model_type: bert, num_hidden_layers: 2, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}
train: {epochs: 3, batch_size: 32, lr: 0.002, init: teacher, init_layers: every_other}
losses: {kd: {temperature: 2.0}}
mix: {ce: 2.0, kd: 5.0, cos: 1.0}
space: {losses.kd.temperature: {float: [1.0, 4.0]}}
search: {num_samples: 2, max_concurrent: 2, sampler: random, objectives: {val_acc: max}, scheduler: none, baselines: true,
         twins: base_recipe, seeds: 1}
"""


def test_a_hugging_face_student_distils_exports_and_reloads(tmp_path, monkeypatch):
    rows = (ROOT / "examples/data/reviews.jsonl").read_text().splitlines()[:600]
    (tmp_path / "reviews.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.yaml").write_text(CONFIG)
    env = {"KDX_CACHE": str(tmp_path / "cache")}
    out = kdx("search", "c.yaml", cwd=tmp_path, extra_env=env, timeout=1500)  # about 3 minutes on 2 busy cores
    assert out.returncode == 0, out.stderr[-3000:]
    students = [r for r in runs(tmp_path / "mlflow.db", "tiny-distilbert") if r.data.tags.get("kdx.role") == "student"]
    assert len(students) == 2 and all(r.info.status == "FINISHED" for r in students)
    assert {r.data.params["train.init"] for r in students} == {"teacher"}
    assert {r.data.params["student.num_hidden_layers"] for r in students} == {"2"}
    out = kdx("export", "--experiment", "tiny-distilbert", "--out", "exported", "--formats", "safetensors", cwd=tmp_path, extra_env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    folders = sorted((tmp_path / "exported").glob("p*-*"))
    assert folders
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distill.config import DataConfig
    from distill.data import load_data

    monkeypatch.setenv("KDX_CACHE", env["KDX_CACHE"])  # the search's tokenizer, not one trained again

    for folder in folders:
        card = json.loads((folder / "card.json").read_text())
        assert card["tokens"]["labels"] == ["mixed", "negative", "positive"]
        model = AutoModelForSequenceClassification.from_pretrained(folder / "hf").eval()
        tokenizer = AutoTokenizer.from_pretrained(folder / "hf")
        assert model.config.num_hidden_layers == 2 and model.config.id2label[2] == "positive"
        data = load_data(DataConfig.parse({**card["config"]["data"], "path": str(tmp_path / "reviews.jsonl")}))
        with torch.no_grad():
            logits = model(input_ids=data.x_test, attention_mask=(data.x_test != card["tokens"]["pad_id"]).long()).logits
        acc = float((logits.argmax(-1) == data.y_test).double().mean())  # float64, as the logged accuracy
        assert abs(acc - card["metrics"]["test_acc"]) < 1e-9
        # the tokenizer the student was trained with encodes a raw text to the ids kdx trained on
        text = rows[0]
        ids = tokenizer(json.loads(text)["text"], padding="max_length", truncation=True, max_length=20)["input_ids"]
        assert len(ids) == 20 and ids[0] == tokenizer.cls_token_id
        shutil.rmtree(folder / "hf")
