"""How a trained model scores: accuracy and cross-entropy on labels (`evaluate`), and agreement
with its teacher (`fidelity`). Classifiers score per row; a language model, with next-token labels
(N, L), per predicted token, positions labelled IGNORE taking no part."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .data import IGNORE
from .models import as_outputs

__all__ = ["evaluate", "fidelity"]


def _batch_rows(x: Tensor, y: Tensor, batch_size: int, vocab_guess: int = 1) -> int:
    """Rows per evaluation batch: a language model's logits are (rows, L, vocab), so its batches
    are sized to about 2^24 logits (64 MiB in float32) rather than by rows."""
    if y.dim() == 1:
        return batch_size
    return max(1, min(batch_size, 2**24 // max(1, y.shape[1] * vocab_guess)))


def _vocab_of(model: nn.Module, x: Tensor, y: Tensor) -> int:
    if y.dim() == 1:
        return 1
    with torch.no_grad():
        return int(as_outputs(model(x[:1].to(next(model.parameters()).device))).logits.shape[-1])


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """(accuracy, mean cross-entropy in nats) of `model` on (x, y), in eval mode. Next-token labels
    (N, L) score a language model per predicted token: positions labelled IGNORE take no part."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = _batch_rows(x, y, batch_size, _vocab_of(model, x, y))
    correct, loss, count = 0, 0.0, 0
    for start in range(0, len(x), rows):
        xb, yb = x[start : start + rows].to(device), y[start : start + rows].to(device)
        logits = as_outputs(model(xb)).logits.float()
        if yb.dim() == 2:  # next tokens: flatten the positions
            logits, yb = logits.flatten(0, 1), yb.flatten()
        valid = yb != IGNORE
        correct += int(((logits.argmax(-1) == yb) & valid).sum())
        loss += float(nn.functional.cross_entropy(logits, yb, reduction="sum", ignore_index=IGNORE))
        count += int(valid.sum())
    model.train(was_training)
    return correct / max(count, 1), loss / max(count, 1)


@torch.no_grad()
def fidelity(student: nn.Module, teacher: nn.Module, x: Tensor, batch_size: int = 2048, y: Tensor | None = None) -> tuple[float, float]:
    """(top-1 agreement, mean KL(teacher || student) at T = 1) on `x`: how closely the
    student matches its teacher, which is not how accurate it is (Stanton et al. 2021,
    "Does knowledge distillation really work?"). 1.0 and 0.0 for the teacher itself.
    A language model's, with its next-token labels `y`, per predicted token (IGNORE skipped)."""
    s_was, t_was = student.training, teacher.training
    student.eval(), teacher.eval()
    device = next(student.parameters()).device
    home = next(teacher.parameters(), torch.empty(0)).device  # the shared teacher goes back where it was
    teacher.to(device)
    rows = batch_size if y is None else _batch_rows(x, y, batch_size, _vocab_of(student, x, y))
    agree, kl, count = 0, 0.0, 0
    for start in range(0, len(x), rows):
        xb = x[start : start + rows].to(device)
        s = torch.log_softmax(as_outputs(student(xb)).logits.float(), -1)
        t = torch.log_softmax(as_outputs(teacher(xb)).logits.float(), -1)
        valid = torch.ones(s.shape[:-1], dtype=torch.bool, device=device) if y is None else y[start : start + rows].to(device) != IGNORE
        agree += int(((s.argmax(-1) == t.argmax(-1)) & valid).sum())
        kl += float(((t.exp() * (t - s)).sum(-1) * valid).sum())
        count += int(valid.sum())
    student.train(s_was), teacher.train(t_was)
    teacher.to(home)
    return agree / max(count, 1), max(0.0, kl / max(count, 1))
