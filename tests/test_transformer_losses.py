"""The token-model losses (cos, tinybert_attn, tinybert_hidden, minilm, pkd) and their layer maps,
each against a reference written here from its paper or reference code (plain loops, the
reference's own masking), for value and gradient, on seeded random `Outputs` that follow the
token-model contract of `distill.models` with padded tokens in some rows. The checks every
loss gets (built on real token transformers) are generated in tests/test_losses.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import ConfigError, InvalidValue
from distill.losses import LOSSES as REGISTRY
from distill.losses import NoOptions, build_loss
from distill.losses.layers import layer_map
from distill.losses.minilm import MiniLMOptions
from distill.losses.pkd import PKDOptions
from distill.losses.tinybert import TinyBERTAttnOptions, TinyBERTHiddenOptions
from distill.models import Outputs
from distill.parsing import parse_dataclass

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: one thread beats a contended pool (conftest)

B, N = 3, 7
# Row 0 is all real, rows 1 and 2 end in padding (4 and 1 padded tokens).
MASK = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] * 6 + [False]])


def outputs(seed: int, depth: int, dim: int, heads: int, mask: Tensor | None = MASK, grad: bool = True) -> Outputs:
    """Random outputs of a token model: features block0..blockL (B, D, N) and the pooled embedding,
    q, k, v of each block (B, H, N, D/H), the mask; every tensor a leaf that requires grad."""
    g = torch.Generator().manual_seed(seed)
    features = {f"block{i}": torch.randn(B, dim, N, generator=g) for i in range(depth + 1)}
    features["embedding"] = torch.randn(B, dim, generator=g)
    parts = {f"{p}.block{i}": torch.randn(B, heads, N, dim // heads, generator=g) for i in range(1, depth + 1) for p in "qkv"}
    out = Outputs(torch.randn(B, 5, generator=g), features, {}, parts, mask)
    for t in leaves(out):
        t.requires_grad_(grad)
    return out


def leaves(out: Outputs) -> list[Tensor]:
    return [out.logits, *out.features.values(), *out.parts.values()]


def detached(out: Outputs) -> Outputs:
    return Outputs(out.logits.detach(), {k: v.detach() for k, v in out.features.items()}, {},
                   {k: v.detach() for k, v in out.parts.items()}, out.mask)


def at_padding(out: Outputs, kinds: str = "features q k v", seed: int = 9) -> Outputs:
    """The same outputs, with noise added at padded positions only (hidden states and the parts named)."""
    g = torch.Generator().manual_seed(seed)
    pad = ~out.mask

    def noisy(x: Tensor, where: Tensor) -> Tensor:
        return x + 5 * torch.randn(x.shape, generator=g) * where

    features = {k: noisy(v, pad[:, None, :]) if "features" in kinds and k != "embedding" else v for k, v in out.features.items()}
    parts = {k: noisy(v, pad[:, None, :, None]) if k.split(".")[0] in kinds.split() else v for k, v in out.parts.items()}
    return Outputs(out.logits, features, {}, parts, out.mask)


def grads(v: Tensor, tensors: list[Tensor]) -> list[Tensor | None]:
    return list(torch.autograd.grad(v, tensors, allow_unused=True, retain_graph=True))


def assert_same_value_and_gradient(ours: Tensor, ref: Tensor, wrt: list[Tensor]) -> None:
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    g_ours, g_ref = grads(ours, wrt), grads(ref, wrt)
    assert any(g is not None for g in g_ref)
    for a, b in zip(g_ours, g_ref):
        assert (a is None) == (b is None) or (a if b is None else b).abs().max() == 0
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def assert_no_teacher_gradient(v: Tensor, teacher: Outputs) -> None:
    assert all(g is None for g in grads(v, leaves(teacher))), "gradient reached the teacher's tensors"


def num(v: Tensor) -> float:
    return v.detach().item()


def hidden(out: Outputs, i: int) -> Tensor:
    return out.features[f"block{i}"].transpose(1, 2)  # (B, N, D)


# --- references, from the papers' code -----------------------------------------


def cos_reference(so: Outputs, to: Outputs, mask: Tensor, m: int, n: int) -> Tensor:
    """Hugging Face distillation/distiller.py: masked_select the real tokens, CosineEmbeddingLoss, target 1."""
    s, t = hidden(so, m), hidden(to, n)
    keep = mask.unsqueeze(-1).expand_as(s)
    s_slct, t_slct = torch.masked_select(s, keep).view(-1, s.shape[-1]), torch.masked_select(t, keep).view(-1, t.shape[-1])
    return nn.CosineEmbeddingLoss(reduction="mean")(s_slct, t_slct, s_slct.new_ones(s_slct.shape[0]))


def bert_scores(out: Outputs, depth: int, mask: Tensor) -> list[Tensor]:
    """TinyBERT's modeling.py: attention_scores = q k^T / sqrt(d_head) + attention_mask (-10000 at padded keys)."""
    extended = (1.0 - mask[:, None, None, :].float()) * -10000.0
    scores = []
    for i in range(1, depth + 1):
        q, k = out.parts[f"q.block{i}"], out.parts[f"k.block{i}"]
        scores.append(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + extended)
    return scores


def tinybert_attn_reference(so: Outputs, to: Outputs, mask: Tensor, m: int, n: int) -> Tensor:
    """TinyBERT task_distill.py: teacher layer i*k + k - 1 (0-based), scores <= -1e2 zeroed, MSELoss, summed."""
    student_atts, teacher_atts = bert_scores(so, m, mask), bert_scores(to, n, mask)
    layers_per_block = n // m
    new_teacher_atts = [teacher_atts[i * layers_per_block + layers_per_block - 1] for i in range(m)]
    att_loss = 0.0
    for student_att, teacher_att in zip(student_atts, new_teacher_atts):
        student_att = torch.where(student_att <= -1e2, torch.zeros_like(student_att), student_att)
        teacher_att = torch.where(teacher_att <= -1e2, torch.zeros_like(teacher_att), teacher_att)
        att_loss = att_loss + nn.MSELoss()(student_att, teacher_att)
    return att_loss


def tinybert_hidden_reference(so: Outputs, to: Outputs, mask: Tensor, fit_dense: nn.Linear, m: int, n: int,
                              include_padding: bool) -> Tensor:
    """TinyBERT task_distill.py: reps (embeddings first) through fit_dense, teacher rep i*k, MSELoss, summed;
    masked: the squared error summed over real tokens by loops, over (real tokens * d_t)."""
    student_reps = [fit_dense(hidden(so, i)) for i in range(m + 1)]
    teacher_reps = [hidden(to, i) for i in range(n + 1)]
    layers_per_block = n // m
    new_teacher_reps = [teacher_reps[i * layers_per_block] for i in range(m + 1)]
    rep_loss = 0.0
    for student_rep, teacher_rep in zip(student_reps, new_teacher_reps):
        if include_padding:
            rep_loss = rep_loss + nn.MSELoss()(student_rep, teacher_rep)
            continue
        total, count = 0.0, 0
        for b in range(B):
            for j in range(N):
                if mask[b, j]:
                    total = total + ((student_rep[b, j] - teacher_rep[b, j]) ** 2).sum()
                    count += teacher_rep.shape[-1]
        rep_loss = rep_loss + total / count
    return rep_loss


def kl_rows(p_t: Tensor, p_s: Tensor) -> Tensor:
    """Mean over query rows of KL(p_t || p_s), rows of (n, n) distributions."""
    return (p_t * (p_t.log() - p_s.log())).sum(-1).mean()


def minilm_reference(so: Outputs, to: Outputs, mask: Tensor, s_block: int, t_block: int, relation_heads: int = 0) -> Tensor:
    """MiniLM eq. (6)-(9) and MiniLMv2 eq. (2)-(6), per sample on its real tokens only (the padded
    rows and keys cut away, not masked): KL per row, 1/|x| sum over rows, mean over heads, summed
    terms; v2 concatenates the heads and splits them into `relation_heads`."""
    total = 0.0
    for b in range(B):
        real = mask[b].nonzero().squeeze(1)

        def heads(out: Outputs, block: int, p: str) -> list[Tensor]:
            x = out.parts[f"{p}.block{block}"][b][:, real]  # (H, n, dh)
            if relation_heads == 0:
                return list(x)
            cat = x.permute(1, 0, 2).reshape(len(real), -1)  # (n, D): the heads side by side
            width = cat.shape[1] // relation_heads
            return [cat[:, r * width : (r + 1) * width] for r in range(relation_heads)]

        def dist(a: Tensor, c: Tensor) -> Tensor:
            return torch.softmax(a @ c.T / math.sqrt(a.shape[-1]), dim=-1)

        pairs = [("q", "k"), ("v", "v")] if relation_heads == 0 else [("q", "q"), ("k", "k"), ("v", "v")]
        for a, c in pairs:
            s_a, s_c, t_a, t_c = heads(so, s_block, a), heads(so, s_block, c), heads(to, t_block, a), heads(to, t_block, c)
            total = total + sum(kl_rows(dist(ta, tc), dist(sa, sc)) for sa, sc, ta, tc in zip(s_a, s_c, t_a, t_c)) / len(s_a)
    return total / B


def patience_loss(teacher_patience: Tensor, student_patience: Tensor) -> Tensor:
    """PKD's code (intersun/PKD-for-BERT-Model-Compression): normalise each [CLS] vector, MSE over (B, layers, D)."""
    teacher_patience = F.normalize(teacher_patience, p=2, dim=2)
    student_patience = F.normalize(student_patience, p=2, dim=2)
    return F.mse_loss(teacher_patience.float(), student_patience.float())


def pkd_reference(so: Outputs, to: Outputs, s_layers: list[int], t_layers: list[int]) -> Tensor:
    """Ours sums the per-pair means: PKD's code value times the number of pairs."""
    student_patience = torch.stack([so.features[f"block{i}"][:, :, 0] for i in s_layers], dim=1)
    teacher_patience = torch.stack([to.features[f"block{i}"][:, :, 0] for i in t_layers], dim=1)
    return len(s_layers) * patience_loss(teacher_patience, student_patience)


# --- each loss against its reference -------------------------------------------


def build(name: str, opts, so: Outputs, to: Outputs) -> nn.Module:
    torch.manual_seed(0)
    return build_loss(name, opts, so, to)


def test_cos_matches_distilbert():
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 8, 2, grad=False)
    loss = build("cos", NoOptions(), so, to)
    assert loss.teacher_keys == ("features.block6",)
    v = loss(so, to, None)
    assert_same_value_and_gradient(v, cos_reference(so, to, MASK, 3, 6), leaves(so))


def test_tinybert_attn_matches_task_distill():
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 12, 2, grad=False)  # head widths 4 and 6: only the head counts must match
    loss = build("tinybert_attn", TinyBERTAttnOptions(), so, to)
    assert loss.pairs == [(1, 2), (2, 4), (3, 6)]
    assert loss.teacher_keys == ("parts.q.block2", "parts.k.block2", "parts.q.block4", "parts.k.block4", "parts.q.block6", "parts.k.block6")
    assert_same_value_and_gradient(loss(so, to, None), tinybert_attn_reference(so, to, MASK, 3, 6), leaves(so))


@pytest.mark.parametrize("include_padding", [False, True])
def test_tinybert_hidden_matches_task_distill(include_padding):
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 12, 2, grad=False)
    loss = build("tinybert_hidden", TinyBERTHiddenOptions(include_padding=include_padding), so, to)
    assert loss.pairs == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert loss.teacher_keys == ("features.block0", "features.block2", "features.block4", "features.block6")
    assert (loss.proj.in_features, loss.proj.out_features) == (8, 12)
    ref = tinybert_hidden_reference(so, to, MASK, loss.proj, 3, 6, include_padding)
    assert_same_value_and_gradient(loss(so, to, None), ref, [*leaves(so), *loss.parameters()])


def test_minilm_v1_matches_the_paper():
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 12, 2, grad=False)
    loss = build("minilm", MiniLMOptions(), so, to)
    assert loss.teacher_keys == ("parts.q.block6", "parts.k.block6", "parts.v.block6")
    assert_same_value_and_gradient(loss(so, to, None), minilm_reference(so, to, MASK, 3, 6), leaves(so))


@pytest.mark.parametrize("relation_heads", [1, 4])
def test_minilm_v2_matches_the_paper_across_head_counts(relation_heads):
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 16, 4, grad=False)  # 2 heads of 4 vs 4 heads of 4
    loss = build("minilm", MiniLMOptions(relation_heads=relation_heads, teacher_layer=5), so, to)
    assert loss.teacher_keys == ("parts.q.block5", "parts.k.block5", "parts.v.block5")
    ref = minilm_reference(so, to, MASK, 3, 5, relation_heads)
    assert_same_value_and_gradient(loss(so, to, None), ref, leaves(so))


@pytest.mark.parametrize("layers, t_layers", [("skip", [2, 4]), ("last", [4, 5]), ([1, 6], [1, 6])])
def test_pkd_matches_the_patience_loss(layers, t_layers):
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 8, 2, grad=False)
    loss = build("pkd", PKDOptions(layers=layers), so, to)
    assert loss.pairs == [(1, t_layers[0]), (2, t_layers[1])]  # block 3, the student's last, is KD's
    assert loss.teacher_keys == tuple(f"features.block{t}" for t in t_layers)
    assert_same_value_and_gradient(loss(so, to, None), pkd_reference(so, to, [1, 2], t_layers), leaves(so))


# --- properties ------------------------------------------------------------------

# name, options, teacher (depth, dim, heads): student outputs are outputs(0, 3, 8, 2)
LOSSES = [
    ("cos", None, (6, 8, 2)),
    ("tinybert_attn", TinyBERTAttnOptions(), (6, 12, 2)),
    ("tinybert_hidden", TinyBERTHiddenOptions(), (6, 12, 2)),
    ("minilm", MiniLMOptions(), (6, 12, 2)),
    ("minilm", MiniLMOptions(relation_heads=4), (6, 16, 4)),
    ("pkd", PKDOptions(), (6, 8, 2)),
]
IDS = ["cos", "tinybert_attn", "tinybert_hidden", "minilm_v1", "minilm_v2", "pkd"]


def pair(name: str, opts, teacher: tuple[int, int, int], mask: Tensor | None = MASK) -> tuple[nn.Module, Outputs, Outputs]:
    so, to = outputs(0, 3, 8, 2, mask), outputs(1, *teacher, mask, grad=True)
    return build(name, opts if opts is not None else REGISTRY.get(name, "").options(), so, to), so, to


@pytest.mark.parametrize("name, opts, teacher", LOSSES, ids=IDS)
def test_no_gradient_reaches_the_teacher_tensors(name, opts, teacher):
    loss, so, to = pair(name, opts, teacher)
    v = loss(so, to, None)
    assert all(t.requires_grad for t in leaves(to))
    assert_no_teacher_gradient(v, to)
    assert any(g is not None and g.abs().sum() > 0 for g in grads(v, leaves(so)))


@pytest.mark.parametrize("name, opts, teacher", LOSSES, ids=IDS)
def test_the_mask_changes_the_value(name, opts, teacher):
    loss, so, to = pair(name, opts, teacher)
    v, unmasked = loss(so, to, None), loss(so._replace(mask=None), to._replace(mask=None), None)
    if name == "pkd":  # it reads position 0 ([CLS]) only, always a real token
        torch.testing.assert_close(v, unmasked)
    else:
        assert abs(num(v) - num(unmasked)) > 1e-4
    # the teacher's mask stands in for a student without one (cached outputs may carry it instead)
    torch.testing.assert_close(loss(so._replace(mask=None), to, None), v)


@pytest.mark.parametrize("name, opts, teacher", [c for c in LOSSES if c[0] != "tinybert_attn"],
                         ids=[i for i in IDS if i != "tinybert_attn"])
def test_padded_positions_do_not_count(name, opts, teacher):
    loss, so, to = pair(name, opts, teacher)
    v = loss(so, to, None)
    torch.testing.assert_close(loss(at_padding(so), at_padding(to, seed=10), None), v)


def test_tinybert_attn_zeroes_padded_keys_but_counts_padded_queries_as_the_reference():
    loss, so, to = pair("tinybert_attn", TinyBERTAttnOptions(), (6, 12, 2))
    v = loss(so, to, None)
    torch.testing.assert_close(loss(at_padding(so, "k"), at_padding(to, "k", seed=10), None), v)
    moved = at_padding(so, "q")
    assert abs(num(loss(moved, to, None)) - num(v)) > 1e-3
    torch.testing.assert_close(loss(moved, to, None), tinybert_attn_reference(moved, to, MASK, 3, 6))


def test_tinybert_hidden_with_padding_ignores_the_mask():
    loss, so, to = pair("tinybert_hidden", TinyBERTHiddenOptions(include_padding=True), (6, 12, 2))
    torch.testing.assert_close(loss(so._replace(mask=None), to._replace(mask=None), None), loss(so, to, None))


@pytest.mark.parametrize("name, opts", [("cos", None), ("tinybert_attn", TinyBERTAttnOptions(layers=[1, 2, 3])),
                                        ("minilm", MiniLMOptions()), ("minilm", MiniLMOptions(relation_heads=2)),
                                        ("pkd", PKDOptions(layers=[1, 2]))], ids=["cos", "tinybert_attn", "minilm_v1", "minilm_v2", "pkd"])
def test_zero_when_the_student_is_the_teacher(name, opts):
    so = outputs(0, 3, 8, 2)
    loss = build(name, opts if opts is not None else NoOptions(), so, detached(so))
    v = loss(so, detached(so), None)
    assert abs(num(v)) < 1e-6, num(v)
    other = outputs(1, 3, 8, 2, grad=False)
    assert num(loss(so, other, None)) > 1e-3


def test_tinybert_hidden_is_zero_when_the_projection_is_the_identity():
    so = outputs(0, 3, 8, 2)
    loss = build("tinybert_hidden", TinyBERTHiddenOptions(layers=[1, 2, 3]), so, detached(so))
    with torch.no_grad():
        loss.proj.weight.copy_(torch.eye(8))
        loss.proj.bias.zero_()
    assert num(loss(so, detached(so), None)) < 1e-10


# --- layer maps --------------------------------------------------------------------


def test_uniform_is_tinyberts_map():
    # TinyBERT: new_teacher_atts = [teacher_atts[i * k + k - 1] for i in range(M)] (0-based), reps [k * i for i in range(M + 1)]
    m, n = 3, 6
    k = n // m
    assert layer_map("uniform", m, n) == [(i + 1, i * k + k - 1 + 1) for i in range(m)] == [(1, 2), (2, 4), (3, 6)]
    assert layer_map("uniform", m, n, "hidden") == [(i, k * i) for i in range(m + 1)] == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert layer_map("uniform", 4, 12) == [(1, 3), (2, 6), (3, 9), (4, 12)]  # TinyBERT-4 of BERT-base


def test_skip_and_last_are_pkds_maps():
    # PKD, 6-layer student of BERT-base: PKD-Skip {2,4,6,8,10}, PKD-Last {7,8,9,10,11} for student blocks 1..5
    assert [t for _, t in layer_map("skip", 6, 12, count=5)] == [2, 4, 6, 8, 10]
    assert [t for _, t in layer_map("last", 6, 12, count=5)] == [7, 8, 9, 10, 11]
    assert layer_map("skip", 3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert layer_map("last", 2, 6, "hidden") == [(0, 0), (1, 5), (2, 6)]


def test_explicit_lists():
    assert layer_map([1, 5, 6], 3, 6) == [(1, 1), (2, 5), (3, 6)]
    assert layer_map([1, 5, 6], 3, 6, "hidden") == [(0, 0), (1, 1), (2, 5), (3, 6)]
    assert layer_map([1, 1, 5, 6], 3, 6, "hidden") == [(0, 1), (1, 1), (2, 5), (3, 6)]  # M + 1 entries: from the embeddings


@pytest.mark.parametrize("spec, m, n, what, message", [
    ([1, 7, 6], 3, 6, "blocks", "layers: the teacher has 6 blocks, the map [1, 7, 6] names block 7"),
    ([0, 2, 4], 3, 6, "blocks", "names block 0 (block0, the embeddings, pairs only in hidden-state maps)"),
    ([2, 4], 3, 6, "blocks", "layers: the student has 3 blocks, the list names 2 teacher blocks (one per student block)"),
    ([1, 2, 3, 4, 5], 3, 6, "hidden", "layers: the student has 3 blocks, the list names 5 teacher blocks"),
    ("skip", 3, 4, "blocks", "layers: the teacher has 4 blocks, the map 'skip' names block 6"),
    ("last", 4, 3, "blocks", "the teacher has 3"),
    ("uniform", 3, 4, "blocks", "layers: uniform needs the teacher's depth to be a multiple of the student's (teacher 4 blocks, student 3); "
                                "give a list of 3 teacher blocks instead, e.g. [1, 3, 4]"),
])
def test_bad_maps_are_errors_naming_the_block(spec, m, n, what, message):
    with pytest.raises(ValueError) as e:
        layer_map(spec, m, n, what)
    assert message in str(e.value)


def test_a_bad_map_is_a_one_line_config_error_naming_the_loss():
    so, to = outputs(0, 3, 8, 2), outputs(1, 4, 8, 2, grad=False)
    for name, opts in (("tinybert_attn", TinyBERTAttnOptions()), ("tinybert_hidden", TinyBERTHiddenOptions())):
        with pytest.raises(ConfigError, match=rf"^losses\.{name}: layers: uniform needs .*multiple.*give a list of 3 teacher blocks"):
            build_loss(name, opts, so, to)
    one_per_block = r"the list names 3 teacher blocks \(one per student block 1\.\.2\)$"
    with pytest.raises(ConfigError, match=r"^losses\.pkd: layers: the student has 3 blocks, " + one_per_block):
        build_loss("pkd", PKDOptions(layers=[1, 2, 3]), so, to)


def test_the_layers_option_parses_a_name_or_a_list():
    path = "losses.tinybert_attn"
    assert parse_dataclass(TinyBERTAttnOptions, {}, path).layers == "uniform"
    assert parse_dataclass(PKDOptions, {}, "losses.pkd").layers == "skip"
    assert parse_dataclass(TinyBERTAttnOptions, {"layers": "last"}, path).layers == "last"
    assert parse_dataclass(TinyBERTAttnOptions, {"layers": [2, 4, 6]}, path).layers == [2, 4, 6]
    assert TinyBERTAttnOptions(layers=(2, 4)).layers == [2, 4]
    with pytest.raises(ConfigError, match=r"losses\.tinybert_attn\.layers: unknown map 'uniformly'"):
        parse_dataclass(TinyBERTAttnOptions, {"layers": "uniformly"}, path)
    for bad in ([2, "x"], [], [True, 2], 3):
        with pytest.raises(ConfigError, match=r"losses\.tinybert_attn\.layers"):
            parse_dataclass(TinyBERTAttnOptions, {"layers": bad}, path)
    with pytest.raises(InvalidValue):
        MiniLMOptions(relation_heads=-1)


# --- pairings that cannot work: one-line errors ---------------------------------------


@pytest.mark.parametrize("name", ["cos", "pkd"])
def test_hidden_sizes_must_match_without_a_projection(name):
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 16, 2, grad=False)
    with pytest.raises(ConfigError) as e:
        build_loss(name, PKDOptions() if name == "pkd" else NoOptions(), so, to)
    assert str(e.value) == (f"losses.{name}: hidden sizes differ (student 8, teacher 16): {name} needs equal sizes; "
                            "use tinybert_hidden, which learns a projection")
    build_loss("tinybert_hidden", TinyBERTHiddenOptions(), so, to)  # which does build


def test_head_counts_must_match_for_tinybert_attn_and_minilm_v1():
    so, to = outputs(0, 3, 8, 2), outputs(1, 6, 16, 4, grad=False)
    with pytest.raises(ConfigError, match=r"^losses\.tinybert_attn: attention heads differ \(student block1 2, teacher block2 4\)"):
        build_loss("tinybert_attn", TinyBERTAttnOptions(), so, to)
    with pytest.raises(ConfigError, match=r"^losses\.minilm: attention heads differ \(student 2, teacher 4\): .*relation_heads"):
        build_loss("minilm", MiniLMOptions(), so, to)
    with pytest.raises(ConfigError, match=r"^losses\.minilm: relation_heads: 3 relation heads do not divide the student's hidden size 8"):
        build_loss("minilm", MiniLMOptions(relation_heads=3), so, to)
    with pytest.raises(ConfigError, match=r"^losses\.minilm: teacher_layer: the teacher has 6 blocks, teacher_layer names block 7"):
        build_loss("minilm", MiniLMOptions(teacher_layer=7), so, to)


def test_non_token_models_and_missing_parts_are_config_errors():
    mlp = Outputs(torch.randn(B, 5), {"layer1": torch.randn(B, 8), "embedding": torch.randn(B, 8)}, {})
    so = outputs(0, 3, 8, 2)
    with pytest.raises(ConfigError, match=r"^losses\.cos: needs token models .*the student has features layer1, embedding"):
        build_loss("cos", NoOptions(), mlp, so)
    no_parts = so._replace(parts={})
    with pytest.raises(ConfigError, match=r"^losses\.minilm: minilm needs the teacher's queries, keys and values .*expose"):
        build_loss("minilm", MiniLMOptions(), so, no_parts)
