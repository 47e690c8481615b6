"""The embed task's two references beside the teacher: a gold similarity set (`data.pairs`, read and
refused line by line) and the static floor (model2vec's table over kdx's ids, distill/static.py),
checked here on a stand-in table; tests/test_embed_real.py checks it against model2vec itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import data
from distill.datasets.sentences import read_pairs
from distill.errors import ConfigError, DataError
from distill.static import StaticEncoder, as_static


def test_pairs_read_from_tsv_csv_and_jsonl_alike(tmp_path):
    rows = [("a cat sat", "a cat sits", 4.5), ("boats float", "taxes rise", 0.25), ("he sings", "she sings", 3)]
    (tmp_path / "g.tsv").write_text("text1\ttext2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in rows))
    (tmp_path / "g.csv").write_text("score,sentence1,sentence2\n" + "".join(f'{s},"{a}","{b}"\n' for a, b, s in rows))
    (tmp_path / "g.jsonl").write_text("".join(f'{{"text1": "{a}", "text2": "{b}", "score": {s}}}\n' for a, b, s in rows) + "\n")
    want = ([r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows])
    assert read_pairs(tmp_path / "g.tsv", "data.pairs", ["text1", "text2", "score"]) == want
    assert read_pairs(tmp_path / "g.csv", "data.pairs", ["sentence1", "sentence2", "score"]) == want
    assert read_pairs(tmp_path / "g.jsonl", "data.pairs", ["text1", "text2", "score"]) == want


@pytest.mark.parametrize("name, content, error", [
    ("g.tsv", "text1\ttext2\tsimilarity\na\tb\t1\n", "data.pairs: <tmp>/g.tsv: no column 'score' (it has 'text1', 'text2', 'similarity'); set data.pair_columns"),
    ("g.tsv", "text1\ttext2\tscore\na\tb\t1\nc\td\thigh\ne\tf\t2\n", "data.pairs: <tmp>/g.tsv line 3: the score 'score' is 'high', not a number"),
    ("g.csv", "text1,text2,score\na,b,1\nc,d,\ne,f,2\n", "data.pairs: <tmp>/g.csv line 3: the score 'score' is '', not a number"),
    ("g.tsv", "text1\ttext2\tscore\na\tb\t1\n\td\t2\ne\tf\t3\n", "data.pairs: <tmp>/g.tsv line 3: 'text1' is empty"),
    ("g.jsonl", '{"text1": "a", "text2": "b", "score": 1}\n{"text1": "a", "score": 2}\n', "data.pairs: <tmp>/g.jsonl line 2: no 'text2' field (it has 'text1', 'score'); set data.pair_columns"),
    ("g.jsonl", '{"text1": "a", "text2": "b", "score": "1.5x"}\n', "data.pairs: <tmp>/g.jsonl line 1: the score 'score' is '1.5x', not a number"),
    ("g.jsonl", '{"text1": "a", "text2": "b", "score": NaN}\n', "data.pairs: <tmp>/g.jsonl line 1: the score 'score' is nan"),
    ("g.tsv", "text1\ttext2\tscore\na\tb\t1\nc\td\t2\n", "data.pairs: <tmp>/g.tsv has 2 pairs: too few to rank (at least 3)"),
    ("g.tsv", "text1\ttext2\tscore\na\tb\t1\nc\td\t1\ne\tf\t1\n", "data.pairs: <tmp>/g.tsv: every score is 1.0: nothing to rank"),
    ("g.tsv", b"text1\ttext2\tscore\na\tb\t1\n\xff\tc\t2\n", "data.pairs: <tmp>/g.tsv line 3: not UTF-8"),
])
def test_a_bad_pairs_file_is_one_line(tmp_path, name, content, error):
    (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as e:
        read_pairs(tmp_path / name, "data.pairs", ["text1", "text2", "score"])
    assert str(e.value) == error.replace("<tmp>", str(tmp_path)) or (error.endswith("not UTF-8") and str(e.value).startswith(error.replace("<tmp>", str(tmp_path))))


def test_pairs_options_are_checked_where_they_are_given(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.pairs: '.*g\.txt' is not \.csv, \.tsv, \.jsonl$"):
        data(name="sentences", path=str(tmp_path / "s.txt"), pairs=str(tmp_path / "g.txt"))
    with pytest.raises(ConfigError, match=r"^data.pair_columns: names three different columns"):
        data(name="sentences", path=str(tmp_path / "s.txt"), pair_columns=["a", "a", "score"])
    (tmp_path / "s.txt").write_text("\n".join(f"sentence number {i}" for i in range(20)))
    with pytest.raises(DataError, match=r"^data.pairs: no such file '.*missing.tsv'$"):
        data(name="sentences", path=str(tmp_path / "s.txt"), pairs=str(tmp_path / "missing.tsv"), vocab_size=40)


class _Vocab:
    """A stand-in for model2vec's tokenizers.Tokenizer: token string -> its own id."""

    def __init__(self, tokens: list[str]) -> None:
        self.ids = {t: i for i, t in enumerate(tokens)}

    def token_to_id(self, token: str) -> int | None:
        return self.ids.get(token)


class _Static:
    def __init__(self, tokens: list[str], embedding: np.ndarray, unk: int | None = None) -> None:
        self.tokenizer, self.embedding, self.unk_token_id = _Vocab(tokens), embedding, unk
        self.token_mapping = self.weights = None


class _Tok:
    """A stand-in for the data's transformers tokenizer."""

    def __init__(self, tokens: list[str], special: list[int]) -> None:
        self.tokens, self.all_special_ids = tokens, special

    def get_vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)


def test_the_static_table_follows_token_strings_and_averages_the_kept_tokens():
    """Ids are mapped by token string (the two vocabularies order them differently); specials, model2vec's
    unknown token and tokens it lacks are left out of the mean, as model2vec's encode leaves them out."""
    ours = _Tok(["[PAD]", "[CLS]", "[SEP]", "cat", "dog", "##s", "zebra", "[UNK]"], special=[0, 1, 2, 7])
    theirs = _Static(["[UNK]", "dog", "cat", "##s"], np.arange(8, dtype=np.float32).reshape(4, 2), unk=0)
    encoder, mapped = as_static(theirs, ours)
    assert mapped == pytest.approx(3 / 4)  # cat, dog, ##s of cat, dog, ##s, zebra
    ids = torch.tensor([[1, 3, 5, 2, 0, 0], [1, 4, 6, 7, 2, 0], [1, 6, 2, 0, 0, 0]])
    got = encoder(ids)
    assert torch.allclose(got[0], torch.tensor([(4 + 6) / 2, (5 + 7) / 2]))  # cat (their 2) and ##s (their 3)
    assert torch.allclose(got[1], torch.tensor([2.0, 3.0]))  # dog alone: zebra unmapped, [UNK] special
    assert torch.equal(got[2], torch.zeros(2))  # nothing kept: a zero vector, not a NaN
    assert sum(p.numel() for p in encoder.parameters()) == 8 * 2 and not any(p.requires_grad for p in encoder.parameters())


def test_a_quantized_vocabulary_is_refused():
    s = _Static(["a"], np.zeros((1, 2), dtype=np.float32))
    s.token_mapping = np.zeros(1, dtype=np.int64)
    with pytest.raises(ConfigError, match="vocabulary quantization"):
        as_static(s, _Tok(["a"], []))


def test_the_floor_is_drawn_on_the_frontier_and_named_in_the_report():
    """FrontierInfo carries a floor run as a point, the picture draws it, never on a front."""
    import pandas as pd

    from analysis import schema
    from analysis.frontier import FrontierInfo, plot_frontier
    from analysis.report import _floor_lines

    empty = pd.DataFrame(columns=[schema.PARAMS, "val_spearman", "test_spearman", "start"])
    floor = {"name": "model2vec 0.10.0 distil of the teacher's folder (256 dimensions, no training)", schema.PARAMS: 7_558_400,
             "val_spearman": 0.48, "test_spearman": 0.49, "run_id": "f"}
    info = FrontierInfo({schema.PARAMS: 22_700_000, "val_spearman": 1.0}, empty, empty, empty, empty, {"val_spearman": "max", "params": "min"},
                        {"val_spearman": 0.0}, empty, empty, False, empty, empty, None, task_score(), (floor,))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        plot_frontier(info, Path(d) / "f.png")
        assert (Path(d) / "f.png").stat().st_size > 0
    line = _floor_lines(info)
    assert "7,558,400 params" in line and "test_spearman 0.49" in line and "model2vec 0.10.0" in line


def task_score():
    from distill.tasks import task_named

    return task_named("embed").score


def test_a_static_encoder_is_a_model_the_task_scores():
    """The floor goes through the task's own evaluate, as a student does."""
    from distill.tasks import task_named

    torch.manual_seed(0)
    table = torch.randn(10, 4)
    keep = torch.ones(10, dtype=torch.bool)
    keep[0] = False
    enc = StaticEncoder(table, keep)
    x = torch.randint(1, 10, (40, 5))
    y = torch.nn.functional.normalize(enc(x), dim=-1)
    rho, mse = task_named("embed").evaluate(enc, x, y)
    assert rho == pytest.approx(1.0) and mse == pytest.approx(0.0, abs=1e-10)


def _embed_experiment(tmp_path, init: str = "random"):
    from workflows.experiment import load_experiment

    topics = Path(__file__).resolve().parents[1] / "examples" / "data" / "topics.txt"
    (tmp_path / "e.yaml").write_text(f"""
experiment: e
data: {{name: sentences, path: {topics}, max_len: 20, vocab_size: 400}}
teacher: {{family: transformer, dim: 32, depth: 2, heads: 4, dropout: 0.1, epochs: 1}}
student: {{family: transformer, dim: 16, depth: 1, heads: 4, dropout: 0.1}}
train: {{epochs: 1, lr: 0.002, batch_size: 64, init: {init}}}
losses: {{sim_kl: {{temperature: 0.05}}}}
mix: {{emb_mse: 1.0, sim_kl: 1.0}}
space: {{mix.sim_kl: {{float: [0.1, 2.0]}}}}
search: {{num_samples: 2}}
""")
    return load_experiment(str(tmp_path / "e.yaml"))


def test_the_tuned_gain_of_an_embedding_tunes_both_arms_on_the_same_draws(tmp_path):
    """No textbook recipe of a classifier's shape, no label to smooth: KD keeps the front student's own mix and the
    SimCSE twin nothing but the draws; both arms on the same (lr, weight decay); no ce key anywhere."""
    import numpy as np

    from workflows.gain import _arm_candidates, _textbook, base_recipe

    exp = _embed_experiment(tmp_path)
    assert exp.search.twins == "tuned" and base_recipe(exp, 0.9, 0.1) == {}
    own = {"mix.sim_kl": 0.4, "train.lr": 0.005}
    arms = _arm_candidates(exp, own, 4, np.random.default_rng(0))
    assert set(arms) == {"kd", "twin"}
    assert [(c["train.lr"], c["train.weight_decay"]) for c in arms["kd"]] == [(c["train.lr"], c["train.weight_decay"]) for c in arms["twin"]]
    assert all(c["mix.sim_kl"] == 0.4 for c in arms["kd"]) and arms["kd"][0]["train.lr"] == 0.005
    assert not any(k.startswith(("mix.ce", "losses.ce")) for arm in arms.values() for c in arm for k in c)
    assert all(set(c) == {"train.lr", "train.weight_decay"} for c in arms["twin"])
    assert _textbook(exp, "kd", arms["kd"]) == _textbook(exp, "twin", arms["twin"]) == 1  # the base config's lr: a practitioner's run
    started = _arm_candidates(_embed_experiment(tmp_path, "teacher"), own, 4, np.random.default_rng(0), "teacher")
    assert set(started) == {"kd", "twin", "random", "kd_random"} and all(c["train.init"] == "random" for c in started["random"])


def test_the_protocol_of_an_embedding_gain_says_what_was_tuned():
    from analysis.gains import PROTOCOLS
    from distill.tasks import TASKS

    assert {t.score.val for t in TASKS.values()} <= set(PROTOCOLS)  # every task's gain has its protocol in words
    assert "unsupervised SimCSE" in PROTOCOLS["val_spearman"] and "own loss mix" in PROTOCOLS["val_spearman"]


def test_a_verdict_adds_the_gain_on_the_gold_set_where_there_is_one():
    from types import SimpleNamespace

    from analysis.gains import verdict_line

    score = task_score()
    v = SimpleNamespace(gain_mean=0.2, gain_std=0.01, gain_t=34.6, gain_n=3, best_control=None, start_n=0,
                        gold_n=3, gold_mean=-0.03, gold_std=0.002, gold_t=-26.0)
    line = verdict_line(v, score)
    assert line.startswith("KD +20.00 ± 1.00 points over the tuned twin (t 34.6, 3 seeds)")
    assert "; on the gold set (data.pairs) -3.00 ± 0.20 points of gold Spearman (t -26.0, 3 seeds): distinguishable from zero" in line
    assert "gold" not in verdict_line(SimpleNamespace(**{**vars(v), "gold_n": 0}), score)
