"""Teacher-assistant chains: stage spaces, the chain analysis on a hand-built frame,
and one real chain search end to end (Ray, SQLite MLflow, two assistants, two seeds)."""

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import schema
from analysis.chains import chain_info, plot_chains
from analysis.store import SearchRecord
from analysis.runs import paired
from analysis.runs import Experiment
from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.models import as_outputs, build_model
from distill.teacher import model_outputs
from search_helpers import TINY_TASK, kdx, runs
from search_spaces.space import parse_space
from search_spaces.stages import split_params, stage_bases, stage_check, stage_configs, validate_stages
from workflows.experiment import load_experiment

BASE = {"data": {"name": "hgmm", "classes": 20, "superclasses": 4, "dim": 16},
        "teacher": {"family": "mlp", "width": 64, "depth": 1, "epochs": 5},
        "student": {"family": "mlp", "width": 4, "depth": 1}, "train": {"epochs": 2}, "mix": {"ce": 0.5, "kd": 0.5}}


def test_stage_keys_name_a_stage_then_a_run_key():
    check = stage_check(2)
    for key in ("a1.student.width", "a2.losses.kd.temperature", "final.mix.kd", "final.train.lr"):
        check(key)
    for key, said in [("student.width", "names the stage first"), ("a3.student.width", "names the stage first"),
                      ("final.student.width", "the chain's student is fixed"), ("a1.student.widht", "width"),
                      ("a1", "names the stage first")]:
        with pytest.raises(ConfigError, match=said):
            check(key)


def test_stage_configs_build_every_stage_from_its_base():
    bases = stage_bases(BASE, {"family": "cnn", "width": 8, "depth": 2}, 2)
    assert list(bases) == ["a1", "a2", "final"]
    params = {"a1.student.width": 48, "a2.student.width": 16, "final.losses.kd.temperature": 2.0}
    assert split_params(params, 2) == {"a1": {"student.width": 48}, "a2": {"student.width": 16}, "final": {"losses.kd.temperature": 2.0}}
    a1, a2, final = stage_configs(params, bases, seed=7)
    assert (a1.student.family, a1.student.options.width, a2.student.options.width) == ("cnn", 48, 16)
    assert final.student == RunConfig.from_dict(BASE).student  # the student is the config's own
    assert final.losses["kd"].temperature == 2.0 and a1.losses["kd"].temperature == 4.0
    assert {c.seed for c in (a1, a2, final)} == {7}
    # without an assistant section, assistants start from the student's shape
    assert stage_bases(BASE, {}, 1)["a1"]["student"] == BASE["student"]


def test_stage_spaces_are_validated_per_stage():
    bases = stage_bases(BASE, {}, 1)
    check = stage_check(1)
    validate_stages(parse_space({"a1.student.width": {"int": [8, 64]}}, check=check), bases)
    with pytest.raises(ConfigError, match=r"space\.a1\.student\.width.*value 0"):
        validate_stages(parse_space({"a1.student.width": {"int": [0, 64]}}, check=check), bases)
    space = parse_space({"a1.mix.fitnet": {"float": [0, 1]},
                         "final.losses.kd.temperature": {"float": [1, 4], "when": {"a1.mix.fitnet": {"gt": 0}}}}, check=check)
    with pytest.raises(ConfigError, match="another stage's key"):
        validate_stages(space, bases)


def _write(tmp_path, extra: str, space: str = "{a1.student.width: {int: [8, 64], log: true}}"):
    import yaml

    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(BASE) + f"experiment: c\nspace: {space}\n" + extra)
    return str(path)


def test_chain_configs_are_checked_before_anything_runs(tmp_path):
    exp = load_experiment(_write(tmp_path, "chain: {assistants: 1}\nsearch: {enqueue: [{a1.student.width: 32}]}\n"))
    assert exp.chain.assistants == 1 and exp.stage_bases["a1"]["student"]["width"] == 4
    for extra, said in [
        ("chain: {assistants: 0}\n", "chain.assistants: must be in 1..8"),
        ("chain: {assistans: 1}\n", "chain.assistans.*assistants"),
        ("chain: {assistants: 1}\nsearch: {objectives: {val_acc: max, params: min}}\n", "search.objectives: a chain search maximises"),
        ("chain: {assistants: 1}\nsearch: {scheduler: asha}\n", "search.scheduler: a chain reports once"),
        ("chain: {assistants: 1, assistant: {family: mlpp}}\n", "chain.assistant: student.family"),
        ("chain: {assistants: 1}\nsearch: {enqueue: [{a1.student.width: 0}]}\n", r"search.enqueue\[0\]: chain stage a1"),
    ]:
        with pytest.raises(ConfigError, match=said):
            load_experiment(_write(tmp_path, extra))
    with pytest.raises(ConfigError, match="names the stage first"):
        load_experiment(_write(tmp_path, "chain: {assistants: 1}\n", space="{student.width: {int: [8, 64]}}"))


def test_model_outputs_are_the_models_own_over_the_training_set():
    data = load_data(RunConfig.from_dict(BASE).data)
    model = build_model("cnn", RunConfig.from_dict({"student": {"family": "cnn", "width": 8, "depth": 2}}).student.options,
                        data.input_shape, data.num_classes, "student")
    out = model_outputs(model, data, ["logits", "features.embedding"], batch_size=100)
    with torch.no_grad():
        direct = as_outputs(model(data.x_train))
    assert torch.allclose(out.logits, direct.logits, atol=1e-5) and set(out.features) == set(direct.features)
    assert not any(p.requires_grad for p in model.parameters())


def _row(run_id, role, chain="", seed=0, test=np.nan, val=np.nan, params=100, seed_of="", stage="", status="FINISHED"):
    return {"run_id": run_id, "name": run_id, "role": role, "arch": "mlp:w4", "status": status, "stopped_early": False,
            "parent": "p", "start_time": 0, schema.VAL_ACC: val, schema.TEST_ACC: test, schema.PARAMS: params,
            schema.LATENCY: 0.1, "chain": chain, "seed_of": seed_of, "stage": stage, "seed": seed, "sampled": []}


@pytest.fixture
def chained():
    rows = [
        _row("p", "search"), _row("t", "teacher", test=0.9, params=20000),
        # chain A (assistant 1,000 params) and chain B (5,000 then 900): B is best on validation
        _row("aA", "assistant", "A", params=1000, stage="1"), _row("sA", "student", "A", val=0.60, test=0.61),
        _row("aB1", "assistant", "B", params=5000, stage="1"), _row("aB2", "assistant", "B", params=900, stage="2"),
        _row("sB", "student", "B", val=0.70, test=0.66),
        _row("aC", "assistant", "C", params=3000, stage="1"), _row("sC", "student", "C", val=0.99, test=0.99, status="FAILED"),
        _row("d0", "student", "direct", val=0.62, test=0.63), _row("w0", "baseline", val=0.5, test=0.55),
        # seeds 1 and 2, paired; a repeated chain's assistant carries seed_of too and must not count
        _row("aB1r", "assistant", "R1", seed=1, params=5000, seed_of="sB", stage="1"),
        _row("sB1", "student", "R1", seed=1, test=0.68, seed_of="sB"), _row("sB2", "student", "R2", seed=2, test=0.64, seed_of="sB"),
        _row("d1", "student", "direct", seed=1, test=0.64, seed_of="d0"), _row("d2", "student", "direct", seed=2, test=0.60, seed_of="d0"),
        _row("w1", "baseline", seed=1, test=0.57, seed_of="w0"), _row("w2", "baseline", seed=2, test=0.50, seed_of="w0"),
    ]
    return Experiment("c", "1", "sqlite:///unused.db", pd.DataFrame(rows), "p", SearchRecord.read({}))


def test_chain_info_pairs_the_best_chain_with_direct_and_twin_by_seed(chained, tmp_path):
    info = chain_info(chained)
    assert info.best == "sB"  # best on validation among finished chains; the failed one never wins
    chains = info.chains.set_index("run_id")
    assert chains.loc["sB", "assistant_params"] == (5000, 900) and chains.loc["sA", "assistant_params"] == (1000,)
    arms = info.arms.set_index("arm")
    assert arms.loc["best chain", "by_seed"] == {0: 0.66, 1: 0.68, 2: 0.64}
    assert arms.loc["direct", "by_seed"] == {0: 0.63, 1: 0.64, 2: 0.60}
    assert arms.loc["scratch twin", "n"] == 3
    pairs = info.pairs.set_index("comparison")
    d = np.array([0.03, 0.04, 0.04])  # chain - direct, seed by seed
    assert pairs.loc["best chain - direct", "n"] == 3
    assert pairs.loc["best chain - direct", "mean"] == pytest.approx(d.mean())
    assert pairs.loc["best chain - direct", "t"] == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(3)))
    plot_chains(info, tmp_path / "chain.png")
    assert (tmp_path / "chain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paired_differences_need_two_pairs_for_a_t():
    assert paired({0: 0.5}, {0: 0.4})["n"] == 1 and np.isnan(paired({0: 0.5}, {0: 0.4})["t"])
    assert paired({0: 0.5, 1: 0.6}, {1: 0.5, 2: 0.1})["n"] == 1  # only shared seeds pair


def test_no_chain_runs_means_no_chain_info(chained):
    df = chained.runs
    plain = Experiment("c", "1", "u", df[df.chain == ""].copy(), chained.parent_id, chained.search)
    assert chain_info(plain) is None


CHAIN = TINY_TASK + """
experiment: chain
student: {family: mlp, width: 4, depth: 1}
train: {epochs: 2, batch_size: 64}
chain: {assistants: 2, assistant: {family: mlp, depth: 1}}
space:
  a1.student.width: {int: [32, 64]}
  a2.student.width: {int: [8, 16]}
  final.losses.kd.temperature: {float: [1.0, 8.0], log: true}
search: {num_samples: 2, max_concurrent: 2, sampler: random, seeds: 2}
"""


@pytest.mark.slow  # three Tune phases of its own; the chain's pieces are tested above without Ray
def test_a_chain_search_end_to_end(tmp_path):
    (tmp_path / "chain.yaml").write_text(CHAIN)
    p = kdx("search", "chain.yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "teacher-assistant chains" in p.stdout and "best chain - direct" in p.stdout
    all_runs = runs(tmp_path / "mlflow.db", "chain")
    assert all(r.info.status == "FINISHED" for r in all_runs)
    role = lambda r: r.data.tags.get(schema.TAG_ROLE)  # noqa: E731
    teacher = next(r for r in all_runs if role(r) == schema.ROLE_TEACHER)
    by_id = {r.info.run_id: r for r in all_runs}
    # 2 chains + 1 repeat of the best, each teacher -> a1 -> a2 -> student
    chain_students = [r for r in all_runs if role(r) == schema.ROLE_STUDENT and r.data.tags.get(schema.TAG_CHAIN) != schema.CHAIN_DIRECT]
    assert len(chain_students) == 3
    for s in chain_students:
        line = s.data.tags[schema.TAG_LINEAGE].split(">")
        assert len(line) == 3 and line[0] == teacher.info.run_id
        a1, a2 = by_id[line[1]], by_id[line[2]]
        assert (role(a1), a1.data.tags[schema.TAG_STAGE], role(a2), a2.data.tags[schema.TAG_STAGE]) == ("assistant", "1", "assistant", "2")
        assert s.data.tags[schema.TAG_TEACHER_RUN] == a2.info.run_id and a2.data.tags[schema.TAG_TEACHER_RUN] == a1.info.run_id
        assert a1.data.tags[schema.TAG_CHAIN] == a2.data.tags[schema.TAG_CHAIN] == s.data.tags[schema.TAG_CHAIN]
        assert 32 <= int(a1.data.params["student.width"]) <= 64 and 8 <= int(a2.data.params["student.width"]) <= 16
        assert s.data.params["student.width"] == "4" and "final.losses.kd.temperature" in s.data.params
    repeat = [s for s in chain_students if s.data.tags.get(schema.TAG_SEED_OF)]
    assert len(repeat) == 1 and repeat[0].data.params["seed"] == "1"
    best = by_id[repeat[0].data.tags[schema.TAG_SEED_OF]]
    assert best.data.params["final.losses.kd.temperature"] == repeat[0].data.params["final.losses.kd.temperature"]
    direct = [r for r in all_runs if r.data.tags.get(schema.TAG_CHAIN) == schema.CHAIN_DIRECT]
    assert sorted(r.data.params["seed"] for r in direct) == ["0", "1"]
    for d in direct:  # same final-stage settings as the best chain, straight from the teacher
        assert d.data.params["losses.kd.temperature"] == best.data.params["losses.kd.temperature"]
        assert d.data.tags[schema.TAG_TEACHER_RUN] == teacher.info.run_id
    twins = [r for r in all_runs if role(r) == schema.ROLE_TWIN]
    assert sorted(r.data.params["seed"] for r in twins) == ["0", "1"]
    assert (tmp_path / "kdx-report-chain" / "chain.png").exists()
    assert "Teacher-assistant chains" in (tmp_path / "kdx-report-chain" / "report.html").read_text()
