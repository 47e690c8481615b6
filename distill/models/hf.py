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
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, check
from . import Outputs, TokenShape, register_model

__all__ = ["HFOptions", "HFModel", "SIZE_KEYS", "check_local", "check_same_tokenizer"]

SIZE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")


def check_local(path: str, key: str = "pretrained") -> None:
    """A hub name or a missing folder is one line saying where the files go."""
    if not Path(path).is_dir():
        hint = "" if Path(path).is_absolute() or path.startswith(".") else (
            " (kdx downloads nothing: save the model once with save_pretrained, or "
            f"`huggingface-cli download {path} --local-dir DIR`, and give that folder)")
        check(False, key, f"no local folder '{path}'{hint}")
    check((Path(path) / "config.json").is_file(), key, f"'{path}' has no config.json: not a save_pretrained folder")


@dataclass(frozen=True)
class HFOptions:
    pretrained: str | None = None  # a local save_pretrained folder (config, weights, and its tokenizer if any)
    model_type: str | None = None  # AutoConfig.for_model's name, when no folder is given; None: bert, or gpt2 for a language model
    num_hidden_layers: int | None = None  # None: the folder's, or the model type's default (BERT-base: 12)
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    intermediate_size: int | None = None
    config: dict[str, Any] = field(default_factory=dict)  # any other AutoConfig key (hidden_dropout_prob, ...)

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
    """A Hugging Face classifier on token ids, returning `Outputs`."""

    def __init__(self, hf: nn.Module, pad_id: int, lm: bool = False):
        super().__init__()
        self.hf, self.pad_id, self.heads, self.lm = hf, pad_id, int(hf.config.num_attention_heads), lm
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
        return Outputs(out.logits, features, attentions, parts, mask)

    def __reduce__(self) -> tuple:
        # Transformers 5 installs closures as hooks on the first forward, which neither pickle nor
        # cloudpickle can take; a model travels (Ray, deepcopy) as its config and weights instead.
        return (_rebuild, (self.hf.config.to_dict(), self.state_dict(), self.pad_id, self.kdx_expose, self.training, self.lm))


def _auto(lm: bool) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForCausalLM if lm else AutoModelForSequenceClassification


def _rebuild(config: dict, state: dict, pad_id: int, exposed: frozenset, training: bool, lm: bool = False) -> HFModel:
    from transformers import AutoConfig
    from transformers.utils import logging

    _offline()
    logging.set_verbosity_error()
    config = dict(config)
    model = HFModel(_auto(lm).from_config(AutoConfig.for_model(config.pop("model_type"), **config)), pad_id, lm)
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
        cfg.num_labels = num_classes
    elif cfg.vocab_size != num_classes:
        raise ValueError(f"the model predicts {cfg.vocab_size} token ids, the data's vocabulary has {num_classes}")
    positions = getattr(cfg, "max_position_embeddings", None)
    if positions is not None and positions < input_shape[0]:
        raise ValueError(f"max_position_embeddings {positions} is shorter than the data's max_len {input_shape[0]}")
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ValueError(f"{cfg.num_attention_heads} heads do not divide hidden_size {cfg.hidden_size}")
    return cfg


@register_model("hf", HFOptions, inputs=("tokens", "lm"))
def hf(opts: HFOptions, input_shape: TokenShape, num_classes: int) -> nn.Module:
    from transformers.utils import logging

    cfg = hf_config(opts, input_shape, num_classes)
    logging.set_verbosity_error()  # "newly initialized head" is what a new head is; kdx says what it built
    auto = _auto(input_shape.lm)
    if opts.pretrained and not opts.overrides():
        model = auto.from_pretrained(opts.pretrained, config=cfg, local_files_only=True, ignore_mismatched_sizes=True)
    else:
        model = auto.from_config(cfg)
    return HFModel(model, input_shape.pad_id, input_shape.lm)


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
