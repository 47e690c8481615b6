"""Language modelling: next-token prediction, scored by cross-entropy.

y is (N, L) like the ids: y[:, t] = x[:, t + 1], IGNORE where no next token
is (`distill.datasets.next_token_labels`); a model's logits are (B, L, vocab).
Models are picked on validation cross-entropy and compared in nats per
predicted test token; val_acc is next-token accuracy, which is not what a
language model is scored by. The textbook recipes: pure distillation at T 1
(GKD trains at T = 1 whatever the config says), and a softer teacher in an
even mix with the labels; a 20-degree temperature flattens a vocabulary to
noise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import DataError
from . import Score, Task, register_task

IGNORE = -100  # a language model's label at positions with no next token (padding, the last): torch's ignore_index


@register_task
class LanguageModel(Task):
    name = "lm"
    score = Score("val_loss", "test_loss", "min", "nats per predicted test token", 1.0, "nats/token", "validation cross-entropy")
    words = "language modelling"
    model_words = "a language model"
    objectives = {"val_ppl": "min"}  # a language model is scored by perplexity
    objective_names = ("val_ppl", "val_loss", "params", "latency_ms", "test_agreement", "test_kl")
    refused = {"val_acc": "val_acc is next-token accuracy"}
    shown_test = "test_ppl"
    model_input = "lm"
    recipes = ((1.0, 1.0, 0.0), (2.0, 0.5, 0.5))
    temperatures = (1.0, 4.0)
    controls = ("same_recipe",)  # shuffling non-target classes has no next-token meaning: the same-recipe twin stays
    cache_batch = 64  # a row is (L, vocab) logits

    def kd_loss(self, mix: dict[str, float], spaced: list[str]) -> str:
        """The next-token loss (token_kd, rkl, gjsd, skew_kl) the base mix weights, else the first the space weights."""
        from ..losses import next_token_losses

        names = next_token_losses()
        weighted = [n for n, w in mix.items() if w > 0 and n in names]
        return (weighted + [n for n in spaced if n in names] + ["token_kd"])[0]

    def check_labels(self, arrays: Any) -> tuple[np.ndarray, np.ndarray, int]:
        """(N, L) labels like the ids, ids inside the vocabulary, and every sequence at least two
        tokens long (one to read, one to predict); the output count is the vocabulary."""
        vocab = arrays.tokens.vocab_size
        out = []
        for split, x, y in (("train", arrays.x_train, arrays.y_train), ("test", arrays.x_test, arrays.y_test)):
            x, y = np.asarray(x), np.asarray(y, dtype=np.int64)
            if len(x) == 0:
                raise DataError(f"data: the {split} split is empty")
            if y.shape != x.shape:
                raise DataError(f"data: y_{split} must be the next-token labels, shaped like x_{split} {x.shape}, got {y.shape}")
            if x.min() < 0 or x.max() >= vocab:
                raise DataError(f"data: x_{split} holds ids outside the vocabulary 0..{vocab - 1} ({x.min()}..{x.max()})")
            short = np.flatnonzero((y != IGNORE).sum(1) == 0)
            if len(short):
                raise DataError(f"data: {split} sequence {short[0]} is shorter than two tokens: a language model reads one and predicts the next "
                                f"({len(short)} such)")
            out.append(y)
        return out[0], out[1], vocab

    def reference(self, data: Any) -> dict[str, float]:
        """A model that learned nothing predicts the uniform distribution over the vocabulary."""
        return {"val_acc": 1.0 / data.num_classes, "val_loss": math.log(data.num_classes), "val_ppl": float(data.num_classes)}

    def chance_warning(self, val_acc: float, val_loss: float | None, data: Any) -> str | None:
        uniform = math.log(data.num_classes)
        if val_loss is not None and val_loss >= uniform - 0.01:
            return (f"WARNING: the teacher's validation cross-entropy {val_loss:.3f} nats/token is no better than uniform over "
                    f"its {data.num_classes} ids ({uniform:.3f}): nothing to distil (train it longer or use another teacher)")
        return None

    head = "vocabulary"

    def final_metrics(self, result: Any, data: Any = None) -> dict[str, float]:
        return {"val_loss": result.val_loss, "val_ppl": math.exp(result.val_loss), "test_loss": result.test_loss, "test_ppl": result.test_ppl}

    def start_metrics(self, at_start: tuple[float, float, float, float]) -> dict[str, float]:
        return super().start_metrics(at_start) | {"start_test_loss": at_start[3]}

    def result_columns(self) -> tuple[str, ...]:
        return ("test nats/token", "test_ppl")

    def result_cells(self, result: Any) -> tuple[str, ...]:
        return (f"{result.test_loss:.4f}", f"{math.exp(result.test_loss):.3f}")

    def start_text(self, at_start: tuple[float, float, float, float]) -> str:
        return f"test nats/token {at_start[3]:.4f}"  # read on test cross-entropy, as it is scored

    def gains(self, student: Any, twin: Any) -> dict[str, float]:
        """Nats per token, positive when the student is better, beside the accuracy difference."""
        return super().gains(student, twin) | {"gain_nats": twin.test_loss - student.test_loss}

    def gain_line(self, gains: dict[str, float], what: str, start: bool) -> str:
        line = f"\ndistillation gain ({what} - student, test cross-entropy): {gains['gain_nats']:+.4f} nats/token"
        if start:
            line += f"\nwhat the start bought (random-start twin - same-start twin, test cross-entropy): {gains['start_gain_nats']:+.4f} nats/token"
        return line
