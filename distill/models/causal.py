"""A language-model student as a Hugging Face folder: `save_causal_lm(model, folder)`.

kdx's causal transformer is GPT-2's architecture (distill/models/transformer.py), so it is
written as a `GPT2LMHeadModel` with the same weights: wte/wpe are the embedding and the
learned positions, each block's `qkv` is GPT-2's `c_attn` (a Conv1D holds the transposed
weight; q, k, v in the same order, heads split the same way), the MLP is `c_fc` / `c_proj`
with exact GELU (`activation_function: gelu`, not GPT-2's default tanh `gelu_new`), no
dropout, and an untied, bias-free `lm_head`. A Hugging Face student (`family: hf`) is
saved as it is. Either way the folder loads with `AutoModelForCausalLM.from_pretrained`
and gives the logits kdx trained, which `save_causal_lm` checks before it returns.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import as_outputs

__all__ = ["to_gpt2", "save_causal_lm"]


def to_gpt2(model: nn.Module, pad_id: int, eos_id: int | None = None) -> nn.Module:
    """kdx's causal transformer as an equal `GPT2LMHeadModel`, in eval mode (`eos_id`: where
    `generate` stops; GPT-2's own 50256 is no id of a kdx vocabulary)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    blocks = model.blocks
    dim, vocab, length = model.embed.weight.shape[1], model.embed.weight.shape[0], model.pos.shape[1]
    cfg = GPT2Config(vocab_size=vocab, n_positions=length, n_embd=dim, n_layer=len(blocks), n_head=blocks[0].attn.heads,
                     n_inner=blocks[0].mlp[0].out_features, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, layer_norm_epsilon=blocks[0].norm1.eps, tie_word_embeddings=False, pad_token_id=pad_id,
                     bos_token_id=eos_id, eos_token_id=eos_id)
    gpt = GPT2LMHeadModel(cfg)
    linear = lambda conv, lin: (conv.weight.copy_(lin.weight.T), conv.bias.copy_(lin.bias))  # noqa: E731  (Conv1D is x @ W + b)
    norm = lambda dst, src: (dst.weight.copy_(src.weight), dst.bias.copy_(src.bias))  # noqa: E731
    with torch.no_grad():
        gpt.transformer.wte.weight.copy_(model.embed.weight)
        gpt.transformer.wpe.weight.copy_(model.pos[0])
        for ours, theirs in zip(blocks, gpt.transformer.h):
            norm(theirs.ln_1, ours.norm1)
            linear(theirs.attn.c_attn, ours.attn.qkv)
            linear(theirs.attn.c_proj, ours.attn.proj)
            norm(theirs.ln_2, ours.norm2)
            linear(theirs.mlp.c_fc, ours.mlp[0])
            linear(theirs.mlp.c_proj, ours.mlp[2])
        norm(gpt.transformer.ln_f, model.norm)
        gpt.lm_head.weight.copy_(model.head.weight)
    return gpt.eval()


def save_causal_lm(model: nn.Module, folder: str | Path, pad_id: int, sample: torch.Tensor, tokenizer: object | None = None,
                   eos_id: int | None = None) -> Path:
    """Write `model` (kdx's causal transformer or a `family: hf` causal LM) to `folder` as a
    save_pretrained folder (and `tokenizer` beside it), reload it with AutoModelForCausalLM and
    check that its logits on `sample` (a batch of ids, padded at the tail) are the model's at every
    real position (a padded position predicts nothing: Hugging Face masks its keys, kdx does not
    need to); a mismatch is an error."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    model = model.cpu().eval()
    hf = model.hf if hasattr(model, "hf") else to_gpt2(model, pad_id, eos_id)
    hf.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    back = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        ours = as_outputs(model(sample)).logits
        theirs = back(input_ids=sample, attention_mask=(sample != pad_id).long()).logits
    gap = float((ours - theirs).abs().amax(-1)[sample != pad_id].max())
    if gap > 1e-4 * max(1.0, float(ours.abs().max())):
        raise RuntimeError(f"the exported causal LM in {folder} does not reproduce the model's logits (max gap {gap:.2e})")
    return folder
