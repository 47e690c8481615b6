"""Distillation losses: checks generated over the loss registry, then each method
against its paper or official code in tests/test_logit_losses.py and tests/test_feature_losses.py.

Every registered loss is built on real model outputs: a small student and a
larger teacher from the model registry, on a seeded batch of (1, 16) inputs
with 5 classes. The pair of families is the first of PAIR_ORDER the loss
accepts (`at` needs cnn+cnn or transformer+transformer, the others take mlp);
a loss that builds for none of them (cos, tinybert_*, minilm, pkd: they need
token models) gets the token pair, transformers over token ids with padding, and
a next-token loss (token_kd, rkl, gjsd, skew_kl) the language-model pair, causal
transformers whose targets are the next ids.
So a new loss gets the generated checks without editing this file, except for
its pinned value (PINNED, which `test_every_loss_is_pinned` enforces).

On gradients and the teacher: a loss need not detach the teacher's outputs
itself (kd and rkd compute their teacher side under no_grad; dkd, at and
fitnet differentiate through whatever they are given), so "no gradient
reaches the teacher" is a contract between the losses and the caller:
`train.run` and `teacher.teacher_outputs` compute teacher outputs under
`torch.no_grad()`. The tests check each side:
a loss fed teacher outputs the way the training loop feeds them leaves the
teacher's parameters (which still have requires_grad=True) without a .grad
while the student and the loss's own parameters get one; feeding teacher
outputs that carry a graph changes nothing for the student's gradient; and
an end-to-end `train.run` with an online teacher leaves it untouched.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from loss_helpers import (
    FAMILIES,
    INPUT_SHAPE,
    LOSS_NAMES,
    NUM_CLASSES,
    PAIRS,
    SHAPES,
    LM_TOKENS,
    TOKEN_PAIR,
    TOKENS,
    assert_finite_scalar,
    case,
    clone,
    detach,
    inputs,
    model,
    num,
    options,
    sizes,
    targets,
)

from distill.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from distill.data import Dataset, TokenInfo
from distill.errors import ConfigError
from distill.losses import LOSSES, build_loss, loss_tasks, soft_term, teacher_side
from distill.models import MODELS, Outputs
from distill.train import Teacher, fuse_terms, run, slice_outputs

TOPICS = Path(__file__).resolve().parents[1] / "examples" / "data" / "topics.txt"  # sentences, for an embedding loss's config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats a contended pool (conftest)

# The value of each loss (default options) on `case(name)`; pinned once from
# this code, so a change to a loss's math or defaults shows up here.
PINNED = {
    "at": 0.1350456,
    "ce": 1.691932,
    "cos": 1.092496,
    "dkd": 0.2851530,
    "emb_cos": 1.059526,
    "emb_mse": 0.06733736,
    "fitnet": 0.1464159,
    "gjsd": 0.07373899,
    "kd": 0.03334300,
    "minilm": 0.1794083,
    "pkd": 0.1176328,
    "rkd": 9.225878,
    "rkl": 0.3050547,
    "sim_kl": 0.9506431,
    "simcse": 1.542642,
    "skew_kl": 0.2476752,
    "tinybert_attn": 0.3819148,
    "tinybert_hidden": 4.590140,
    "token_kd": 0.3298756,
}
TOKEN_LOSSES = ("cos", "tinybert_attn", "tinybert_hidden", "minilm", "pkd")
NEXT_TOKEN_LOSSES = ("token_kd", "rkl", "gjsd", "skew_kl")

# Losses that are not ~0 when the student's outputs equal the teacher's.
NOT_ZERO_AT_IDENTITY = {
    "ce": "not a distillation loss: cross-entropy against the labels",
    "simcse": "not a distillation loss: the embedding twin's contrastive loss on the student's own two views",
    "fitnet": "compares the teacher's hint with r(student), and the regressor r is a random layer, not the identity",
    "tinybert_hidden": "compares W h_s with h_t, and the projection W is a random layer, not the identity",
}
# Options under which a student that is its own teacher must give ~0 (pkd's default map, skip,
# pairs block i with block 2i: only a map of each block to itself makes the two sides equal).
IDENTITY_OPTIONS = {"pkd": {"layers": "uniform"}}


# --- generated over the registry ----------------------------------------------


def test_registry_has_the_documented_losses():
    assert {"ce", "kd", "dkd", "fitnet", "rkd", "at", *TOKEN_LOSSES, *NEXT_TOKEN_LOSSES} <= set(LOSS_NAMES)


def test_pair_choice():
    assert PAIRS["at"] in {("cnn", "cnn"), ("transformer", "transformer")}
    for name in ("kd", "dkd", "rkd", "fitnet", "ce"):
        assert PAIRS[name] == ("mlp", "mlp") and SHAPES[name] == INPUT_SHAPE
    for name in TOKEN_LOSSES:
        assert PAIRS[name] == TOKEN_PAIR and SHAPES[name] == TOKENS and not SHAPES[name].lm
    for name in NEXT_TOKEN_LOSSES:
        assert PAIRS[name] == TOKEN_PAIR and SHAPES[name].lm


def test_token_cases_have_padding_and_what_their_losses_read():
    for name in TOKEN_LOSSES:
        c = case(name)
        assert c.s_out.mask is not None and not c.s_out.mask.all() and c.s_out.mask[:, 0].all()
        assert (c.x == TOKENS.pad_id).equal(~c.s_out.mask)
        assert bool(c.s_out.parts) == bool(c.t_out.parts) == ("parts" in LOSSES.get(name, "").reads)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_finite_scalar(name):
    c = case(name)
    v = c.value()
    assert_finite_scalar(v)
    assert v.requires_grad


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_default_options_are_valid_and_frozen(name):
    opts = options(name)
    assert dataclasses.is_dataclass(opts)
    fields = dataclasses.fields(opts)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(opts, fields[0].name, getattr(opts, fields[0].name))


@pytest.mark.parametrize("t_fam", FAMILIES)
@pytest.mark.parametrize("s_fam", FAMILIES)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_family_pair_builds_or_is_a_config_error(name, s_fam, t_fam):
    """A pairing a loss cannot make must be a ConfigError naming the loss, never a
    crash; one it can make gives a finite value whose gradient reaches the student
    and every parameter of the loss (a FitNet regressor is a 1x1 conv for cnn and
    transformer maps, a linear layer otherwise: each path is covered here)."""
    try:
        c = case(name, pair=(s_fam, t_fam))
    except ConfigError as e:
        if str(e).startswith("model: "):  # the family takes no float inputs (hf: token ids only): no pairing to judge
            return
        assert str(e).startswith(f"losses.{name}: "), str(e)
        return
    v = c.value()
    assert_finite_scalar(v)
    v.backward()
    assert sum(num(p.grad.norm()) for p in c.student.parameters() if p.grad is not None) > 0
    for pname, p in c.loss.named_parameters():
        assert p.grad is not None and num(p.grad.norm()) > 0, f"{name}.{pname} got no gradient"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_backward_reaches_student_and_loss_params_not_teacher(name):
    """As in training: teacher outputs computed under no_grad from a teacher whose
    parameters still require grad. This fails if a loss module holds or re-runs
    teacher parameters, if it cuts the student's graph (e.g. detaches the wrong
    side), or if a learned part of the loss gets no gradient."""
    c = case(name)
    assert all(p.requires_grad for p in c.teacher.parameters())
    teacher_ids = {id(p) for p in c.teacher.parameters()}
    student_ids = {id(p) for p in c.student.parameters()}
    assert not teacher_ids & {id(p) for p in c.loss.parameters()}, "a loss must not own teacher parameters"
    assert not student_ids & {id(p) for p in c.loss.parameters()}

    c.value().backward()

    assert all(p.grad is None for p in c.teacher.parameters()), "gradient reached the teacher"
    grads = [p.grad for p in c.student.parameters() if p.grad is not None]
    assert grads, "no gradient reached the student"
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(num(g.norm()) for g in grads) > 0, "the student's gradient is zero"
    for pname, p in c.loss.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}.{pname} got no gradient"
        assert num(p.grad.norm()) > 0, f"{name}.{pname} has a zero gradient"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_teacher_graph_does_not_change_student_gradient(name):
    """Teacher outputs that carry a graph (a teacher run with grad enabled) must give
    the student and the loss the same value and gradient as detached ones."""
    c = case(name)
    with torch.enable_grad():
        t_live = c.teacher(c.x)
    params = [p for p in [*c.student.parameters(), *c.loss.parameters()]]

    def grads(t_out: Outputs) -> tuple[torch.Tensor, list]:
        s_out = c.student(c.x)
        v = c.loss(s_out, t_out, c.y)
        return v.detach(), torch.autograd.grad(v, params, allow_unused=True, retain_graph=True)

    v_det, g_det = grads(detach(t_live))
    v_live, g_live = grads(t_live)
    torch.testing.assert_close(v_live, v_det)
    for a, b in zip(g_live, g_det):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_does_not_modify_its_inputs(name):
    """Teacher outputs are cached and reused every epoch: a loss must never write into them."""
    c = case(name)
    s_before, t_before = clone(detach(c.s_out)), clone(c.t_out)
    c.value().backward()
    for before, after in ((s_before, c.s_out), (t_before, c.t_out)):
        torch.testing.assert_close(after.logits.detach(), before.logits, rtol=0, atol=0)
        for k in before.features:
            torch.testing.assert_close(after.features[k].detach(), before.features[k], rtol=0, atol=0)
        for kind in ("attentions", "parts"):
            for k, v in getattr(before, kind).items():
                torch.testing.assert_close(getattr(after, kind)[k].detach(), v, rtol=0, atol=0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_what_a_loss_reads_is_declared_when_it_registers(name):
    """The search and the teacher cache learn what a loss reads from its registration alone
    (`reads`), never by building it: every key a built loss reads must be covered."""
    from distill.losses import teacher_reads

    c = case(name)
    declared = set(LOSSES.get(name, "").reads)
    for key in c.loss.teacher_keys:
        assert key in declared or key.split(".")[0] in declared, (key, declared)
    assert set(teacher_reads([name])) == declared | {"logits"}


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_reads_only_its_declared_teacher_keys(name):
    """The teacher cache stores only the outputs named by `teacher_keys` (plus the
    logits): a loss built and run on just those must give the same value."""
    c = case(name)
    keys = set(c.loss.teacher_keys)
    for k in keys:
        kind, _, sub = k.partition(".")
        assert k == "logits" or (kind in ("features", "attentions", "parts") and sub in getattr(c.t_out, kind)), k
    kept = Outputs(  # no mask: the cache keeps none, a loss reads the student's
        c.t_out.logits,
        {k: v for k, v in c.t_out.features.items() if f"features.{k}" in keys},
        {k: v for k, v in c.t_out.attentions.items() if f"attentions.{k}" in keys},
        {k: v for k, v in c.t_out.parts.items() if f"parts.{k}" in keys},
    )
    expected = c.value()
    torch.testing.assert_close(c.loss(c.s_out, kept, c.y), expected)
    torch.manual_seed(123)
    rebuilt = build_loss(name, options(name), c.s_out, kept)
    assert tuple(rebuilt.teacher_keys) == tuple(c.loss.teacher_keys)
    rebuilt.load_state_dict(c.loss.state_dict())
    torch.testing.assert_close(rebuilt(c.s_out, kept, c.y), expected)


def side_tensors(side) -> list[torch.Tensor]:
    if side is None:
        return []
    if isinstance(side, Outputs):
        return [side.logits, *side.features.values(), *side.attentions.values(), *side.parts.values()]
    return list(side)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_a_prepared_teacher_side_scores_as_the_plain_outputs(name):
    """With cached outputs `train.run` hands a loss the rows of its `teacher_side`, prepared once
    over the training set: the value and gradients must be those of the plain outputs, and the
    side must be row-wise (the rows of the side of a set are the side of those rows)."""
    c = case(name)
    params = [*c.student.parameters(), *c.loss.parameters()]

    def scored(t):
        v = c.loss(c.student(c.x), t, c.y)
        return v.detach(), torch.autograd.grad(v, params, allow_unused=True)

    side = teacher_side(c.loss, c.t_out)
    (v_plain, g_plain), (v_side, g_side) = scored(c.t_out), scored(side)
    torch.testing.assert_close(v_side, v_plain, rtol=1e-6, atol=1e-7)
    for a, b in zip(g_side, g_plain):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    rows = slice(1, 4)
    sliced = [t[rows] for t in side_tensors(side)]
    for a, b in zip(sliced, side_tensors(teacher_side(c.loss, slice_outputs(c.t_out, rows))), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# Options under which a loss changes what it is (its soft form must follow them, or be None).
SOFT_OPTIONS = {"ce": [{}, {"label_smoothing": 0.2}], "kd": [{}, {"temperature": 1.0}, {"temperature": 2.5}, {"shuffle_nontarget": True}]}


@pytest.mark.parametrize("name, opts", [(n, o) for n in LOSS_NAMES for o in SOFT_OPTIONS.get(n, [{}])])
def test_a_soft_term_is_the_loss_as_a_cross_entropy(name, opts):
    """A loss that writes its term as a `SoftTerm` (train.run then fuses it with the mix's other
    terms) must give its own value and gradient that way; the others say None."""
    c = case(name, opts=options(name, **opts))
    soft = soft_term(c.loss, teacher_side(c.loss, c.t_out), c.y, NUM_CLASSES)
    if soft is None:
        assert name not in SOFT_OPTIONS or opts.get("shuffle_nontarget"), f"{name} {opts} lost its soft form"
        return
    z = c.s_out.logits
    as_ce = (-(soft.weights * torch.log_softmax(z / soft.temperature, -1)).sum(-1) + soft.const).mean()
    own = c.value()
    torch.testing.assert_close(as_ce, own, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(as_ce, z, retain_graph=True)[0], torch.autograd.grad(own, z)[0], rtol=1e-5, atol=1e-7)


def test_fused_terms_give_each_term_and_the_mixs_gradient():
    """`fuse_terms` as a step uses it: one cross-entropy whose (rows, K) values, backpropagated with
    weight / rows, are each term per sample (less its constant) and the mix's gradient."""
    c = case("kd", opts=options("kd", temperature=3.0))
    ce = build_loss("ce", options("ce", label_smoothing=0.1), c.s_out, c.t_out)
    losses, w = [ce, c.loss], torch.tensor([0.3, 0.7])
    fused = fuse_terms(losses, [teacher_side(loss, c.t_out) for loss in losses], c.y, NUM_CLASSES)
    z = c.s_out.logits
    values = torch.nn.functional.cross_entropy(z.unsqueeze(2) * fused.inverse_t, fused.targets, reduction="none")
    apart = torch.stack([loss(c.s_out, c.t_out, c.y) for loss in losses])
    # KD fused is its cross-entropy less the teacher's entropy (T^2 H, ~15 here): float32 keeps ~1e-7 of that
    torch.testing.assert_close(values.mean(0) + fused.const, apart, rtol=1e-5, atol=1e-5)
    g_fused, = torch.autograd.grad(values, z, (w / len(z)).expand_as(values), retain_graph=True)
    g_apart, = torch.autograd.grad(w @ apart, z)
    torch.testing.assert_close(g_fused, g_apart, rtol=1e-5, atol=1e-7)
    control = build_loss("kd", options("kd", shuffle_nontarget=True), c.s_out, c.t_out)
    assert fuse_terms([ce, control], [None, teacher_side(control, c.t_out)], c.y, NUM_CLASSES) is None


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_zero_when_student_equals_teacher(name):
    if name in NOT_ZERO_AT_IDENTITY:
        pytest.skip(NOT_ZERO_AT_IDENTITY[name])
    c = case(name)
    same = detach(c.s_out)
    loss = build_loss(name, options(name, **IDENTITY_OPTIONS.get(name, {})), c.s_out, same)
    v = loss(c.s_out, same, c.y)
    assert_finite_scalar(v)
    assert abs(num(v)) < 1e-5, num(v)
    assert num(c.value()) > 1e-4, "the check is vacuous if the loss is ~0 for different outputs too"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_pinned_value(name):
    if name not in PINNED:
        pytest.fail(f"no pinned value for loss {name!r}: add PINNED[{name!r}] = {num(case(name).value())!r}")
    assert num(case(name).value()) == pytest.approx(PINNED[name], rel=1e-4)


def test_every_loss_is_pinned():
    assert set(PINNED) == set(LOSS_NAMES), "pin the value of every registered loss (and only those)"


# --- end to end: the training loop and an online teacher --------------------------


def tiny_data(n_train: int = 24, shape=INPUT_SHAPE) -> Dataset:
    torch.manual_seed(0)

    def split(n):
        x = inputs(shape, n)
        return x, targets(shape, x)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(8), split(8)
    lm = shape == LM_TOKENS and shape.lm
    if not lm:
        return Dataset("toy", xt, yt, xv, yv, xs, ys, NUM_CLASSES, shape, "toy")
    tokens = TokenInfo(shape.vocab, shape.pad_id, shape[0], task="lm")
    return Dataset("toy", xt, yt, xv, yv, xs, ys, shape.vocab, shape, "toy", tokens=tokens)


def run_config(name: str, s_fam: str, batch_size: int = 8, mix: dict | None = None, shape=INPUT_SHAPE) -> RunConfig:
    mix = mix or {name: 1.0}
    opts = MODELS.get(s_fam, "x").options(**sizes(shape)[0].get(s_fam, {}))
    lm = getattr(shape, "lm", False)
    task = loss_tasks(name)[0] if name != "ce" else "classify"  # an embedding loss's config names sentences
    return RunConfig(
        # the config's task follows its data: next-token losses need an LM's, embedding losses sentences
        data=DataConfig("hmm") if lm else DataConfig.parse({"name": "sentences", "path": str(TOPICS)}) if task == "embed" else DataConfig(),
        student=ModelConfig(s_fam, opts),
        train=TrainConfig(epochs=1, batch_size=batch_size, lr=0.05, device="cpu"),
        losses={k: options(k) for k in mix},
        mix=mix,
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_training_with_online_teacher_updates_student_only(name):
    (s_fam, t_fam), shape = PAIRS[name], SHAPES[name]
    s_sizes, t_sizes = sizes(shape)
    torch.manual_seed(0)
    teacher = model(t_fam, t_sizes, shape)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = tiny_data(shape=shape)
    result = run(run_config(name, s_fam, shape=shape), data, Teacher(teacher))
    assert all(math.isfinite(h.train_loss) for h in result.history)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"the teacher's {k} changed"
    assert all(p.grad is None for p in teacher.parameters())
    torch.manual_seed(0)
    fresh = model(s_fam, s_sizes, shape)
    changed = [not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), result.model.state_dict().values())]
    assert any(changed), "the student did not train"
