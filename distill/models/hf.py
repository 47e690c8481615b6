"""Hugging Face models as kdx teachers and students: `family: hf`.

A model for sequence classification (`AutoModelForSequenceClassification`),
or on a language-modelling task a causal LM (`AutoModelForCausalLM`: GPT-2,
Llama-style configs; logits (B, N, vocab), "embedding" the last hidden states
(B, D, N)), built from a local `save_pretrained` folder (`pretrained`) or from a config:
`model_type` plus AutoConfig keys, the size ones by name so a search can
range over them (`student.num_hidden_layers: {int: [1, 6]}`), any other under
`config`. Nothing is downloaded: `pretrained` must be a folder on disk, and
Hugging Face's hub is switched off while kdx loads it.

Sizes given beside `pretrained` change the architecture, so the folder's
weights no longer fit: the model is built from the folder's config with those
keys changed and random weights (`train.init: teacher` then copies the
teacher's layers, DistilBERT's way). A folder whose head has another number
of labels keeps its body and gets a new head.

The wrapper follows the token-model contract of `distill.models`: hidden
states as features "block0" (embeddings) .. "blockL", the [CLS] token's last
hidden state as "embedding", post-softmax maps (the eager attention, switched
to only when a loss reads them), q/k/v captured by forward hooks on each
layer's query/key/value (BERT) or q_proj/k_proj/v_proj projections, and the
padding mask from the data's pad id.

Warning: in training mode Hugging Face returns its attention maps after
attention dropout (rows no longer sum to one); the losses that need clean
distributions (minilm) or raw scores (tinybert_attn) compute them from q and k.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, check
from ..tasks import task_named
from .base import Outputs, TokenShape, register_model

__all__ = ["HFOptions", "HFModel", "SIZE_KEYS", "check_local", "check_weights", "check_same_tokenizer", "head_labels", "load_as_is"]

SIZE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
GGUF_HINT = ("a quantized format kdx does not train from: convert it once to a plain save_pretrained folder "
             "(docs/pretrained.md, four lines of transformers) and give that folder")


def check_local(path: str, key: str = "pretrained") -> None:
    """A hub name or a missing folder is one line saying where the files go."""
    if not Path(path).is_dir():
        hint = "" if Path(path).is_absolute() or path.startswith(".") else (
            " (kdx downloads nothing: save the model once with save_pretrained, or "
            f"`huggingface-cli download {path} --local-dir DIR`, and give that folder)")
        check(False, key, f"no local folder '{path}'{hint}")
    gguf = sorted(Path(path).glob("*.gguf"))
    if gguf and not any((Path(path) / w).is_file() for w in WEIGHTS):
        check(False, key, f"'{path}' holds a GGUF file ({gguf[0].name}), {GGUF_HINT}")
    check((Path(path) / "config.json").is_file(), key, f"'{path}' has no config.json: not a save_pretrained folder")


def check_weights(path: str, key: str = "pretrained") -> None:
    """A folder whose weights are to be used holds them (a config alone builds a model at random)."""
    if not any((Path(path) / w).is_file() for w in WEIGHTS):
        raise ConfigError(f"{key}: '{path}' has a config.json but no weights ({' or '.join(WEIGHTS[::2])}): save the model "
                          "with save_pretrained, or give its size keys instead of the folder to build it at random")


@dataclass(frozen=True)
class HFOptions:
    pretrained: str | None = None  # a local save_pretrained folder (config, weights, and its tokenizer if any)
    model_type: str | None = None  # AutoConfig.for_model's name, when no folder is given; None: bert, or gpt2 for a language model
    num_hidden_layers: int | None = None  # None: the folder's, or the model type's default (BERT-base: 12)
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    config: dict[str, Any] = field(default_factory=dict)  # any other AutoConfig key (hidden_dropout_prob, ...)
    # A sentence encoder's (the embed task): how its tokens' final states become one vector, and whether it is
    # scaled to unit length. None: what the folder's sentence-transformers files say (modules.json, 1_Pooling/);
    # for a model built from a config, mean and no normalisation.
    pool: Literal["mean", "cls", "last"] | None = None
    normalize: bool | None = None

    def __post_init__(self) -> None:
        if self.pretrained:
            check_local(self.pretrained)
        for key in SIZE_KEYS:
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be >= 1, got {value}")
        if self.hidden_size and self.num_attention_heads:
            check(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
                  f"{self.num_attention_heads} heads do not divide hidden_size {self.hidden_size}")

    def overrides(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in SIZE_KEYS if getattr(self, k) is not None}, **self.config}


class _Capture:
    """A forward hook on one projection: keeps its output, heads split, while `parts` is exposed."""

    def __init__(self, owner: "HFModel", name: str):
        self.owner, self.name = owner, name

    def __call__(self, module: nn.Module, args: Any, output: Tensor) -> None:
        if "parts" in self.owner.kdx_expose:
            b, n, d = output.shape
            heads = self.owner.heads
            self.owner.captured[self.name] = output.reshape(b, n, heads, d // heads).transpose(1, 2)


_PROJ = re.compile(r"^(?:.*\.)?(?:layer|layers|h)\.(\d+)\..*\b(query|key|value|q_proj|k_proj|v_proj)$")


class HFModel(nn.Module):
    """A Hugging Face classifier, language model or (with `pool`) sentence encoder on token ids, returning `Outputs`;
    an encoder's logits are its pooled sentence embedding, unit length with `normalize`."""

    def __init__(self, hf: nn.Module, pad_id: int, lm: bool = False, pool: str | None = None, normalize: bool = False):
        super().__init__()
        self.hf, self.pad_id, self.heads, self.lm = hf, pad_id, int(hf.config.num_attention_heads), lm
        self.pool, self.normalize = pool, normalize
        self.kdx_expose: frozenset[str] = frozenset()
        self.captured: dict[str, Tensor] = {}
        for name, module in hf.named_modules():
            m = _PROJ.match(name)
            if m:
                what = {"query": "q", "key": "k", "value": "v"}.get(m.group(2), m.group(2)[0])
                module.register_forward_hook(_Capture(self, f"{what}.block{int(m.group(1)) + 1}"))

    def forward(self, x: Tensor) -> Outputs:
        mask = x != self.pad_id
        attend = "attentions" in self.kdx_expose
        if attend and self.hf.config._attn_implementation != "eager":
            self.hf.set_attn_implementation("eager")  # the fused kernels return no maps
        out = self.hf(input_ids=x, attention_mask=mask.long(), output_hidden_states=True, output_attentions=attend)
        hidden = out.hidden_states
        features = {f"block{i}": h.transpose(1, 2) for i, h in enumerate(hidden)}
        features["embedding"] = hidden[-1].transpose(1, 2) if self.lm else hidden[-1][:, 0]
        attentions = {f"block{i}": a for i, a in enumerate(out.attentions or (), 1)}
        parts, self.captured = self.captured, {}
        if self.pool is not None:  # a sentence encoder: its output is the pooled sentence
            features["embedding"] = logits = pooled(hidden[-1], mask, self.pool, self.normalize)
            return Outputs(logits, features, attentions, parts, mask)
        return Outputs(out.logits, features, attentions, parts, mask)

    def __reduce__(self) -> tuple:
        # Transformers 5 installs closures as hooks on the first forward, which neither pickle nor
        # cloudpickle can take; a model travels (Ray, deepcopy) as its config and weights instead.
        return (_rebuild, (self.hf.config.to_dict(), self.state_dict(), self.pad_id, self.kdx_expose, self.training, self.lm,
                           self.pool, self.normalize))


def pooled(hidden: Tensor, mask: Tensor, pool: str, normalize: bool) -> Tensor:
    """One vector per sequence from its final states (B, N, D) over its real tokens (sentence-transformers' Pooling:
    the mean over the attention mask, the first token's, or the last real token's), unit length with `normalize`."""
    if pool == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        e = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
    elif pool == "cls":
        e = hidden[:, 0]
    else:
        e = hidden[torch.arange(len(hidden), device=hidden.device), mask.long().sum(1).clamp_min(1) - 1]
    return torch.nn.functional.normalize(e, dim=-1) if normalize else e


_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}


def st_pooling(folder: str) -> tuple[str | None, bool]:
    """(pool, normalize) that a sentence-transformers folder declares: its Pooling module's mode (legacy keys
    `pooling_mode_*_tokens` or sentence-transformers 6's `pooling_mode`) and whether a Normalize module follows;
    (None, False) for a folder without modules.json or pooling. A mode kdx does not compute (max, mean_sqrt_len)
    is a ValueError (`build_model` names the model's key)."""
    modules = Path(folder) / "modules.json"
    if not modules.is_file():
        return None, False
    listed = json.loads(modules.read_text(encoding="utf-8"))
    kinds = {m.get("type", "").rsplit(".", 1)[-1]: m.get("path", "") for m in listed}
    if "Pooling" not in kinds or not (Path(folder) / kinds["Pooling"] / "config.json").is_file():
        return None, "Normalize" in kinds
    cfg = json.loads((Path(folder) / kinds["Pooling"] / "config.json").read_text(encoding="utf-8"))
    modes = [v for k, v in _POOLING.items() if cfg.get(k)] + ([cfg["pooling_mode"]] if isinstance(cfg.get("pooling_mode"), str) else [])
    other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in _POOLING]
    modes = [{"lasttoken": "last"}.get(m, m) for m in modes]
    if other or len(modes) != 1 or modes[0] not in ("mean", "cls", "last"):
        raise ValueError(f"pool: '{folder}' pools its tokens by {', '.join(other + modes) or 'nothing'}; kdx computes one of mean, cls "
                          "or last: set pool (and normalize) to use the encoder with one of those")
    return modes[0], "Normalize" in kinds


def encoder_pooling(opts: HFOptions) -> tuple[str, bool]:
    """How a sentence encoder pools: its options, else its folder's sentence-transformers files, else (config-built) mean."""
    pool, normalize = st_pooling(opts.pretrained) if opts.pretrained else ("mean", False)
    if opts.pool is None and pool is None:
        raise ValueError(f"'{opts.pretrained}' says nothing of how its tokens become a sentence (no sentence-transformers "
                         "modules.json and 1_Pooling/config.json): set pool: mean, cls or last")
    return opts.pool or pool, normalize if opts.normalize is None else opts.normalize


def _auto(lm: bool, encoder: bool = False) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModel if encoder else AutoModelForCausalLM if lm else AutoModelForSequenceClassification


def _rebuild(config: dict, state: dict, pad_id: int, exposed: frozenset, training: bool, lm: bool = False,
             pool: str | None = None, normalize: bool = False) -> HFModel:
    from transformers import AutoConfig
    from transformers.utils import logging

    _offline()
    logging.set_verbosity_error()
    config = dict(config)
    model = HFModel(_auto(lm, pool is not None).from_config(AutoConfig.for_model(config.pop("model_type"), **config)), pad_id, lm,
                    pool, normalize)
    model.load_state_dict(state)
    model.kdx_expose = exposed
    return model.train(training)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces beside local_files_only: never reach the hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a bar per save and load floods a search's log
    from transformers.utils import logging

    logging.disable_progress_bar()


def hf_config(opts: HFOptions, input_shape: TokenShape, num_classes: int) -> Any:
    """The AutoConfig this model is built from, with the data's vocabulary, pad id and labels."""
    from transformers import AutoConfig

    _offline()
    changes = opts.overrides()
    if opts.pretrained:
        cfg = AutoConfig.from_pretrained(opts.pretrained, local_files_only=True)
        if cfg.vocab_size != input_shape.vocab:
            raise ValueError(f"{opts.pretrained} embeds {cfg.vocab_size} token ids, the data's tokenizer has {input_shape.vocab}: "
                             f"tokenize with the model's own (data.tokenizer_path: {opts.pretrained})")
    else:
        model_type = opts.model_type or ("gpt2" if input_shape.lm else "bert")
        try:
            cfg = AutoConfig.for_model(model_type)
        except ValueError:
            raise ValueError(f"model_type '{model_type}' is not a Hugging Face model type (bert, distilbert, roberta, gpt2, llama, ...)") from None
        changes = {"vocab_size": input_shape.vocab, "pad_token_id": input_shape.pad_id, **changes}
    for key, value in changes.items():
        if not hasattr(cfg, key) and key not in SIZE_KEYS:
            raise ValueError(f"config: {type(cfg).__name__} has no key '{key}'")
        setattr(cfg, key, value)
    if "num_attention_heads" in changes and "num_key_value_heads" not in changes and getattr(cfg, "num_key_value_heads", None):
        cfg.num_key_value_heads = cfg.num_attention_heads  # Llama's default (32) would not divide a searched head count
    if not input_shape.lm:
        if num_classes:  # an encoder's (num_classes 0) has no labels
            cfg.num_labels = num_classes
    elif cfg.vocab_size != num_classes:
        raise ValueError(f"the model predicts {cfg.vocab_size} token ids, the data's vocabulary has {num_classes}")
    positions = getattr(cfg, "max_position_embeddings", None)
    if positions is not None and positions < input_shape[0]:
        raise ValueError(f"max_position_embeddings {positions} is shorter than the data's max_len {input_shape[0]}")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"{cfg.num_attention_heads} heads do not divide hidden_size {cfg.hidden_size}")
    return cfg


@register_model("hf", HFOptions, inputs=("tokens", "lm", "embed"))
def hf(opts: HFOptions, input_shape: TokenShape, num_classes: int) -> nn.Module:
    from transformers.utils import logging

    encoder = task_named(input_shape.task).head == "none"  # a sentence encoder: the bare model, pooled
    pool, normalize = encoder_pooling(opts) if encoder else (None, False)
    cfg = hf_config(opts, input_shape, num_classes)
    logging.set_verbosity_error()  # "newly initialized head" is what a new head is; kdx says what it built
    auto = _auto(input_shape.lm, encoder)
    if opts.pretrained and not opts.overrides():
        check_weights(opts.pretrained)
        model = auto.from_pretrained(opts.pretrained, config=cfg, local_files_only=True, ignore_mismatched_sizes=True)
    else:
        model = auto.from_config(cfg)
    return HFModel(model, input_shape.pad_id, input_shape.lm, pool, normalize)


def _vocab(folder: str | Path) -> Any:
    return json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))["model"].get("vocab")


def check_same_tokenizer(folders: dict[str, str], data_tokenizer: str) -> None:
    """Every model folder (config key -> folder) that holds a tokenizer holds the data's: the student
    learns from the teacher's outputs position by position, which means nothing across tokenizers."""
    if not data_tokenizer or not (Path(data_tokenizer) / "tokenizer.json").is_file():
        return  # ids of a built-in task, or a tokenizer kdx cannot read: the vocabulary size is checked at build
    ours = _vocab(data_tokenizer)
    for key, folder in folders.items():
        if (Path(folder) / "tokenizer.json").is_file() and _vocab(folder) != ours:
            raise ConfigError(f"{key}: the tokenizer in '{folder}' is not the data's ('{data_tokenizer}'): cross-tokenizer "
                              f"distillation is not supported; tokenize the data with the model's own (data.tokenizer_path: {folder})")


_HEAD = re.compile(r"ForSequenceClassification$")


def head_labels(folder: str) -> list[str] | None:
    """The names of a folder's trained classification head, in its output order; None when it has no such head
    (a bare encoder such as a sentence-transformers folder: `BertModel`)."""
    cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    if not any(_HEAD.search(a) for a in cfg.get("architectures") or []):
        return None
    names = cfg.get("id2label") or {}
    n = int(cfg.get("num_labels") or len(names) or 2)
    return [str(names.get(str(i), names.get(i, f"LABEL_{i}"))) for i in range(n)]


def _architecture(folder: str) -> str:
    return ", ".join(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")).get("architectures") or ["unknown"])


def label_order(folder: str, data_labels: tuple[str, ...], num_classes: int, mapping: dict[str, str]) -> list[int]:
    """For each of the data's classes, in id order, the output of the folder's head that scores it.

    Matched by name (the head's id2label against the data's label names, through `mapping` where
    given), never by position: a head trained on ("neg", "pos") scores a dataset labelled
    ("pos", "neg") backwards if read by order. Data labelled by bare ids matches a head whose
    labels are those ids or Hugging Face's default names (LABEL_0, ...)."""
    key = "teacher.train"
    head = head_labels(folder)
    if head is None:
        raise ConfigError(f"{key}: false uses the model as it stands, but '{folder}' ({_architecture(folder)}) has no classification "
                          f"head: fine-tune it (teacher.train: true, teacher.epochs: N), which trains a new {num_classes}-label head with its body")
    names = list(data_labels) if data_labels else [str(i) for i in range(num_classes)]
    if len(head) < num_classes:
        raise ConfigError(f"{key}: false, but the head of '{folder}' has {len(head)} labels and the data {num_classes}: fine-tune it "
                          "(teacher.train: true, teacher.epochs: N)")
    find = {h: i for i, h in enumerate(head)} | ({f"LABEL_{i}": i for i in range(len(head))} if not data_labels else {})
    order, missing = [], []
    for name in names:
        target = mapping.get(name, name)
        j = find.get(target, find.get(f"LABEL_{target}") if not data_labels else None)
        (order if j is not None else missing).append(j if j is not None else name)
    if missing:
        raise ConfigError(f"{key}: false, but the head of '{folder}' has no label {missing[0]!r} (its labels: {', '.join(head[:8])}"
                          f"{' ...' if len(head) > 8 else ''}): map the data's labels to its own (teacher.labels: {{{missing[0]}: HEAD_LABEL}}), "
                          "or fine-tune it (teacher.train: true)")
    if len(set(order)) != len(order):
        raise ConfigError(f"teacher.labels: two data labels map to one label of the head of '{folder}'")
    return order


def load_as_is(opts: HFOptions, input_shape: TokenShape, num_classes: int, data_labels: tuple[str, ...], mapping: dict[str, str]) -> HFModel:
    """A Hugging Face folder's model exactly as saved (a teacher used as it stands). A classifier's head is
    cut to the data's classes in the data's order (`label_order`), so its logits line up with the data's
    labels; a language model is checked against the data's vocabulary."""
    from transformers import AutoConfig
    from transformers.utils import logging

    _offline()
    logging.set_verbosity_error()
    check_weights(opts.pretrained, "teacher.pretrained")
    if opts.overrides():
        raise ConfigError(f"teacher.train: false uses '{opts.pretrained}' as saved; size keys ({', '.join(opts.overrides())}) change it")
    cfg = AutoConfig.from_pretrained(opts.pretrained, local_files_only=True)
    if cfg.vocab_size != input_shape.vocab:
        raise ConfigError(f"teacher.pretrained: '{opts.pretrained}' embeds {cfg.vocab_size} token ids, the data's tokenizer has "
                          f"{input_shape.vocab}: tokenize with the model's own (data.tokenizer_path: {opts.pretrained})")
    order = None if input_shape.lm else label_order(opts.pretrained, data_labels, num_classes, mapping)
    model = _auto(input_shape.lm).from_pretrained(opts.pretrained, local_files_only=True)
    if order is not None:
        _cut_head(model, order, list(data_labels) or [str(i) for i in range(num_classes)])
    return HFModel(model, input_shape.pad_id, input_shape.lm)


@torch.no_grad()
def _cut_head(model: nn.Module, order: list[int], names: list[str]) -> None:
    """Keep the head's output rows `order`, in that order: the last Linear whose outputs are the labels."""
    n = model.config.num_labels
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == n]
    if not found:
        raise ConfigError(f"teacher.train: false, but kdx finds no output layer of {n} labels in {type(model).__name__}")
    name, old = found[-1]
    new = nn.Linear(old.in_features, len(order), bias=old.bias is not None, dtype=old.weight.dtype)
    new.weight.copy_(old.weight[order])
    if old.bias is not None:
        new.bias.copy_(old.bias[order])
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], new)
    model.config.num_labels = len(order)
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
