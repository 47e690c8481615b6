"""A real sentence encoder distilled as a user would: all-MiniLM-L6-v2 (installed from PyPI, extracted
from its model.zip; scripts/real_text.py), used as it stands as the teacher, its pooling read from its
sentence-transformers files; a 2-layer student started from its layers in a real `kdx search --smoke`
on King James verses (Debian's bible-kjv); exported, and the exported folder reloaded with
`sentence_transformers.SentenceTransformer` to its logged test Spearman; and the embed search of the
kdx transformer exported and reloaded from the card's own snippet. Nothing reaches the Hugging Face
hub. Slow step: hundreds of verses, one epoch."""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search_helpers import ROOT, kdx, runs

pytestmark = pytest.mark.slow

sys.path.insert(0, str(ROOT / "scripts"))

CONFIG = """
experiment: minilm-embed
data: {{name: sentences, path: verses.txt, tokenizer_path: {minilm}, max_len: 32}}
teacher: {{family: hf, pretrained: {minilm}, train: false}}
student: {{family: hf, pretrained: {minilm}, num_hidden_layers: 2}}
train: {{epochs: 1, batch_size: 32, lr: 0.0001, optimizer: adamw, init: teacher}}
mix: {{emb_mse: 1.0}}
space: {{mix.emb_mse: {{float: [0.5, 1.0]}}}}
search: {{num_samples: 1, max_concurrent: 1, sampler: random, objectives: {{val_spearman: max, params: min}}, scheduler: none, twins: base_recipe}}
resources: {{cpu: 2, gpu: 0}}
"""


def test_minilm_distils_into_two_layers_exports_and_reloads_with_sentence_transformers(tmp_path):
    from real_text import _book_verses, minilm_folder

    verses = [v for book in ("Psalms", "Proverbs") for v in _book_verses(book)]
    random.Random(0).shuffle(verses)
    (tmp_path / "verses.txt").write_text("\n".join(verses[:400]) + "\n")
    minilm = minilm_folder()
    (tmp_path / "c.yaml").write_text(CONFIG.format(minilm=minilm))
    out = out_search = kdx("search", "c.yaml", "--smoke", cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "teacher: used as it stands (not trained)" in out.stdout and "test_spearman 1.0000" in out.stdout
    done = [r for r in runs(tmp_path / "mlflow.db", "minilm-embed") if r.info.status == "FINISHED"]
    student = next(r for r in done if r.data.tags.get("kdx.role") == "student")
    twin = next(r for r in done if r.data.tags.get("kdx.role") == "baseline")
    assert student.data.tags["kdx.start"] == twin.data.tags["kdx.start"] == "teacher"  # the SimCSE twin took the same start
    assert student.data.metrics["start_test_spearman"] > 0.3 and 0 <= student.data.metrics["test_recall10"] <= 1

    out = kdx("export", "--experiment", "minilm-embed", "--out", "exported", "--formats", "safetensors", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (folder,) = sorted((tmp_path / "exported").glob("p*-*"))
    card = json.loads((folder / "card.json").read_text())
    logged = card["metrics"]["test_spearman"]
    assert logged == pytest.approx(student.data.metrics["test_spearman"])

    from sentence_transformers import SentenceTransformer

    from distill.datasets.corpus import read_documents
    from distill.datasets.sentences import SentencesOptions
    from distill.tasks.embed import PAIRS_OF, _upper, spearman
    from distill.text import test_split

    opts = SentencesOptions(path=str(tmp_path / "verses.txt"), max_len=32)
    texts = read_documents(opts.path, "data.path", opts)
    _, held = test_split(len(texts), opts.test_fraction, [0, 13])  # the data seed's test lines, as kdx split them
    test = [texts[i] for i in held][:PAIRS_OF]
    student_st, teacher_st = SentenceTransformer(str(folder / "hf"), device="cpu"), SentenceTransformer(str(minilm), device="cpu")
    teacher_st.max_seq_length = 32  # the data's max_len: kdx cut the verses there
    assert student_st.max_seq_length == 32 and len(student_st) == 3  # Transformer, Pooling, Normalize: the teacher's modules
    s, t = (torch.from_numpy(np.asarray(m.encode(test, batch_size=64))) for m in (student_st, teacher_st))
    assert spearman(_upper(s), _upper(t)) == pytest.approx(logged, rel=1e-4)

    # the static floor: model2vec distilled from the teacher's folder, logged beside the search and drawn on its frontier;
    # its logged score is what model2vec's own encode gives on the same test verses (cut alike: max_len less [CLS], [SEP])
    floor = next(r for r in done if r.data.tags.get("kdx.role") == "floor")
    assert floor.data.tags["kdx.floor"].startswith("model2vec") and floor.data.metrics["params"] > 1e6
    assert "static floor scored: test_spearman" in out_search.stdout
    from model2vec.distill import distill

    static = distill(model_name=str(minilm), device="cpu")
    e = torch.nn.functional.normalize(torch.from_numpy(np.asarray(static.encode(test, max_length=30), dtype=np.float32)), dim=-1)
    assert spearman(_upper(e), _upper(t)) == pytest.approx(floor.data.metrics["test_spearman"], rel=1e-3)
    assert floor.data.metrics["params"] == int(np.prod(static.embedding.shape))


def test_the_shipped_embed_search_runs_exports_and_its_card_loads_the_student(tmp_path):
    """examples/embed_search.yaml as shipped (its text from examples/data), in --smoke: a kdx transformer
    student per trial beside its SimCSE twin, exported, and the card's snippet rebuilding the student."""
    config = (ROOT / "examples" / "embed_search.yaml").read_text().replace("path: data/topics.txt", f"path: {ROOT / 'examples/data/topics.txt'}")
    config = config.replace("pairs: data/topics_pairs.tsv", f"pairs: {ROOT / 'examples/data/topics_pairs.tsv'}")
    (tmp_path / "e.yaml").write_text(config)
    out = kdx("search", "e.yaml", "--smoke", cwd=tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "gain: 4 recipe(s) each for KD and the tuned twin" in out.stdout and "Pareto front:" in out.stdout  # search.twins: tuned, the default
    assert "points over the tuned twin" in out.stdout and "on the gold set (data.pairs)" in out.stdout
    out = kdx("export", "--experiment", "embed-topics-search", "--out", "exported", "--formats", "safetensors,export", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "test_spearman" in out.stdout and "reproduced by every format" in out.stdout
    for folder in sorted((tmp_path / "exported").glob("p*-*")):
        card = json.loads((folder / "card.json").read_text())
        scope: dict = {}
        import os

        here = os.getcwd()
        os.chdir(folder)
        try:
            exec(card["how_to_load"]["model.safetensors"], scope)
            ids = torch.randint(1, card["tokens"]["vocab_size"], (4, card["tokens"]["max_len"]))
            pt2 = torch.export.load("model.pt2").module()
            assert torch.allclose(scope["model"](ids).logits, pt2(ids), atol=1e-5)  # both give the sentence embeddings
        finally:
            os.chdir(here)
        assert "sentence embeddings" in card["how_to_load"]["model.pt2"] and 0 <= card["metrics"]["test_recall10"] <= 1
