"""Sentence embedding: a model maps a text to one vector, and is judged by how well it keeps its
teacher's neighbourhoods.

A model's logits are its pooled, unnormalised sentence embedding (B, D); nothing is classified.
Users of a sentence encoder judge a smaller one by the teacher's similarity structure, never by
the loss (sentence-transformers #831), so a run is scored on held-out sentences by:

- Spearman's rho between the student's and the teacher's cosine similarities over every pair of
  the first `PAIRS_OF` held-out sentences (`val_spearman`, the default objective, and
  `test_spearman`): 1 when the student ranks every pair as its teacher does, whatever its width;
- recall@10 (`test_recall10`): the share of each sentence's 10 nearest neighbours under the
  teacher (cosine, itself excluded) that the student also puts in its 10 nearest;
- the mean squared difference of the two cosine-similarity matrices (`val_sim_mse`,
  `test_sim_mse`), which needs no common width;
- with a gold similarity set (`data.pairs`, STS-style), Spearman's rho between the model's cosine
  similarity of each pair and its human score (`test_gold_spearman`): the one score here that
  does not read the teacher, logged for the teacher too.

The reference is the teacher's own embeddings of the validation and test splits: a dataset of
this task carries row ids as labels, and `with_teacher` replaces them by those embeddings
(L2-normalised, float32) once the teacher is known. A run without them (the teacher's own
training) scores NaN and keeps its last epoch.

A twin learns from the same text without the teacher: unsupervised SimCSE (Gao et al. 2021,
`distill/losses/simcse.py`), same budget, same start.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError
from . import Score, Task, register_task

PAIRS_OF = 512  # 130,816 pairs: Spearman's rho to about 0.003 (1/sqrt(n)), cheap on a CPU
NEIGHBOURS_OF = 1000  # recall@10 over at most this many held-out sentences
K = 10


@torch.no_grad()
def embed(model: torch.nn.Module, x: Any, batch_size: int = 256) -> Tensor:
    """L2-normalised embeddings of `x` (N, D), float32 on the CPU, the model in eval mode."""
    from ..models import as_outputs

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [F.normalize(as_outputs(model(x[i : i + batch_size].to(device))).logits.float(), dim=-1).cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out)


def _upper(e: Tensor) -> Tensor:
    """The cosine similarities of every pair i < j of unit rows."""
    sims = e @ e.T
    i, j = torch.triu_indices(len(e), len(e), offset=1)
    return sims[i, j]


def _ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1, tied values sharing their mean rank (a repeated sentence makes every one of its pairs tie)."""
    values, inverse, counts = torch.unique(x.double(), return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    return (first.double() + (counts.double() - 1) / 2.0)[inverse]


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rho: Pearson's r of the ranks, ties at their mean rank (scipy's spearmanr)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()).clamp_min(1e-12))


def recall_at_k(student: Tensor, teacher: Tensor, k: int = K) -> float:
    """Mean share of each row's k nearest rows under `teacher` (itself excluded) found in its k nearest under `student`."""
    n = len(student)
    k = min(k, n - 1)
    eye = torch.eye(n, dtype=torch.bool)
    near_t = (teacher @ teacher.T).masked_fill(eye, -2.0).topk(k, dim=1).indices
    near_s = (student @ student.T).masked_fill(eye, -2.0).topk(k, dim=1).indices
    hits = (near_s.unsqueeze(2) == near_t.unsqueeze(1)).any(2).sum(1)
    return float(hits.float().mean() / k)


def is_reference(y: Tensor) -> bool:
    return y.dim() == 2 and y.is_floating_point()


@register_task
class Embed(Task):
    name = "embed"
    score = Score("val_spearman", "test_spearman", "max", "points of Spearman's rho with the teacher's similarities (x100)", 100.0,
                  "points", "validation Spearman with the teacher")
    words = "sentence embedding"
    model_words = "a sentence encoder"
    objectives = {"val_spearman": "max"}
    objective_names = ("val_spearman", "params", "latency_ms")
    refused = {"val_acc": "there are no classes", "val_ppl": "nothing predicts tokens", "val_loss": "val_loss is no loss of the task"}
    shown_test = "test_spearman"
    quality_names = ("val_spearman", "test_spearman")
    loss_names = ("val_sim_mse", "test_sim_mse")
    model_input = "embed"
    head = "none"
    labels_loss = "simcse"
    twin_words = "from the text alone (unsupervised SimCSE)"
    recipes = ()  # no textbook KD recipe of this task's shape (temperature, KD weight, ce weight): the tuned gain's KD keeps its own mix
    temperatures = (0.02, 0.2)  # an in-batch similarity softmax's, sim_kl's
    controls = ()
    scored_by_teacher = True
    teacher_policy = "last"  # a teacher trained here has no reference to be picked on

    def teacher_recipe(self, recipe: str) -> str:
        return recipe.replace("best validation epoch kept", "unsupervised SimCSE, last epoch kept (no reference to pick on)")

    def kd_loss(self, mix: dict[str, float], spaced: list[str]) -> str:
        from ..losses import LOSSES

        names = [n for n in LOSSES.names() if n != self.labels_loss and self.fits(n)]
        return ([n for n, w in mix.items() if w > 0 and n in names] + [n for n in spaced if n in names] + ["emb_mse"])[0]

    def check_labels(self, arrays: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """Row ids (the teacher's embeddings replace them, `with_teacher`); ids inside the vocabulary."""
        vocab = arrays.tokens.vocab_size
        for split, x in (("train", arrays.x_train), ("test", arrays.x_test)):
            x = np.asarray(x)
            if len(x) == 0:
                raise DataError(f"data: the {split} split is empty")
            if x.min() < 0 or x.max() >= vocab:
                raise DataError(f"data: x_{split} holds ids outside the vocabulary 0..{vocab - 1} ({x.min()}..{x.max()})")
        return np.arange(len(arrays.x_train), dtype=np.int64), np.arange(len(arrays.x_test), dtype=np.int64), 0

    def with_teacher(self, data: Any, teacher: torch.nn.Module) -> Any:
        """`data` whose validation and test labels are the teacher's unit embeddings: what every run is scored against."""
        if is_reference(data.y_val):
            return data
        return dataclasses.replace(data, y_val=embed(teacher, data.x_val), y_test=embed(teacher, data.x_test))

    def check_batch(self, n: int, batch_size: int) -> None:
        if n < batch_size:
            raise DataError(f"data: {n} training sentences, fewer than a batch of {batch_size} (train.batch_size, or teacher.batch_size "
                            "for a teacher trained here): in-batch losses (SimCSE, sim_kl, rkd) compare a sentence with the rest of its "
                            "batch; add text or lower the batch size")

    def evaluate(self, model: torch.nn.Module, x: Any, y: Tensor) -> tuple[float, float]:
        """(Spearman with the teacher, similarity MSE) over the first PAIRS_OF sentences; NaN without a reference."""
        if not is_reference(y):
            return math.nan, math.nan
        n = min(PAIRS_OF, len(x))
        s, t = _upper(embed(model, x[:n])), _upper(y[:n].float())
        return spearman(s, t), float(((s - t) ** 2).mean())

    def reference(self, data: Any) -> dict[str, float]:
        return {"val_spearman": 0.0}  # unrelated similarities

    def chance_warning(self, val_acc: float, val_loss: float | None, data: Any) -> str | None:
        if not is_reference(data.y_val) or len(data.y_val) < 3:
            return None
        spread = float(_upper(data.y_val[:PAIRS_OF].float()).std())
        if spread < 1e-3:
            return (f"WARNING: the teacher's embeddings of the validation sentences are all alike (cosine std {spread:.2g}): "
                    "nothing to distil (train it longer or use another teacher)")
        return None

    def final_metrics(self, result: Any, data: Any = None) -> dict[str, float]:
        out = dict(zip(self.loss_names, (result.val_loss, result.test_loss)))
        return out | (self.model_metrics(result.model, data) if data is not None else {})

    def model_metrics(self, model: torch.nn.Module, data: Any) -> dict[str, float]:
        """recall@10 of the teacher's neighbours (where the teacher is known), and the gold Spearman (where `data.pairs` is)."""
        out = {}
        if is_reference(data.y_test):
            n = min(NEIGHBOURS_OF, len(data.x_test))
            out["test_recall10"] = recall_at_k(embed(model, data.x_test[:n]), data.y_test[:n].float())
        if data.pairs is not None:
            p = data.pairs
            out["test_gold_spearman"] = spearman((embed(model, p.x1) * embed(model, p.x2)).sum(1), p.score)
        return out

    def floor(self, config: Any, data: Any, log: Any) -> Any:
        """model2vec's static table distilled from the teacher's folder (distill/static.py), where the teacher is a
        sentence-transformers folder used as it stands and the package is installed."""
        from ..static import INSTALL, have_model2vec, model2vec_floor

        t = config.teacher
        if t.model.family != "hf" or not t.model.options.pretrained or t.settings["train"]:
            return None  # a teacher kdx trains has no folder model2vec could read
        if not have_model2vec():
            log(f"note: no static floor on the frontier: model2vec is not installed ({INSTALL})")
            return None
        from ..text import load_tokenizer

        floor = model2vec_floor(t.model.options.pretrained, load_tokenizer(data.tokens.tokenizer, None))
        log(f"static floor: {floor.words}, {floor.params:,} params, distilled in {floor.seconds:.0f} s "
            f"({floor.mapped:.0%} of the data tokenizer's tokens in its vocabulary)")
        return floor

    def metrics_text(self, metrics: dict[str, float]) -> str:
        return f", gold Spearman {metrics['test_gold_spearman']:.4f} (data.pairs)" if "test_gold_spearman" in metrics else ""

    def result_lines(self, result: dict) -> str:
        """The gold Spearman of every model where `data.pairs` gave a gold similarity set."""
        names = {"teacher": "teacher", "student": "student", "twin": "same-start twin" if result.get("random_twin") else "twin",
                 "random_twin": "random-start twin"}
        found = [(words, (result[key].get("metrics", {}) if key == "teacher" else result[key]).get("test_gold_spearman"))
                 for key, words in names.items() if result.get(key)]
        found = [(words, v) for words, v in found if v is not None]
        if not found:
            return ""
        return (f"\ngold similarity (Spearman of each model's cosine similarities with the scores of data.pairs, {result['data']['pairs']} "
                f"pairs; the one score here that does not read the teacher): " + ", ".join(f"{w} {v:.4f}" for w, v in found))

    def start_metrics(self, at_start: tuple[float, float, float, float]) -> dict[str, float]:
        return {"start_val_spearman": at_start[0], "start_test_spearman": at_start[2]}

    def start_text(self, at_start: tuple[float, float, float, float]) -> str:
        return f"val_spearman {at_start[0]:.4f}, test_spearman {at_start[2]:.4f}"

    def gains(self, student: Any, twin: Any) -> dict[str, float]:
        return {"gain": student.test_acc - twin.test_acc}

    def gain_line(self, gains: dict[str, float], what: str, start: bool) -> str:
        line = f"\ndistillation gain (student - {what}, test Spearman with the teacher): {100 * gains['gain']:+.2f} points"
        if start:
            line += f"\nwhat the start bought (same-start twin - random-start twin, test Spearman): {100 * gains['start_gain']:+.2f} points"
        return line
