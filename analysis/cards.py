"""An exported student's card (`card.json`): its run config and logged metrics, how it was trained
(method, start, seeds, the gain over its twin), its teacher, the lineage run ids a user follows back
into MLflow, the sha256 of every file, and how to load each file (the `LOAD_*` snippets, run in the
exported folder). `analysis/export.py` writes the files and checks them; this module only says them.
"""

from __future__ import annotations

import math

from distill.config import RunConfig
from distill.data import Dataset
from distill.tasks import task_named

from . import schema
from .models import method_sentence
from .runs import Experiment

__all__ = ["card_of", "HF_DIR"]

HF_DIR = "hf"  # a Hugging Face student's save_pretrained folder, beside the other formats

LOAD_ST = """from sentence_transformers import SentenceTransformer
model = SentenceTransformer('hf', device='cpu')
embeddings = model.encode(['a sentence to embed', 'another one'])  # (2, width): compare by cosine similarity"""

LOAD_ENCODER = """import json, os
import torch
from transformers import AutoModel, AutoTokenizer
tokenizer, model = AutoTokenizer.from_pretrained('hf'), AutoModel.from_pretrained('hf').eval()
pool = json.load(open('hf/1_Pooling/config.json'))
batch = tokenizer(['a sentence to embed', 'another one'], padding=True, truncation=True, return_tensors='pt')
with torch.no_grad():
    h = model(**batch).last_hidden_state
m = batch['attention_mask']
if pool['pooling_mode_mean_tokens']:
    e = (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
elif pool['pooling_mode_cls_token']:
    e = h[:, 0]
else:  # the last real token
    e = h[torch.arange(len(h)), m.sum(1) - 1]
embeddings = torch.nn.functional.normalize(e, dim=-1) if os.path.isdir('hf/2_Normalize') else e"""

LOAD_SAFETENSORS = """import json
from safetensors.torch import load_file
from distill.config import RunConfig
card = json.load(open('card.json'))
model = RunConfig.from_dict(card['config']).student.build(tuple(card['input']['shape'][1:]), card['num_classes'])
model.load_state_dict(load_file('model.safetensors'))
model.eval()  # model(x).logits for kdx's families; a factory's model returns what it returns"""

LOAD_TOKENS = """import json
from safetensors.torch import load_file
from distill.config import RunConfig
from distill.models import TokenShape
card = json.load(open('card.json'))
t = card['tokens']
model = RunConfig.from_dict(card['config']).student.build(TokenShape(t['max_len'], t['vocab_size'], t['pad_id'], t['task']), card['num_classes'])
model.load_state_dict(load_file('model.safetensors'))
model.eval()  # model(ids).logits, ids int64 (batch, max_len) padded with t['pad_id']"""

LOAD_HF = """from transformers import AutoModelForSequenceClassification, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained('hf')
model = AutoModelForSequenceClassification.from_pretrained('hf').eval()
batch = tokenizer(['a text to classify'], padding='max_length', truncation=True, return_tensors='pt')
label = model.config.id2label[int(model(**batch).logits.argmax(-1))]"""

GENERATE = """import json
import torch
from transformers import AutoModelForCausalLM
card = json.load(open('card.json'))
model = AutoModelForCausalLM.from_pretrained('hf').eval()
ids = torch.tensor([[1, 2, 3]])  # ids of the data's vocabulary (card['tokens']); a tokenizer, where the data had one, is in hf/ too
out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20, do_sample=True, pad_token_id=card['tokens']['pad_id'])
# at most card['tokens']['max_len'] positions in all: the positions the model was trained on"""

LOAD_HF_IDS = """from transformers import AutoModelForSequenceClassification
model = AutoModelForSequenceClassification.from_pretrained('hf').eval()
# a built-in task has no tokenizer: model(input_ids=ids, attention_mask=(ids != card['tokens']['pad_id']).long()).logits"""


def card_of(exp: Experiment, row: dict, config: RunConfig, data: Dataset, label: str, files: dict[str, str]) -> dict:
    """card.json of one exported student: what it is, how it was trained, what it scored, where it came from, how to load it."""
    teacher, score = exp.teacher or {}, exp.score
    input_shape, num_classes, tokens = data.input_shape, data.num_classes, data.tokens
    card = {
        "name": f"{exp.name}/{label}",
        "pareto": label,
        "architecture": row["arch"],
        "metrics": _metrics(exp, row),
        "trained": {"method": row.get("method", "kd"), "source": row.get("source", "search trial"),
                    "start": row.get("start") or config.train.init,  # random, or the teacher's layers
                    "seeds": int(row.get("n_seeds") or 1), f"{score.val}_mean": row.get(score.val),
                    f"{score.test}_mean": row.get("test_mean"), f"{score.test}_std": row.get("test_std"),
                    "note": method_sentence(row, score) if "method" in row else None},
        "distillation_gain": None if row.get("gain") is None or row.get("gain") != row.get("gain") else float(row["gain"]),
        "distillation_gain_unit": score.unit,
        f"scratch_twin_{score.test}": None if row.get("twin_test") is None or row.get("twin_test") != row.get("twin_test") else float(row["twin_test"]),
        "teacher": {k: teacher.get(k) for k in dict.fromkeys(("run_id", schema.PARAMS, schema.VAL_ACC, schema.TEST_ACC, score.val, score.test))},
        "lineage": {"experiment": exp.name, "experiment_id": exp.experiment_id, "tracking_uri": exp.tracking_uri,
                    "search_run": exp.parent_id, "student_run": row["run_id"], "teacher_run": teacher.get("run_id"),
                    "twin_run": row.get("twin_run")},
        "config": config.to_dict(),
        "input": {"shape": ["batch", *input_shape], "dtype": "int64" if tokens else "float32"},
        "num_classes": num_classes,
        "files": {name: {"sha256": digest} for name, digest in files.items()},
        "how_to_load": {
            "model.pt2": "torch.export.load('model.pt2').module()(x)  # x: float32 (batch, *input shape) -> logits",
            "model.onnx": "onnxruntime.InferenceSession('model.onnx').run(None, {'x': x})[0]",
            "model.safetensors": LOAD_TOKENS if tokens else LOAD_SAFETENSORS,  # python, run in this folder with kdx installed
        },
    }
    if tokens:
        card["tokens"] = tokens.to_dict()
        card["how_to_load"]["model.pt2"] = card["how_to_load"]["model.pt2"].replace("float32 (batch, *input shape)", "int64 ids (batch, max_len)")
    if f"{HF_DIR}/modules.json" in files:  # a sentence encoder
        card["how_to_load"][f"{HF_DIR}/"] = LOAD_ST
        card["how_to_load"][f"{HF_DIR}/ with transformers alone"] = LOAD_ENCODER
    elif f"{HF_DIR}/config.json" in files:
        card["how_to_load"][f"{HF_DIR}/"] = LOAD_HF if tokens and tokens.tokenizer else LOAD_HF_IDS
    if data.task_type.head == "none":  # a sentence encoder: its output is the pooled embedding, read by cosine similarity
        card["how_to_load"] = {k: v.replace("-> logits", "-> sentence embeddings (batch, width): compare them by cosine similarity")
                               .replace("model(ids).logits,", "model(ids).logits (batch, width): sentence embeddings,")
                               for k, v in card["how_to_load"].items()}
    if tokens and task_named(tokens.task).causal:  # a causal LM ships as its weights and the Hugging Face folder
        card["how_to_load"] = {"model.safetensors": LOAD_TOKENS.replace(
                                   "model(ids).logits,", "model(ids).logits (batch, max_len, vocab): the next id's at every position,"),
                               f"{HF_DIR}/": GENERATE}
        card["metrics"] |= {"test_ppl": math.exp(card["metrics"][schema.TEST_LOSS])} if schema.TEST_LOSS in card["metrics"] else {}
        card["entropy_floor"] = tokens.floor
    return card


def _metrics(exp: Experiment, row: dict) -> dict:
    """The shipped run's own metrics as logged (the front's val_acc is a mean over seeds where there are several)."""
    run = exp.runs[exp.runs.run_id == row["run_id"]]
    source = run.iloc[0].to_dict() if len(run) else row
    keys = (schema.VAL_ACC, schema.TEST_ACC, schema.PARAMS, schema.LATENCY, schema.VAL_LOSS, schema.TEST_LOSS, schema.VAL_SPEARMAN,
            schema.TEST_SPEARMAN, schema.TEST_RECALL10, schema.TEST_GOLD_SPEARMAN)
    return {k: float(source[k]) for k in keys if k in source and source[k] == source[k]}
