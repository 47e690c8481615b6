"""One distillation run: `run(config, data, teacher, report=callback) -> RunResult`.

What the student learns from is `teacher.outputs` in the config, and the
`Teacher` carries it:
- cached: the frozen module's outputs over the training set (full-length
  tensors, the fast path: the teacher never runs during training). Exact only
  without augmentation, which the config enforces. What each loss reads of
  them is prepared once per run (`distill.losses.teacher_side`; KD: the soft
  targets at its temperature), so a step computes only the student's side.
- online: the module runs on every (augmented) batch, in eval mode, without
  gradients, on the trial's device (under bf16 autocast when train.bf16).
- views: K stored crop/flip views per sample and the teacher's outputs on each
  (`TeacherViews`); every epoch each sample is shown one of its views, picked
  by the run seed, and the student sees exactly that view (FKD). The losses'
  sides are prepared once per epoch, from that epoch's views.
A Teacher without outputs runs online whatever the config says.

With cached outputs or views, when every term of the mix is a `SoftTerm` (CE and
KD, without the dark-knowledge control), a step computes all of them in one
soft-target cross-entropy (`fuse_terms`): one graph of a few nodes instead of
one per term, the gradient and the logged terms unchanged.

Batches are slices of in-memory tensors, or rows read from a memory-mapped
file (`distill.files.Mapped`). Augmentation (`data.augment`) is drawn per batch
on the device from the run seed. Every loss term is summed into one epoch
figure, and the run stops with `TrainingDiverged` as soon as an epoch's loss
is not finite.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .augment import Augmenter, View, apply_view
from .cache import fingerprint
from .config import RunConfig, TrainConfig
from .data import Dataset
from .errors import ConfigError, TrainingDiverged
from .init import init_from_teacher
from .prune import prune_from_teacher, teacher_importance
from .losses import LOSSES, TeacherSide, build_loss, soft_term, teacher_reads, teacher_side
from .metrics import evaluate, fidelity
from .models import Outputs, as_outputs, count_params, expose, measure_latency
from .on_policy import on_policy_batches, sample_continuations

__all__ = ["Teacher", "TeacherViews", "Epoch", "RunResult", "run", "evaluate", "fidelity", "resolve_device", "slice_outputs", "outputs_to",
           "build_losses", "FusedTerms", "fuse_terms"]


@dataclass(frozen=True, eq=False)
class TeacherViews:
    """K stored crop/flip views of each of the N training samples and the teacher's outputs on them."""

    offsets: Tensor  # (K, N, S) window starts, as `distill.augment.View`
    flip: Tensor  # (K, N)
    outputs: Outputs  # every tensor (K, N, ...)
    crop: int

    @property
    def count(self) -> int:
        return self.offsets.shape[0]

    def to(self, device: torch.device) -> "TeacherViews":
        return TeacherViews(self.offsets.to(device), self.flip.to(device), outputs_to(self.outputs, device), self.crop)

    def pick(self, which: Tensor, rows: Tensor) -> tuple[View, Outputs]:
        """Sample rows[i]'s view which[i]: the view to replay and the teacher's outputs on it."""
        at = (which, rows)
        return View(self.offsets[at], self.flip[at]), slice_outputs(self.outputs, at)


@dataclass(frozen=True)
class Teacher:
    """What a student learns from: the frozen module, what is known of it (a
    `distill.teacher.TeacherInfo`, None for a chain's assistant), and its outputs
    over the training set or its stored views (neither: the module runs on every batch)."""

    module: nn.Module
    info: Any = None
    outputs: Outputs | None = None
    views: TeacherViews | None = None
    data: Any = None  # the `Dataset` as runs are scored against this teacher (`Task.with_teacher`), where it was made


@dataclass(frozen=True)
class Epoch:
    epoch: int
    train_loss: float  # the weighted sum of the terms
    losses: dict[str, float]  # each term's mean, unweighted
    val_acc: float  # a language model: next-token accuracy over the predicted tokens
    val_loss: float  # mean cross-entropy, nats (a language model: per predicted token)
    # Constants of the architecture, on every epoch so that any epoch's report is a
    # complete result: a scheduler may stop the run after it.
    params: int
    latency_ms: float
    val_ppl: float | None = None  # a language model only: exp(val_loss)


Report = Callable[[Epoch], None]


@dataclass
class RunResult:
    val_acc: float
    test_acc: float
    params: int
    latency_ms: float
    epochs: int
    best_epoch: int
    history: list[Epoch]
    model: nn.Module = field(repr=False)
    seconds: float = 0.0  # wall time of the run, build to test evaluation (where a trial's time goes)
    test_loss: float = math.nan  # mean test cross-entropy, nats (a language model: per predicted token)
    val_loss: float = math.nan  # of the kept weights (best_val: the best epoch's)
    at_start: tuple[float, float, float, float] | None = None  # a start from the teacher, before training: val acc, loss, test acc, loss

    @property
    def test_ppl(self) -> float:
        return math.exp(self.test_loss)

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("val_acc", "test_acc", "params", "latency_ms", "epochs", "best_epoch", "test_loss", "val_loss")}
        if self.at_start is not None:
            out |= dict(zip(("start_val_acc", "start_val_loss", "start_test_acc", "start_test_loss"), self.at_start))
        return out | {"history": [dataclasses.asdict(e) for e in self.history]}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def slice_outputs(out: Outputs, idx: Tensor | slice | tuple) -> Outputs:
    return Outputs(
        out.logits[idx],
        {k: v[idx] for k, v in out.features.items()},
        {k: v[idx] for k, v in out.attentions.items()},
        {k: v[idx] for k, v in out.parts.items()},
        None if out.mask is None else out.mask[idx],
    )


def _rows(side: TeacherSide, idx: Tensor | slice) -> TeacherSide:
    """Rows `idx` of a loss's teacher side (`distill.losses.teacher_side`)."""
    if side is None:
        return None
    if isinstance(side, Outputs):
        return slice_outputs(side, idx)
    return type(side)._make(t[idx] for t in side)


def outputs_to(out: Outputs, device: torch.device) -> Outputs:
    return Outputs(
        out.logits.to(device),
        {k: v.to(device) for k, v in out.features.items()},
        {k: v.to(device) for k, v in out.attentions.items()},
        {k: v.to(device) for k, v in out.parts.items()},
        None if out.mask is None else out.mask.to(device),
    )


def build_losses(config: RunConfig, student_sample: Outputs, teacher_sample: Outputs | None) -> dict[str, nn.Module]:
    """The loss modules of every term with a positive weight."""
    terms = {}
    for name, weight in config.mix.items():
        if weight > 0:
            if name != config.task.labels_loss and teacher_sample is None:
                raise ConfigError(f"mix.{name}: needs a teacher, but none was given")
            options = config.losses.get(name) or LOSSES.get(name, f"mix.{name}").options()
            terms[name] = build_loss(name, options, student_sample, teacher_sample)
    return terms


class FusedTerms(NamedTuple):
    """The K terms of a mix as one soft-target cross-entropy over N samples (`fuse_terms`)."""

    targets: Tensor  # (N, C, K): term k's weights in [..., k]
    inverse_t: Tensor  # (K,): 1 / term k's temperature
    const: Tensor  # (K,): the mean over the N samples of term k's constant


def fuse_terms(losses: list[nn.Module], sides: list[TeacherSide], target: Tensor, num_classes: int) -> FusedTerms | None:
    """Every term as a `SoftTerm` on these rows, stacked, or None if one of them is not one.

    With z the student's logits, F.cross_entropy(z.unsqueeze(2) * inverse_t, targets[rows],
    reduction="none") is then each term per sample, less its constant, in one call: one
    log_softmax over all K temperatures and one product with the targets, where the terms
    apart cost a graph each (cached KD beside CE went from ~1.4x to ~1.1x a CE step for a
    32-wide MLP on one CPU thread; benchmarks/bench_step.py).
    """
    terms = [soft_term(loss, side, target, num_classes) for loss, side in zip(losses, sides)]
    if any(t is None for t in terms):
        return None
    return FusedTerms(torch.stack([t.weights for t in terms], 2),
                      torch.tensor([1.0 / t.temperature for t in terms], device=target.device),
                      torch.stack([t.const.mean() for t in terms]))


def _optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    # fused=True: one kernel for all parameters; an MLP step on the CPU went
    # from 600 to 420 us with Adam (torch 2.13, one thread).
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=True)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def _scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The epoch scheduler; `linear` is stepped per batch instead, over `steps` batches in all."""
    if cfg.schedule == "linear":  # warmup from 0, then linear decay to 0 at the last step (BERT; transformers' get_linear_schedule_with_warmup)
        warm = int(cfg.warmup * steps)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: (i + 1) / (warm + 1) if i < warm else max(0.0, (steps - i) / max(1, steps - warm)))
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs)
    if cfg.schedule == "step":  # stepped once per epoch: lr *= gamma after each milestone epoch
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestones, cfg.gamma)
    return None


def _stream_seed(seed: int, what: str) -> int:
    """A seed of its own for each random stream of a run (shuffle, augmentation), all from the run seed."""
    return int(fingerprint([seed, what]), 16) % (2**63)


def run(config: RunConfig, data: Dataset, teacher: Teacher | None = None, report: Report | None = None,
        start: dict[str, Tensor] | None = None) -> RunResult:
    """Train `config.student` on `data` with the loss terms of `config.mix`.

    `report(epoch)` is called after every epoch (an `Epoch`; params and
    latency are measured before training: an architecture's latency does not
    depend on its weights). With `train.init: teacher` the student starts from
    the teacher module's layers; with `start` (a state dict) from those weights (a teacher
    fine-tuned from a checkpoint). With `epoch_policy: best_val` the weights of
    the best validation epoch are kept (ties go to the earlier epoch); the test
    split is evaluated once, at the end. A mixed batch (mixup, cutmix) scores
    every term as lam * term(y) + (1 - lam) * term(y_mixed).
    """
    # torch.optim's first optimizer imports torch._dynamo, about 2 s once per process (measured on
    # this machine): a cost of the process, not of this run, so it is paid before the run's clock
    # starts (a trial's time_other_s holds it) and every trial's seconds measure its own training
    import torch._dynamo  # noqa: F401

    started = time.perf_counter()
    cfg = config.train
    device = resolve_device(cfg.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(config.seed)
        student = config.student.build(data.input_shape, data.num_classes, "student")
        if cfg.init != "random":
            if teacher is None:
                raise ConfigError(f"train.init: '{cfg.init}' needs the teacher model, and this run was given none")
            if cfg.init == "teacher":
                init_from_teacher(student, teacher.module.cpu(), cfg.init_layers)
            else:
                key = teacher.info.key if teacher.info is not None else None
                scores = teacher_importance(teacher.module.cpu(), key, data, cfg.prune.calibration)
                prune_from_teacher(student, teacher.module, scores, cfg.prune.layers)
        if start is not None:
            student.load_state_dict(start)
        student = student.to(device)
        # what the start alone is worth (step 0): how much of the teacher survives the cut, before training brings the rest back
        task = data.task_type
        at_start = (*task.evaluate(student, data.x_val, data.y_val), *task.evaluate(student, data.x_test, data.y_test)) if cfg.init != "random" else None
        # token models compute attention maps and q, k, v only when a weighted loss reads them
        kinds = {key.split(".", 1)[0] for key in teacher_reads(n for n, w in config.mix.items() if w > 0 and n != task.labels_loss)}
        built_with = expose(student, kinds)
        n_params, latency = count_params(student), measure_latency(student, data.input_shape)
        in_memory = isinstance(data.x_train, Tensor)
        x_train = data.x_train.to(device) if in_memory else data.x_train  # a Mapped file: batches are read as they come
        y_train = data.y_train.to(device)
        n = len(y_train)
        task.check_batch(n, cfg.batch_size)
        t_module = teacher.module if teacher is not None and config.distills else None
        mode = None if t_module is None else config.teacher.outputs
        if mode == "cached" and teacher.outputs is None:
            mode = "online"  # a bare module: run it on each batch
        if mode == "views" and teacher.views is None:
            raise ValueError("teacher.outputs is views, but the teacher was given without its views (distill.teacher.prepare_teacher makes them)")
        cached = outputs_to(teacher.outputs, device) if mode == "cached" else None
        views = teacher.views if mode == "views" else None
        if cached is not None and len(cached.logits) != n:
            raise ValueError(f"teacher outputs cover {len(cached.logits)} samples, the training set {n}")
        if views is not None:
            if views.offsets.shape[1] != n:
                raise ValueError(f"teacher views cover {views.offsets.shape[1]} samples, the training set {n}")
            views = views.to(device)
        if mode == "online":
            t_module.eval().to(device)
            teacher_had = expose(t_module, kinds)
            for p in t_module.parameters():
                p.requires_grad_(False)
        augment = config.data.augment
        augmenter = Augmenter(augment, _stream_seed(config.seed, "augment"), device) if augment.active and mode != "views" else None
        # a disabled torch.autocast still costs microseconds on every step: a null context then
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 and device.type == "cuda" else contextlib.nullcontext()

        @torch.no_grad()
        def teacher_batch(xb: Tensor) -> Outputs:
            with autocast:
                return as_outputs(t_module(xb))

        probe = slice(0, min(2, n))
        with torch.no_grad():
            x_probe = x_train[probe].to(device)
            t_probe = None
            if mode == "online":
                t_probe = teacher_batch(x_probe)
            elif mode == "cached":
                t_probe = slice_outputs(cached, probe)
            elif mode == "views":
                t_probe = slice_outputs(views.outputs, (0, probe))  # the first view of the probe rows
            terms = build_losses(config, as_outputs(student(x_probe)), t_probe)
        for module in terms.values():
            module.to(device)
        losses = list(terms.values())
        # What each term reads of the teacher, over the training set: with cached outputs it is
        # prepared once per run (KD: the soft targets at its temperature), and a step takes its rows.
        sides = fused = None
        if cached is not None:
            with torch.no_grad(), autocast:
                sides = [teacher_side(loss, cached) for loss in losses]
                fused = fuse_terms(losses, sides, y_train, data.num_classes) if augmenter is None else None
            if fused is not None:
                sides = None  # the fused targets hold all a step reads
        no_teacher = [None] * len(losses)
        # a term that reads two views of each sample (SimCSE's dropout views): the batch goes through the student
        # once as [x; x], so each copy draws its own dropout; every other term reads the first copy
        twice = [getattr(loss, "views", 1) == 2 for loss in losses]
        weights = {name: config.mix[name] for name in terms}
        policy = on_policy_batches(cfg.on_policy, data, device, list(terms), _stream_seed(config.seed, "on_policy")) if mode == "online" else None
        params = list(student.parameters()) + [p for m in terms.values() for p in m.parameters()]
        optimizer = _optimizer(cfg, params)
        per_step = cfg.schedule == "linear"
        scheduler = _scheduler(cfg, optimizer, cfg.epochs * -(-n // cfg.batch_size))
        generator = torch.Generator().manual_seed(config.seed)

        history: list[Epoch] = []
        best_score, best_epoch, best_state, kept = -math.inf, 0, None, (0.0, math.nan)
        mix = torch.tensor(list(weights.values()), device=device)
        sizes = torch.tensor([min(cfg.batch_size, n - i) for i in range(0, n, cfg.batch_size)], device=device).unsqueeze(1)
        # A fused step backpropagates its (rows, K) values with each term's weight over the batch
        # size: the gradient of the mix of the terms' batch means, without a node for the sum.
        row_grads = {int(b): (mix / b).expand(int(b), len(terms)).contiguous() for b in sizes.unique()}
        for epoch in range(1, cfg.epochs + 1):
            student.train()
            # Shuffle once per epoch, then take batches as views: one gather per
            # tensor per epoch instead of one per batch (a mapped file is read per batch).
            order = torch.randperm(n, generator=generator).to(device)
            xs = x_train[order] if in_memory else None
            ys = y_train[order]
            epoch_sides = [_rows(side, order) for side in sides] if sides is not None else None
            epoch_fused = fused._replace(targets=fused.targets[order]) if fused is not None else None
            epoch_view = None
            if views is not None:  # each sample shows one of its stored views this epoch: prepared once per epoch
                which = torch.randint(views.count, (n,), generator=generator).to(device)
                epoch_view, ts = views.pick(which, order)
                with torch.no_grad(), autocast:
                    epoch_sides = [teacher_side(loss, ts) for loss in losses]
                    epoch_fused = fuse_terms(losses, epoch_sides, ys, data.num_classes)
            batch_values = []
            for first in range(0, n, cfg.batch_size):
                stop = min(first + cfg.batch_size, n)
                rows = slice(first, stop)
                xb = xs[rows] if in_memory else x_train[order[rows]].to(device)
                yb, y_mixed, lam = ys[rows], None, 1.0
                if epoch_view is not None:
                    xb = apply_view(xb, epoch_view.index(rows), views.crop)
                elif augmenter is not None:
                    batch = augmenter(xb, yb)
                    xb, y_mixed, lam = batch.x, batch.y_mixed, batch.lam
                if epoch_fused is not None:  # every term in one soft-target cross-entropy (fuse_terms)
                    with autocast:
                        z = as_outputs(student(xb)).logits
                        values = F.cross_entropy(z.unsqueeze(2) * epoch_fused.inverse_t, epoch_fused.targets[rows], reduction="none")
                    optimizer.zero_grad(set_to_none=True)
                    values.backward(row_grads[stop - first])
                    optimizer.step()
                    if per_step:
                        scheduler.step()
                    batch_values.append(values.detach())  # (rows, K), summed on device per epoch
                    continue
                batch_mix = mix
                if policy is not None and float(torch.rand(1, generator=policy.draws)) < policy.options.fraction:
                    p = policy.options
                    xb, yb = sample_continuations(student, xb, p.prompt, p.max_new_tokens, policy.pad_id, policy.samples)
                    batch_mix = mix * policy.no_ce  # a sampled id is no label
                if mode == "online":
                    t_sides = [teacher_batch(xb)] * len(losses)  # plain outputs: each loss prepares what it reads
                else:
                    t_sides = [_rows(side, rows) for side in epoch_sides] if epoch_sides is not None else no_teacher
                with autocast:
                    both = as_outputs(student(torch.cat([xb, xb]) if any(twice) else xb))  # a user's model may return bare logits
                    s_out = slice_outputs(both, slice(0, len(xb))) if any(twice) else both
                    values = torch.stack([loss(both if tw else s_out, t, yb).float() for loss, t, tw in zip(losses, t_sides, twice)])
                    if y_mixed is not None:
                        values = lam * values + (1 - lam) * torch.stack([loss(both if tw else s_out, t, y_mixed).float()
                                                                         for loss, t, tw in zip(losses, t_sides, twice)])
                total = batch_mix @ values
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                if per_step:
                    scheduler.step()
                batch_values.append(values.detach())  # weighted by batch size and summed on device per epoch: no sync per batch
            if scheduler is not None and not per_step:
                scheduler.step()
            if epoch_fused is not None:
                term_means = torch.cat(batch_values).sum(0) / n + epoch_fused.const
            else:
                term_means = (torch.stack(batch_values) * sizes).sum(0) / n
            means = [float(mix @ term_means), *term_means.tolist()]
            if not all(math.isfinite(v) for v in means):
                raise TrainingDiverged(epoch, dict(zip(["total", *terms], means)))
            val_acc, val_loss = task.evaluate(student, data.x_val, data.y_val)
            done = Epoch(epoch, means[0], dict(zip(terms, means[1:])), val_acc, val_loss, n_params, latency,
                         math.exp(min(val_loss, 700.0)) if task.keeps_loss else None)
            history.append(done)
            if report is not None:
                report(done)
            score = task.pick(val_acc, val_loss)  # picked as it is scored: a language model on its cross-entropy
            if score > best_score:
                best_score, best_epoch, kept = score, epoch, (val_acc, val_loss)
                if cfg.epoch_policy == "best_val":
                    best_state = copy.deepcopy(student.state_dict())

        if cfg.epoch_policy == "best_val":
            student.load_state_dict(best_state)
            val_acc, val_loss = kept
        else:
            best_epoch = cfg.epochs
        expose(student, built_with)  # the trained model computes what its family does by default, not what the losses read
        if mode == "online":
            expose(t_module, teacher_had)  # the shared teacher goes back as it came
        test_acc, test_loss = task.evaluate(student, data.x_test, data.y_test)
    finally:
        torch.set_num_threads(threads)
    return RunResult(val_acc, test_acc, n_params, latency, cfg.epochs, best_epoch, history, student, time.perf_counter() - started,
                     test_loss, val_loss, at_start)
