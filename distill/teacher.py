"""The teacher: trained once (cross-entropy, on augmented batches when the data
augments) or loaded from a user's checkpoint, then, per `teacher.outputs`, run
once over the training set to cache the outputs the losses read (cached), over
K stored crop/flip views of it (views), or handed over alone to run on every
batch of a trial (online).

Both caches live under the kdx cache folder, keyed by a hash of what made
them (teacher config and data, or the checkpoint's own sha256), written
atomically and checked against their sha256 when read. A teacher is always in
eval mode with gradients off; anything a user hands over is loaded with
`torch.load(..., weights_only=True)`, which cannot run code.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .augment import Augmenter, apply_view
from .cache import cache_dir, fingerprint, load_checked, locked, save_checked, sha256_file
from .config import RunConfig
from .data import Dataset
from .errors import ConfigError
from .losses import teacher_reads
from .models import Outputs, as_outputs, count_params, expose, measure_latency
from .models.hf import check_same_tokenizer
from .on_policy import OnPolicy
from .train import Teacher, TeacherViews, outputs_to, resolve_device, run

__all__ = ["Teacher", "TeacherInfo", "get_teacher", "prepare_teacher", "teacher_outputs", "teacher_views", "model_outputs",
           "teacher_keys", "check_teacher_source", "PASSES", "Passes", "chance_warning"]

Log = Callable[[str], None]


@dataclass
class Passes:
    """The teacher's forward passes this process made over training samples to make its outputs: a search
    makes them once, in the driver, and shares the outputs with every trial (read from the cache: none)."""

    batches: int = 0
    samples: int = 0


PASSES = Passes()


@dataclass(frozen=True)
class TeacherInfo:
    key: str  # names the teacher in caches and MLflow
    source: str  # "trained", "cache" or "checkpoint"
    val_acc: float
    test_acc: float
    params: int
    latency_ms: float
    train_s: float = 0.0  # what training it cost (0 for a user's checkpoint); counted in a front point's compute
    test_loss: float | None = None  # a language model's test cross-entropy, nats per predicted token
    val_loss: float | None = None  # ... and its validation cross-entropy
    recipe: str = ""  # how its weights were made, in words (`TeacherConfig.recipe`): trained, fine-tuned, or used as it stands
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # the task's further scores of it (`Task.model_metrics`)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _info(model: nn.Module, data: Dataset, key: str, source: str, recipe: str = "") -> TeacherInfo:
    val_acc, val_loss = data.task_type.evaluate(model, data.x_val, data.y_val)
    test_acc, test_loss = data.task_type.evaluate(model, data.x_test, data.y_test)
    keep = data.task_type.keeps_loss
    return TeacherInfo(key, source, val_acc, test_acc, count_params(model), measure_latency(model, data.input_shape),
                       test_loss=test_loss if keep else None, val_loss=val_loss if keep else None, recipe=recipe)


def chance_warning(info: TeacherInfo, data: Dataset) -> str | None:
    """A loud line when the teacher is no better than a model that learned nothing (its task says what
    that scores: the commonest class, the uniform distribution). Such a teacher has nothing to teach,
    and every gain measured from it is noise."""
    return data.task_type.chance_warning(info.val_acc, info.val_loss, data)


def _weights_key(t) -> str:
    """The content of the weights a teacher starts from, so that new weights under the same path make a new teacher."""
    if t.checkpoint:
        return sha256_file(t.checkpoint)
    folder = Path(t.pretrained)
    return fingerprint([sha256_file(p) for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))])


def _load_as_is(config: RunConfig, data: Dataset) -> tuple[nn.Module, TeacherInfo]:
    """A Hugging Face folder's model used as it stands (`teacher.train: false`): frozen as loaded, scored once."""
    from .models.hf import check_weights, load_as_is

    t = config.teacher
    if data.task_type.head != "classes":  # a vocabulary head, or none (an encoder): the folder's weights load exactly (a padded one sliced)
        check_weights(t.pretrained, "teacher.pretrained")
        model = _build(config, data)
    else:
        labels = data.tokens.labels if data.tokens is not None else ()
        model = load_as_is(t.model.options, data.input_shape, data.num_classes, labels, t.labels)
    key = fingerprint([_weights_key(t), t.model.to_dict(), t.labels, data.key])
    return _frozen(model), _info(model, data, key, "pretrained", config.teacher_recipe)


class VocabSlice(nn.Module):
    """A language model whose output rows are a padded superset of the data's vocabulary, scoring the
    first `vocab` rows only (`teacher.vocab: slice`): ids past them are padding rows no token uses."""

    def __init__(self, model: nn.Module, vocab: int):
        super().__init__()
        self.model, self.vocab = model, vocab

    def forward(self, x: torch.Tensor) -> Outputs:
        out = as_outputs(self.model(x))
        return out._replace(logits=out.logits[..., : self.vocab])


def _build(config: RunConfig, data: Dataset) -> nn.Module:
    """The teacher's module on this data; with `teacher.vocab: slice` (a Hugging Face folder with
    more output rows than the data's vocabulary) built at the folder's size and sliced."""
    t = config.teacher
    if t.vocab != "slice":
        return t.model.build(data.input_shape, data.num_classes, "teacher")
    rows = json.loads((Path(t.model.options.pretrained) / "config.json").read_text()).get("vocab_size", 0)
    shape = data.input_shape
    if not data.task_type.causal or rows < shape.vocab:
        raise ConfigError(f"teacher.vocab: slice needs a language model whose vocabulary is a superset of the data's; "
                          f"'{t.model.options.pretrained}' has {rows} rows, the data {shape.vocab}")
    wide = type(shape)(shape[0], rows, shape.pad_id, shape.task)
    return VocabSlice(t.model.build(wide, rows, "teacher"), shape.vocab)


def _checkpoint_state(config: RunConfig, data: Dataset) -> tuple[nn.Module, dict]:
    """The teacher's module with the user's checkpoint loaded into it, and that state."""
    t = config.teacher
    path = Path(t.checkpoint)
    if not path.is_file():
        raise ConfigError(f"teacher.checkpoint: no such file '{path}'")
    model = _build(config, data)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError):  # torch's text goes on to explain how to load it unsafely: not ours to suggest
            raise ConfigError(f"teacher.checkpoint: '{path}' does not load as weights only: it holds pickled objects beyond tensors "
                              "(a whole model?); save model.state_dict() instead") from None
        first = _ANSI.sub("", str(e)).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ConfigError(f"teacher.checkpoint: '{path}' does not load as weights only ({e.__class__.__name__}: {first})") from None
    for wrapper in ("state_dict", "model"):  # Lightning-style, and RepDistiller's {'model': ..., 'accuracy': ...}
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"teacher.checkpoint: '{path}' is not a state dict (a mapping of names to tensors); save model.state_dict()")
    _fit(model, state, path)
    return model, state


def _load_checkpoint(config: RunConfig, data: Dataset) -> tuple[nn.Module, TeacherInfo]:
    t = config.teacher
    model, _ = _checkpoint_state(config, data)
    key = fingerprint([sha256_file(t.checkpoint), t.model.to_dict(), data.key])
    return _frozen(model), _info(model, data, key, "checkpoint", config.teacher_recipe)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _fit(model: nn.Module, state: dict, path: Path) -> None:
    """Load `state` strictly; a mismatch names the first missing, unexpected or misshapen key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshapen = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or misshapen:
        more = lambda keys: f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""  # noqa: E731
        parts = ([f"missing '{missing[0]}'{more(missing)}"] if missing else []) + \
                ([f"unexpected '{unexpected[0]}'{more(unexpected)}"] if unexpected else []) + \
                ([f"'{misshapen[0]}' is {tuple(state[misshapen[0]].shape)} in the file, {tuple(own[misshapen[0]].shape)} in the model"
                  f"{more(misshapen)}"] if misshapen else [])
        raise ConfigError(f"teacher.checkpoint: '{path}' does not fit the teacher model: {'; '.join(parts)}")
    try:
        model.load_state_dict(state)
    except Exception as e:  # a dtype the model cannot take, say; torch's text may carry terminal colours
        raise ConfigError(f"teacher.checkpoint: '{path}' does not fit the teacher model ({_ANSI.sub('', str(e)).splitlines()[0][:300]})") from None


def check_teacher_source(config: RunConfig) -> None:
    """Cheap checks before any work: the checkpoint file exists (a factory's import and
    signature are checked when the config is parsed, as a student's are)."""
    t = config.teacher
    if t.checkpoint and not Path(t.checkpoint).is_file():
        raise ConfigError(f"teacher.checkpoint: no such file '{t.checkpoint}'")


def get_teacher(config: RunConfig, data: Dataset, log: Log = print) -> tuple[nn.Module, TeacherInfo]:
    """The frozen teacher of `config` and its accuracy, training it only once."""
    module, info, _ = _scored_teacher(config, data, log)
    return module, info


def _scored_teacher(config: RunConfig, data: Dataset, log: Log) -> tuple[nn.Module, TeacherInfo, Dataset]:
    """`get_teacher`, and the data as every run is scored against it (`Task.with_teacher`: an embedding's reference)."""
    t = config.teacher
    if data.tokens is not None:
        models = (("teacher.pretrained", t.model), ("student.pretrained", config.student))
        check_same_tokenizer({key: m.options.pretrained for key, m in models if m.family == "hf" and m.options.pretrained},
                             data.tokens.tokenizer)
    if not t.settings["train"]:
        module, info = _load_checkpoint(config, data) if t.checkpoint else _load_as_is(config, data)
    else:
        augment = [config.data.augment.to_dict()] if config.data.augment.active else []  # a teacher trains on augmented batches too
        key = fingerprint([t.training_dict(), data.key, *augment] + ([_weights_key(t)] if t.from_weights else []))
        folder = cache_dir("teachers")
        with locked(folder / f"{key}.lock"):
            module, info = _train_or_load(config, data, key, folder, log)
    ref = data.task_type.with_teacher(data, module)
    if ref is not data:  # the task's reference is the teacher itself (an embedding's): scored against it, as every student is
        (val, _), (test, _) = (ref.task_type.evaluate(module, ref.x_val, ref.y_val), ref.task_type.evaluate(module, ref.x_test, ref.y_test))
        info = dataclasses.replace(info, val_acc=val, test_acc=test)
    info = dataclasses.replace(info, metrics=ref.task_type.model_metrics(module, ref))
    warning = chance_warning(info, ref)
    if warning:
        log(warning)
    return module, info, ref


def _train_or_load(config: RunConfig, data: Dataset, key: str, folder: Path, log: Log) -> tuple[nn.Module, TeacherInfo]:
    t = config.teacher
    model = _build(config, data)
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    state = load_checked(weights, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if state is not None and meta.exists():
        model.load_state_dict(state)
        info = TeacherInfo(**{"recipe": config.teacher_recipe, **json.loads(meta.read_text()), "source": "cache"})
        if data.task_type.keeps_loss and info.val_loss is None:  # cached before teachers kept their validation cross-entropy
            info = dataclasses.replace(info, val_loss=data.task_type.evaluate(model, data.x_val, data.y_val)[1])
            save_checked(meta, lambda p: p.write_text(json.dumps(dataclasses.replace(info, source="trained").to_dict())))
        return _frozen(model), info
    start = _checkpoint_state(config, data)[1] if t.checkpoint else None  # fine-tuned from the user's checkpoint
    if t.pretrained and data.task_type.head == "classes":
        from .models.hf import head_labels

        if head_labels(t.pretrained) is None:  # said, never silent: the body is the folder's, the head is new
            log(f"teacher: '{t.pretrained}' has no classification head; fine-tuning its body with a new {data.num_classes}-label head")
    log(f"training the teacher ({t.model.family}, {config.teacher_recipe}) ...")
    finetune, r = t.from_weights, t.settings
    train = dataclasses.replace(
        config.train, epochs=r["epochs"], lr=r["lr"], batch_size=t.batch_size, weight_decay=r["weight_decay"],
        optimizer="adamw" if finetune else "adam", schedule="linear" if finetune or r["warmup"] > 0 else "constant", warmup=r["warmup"],
        milestones=[], epoch_policy=data.task_type.teacher_policy, init="random",  # picked on validation, never test
        on_policy=OnPolicy(),  # a teacher learns from the data
    )
    teacher_run = dataclasses.replace(config, seed=t.seed, student=t.model, train=train, losses={}, mix={data.task_type.labels_loss: 1.0})
    result = run(teacher_run, data, start=start)
    model = result.model.cpu()
    save_checked(weights, lambda p: torch.save(model.state_dict(), p))
    info = TeacherInfo(key, "trained", result.val_acc, result.test_acc, result.params, result.latency_ms, result.seconds,
                       *((result.test_loss, result.val_loss) if data.task_type.keeps_loss else (None, None)), config.teacher_recipe)
    save_checked(meta, lambda p: p.write_text(json.dumps(info.to_dict())))
    return _frozen(model), info


def teacher_keys(config: RunConfig) -> list[str]:
    """What of the teacher the run's weighted loss terms read (their registered `reads`)."""
    return teacher_reads(name for name, w in config.mix.items() if w > 0)


def _kinds(keys) -> set[str]:
    return {k.split(".", 1)[0] for k in keys}


def _select(out: Outputs, keys: list[str]) -> Outputs:
    """Logits, plus every feature (attention) map when any is asked for.

    All of them, not just the named ones: losses pick layers by relative
    depth, and a subset would shift what "the middle block" means when the
    loss is rebuilt on the cached outputs."""
    kinds = _kinds(keys)
    return Outputs(out.logits, out.features if "features" in kinds else {}, out.attentions if "attentions" in kinds else {},
                   out.parts if "parts" in kinds else {})


@torch.no_grad()
def _flat_outputs(model: nn.Module, data: Dataset, keys: list[str], batch_size: int,
                  view: Callable[[torch.Tensor, slice], torch.Tensor] = lambda x, rows: x,
                  shrink: Callable[[Outputs], Outputs] = lambda out: out) -> dict[str, torch.Tensor]:
    """The model's outputs over the training set, batch by batch, on a GPU when there is one
    (kept on the CPU); `view(x, rows)` augments a batch first, `shrink` makes each batch's
    outputs what is stored (a language model's top-k), so the whole vocabulary is never held."""
    device = resolve_device("auto")
    model = _frozen(model).to(device)
    had = expose(model, _kinds(keys))
    n = len(data.x_train)
    try:
        parts = []
        for i in range(0, n, batch_size):
            x = view(data.x_train[i : i + batch_size].to(device), slice(i, min(i + batch_size, n)))
            parts.append(shrink(_select(outputs_to(as_outputs(model(x)), torch.device("cpu")), keys)))
            PASSES.batches += 1
            PASSES.samples += len(x)
    finally:
        model.cpu()  # the shared teacher ships to trials from the CPU
        expose(model, had)
    flat = {"logits": torch.cat([p.logits for p in parts])}
    for kind in ("features", "attentions", "parts"):
        for name in getattr(parts[0], kind):
            flat[f"{kind}.{name}"] = torch.cat([getattr(p, kind)[name] for p in parts])
    return flat


def _unflat(flat: dict[str, torch.Tensor]) -> Outputs:
    feats = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("features.")}
    attns = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("attentions.")}
    parts = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("parts.")}
    return Outputs(flat["logits"], feats, attns, parts)


def model_outputs(model: nn.Module, data: Dataset, keys: list[str], batch_size: int = 1024) -> Outputs:
    """A trained model's outputs over the training set, not cached: a teacher
    assistant's, which teaches the next stage of a chain. The model is frozen."""
    return _unflat(_flat_outputs(model, data, keys, batch_size))


def _topk(out: Outputs, k: int) -> Outputs:
    from .losses.next_token import topk_outputs

    top = topk_outputs(out.logits.float(), k)
    return out._replace(logits=top.logits, parts={**out.parts, "topk.index": top.parts["topk.index"].to(torch.int32)})  # ids fit in 4 bytes


def teacher_outputs(teacher: nn.Module, info: TeacherInfo, data: Dataset, keys: list[str], batch_size: int = 1024,
                    topk: int | None = None) -> Outputs:
    """The teacher's outputs named by `keys` over the training set, computed once and cached; a
    language model's logits as the top-k log-probabilities and their ids when `topk` is less than
    the vocabulary (`distill.losses.next_token.topk_outputs`)."""
    kinds = sorted(_kinds(keys))  # what _select keeps: equal kinds make equal caches
    causal = data.task_type.causal  # a top-k cache keeps a vocabulary's head
    if topk is not None and causal and topk > data.num_classes:
        raise ConfigError(f"teacher.topk: {topk} is more than the vocabulary ({data.num_classes} ids); leave it unset for the whole vocabulary")
    topk = topk if topk is not None and causal and topk < data.num_classes else None
    path = cache_dir("outputs") / f"{fingerprint([info.key, data.key, kinds] + ([topk] if topk else []))}.pt"
    flat = load_checked(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if flat is None:
        shrink = (lambda out: out) if not topk else lambda out: _topk(out, topk)
        flat = _flat_outputs(teacher, data, keys, min(batch_size, data.task_type.cache_batch), shrink=shrink)
        save_checked(path, lambda p: torch.save(flat, p))
    if "parts.topk.index" in flat:
        flat["parts.topk.index"] = flat["parts.topk.index"].long()  # gather takes int64
    return _unflat(flat)



def teacher_views(teacher: nn.Module, info: TeacherInfo, data: Dataset, keys: list[str], config: RunConfig,
                  batch_size: int = 1024) -> TeacherViews:
    """`teacher.views` crop/flip views of every training sample, drawn once (seeded by
    teacher.seed), with the teacher's outputs on each: made once and cached, like the
    plain outputs, so every trial of a search replays the same views (FKD)."""
    augment, k = config.data.augment, config.teacher.views
    kinds = sorted(_kinds(keys))
    path = cache_dir("outputs") / f"views-{fingerprint([info.key, data.key, kinds, augment.to_dict(), k, config.teacher.seed])}.pt"
    flat = load_checked(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if flat is None:
        draw = Augmenter(augment, seed=config.teacher.seed)
        views = [draw.draw_view(len(data.x_train), data.input_shape) for _ in range(k)]
        per_view = [_flat_outputs(teacher, data, keys, batch_size, lambda x, rows, v=v: apply_view(x, v.index(rows), augment.crop))
                    for v in views]
        flat = {name: torch.stack([p[name] for p in per_view]) for name in per_view[0]}
        flat |= {"view.offsets": torch.stack([v.offsets for v in views]), "view.flip": torch.stack([v.flip for v in views])}
        save_checked(path, lambda p: torch.save(flat, p))
    offsets, flip = flat.pop("view.offsets"), flat.pop("view.flip")
    return TeacherViews(offsets, flip, _unflat(flat), augment.crop)


def prepare_teacher(config: RunConfig, data: Dataset, keys: list[str] | None = None, log: Log = print) -> Teacher:
    """The run's teacher as `run` learns from it (`teacher.outputs`): with its outputs cached
    over the training set, with its stored views, or alone to run on each batch (online).
    `keys` default to what the config's losses read; a search passes what any of its trials may."""
    module, info, scored = _scored_teacher(config, data, log)
    keys = keys or teacher_keys(config)
    mode = config.teacher.outputs
    if mode == "online":
        return Teacher(module, info, data=scored)
    if mode == "views":
        return Teacher(module, info, views=teacher_views(module, info, data, keys, config), data=scored)
    return Teacher(module, info, teacher_outputs(module, info, data, keys, topk=config.teacher.topk), data=scored)


def check_prune(config: RunConfig, data: Dataset, module: nn.Module | None = None, student: bool = True) -> None:
    """A pruned start (train.init: prune) the teacher cannot give is one line before anything trains: the shapes
    decide it, so the teacher's architecture is cut as it is built (`module`: the teacher itself, where loaded).
    `student` False: only that the teacher's family can be cut at all (a space that searches train.init)."""
    from .prune import plan_for, prune_from_teacher

    teacher = module if module is not None else _build(config, data)
    if not student:
        plan_for(teacher)
        return
    prune_from_teacher(config.student.build(data.input_shape, data.num_classes, "student"), teacher, {}, config.train.prune.layers)
