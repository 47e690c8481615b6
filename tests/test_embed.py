"""The embed task (distill/tasks/embed.py): its losses against independent formulas, its metrics
against scipy, the `sentences` dataset and its bad inputs, the losses each task takes, and one
run with its SimCSE twin on the text examples/embed.yaml ships."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from data_helpers import data
from distill.config import RunConfig
from distill.errors import ConfigError, DataError
from distill.losses import build_loss, LOSSES
from distill.models import Outputs
from distill.tasks import task_named
from distill.tasks.embed import recall_at_k, spearman

TOPICS = Path(__file__).resolve().parents[1] / "examples" / "data" / "topics.txt"
PAIRS = TOPICS.with_name("topics_pairs.tsv")
EMBED_LOSSES = ("emb_mse", "emb_cos", "sim_kl")


def out(e: torch.Tensor) -> Outputs:
    return Outputs(e, {"embedding": e}, {})


def pair(b: int = 6, ds: int = 4, dt: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, ds, generator=g, dtype=torch.float64).float(), torch.randn(b, dt, generator=g, dtype=torch.float64).float()


def loss(name: str, s: torch.Tensor, t: torch.Tensor, **options) -> tuple[torch.nn.Module, torch.Tensor]:
    module = build_loss(name, LOSSES.get(name, "").options(**options), out(s), out(t))
    return module, module(out(s), out(t), torch.zeros(len(s), dtype=torch.long))


def test_emb_mse_and_emb_cos_equal_their_formulas_and_vanish_when_the_student_is_the_teacher():
    s, t = pair()
    assert loss("emb_mse", s, t)[1].item() == pytest.approx(float(((s.double() - t.double()) ** 2).mean()), rel=1e-6)
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(s.numpy(), t.numpy())]
    assert loss("emb_cos", s, t)[1].item() == pytest.approx(float(np.mean([1 - c for c in cos])), rel=1e-6)
    for name in EMBED_LOSSES:
        assert loss(name, t.clone(), t)[1].item() == pytest.approx(0.0, abs=1e-6), name


def test_a_narrower_student_learns_a_projection_that_the_loss_owns():
    s, t = pair(ds=3, dt=5)
    for name in ("emb_mse", "emb_cos"):
        module, value = loss(name, s.requires_grad_(), t)
        assert module.project.weight.shape == (5, 3)  # W maps the student's 3 dims to the teacher's 5
        value.backward()
        assert module.project.weight.grad is not None and s.grad is not None
        s.grad = None


def test_sim_kl_is_the_kl_of_the_in_batch_neighbour_distributions():
    s, t = pair(b=5, ds=3, dt=7)
    tau = 0.1

    def neighbours(e: np.ndarray) -> np.ndarray:  # row i: softmax over j != i of cos(e_i, e_j) / tau
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        p = np.zeros((len(e), len(e)))
        for i in range(len(e)):
            logits = np.array([e[i] @ e[j] / tau if j != i else -np.inf for j in range(len(e))])
            p[i] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        return p

    p, q = neighbours(t.double().numpy()), neighbours(s.double().numpy())
    kl = np.mean([sum(p[i, j] * math.log(p[i, j] / q[i, j]) for j in range(5) if j != i) for i in range(5)])
    assert loss("sim_kl", s, t, temperature=tau)[1].item() == pytest.approx(kl, rel=1e-5)


def test_simcse_is_the_cross_entropy_of_each_view_against_its_sentence_other_view():
    z = torch.randn(8, 4, dtype=torch.float64).float()  # [view 1 of 4 sentences; view 2]
    z1, z2 = z[:4].double().numpy(), z[4:].double().numpy()
    z1, z2 = z1 / np.linalg.norm(z1, axis=1, keepdims=True), z2 / np.linalg.norm(z2, axis=1, keepdims=True)
    sims = z1 @ z2.T / 0.05
    expected = np.mean([-(sims[i, i] - np.log(np.exp(sims[i]).sum())) for i in range(4)])
    module = build_loss("simcse", LOSSES.get("simcse", "").options(), out(z), None)
    assert module.views == 2 and module(out(z), None, torch.zeros(8, dtype=torch.long)).item() == pytest.approx(expected, rel=1e-5)


def test_no_embedding_loss_sends_gradient_into_the_teacher():
    s, t = pair()
    t.requires_grad_()
    for name in EMBED_LOSSES + ("rkd",):
        loss(name, s.clone().requires_grad_(), t)[1].backward()
        assert t.grad is None, name


def test_spearman_and_recall_agree_with_independent_computations():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, generator=g), torch.randn(300, generator=g)
    b = a + 0.5 * b
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)
    tied = torch.tensor([0.1, 0.5, 0.5, 0.5, 0.9, 0.2, 0.2])  # a repeated sentence ties every one of its pairs
    other = torch.tensor([0.3, 0.4, 0.1, 0.6, 0.8, 0.2, 0.5])
    assert spearman(tied, other) == pytest.approx(spearmanr(tied.numpy(), other.numpy()).statistic, abs=1e-9)
    e = F.normalize(torch.randn(40, 6, generator=g), dim=-1)
    assert recall_at_k(e, e) == 1.0  # the teacher's own neighbours
    shuffled = F.normalize(torch.randn(40, 6, generator=g), dim=-1)
    sims_t, sims_s = e @ e.T, shuffled @ shuffled.T
    hits = []
    for i in range(40):
        near = lambda m: set(sorted((j for j in range(40) if j != i), key=lambda j: -float(m[i, j]))[:10])  # noqa: E731
        hits.append(len(near(sims_t) & near(sims_s)) / 10)
    assert recall_at_k(shuffled, e) == pytest.approx(float(np.mean(hits)))


def test_sentences_split_by_line_and_tokenize(tmp_path):
    d = data(name="sentences", path=str(TOPICS), max_len=20, vocab_size=400)
    assert d.task == "embed" and d.task_type.name == "embed" and d.input_shape.task == "embed"
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 3000 and d.x_train.shape[1] == 20
    (tmp_path / "s.jsonl").write_text("".join(f'{{"body": "sentence number {i} about boats"}}\n' for i in range(30)))
    j = data(name="sentences", path=str(tmp_path / "s.jsonl"), text_column="body", vocab_size=40)
    assert len(j.x_test) == 6


@pytest.mark.parametrize("content, options, error", [
    ("", {}, "data.path: <tmp>/f.txt is empty (no text)"),
    (b"ok line\n\xff\xfe bad\n", {}, "data.path: <tmp>/f.txt line 2: not UTF-8"),
    ("one\ntwo\nthree\n", {}, "data.path: <tmp>/f.txt has 3 sentences: too few"),
    ('{"text": "fine"}\n{"body": "no text"}\n', {"path": "f.jsonl"}, "expected an object with a string 'text' field"),
])
def test_bad_text_is_one_line(tmp_path, content, options, error):
    name = options.get("path", "f.txt")
    target = tmp_path / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as e:
        data(name="sentences", **{**options, "path": str(target)})
    assert error.replace("<tmp>", str(tmp_path)) in str(e.value) and "\n" not in str(e.value)


def test_a_file_of_another_kind_is_refused_by_its_suffix(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.path: '.*\.csv' is not .txt or .jsonl"):
        data(name="sentences", path=str(tmp_path / "a.csv"))


@pytest.mark.parametrize("data, mix, error", [
    ({"name": "sentences", "path": str(TOPICS)}, {"ce": 0.1, "kd": 0.9}, "mix.ce: data sentences is sentence embedding, which this loss does not teach: use"),
    ({"name": "sentences", "path": str(TOPICS)}, {"token_kd": 1.0}, "mix.token_kd: data sentences is sentence embedding"),
    ({"name": "mnist1d"}, {"ce": 0.5, "emb_mse": 0.5}, "mix.emb_mse: data mnist1d is classification, which this loss does not teach"),
    ({"name": "hmm"}, {"ce": 0.5, "sim_kl": 0.5}, "mix.sim_kl: data hmm is language modelling"),
])
def test_a_loss_of_another_task_is_one_line(data, mix, error):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"data": data, "mix": mix})
    assert str(e.value).startswith(error)


def test_each_task_takes_its_own_losses():
    embed, classify = task_named("embed"), task_named("classify")
    assert set(embed.fitting()) == {"emb_cos", "emb_mse", "rkd", "sim_kl"} and embed.fits("simcse") and not embed.fits("ce")
    assert "rkd" in classify.fitting() and not any(classify.fits(n) for n in ("emb_mse", "sim_kl", "simcse", "token_kd"))


def test_a_searched_teacher_is_refused_where_the_teacher_is_the_reference(tmp_path):
    from workflows.experiment import load_experiment

    (tmp_path / "e.yaml").write_text(f"data: {{name: sentences, path: {TOPICS}}}\nmix: {{emb_mse: 1.0}}\n"
                                     "teacher: {family: transformer}\nstudent: {family: transformer}\n"
                                     "space: {teacher.depth: {choice: [1, 2]}}\n")
    with pytest.raises(ConfigError, match="^space: teacher.depth: every sentence embedding run is scored against the search's teacher"):
        load_experiment(str(tmp_path / "e.yaml"))


def test_pruning_cuts_a_bare_encoder():
    """A sentence encoder is a bare AutoModel (its layers at hf.encoder.layer, not hf.bert.encoder.layer)."""
    from distill.models import TokenShape, build_model
    from distill.models.hf import HFOptions
    from distill.prune import prune_from_teacher

    shape = TokenShape(8, vocab=30, task="embed")
    size = dict(model_type="bert", hidden_size=16, num_attention_heads=4, intermediate_size=32)
    teacher = build_model("hf", HFOptions(num_hidden_layers=4, **size), shape, 0).eval()
    student = build_model("hf", HFOptions(num_hidden_layers=2, **size), shape, 0)
    kept = prune_from_teacher(student, teacher, {}, "every_other")
    assert kept["layers"] == [0, 2]
    assert torch.equal(student.hf.encoder.layer[1].output.dense.weight, teacher.hf.encoder.layer[2].output.dense.weight)


def test_fewer_sentences_than_a_batch_is_one_line(tmp_path):
    (tmp_path / "f.txt").write_text("\n".join(f"a short sentence {i}" for i in range(20)))
    config = RunConfig.from_dict({"data": {"name": "sentences", "path": str(tmp_path / "f.txt"), "vocab_size": 40},
                                  "teacher": {"family": "transformer", "dim": 8, "depth": 1, "heads": 2, "epochs": 1},
                                  "student": {"family": "transformer", "dim": 8, "depth": 1, "heads": 2},
                                  "train": {"epochs": 1, "batch_size": 64}, "mix": {"emb_mse": 1.0}})
    from distill.job import distill_once

    with pytest.raises(DataError, match=r"^data: 1\d training sentences, fewer than a batch of 128 \(train.batch_size, or teacher.batch_size"):
        distill_once(config, log=lambda s: None)


def test_a_run_and_its_simcse_twin_are_scored_against_the_teacher(tmp_path):
    """examples/embed.yaml's data and shapes, on a tenth of its budget: the teacher scores 1 against itself,
    the student and its twin are in [-1, 1], and the run logs the task's metrics by their names."""
    from distill.job import distill_once
    from workflows.records import final_metrics

    lines = TOPICS.read_text().splitlines()
    (tmp_path / "t.txt").write_text("\n".join(random.Random(0).sample(lines, 600)))
    config = RunConfig.from_dict({"data": {"name": "sentences", "path": str(tmp_path / "t.txt"), "max_len": 20, "vocab_size": 200,
                                           "pairs": str(PAIRS)},
                                  "teacher": {"family": "transformer", "dim": 32, "depth": 2, "heads": 4, "dropout": 0.1, "epochs": 2, "batch_size": 64},
                                  "student": {"family": "transformer", "dim": 16, "depth": 1, "heads": 4, "dropout": 0.1},
                                  "train": {"epochs": 2, "lr": 0.002, "batch_size": 64}, "mix": {"emb_mse": 1.0, "sim_kl": 1.0}})
    job = distill_once(config, twin=True, log=lambda s: None)
    assert job.teacher.val_acc == pytest.approx(1.0) and job.teacher.test_acc == pytest.approx(1.0)
    for r in (job.student, job.twin):
        assert -1.0 <= r.test_acc <= 1.0 and math.isfinite(r.val_acc)
    assert dataclasses.asdict(config.scratch_twin())["mix"] == {"simcse": 1.0}
    from workflows.records import spoken_name

    assert spoken_name(config.scratch_twin(), job.data).split(" · ")[1] == "scratch"  # SimCSE is this task's labels loss, as ce is a classifier's
    metrics = final_metrics(job.student, job.data)
    assert {"val_spearman", "test_spearman", "test_recall10", "val_sim_mse", "test_sim_mse"} <= set(metrics)
    assert "val_acc" not in metrics and 0.0 <= metrics["test_recall10"] <= 1.0
    assert job.to_dict()["gain"] == pytest.approx(job.student.test_acc - job.twin.test_acc)

    # the gold set: each model's cosine similarity of each pair, ranked against the file's scores (scipy's Spearman)
    import csv

    from distill.tasks.embed import embed

    rows = list(csv.DictReader(PAIRS.open(), delimiter="\t"))
    p = job.data.pairs
    assert len(p.score) == len(rows) == 400 and p.score.tolist() == [float(r["score"]) for r in rows]
    for model, logged in ((job.student.model, metrics["test_gold_spearman"]), (None, job.teacher.metrics["test_gold_spearman"])):
        model = model if model is not None else __import__("distill.teacher", fromlist=["get_teacher"]).get_teacher(config, job.data, log=lambda s: None)[0]
        cos = (embed(model, p.x1) * embed(model, p.x2)).sum(1).numpy()
        assert logged == pytest.approx(spearmanr(cos, p.score.numpy()).statistic, abs=1e-6)
    result = job.to_dict()
    lines = job.data.task_type.result_lines(result)
    assert "400 pairs" in lines and f"student {metrics['test_gold_spearman']:.4f}" in lines and "teacher " in lines


def test_every_pair_is_scored_once():
    """Spearman over the upper triangle: n(n-1)/2 pairs, none twice, no self-pair."""
    from distill.tasks.embed import _upper

    e = F.normalize(torch.randn(7, 3), dim=-1)
    sims = _upper(e)
    assert len(sims) == 21 and sorted(float(x) for x in sims) == sorted(float(e[i] @ e[j]) for i, j in itertools.combinations(range(7), 2))


def _encoder_folder(tmp_path: Path, modules: list | None = None, pooling: dict | None = None) -> Path:
    """A tiny BERT config (no weights: pooling is decided before any weight is read), with sentence-transformers files if given."""
    from transformers import BertConfig

    folder = tmp_path / "enc"
    BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16).save_pretrained(folder)
    if modules is not None:
        (folder / "modules.json").write_text(__import__("json").dumps(modules))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(__import__("json").dumps(pooling))
    return folder


ST_MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
              {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
              {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]


def test_a_sentence_transformers_folder_says_how_it_pools(tmp_path):
    from distill.models.hf import HFOptions, encoder_pooling, st_pooling

    mean = _encoder_folder(tmp_path, ST_MODULES, {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False})
    assert st_pooling(str(mean)) == ("mean", True)  # all-MiniLM-L6-v2's: mean over real tokens, then Normalize
    assert encoder_pooling(HFOptions(pretrained=str(mean), pool="cls", normalize=False)) == ("cls", False)  # the config overrides
    (mean / "1_Pooling" / "config.json").write_text('{"embedding_dimension": 8, "pooling_mode": "lasttoken"}')  # sentence-transformers 6
    assert st_pooling(str(mean)) == ("last", True)
    (mean / "1_Pooling" / "config.json").write_text('{"word_embedding_dimension": 8, "pooling_mode_max_tokens": true}')
    with pytest.raises(ValueError, match="^pool: .* pools its tokens by pooling_mode_max_tokens; kdx computes one of mean, cls or last"):
        st_pooling(str(mean))


def test_a_bare_encoder_without_pool_is_one_line(tmp_path):
    from distill.models import TokenShape, build_model
    from distill.models.hf import HFOptions

    bare = _encoder_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"^teacher: '.*enc' says nothing of how its tokens become a sentence .* set pool: mean, cls or last$"):
        build_model("hf", HFOptions(pretrained=str(bare)), TokenShape(8, vocab=30, task="embed"), 0, "teacher")


def test_an_encoder_from_a_config_pools_the_mean_of_its_real_tokens():
    from distill.models import TokenShape, build_model
    from distill.models.hf import HFOptions

    model = build_model("hf", HFOptions(model_type="bert", hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16),
                        TokenShape(6, vocab=30, task="embed"), 0).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 6, 7, 8, 9, 4]])
    out = model(ids)
    hidden = model.hf(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
    assert out.logits.shape == (2, 8) and torch.allclose(out.logits[0], hidden[0, :3].mean(0), atol=1e-6)
