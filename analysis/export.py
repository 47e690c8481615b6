"""`kdx export`: every Pareto-optimal student as files a user can deploy.

One folder per student with `model.safetensors` (the weights), `model.pt2`
(a `torch.export` program: TorchScript is deprecated in torch 2.13; .pt2 is
torch's own name for these, load with `torch.export.load`), `model.onnx`,
and `card.json` (analysis/cards.py: run config, metrics, teacher, lineage run ids,
sha256 of every file, how to load). A Hugging Face student (`family: hf`) also gets
`hf/`, a `save_pretrained` folder with its tokenizer and label names, that
`AutoModelForSequenceClassification.from_pretrained` and
`AutoTokenizer.from_pretrained` load, checked like the other formats.
Every format is reloaded and run on the test split before the folder is
called done: its predictions must equal the rebuilt model's, whose accuracy
must equal the logged test accuracy. A failed check
is an error. A language model (task lm) ships as `model.safetensors` and `hf/`, a folder that
`AutoModelForCausalLM.from_pretrained` loads (GPT-2's architecture for kdx's causal transformer,
distill/models/causal.py; the data's tokenizer beside it where there is one), whose test
cross-entropy is checked against the logged one; its card gives a `generate` snippet (no .pt2 or
ONNX: a decoder is deployed through its Hugging Face folder). Folders are written under a temporary name and renamed, so a
re-run replaces them whole; registering again reuses existing versions.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file
from torch import nn

from distill.cache import sha256_file
from distill.config import RunConfig
from distill.data import Dataset, load_data
from distill.errors import KdxError
from distill.models import as_outputs

from . import schema
from .cards import HF_DIR, card_of
from .frontier import FrontierInfo, frontier_info
from .runs import Experiment
from .store import Store

__all__ = ["ExportedStudent", "export_front", "FORMATS"]

FORMATS = ("safetensors", "export", "onnx")
FILES = {"safetensors": "model.safetensors", "export": "model.pt2", "onnx": "model.onnx"}


@dataclass
class ExportedStudent:
    label: str  # P1, P2, ... in order of size
    run_id: str
    folder: Path
    test_score: float  # what every format reproduced: test accuracy, a language model's test cross-entropy
    files: dict[str, str]  # file name -> sha256
    version: str | None = None  # registered model version
    metric: str = schema.TEST_ACC  # which


class LogitsOnly(nn.Module):
    """What a deployed student returns: logits, not the features kdx trains with."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_outputs(self.model(x)).logits  # a user's factory model may return bare logits


def _download(store: Store, run_id: str, tmp: Path) -> tuple[RunConfig, Path]:
    """The run config and the weights file a student run logged."""
    try:
        config, weights = store.read_weights(run_id, tmp)
    except Exception as e:
        raise KdxError(f"run {run_id}: its weights artifact '{schema.MODEL_DIR}/' cannot be read ({type(e).__name__})") from None
    return RunConfig.from_dict(config), weights


def _teacher(store: Store, exp: Experiment, config: RunConfig, data: Dataset, tmp: Path) -> nn.Module:
    """The search's teacher, rebuilt from the weights its teacher run logged."""
    run_id = (exp.teacher or {}).get("run_id")
    if not run_id:
        raise KdxError(f"--experiment: '{exp.name}' has no teacher run, which scores its students; run the search again")
    try:
        _, weights = store.read_weights(run_id, tmp / "teacher")
    except Exception as e:
        raise KdxError(f"teacher run {run_id}: its weights artifact '{schema.MODEL_DIR}/' cannot be read ({type(e).__name__})") from None
    model = config.teacher.model.build(data.input_shape, data.num_classes, "teacher")
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _predict(fn, x: torch.Tensor, batch: int = 1024, embeds: bool = False) -> np.ndarray:
    """Each test sample's predicted class; with `embeds`, its embedding as it is (an embedding's model, `Task.head` "none")."""
    return np.concatenate([np.asarray(fn(x[i : i + batch])) if embeds else np.asarray(fn(x[i : i + batch])).argmax(-1)
                           for i in range(0, len(x), batch)])


def _check(name: str, preds: np.ndarray, expected: np.ndarray, run_id: str) -> None:
    """The same predicted classes, or embeddings equal to float32 rounding (a rebuilt graph may fuse operations)."""
    if preds.ndim == 2:
        bad = int((~np.isclose(preds, expected, rtol=1e-4, atol=1e-5)).any(1).sum())
    else:
        bad = int((preds != expected).sum())
    if bad:
        raise KdxError(f"export of run {run_id}: {name} disagrees with the trained model on {bad} of {len(expected)} test samples")


def _quiet_exporters() -> None:
    """torch.onnx warns about torchvision ops and pytree deprecations that do not concern these models."""
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript.optimizer").setLevel(logging.ERROR)  # a constant it cannot fold stays unfolded; the graph is checked below
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")


def _write_formats(model: nn.Module, data: Dataset, weights: Path, out: Path, formats: tuple[str, ...], run_id: str, logged_acc: float) -> None:
    _quiet_exporters()
    x, task = data.x_test, data.task_type
    embeds = task.head == "none"  # the model's output is an embedding: its files must give the same vectors, not the same argmax
    wrapped = LogitsOnly(model).eval()
    with torch.no_grad():
        expected = _predict(lambda b: wrapped(b).numpy(), x, embeds=embeds)
    acc = task.evaluate(model, x, data.y_test)[0] if embeds else float((expected == data.y_test.numpy()).mean())
    if abs(acc - logged_acc) > 1e-9 + (1e-6 * abs(logged_acc) if embeds else 0.0):
        raise KdxError(f"export of run {run_id}: the rebuilt model scores {acc:.4f} on the test split, the run logged {logged_acc:.4f}")
    example = x[:2]
    batch = torch.export.Dim("batch", min=1)
    if "safetensors" in formats:
        shutil.copyfile(weights, out / FILES["safetensors"])
        again = _reload_safetensors(model, out / FILES["safetensors"])
        with torch.no_grad():
            _check("model.safetensors", _predict(lambda b: again(b).numpy(), x, embeds=embeds), expected, run_id)
    if "export" in formats:
        program = torch.export.export(wrapped, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, out / FILES["export"])
        loaded = torch.export.load(out / FILES["export"]).module()
        with torch.no_grad():
            _check("model.pt2", _predict(lambda b: loaded(b).numpy(), x, embeds=embeds), expected, run_id)
    if "onnx" in formats:
        try:
            import onnxruntime
        except ImportError:
            raise KdxError("--formats onnx needs onnx, onnxscript and onnxruntime: pip install 'kdx[export]'") from None
        torch.onnx.export(wrapped, (example,), str(out / FILES["onnx"]), input_names=["x"], output_names=["logits"],
                          dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False, external_data=False)  # one file
        session = onnxruntime.InferenceSession(str(out / FILES["onnx"]), providers=["CPUExecutionProvider"])
        _check("model.onnx", _predict(lambda b: session.run(None, {"x": b.numpy()})[0], x, embeds=embeds), expected, run_id)
    if hasattr(model, "hf"):
        _write_hf(model, data, out / HF_DIR, expected, run_id)


def _write_causal_lm(model: nn.Module, data: Dataset, weights: Path, out: Path, run_id: str, logged_loss: float) -> None:
    """A language model: its kdx weights and `hf/`, a folder AutoModelForCausalLM.from_pretrained loads (with the
    data's tokenizer where it has one), each scored again on the test split to the logged cross-entropy."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from distill.models.causal import save_causal_lm

    hf_logging.disable_progress_bar()  # its weight-loading bars say nothing here: the scores below are checked
    from distill.train import evaluate

    x, y, pad = data.x_test, data.y_test, data.tokens.pad_id
    _, loss = evaluate(model, x, y)
    if abs(loss - logged_loss) > 1e-6 * max(1.0, abs(logged_loss)):
        raise KdxError(f"export of run {run_id}: the rebuilt model scores {loss:.6f} nats per test token, the run logged {logged_loss:.6f}")
    shutil.copyfile(weights, out / FILES["safetensors"])
    tokenizer = None
    if data.tokens.tokenizer:
        from distill.text import load_tokenizer

        tokenizer = load_tokenizer(Path(data.tokens.tokenizer))
    try:
        save_causal_lm(model, out / HF_DIR, pad, x[:8], tokenizer=tokenizer)
    except RuntimeError as e:
        raise KdxError(f"export of run {run_id}: {e}") from None
    hf = AutoModelForCausalLM.from_pretrained(out / HF_DIR, local_files_only=True).eval()
    _, again = evaluate(_HFLogits(hf, pad), x, y)
    if abs(again - logged_loss) > 1e-4 * max(1.0, abs(logged_loss)):
        raise KdxError(f"export of run {run_id}: {HF_DIR}/ (from_pretrained) scores {again:.6f} nats per test token "
                       f"(perplexity {math.exp(again):.4f}), the run logged {logged_loss:.6f}")


class _HFLogits(nn.Module):
    """A Hugging Face causal LM as kdx's evaluation calls a model: ids in, logits out, padding masked."""

    def __init__(self, hf: nn.Module, pad_id: int):
        super().__init__()
        self.hf, self.pad_id = hf, pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits


def _write_sentence_transformer(model: nn.Module, data: Dataset, folder: Path, expected: np.ndarray, run_id: str) -> None:
    """A sentence encoder as a folder `sentence_transformers.SentenceTransformer(folder)` loads: the encoder's
    `save_pretrained` files and the data's tokenizer, `modules.json`, its Pooling module (the legacy
    `pooling_mode_*_tokens` keys, which sentence-transformers 2 to 6 read) and a Normalize module where the student
    normalises; reloaded with SentenceTransformer and checked to give the trained model's embeddings."""
    from distill.text import load_tokenizer

    hf = model.hf
    hf.save_pretrained(folder)
    tokenizer = load_tokenizer(Path(data.tokens.tokenizer))
    tokenizer.model_max_length = data.tokens.max_len
    tokenizer.save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if model.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": data.tokens.max_len, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": hf.config.hidden_size, "pooling_mode_cls_token": model.pool == "cls",
         "pooling_mode_mean_tokens": model.pool == "mean", "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_lasttoken": model.pool == "last"}, indent=2))
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise KdxError("exporting a sentence encoder checks it with sentence-transformers: pip install 'kdx[embed]'") from None
    again = SentenceTransformer(str(folder), device="cpu").eval()
    pad = model.pad_id
    with torch.no_grad():
        got = _predict(lambda b: again({"input_ids": b, "attention_mask": (b != pad).long()})["sentence_embedding"].numpy(), data.x_test,
                       embeds=True)
    _check(f"{HF_DIR}/ (SentenceTransformer)", got, expected, run_id)


def _write_hf(model: nn.Module, data: Dataset, folder: Path, expected: np.ndarray, run_id: str) -> None:
    """The student as a `save_pretrained` folder with the data's tokenizer, reloaded and checked."""
    from transformers import AutoModelForSequenceClassification

    from distill.text import load_tokenizer

    if getattr(model, "pool", None) is not None:
        return _write_sentence_transformer(model, data, folder, expected, run_id)
    hf = model.hf
    labels = list(data.tokens.labels) if data.tokens and data.tokens.labels else [str(i) for i in range(data.num_classes)]
    hf.config.id2label, hf.config.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    hf.save_pretrained(folder)
    if data.tokens and data.tokens.tokenizer:
        tokenizer = load_tokenizer(Path(data.tokens.tokenizer))
        tokenizer.model_max_length = data.tokens.max_len  # truncation=True then cuts where the student's training data was cut
        tokenizer.save_pretrained(folder)
        if len(load_tokenizer(folder)) != hf.config.vocab_size:
            raise KdxError(f"export of run {run_id}: the saved tokenizer's vocabulary does not match the model's embedding")
    again = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    pad = model.pad_id
    with torch.no_grad():
        preds = _predict(lambda b: again(input_ids=b, attention_mask=(b != pad).long()).logits.numpy(), data.x_test)
    _check(f"{HF_DIR}/ (from_pretrained)", preds, expected, run_id)


def _reload_safetensors(model: nn.Module, path: Path) -> nn.Module:
    import copy

    fresh = copy.deepcopy(model)
    fresh.load_state_dict(load_file(str(path)))
    return LogitsOnly(fresh).eval()


def _replace_folder(tmp: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _register(client: MlflowClient, name: str, exported: list[ExportedStudent], info) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException:
        pass  # exists: versions are added or reused below
    for e in exported:
        existing = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == e.run_id]
        if existing:
            e.version = existing[0].version
        else:
            run = client.get_run(e.run_id)
            e.version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{schema.MODEL_DIR}", run_id=e.run_id,
                                                    tags={"kdx.pareto": e.label}).version
        client.set_registered_model_alias(name, f"pareto-{e.label[1:]}", e.version)
    front = _shipped(info)
    best = front.loc[(info.score.sign * front[info.score.val]).idxmax(), "run_id"]
    smallest = front.loc[front[schema.PARAMS].idxmin(), "run_id"]
    for alias, run_id in (("most-accurate", best), ("smallest", smallest)):
        version = next(e.version for e in exported if e.run_id == run_id)
        client.set_registered_model_alias(name, alias, version)


def export_front(exp: Experiment, out: str | Path, formats: tuple[str, ...] = FORMATS, register: str | None = None,
                 info: FrontierInfo | None = None) -> list[ExportedStudent]:
    """The front's students as verified files in `out` (`info`: the experiment's frontier, when the caller has it)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise KdxError(f"--formats: unknown format '{unknown[0]}' (valid: {', '.join(FORMATS)})")
    info = frontier_info(exp) if info is None else info
    front, score = _shipped(info), info.score
    if front.empty:
        raise KdxError(f"--experiment: '{exp.name}' has no finished full-budget students, so nothing to export")
    store = Store(exp.tracking_uri, create=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    exported, datasets = [], {}
    students = info.students.set_index("run_id")
    for k, (_, row) in enumerate(front.iterrows(), 1):
        label = f"P{k}"
        final = out / f"{label.lower()}-{row['run_id'][:8]}"
        with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
            tmp = Path(tmp)
            config, weights = _download(store, row["run_id"], tmp / "download")
            key = json.dumps(config.data.to_dict(), sort_keys=True)
            if key not in datasets:  # every student of a search has the same data: load it once
                datasets[key] = load_data(config.data)
                if datasets[key].task_type.scored_by_teacher:  # scored against the search's teacher (an embedding's): read it back
                    datasets[key] = datasets[key].task_type.with_teacher(datasets[key], _teacher(store, exp, config, datasets[key], tmp))
            data = datasets[key]
            model = config.student.build(data.input_shape, data.num_classes, "student")
            model.load_state_dict(load_file(str(weights)))
            model.eval()
            folder = tmp / "out"
            folder.mkdir()
            if data.task_type.causal:
                _write_causal_lm(model, data, weights, folder, row["run_id"], float(row[score.test]))
            else:
                _write_formats(model, data, weights, folder, tuple(formats), row["run_id"], float(row[score.test]))
            files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
            card = card_of(exp, _with_gain(row.to_dict(), students), config, data, label, files)
            (folder / "card.json").write_text(json.dumps(_json_safe(card), indent=2, default=str, allow_nan=False))
            _replace_folder(folder, final)
        exported.append(ExportedStudent(label, row["run_id"], final, float(row[score.test]), files, metric=score.test))
    _drop_stale(out, {e.folder.name for e in exported})
    if register:
        _register(store.client, register, exported, info)
    return exported


def _shipped(info: FrontierInfo):
    """What export ships: the front over every model the search trained (analysis/models.py)."""
    return info.models.best if info.models is not None else info.front


def _with_gain(row: dict, students) -> dict:
    """A search trial's gain over its base-recipe twin, for the card (other models have none)."""
    if row["run_id"] in students.index:
        s = students.loc[row["run_id"]]
        row |= {k: s.get(k) for k in ("gain", "twin_test", "twin_run") if k in s}
    return row


def _json_safe(value):
    """NaN and infinities as null: JSON has no NaN (a missing twin is NaN in the runs table)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _drop_stale(out: Path, kept: set[str]) -> None:
    """An export folder holds this export only: earlier exports' student folders (pN-<run id>,
    with a card.json) that are not in it are removed; anything else there is left alone."""
    for folder in out.iterdir():
        if folder.is_dir() and folder.name not in kept and re.fullmatch(r"p\d+-[0-9a-f]{8}", folder.name) and (folder / "card.json").is_file():
            shutil.rmtree(folder)
