"""A model the user already has: a teacher used as it stands (`teacher.train: false`, its head's labels
matched to the data's by name), fine-tuned as practitioners do (AdamW, warmup, linear decay), the
same-start twin's config, and the bad inputs a pretrained folder brings, each one line."""

import json

import pytest
import torch

from distill.config import RunConfig
from distill.data import load_data
from distill.errors import ConfigError
from distill.metrics import evaluate
from distill.models import TokenShape, build_model
from distill.models.hf import HFOptions, head_labels
from distill.teacher import TeacherInfo, chance_warning, get_teacher
from distill.datasets.text import TextOptions
from distill.text import load_tokenizer, train_tokenizer
from distill.train import _scheduler

SMALL = dict(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reviews(path, labels=("neg", "pos")):
    rows = [{"text": f"the {w} was {['bad', 'good', 'fine'][i % len(labels)]}", "label": labels[i % len(labels)]}
            for i, w in enumerate(["food", "room", "staff", "view"] * 20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _folder(tmp_path, id2label: dict[int, str] | None, labels=("neg", "pos"), bare: bool = False):
    """A data file, its tokenizer, and a small BERT saved with that tokenizer: a classifier whose head
    names `id2label`, or a bare encoder (no head, as a sentence-transformers folder)."""
    from transformers import AutoModel

    tmp_path.mkdir(parents=True, exist_ok=True)
    data_file = _reviews(tmp_path / "r.jsonl", labels)
    texts = [json.loads(line)["text"] for line in data_file.read_text().splitlines()]
    tok = train_tokenizer(texts, TextOptions(path=str(data_file), vocab_size=40))
    vocab = len(load_tokenizer(tok))
    folder = tmp_path / "teacher"
    torch.manual_seed(0)
    model = build_model("hf", HFOptions(**SMALL), TokenShape(12, vocab), len(id2label or {0: 0, 1: 1}))
    if bare:
        body = AutoModel.from_config(model.hf.config)
        body.save_pretrained(folder)
    else:
        model.hf.config.id2label = id2label
        model.hf.config.label2id = {v: k for k, v in id2label.items()}
        model.hf.save_pretrained(folder)
    load_tokenizer(tok).save_pretrained(folder)
    return data_file, folder, model.eval()


def _config(data_file, folder, **teacher):
    return RunConfig.from_dict({
        "data": {"name": "text", "path": str(data_file), "tokenizer_path": str(folder), "max_len": 12},
        "teacher": {"family": "hf", "pretrained": str(folder), **teacher},
        "student": {"family": "hf", **SMALL}, "train": {"epochs": 1}})


def test_a_teacher_used_as_it_stands_reads_its_labels_by_name_not_by_order(tmp_path):
    data_file, folder, saved = _folder(tmp_path, {0: "pos", 1: "neg"})  # the data's ids are sorted names: neg 0, pos 1
    config = _config(data_file, folder, train=False)
    assert config.teacher.settings["train"] is False and config.teacher.recipe == "used as it stands (not trained)"
    data = load_data(config.data)
    lines = []
    teacher, info = get_teacher(config, data, log=lines.append)
    assert info.source == "pretrained" and info.train_s == 0 and info.recipe.startswith("used as it stands")
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    x = data.x_val[:8]
    with torch.no_grad():
        torch.testing.assert_close(teacher(x).logits, saved(x).logits[:, [1, 0]])  # column 0 scores neg, as the data's id 0
    assert teacher.hf.config.id2label == {0: "neg", 1: "pos"}
    with torch.no_grad():  # the saved model read in the data's order, by hand
        acc = (saved(data.x_val).logits[:, [1, 0]].argmax(-1) == data.y_val).float().mean().item()
    assert info.val_acc == pytest.approx(acc) and info.val_acc == pytest.approx(evaluate(teacher, data.x_val, data.y_val)[0])


def test_a_head_with_other_names_is_mapped_by_teacher_labels(tmp_path):
    data_file, folder, saved = _folder(tmp_path, {0: "negative", 1: "positive"})
    with pytest.raises(ConfigError) as e:
        get_teacher(_config(data_file, folder, train=False), load_data(_config(data_file, folder, train=False).data), log=lambda s: None)
    msg = str(e.value)
    assert msg.startswith("teacher.train: false, but the head of") and "no label 'neg'" in msg and "teacher.labels" in msg and "\n" not in msg
    config = _config(data_file, folder, train=False, labels={"neg": "negative", "pos": "positive"})
    data = load_data(config.data)
    teacher, _ = get_teacher(config, data, log=lambda s: None)
    with torch.no_grad():
        torch.testing.assert_close(teacher(data.x_val[:4]).logits, saved(data.x_val[:4]).logits)  # already in the data's order


def test_a_bare_encoder_or_a_smaller_head_used_as_it_stands_is_one_line(tmp_path):
    data_file, folder, _ = _folder(tmp_path / "bare", None, bare=True)
    assert head_labels(str(folder)) is None
    config = _config(data_file, folder, train=False)
    with pytest.raises(ConfigError) as e:
        get_teacher(config, load_data(config.data), log=lambda s: None)
    assert str(e.value).startswith("teacher.train: false uses the model as it stands, but") and "BertModel" in str(e.value)
    assert "fine-tune it (teacher.train: true, teacher.epochs: N)" in str(e.value)
    data_file, folder, _ = _folder(tmp_path / "three", {0: "neg", 1: "pos"}, labels=("neg", "pos", "meh"))
    config = _config(data_file, folder, train=False)
    with pytest.raises(ConfigError, match=r"^teacher\.train: false, but the head of .* has 2 labels and the data 3"):
        get_teacher(config, load_data(config.data), log=lambda s: None)


def test_a_bare_encoder_is_fine_tuned_with_a_new_head_and_says_so(tmp_path):
    data_file, folder, _ = _folder(tmp_path, None, bare=True)
    config = _config(data_file, folder, epochs=1, batch_size=32)
    t = config.teacher.settings
    assert t == {"train": True, "epochs": 1, "lr": 5e-5, "weight_decay": 0.01, "warmup": 0.1}  # fine-tuning defaults, epochs given
    assert config.teacher.recipe.startswith("fine-tuned from its weights: AdamW lr 5e-05")
    lines = []
    _, info = get_teacher(config, load_data(config.data), log=lines.append)
    assert any("has no classification head; fine-tuning its body with a new 2-label head" in line for line in lines)
    assert info.source == "trained" and info.recipe == config.teacher.recipe
    scratch = RunConfig.from_dict({"teacher": {"family": "mlp"}}).teacher.settings
    assert scratch == {"train": True, "epochs": 60, "lr": 3e-3, "weight_decay": 0.0, "warmup": 0.0}  # from random weights: as before


def test_the_linear_schedule_warms_up_then_decays_to_zero():
    from distill.config import TrainConfig

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = _scheduler(TrainConfig(schedule="linear", warmup=0.1), opt, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 11) and max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 10
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(1 / 90)
    with pytest.raises(ConfigError, match="warmup"):
        RunConfig.from_dict({"train": {"warmup": 0.1}})  # warmup only means something with schedule: linear


def test_folders_kdx_cannot_use_are_one_line(tmp_path):
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    (gguf / "model-q4.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict({"data": {"name": "khop"}, "teacher": {"family": "hf", "pretrained": str(gguf)}})
    assert str(e.value).startswith("teacher.pretrained:") and "GGUF file (model-q4.gguf)" in str(e.value) and "docs/pretrained.md" in str(e.value)
    bare = tmp_path / "noweights"
    build_model("hf", HFOptions(**SMALL), TokenShape(12, 30), 2).hf.config.save_pretrained(bare)
    with pytest.raises(ConfigError, match=r"has a config.json but no weights"):
        build_model("hf", HFOptions(pretrained=str(bare)), TokenShape(12, 30), 2, "teacher")
    with pytest.raises(ConfigError, match=r"^teacher\.train: false uses a teacher as it stands: give teacher.checkpoint"):
        RunConfig.from_dict({"teacher": {"family": "mlp", "train": False}})
    with pytest.raises(ConfigError, match=r"^teacher\.labels: maps the data's labels"):
        RunConfig.from_dict({"teacher": {"family": "mlp", "labels": {"a": "b"}}})


def test_a_teacher_at_chance_is_a_loud_warning():
    data = load_data(RunConfig.from_dict({"data": {"name": "hgmm", "classes": 10, "superclasses": 2, "dim": 8}}).data)
    common = float(torch.bincount(data.y_val).max()) / len(data.y_val)
    at_chance = TeacherInfo("k", "trained", common, common, 10, 0.1)
    line = chance_warning(at_chance, data)
    assert line.startswith("WARNING: the teacher scores val_acc") and "nothing to distil" in line
    assert chance_warning(TeacherInfo("k", "trained", 0.9, 0.9, 10, 0.1), data) is None


def _arm_frame(scores: dict[str, list[float]]) -> "Experiment":
    """A search's gain runs as analysis reads them: each arm one candidate at seed 0 and repeats at seeds 1, 2."""
    import pandas as pd

    from analysis.runs import Experiment
    from analysis.store import SearchRecord

    rows, t = [], 0
    for arm, tests in scores.items():
        base = f"{arm}-0"
        for seed, acc in enumerate(tests):
            t += 1
            rows.append({"run_id": f"{arm}-{seed}", "arm": arm, "gain_arch": "hf:L2", "arch": "hf:L2", "status": "FINISHED",
                         "role": "student" if arm == "kd" else "baseline", "seed": seed, "seed_of": "" if seed == 0 else base,
                         "control_of": "", "duplicate_of": "", "start": "random" if arm == "random" else "teacher",
                         "val_acc": acc, "test_acc": acc, "params": 1000.0, "start_time": t, "train_s": 1.0,
                         "train.lr": 0.01, "train.weight_decay": 0.0})
    settings = {"seeds": "3", "recipe_trials": "1", "race": "1", "race_seeds": "1", "twins": "tuned"}
    return Experiment("x", "1", "sqlite://", pd.DataFrame(rows), "p", SearchRecord(settings, {"val_acc": "max"}, {}))


def test_the_gain_splits_into_the_start_and_distillation_on_top():
    from analysis.gains import gain_info, protocol, verdict_line

    exp = _arm_frame({"kd": [0.82, 0.84, 0.83], "twin": [0.80, 0.81, 0.80], "random": [0.55, 0.60, 0.52]})
    g = gain_info(exp)
    v = g.verdicts.iloc[0]
    assert g.start == "teacher" and v.start_n == 3 and v.gain_n == 3
    assert v.gain_mean == pytest.approx((0.02 + 0.03 + 0.03) / 3)  # KD minus the same-start twin: distillation alone
    assert v.start_mean == pytest.approx((0.25 + 0.21 + 0.28) / 3)  # same-start twin minus random-start twin: the start alone
    assert v.start_distinguishable and v.best_control == "twin"  # the random-start twin is no control KD must beat
    line = verdict_line(v)
    assert "over the same-start tuned twin" in line and "the start (teacher's layers) bought +24.67 ± 3.51 points over a random start" in line
    assert "random-start twin" in protocol(g)
    assert {"kd - twin", "kd - random", "twin - random"} <= set(g.pairs.comparison)
    plain = gain_info(_arm_frame({"kd": [0.82, 0.84, 0.83], "twin": [0.80, 0.81, 0.80]}))
    assert plain.start == "random" and "start" not in verdict_line(plain.verdicts.iloc[0]) and "random-start" not in protocol(plain)


def test_kdx_run_twin_prints_both_twins_and_both_parts_of_the_gain(tmp_path):
    from search_helpers import kdx

    (tmp_path / "run.yaml").write_text("data: {name: hgmm, classes: 10, superclasses: 2, dim: 8}\n"
                                       "teacher: {family: mlp, width: 32, depth: 2, epochs: 3}\n"
                                       "student: {family: mlp, width: 32, depth: 1}\ntrain: {epochs: 2, init: teacher}\n")
    p = kdx("run", "run.yaml", "--twin", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "same-start twin" in p.stdout and "random-start twin" in p.stdout
    assert "distillation gain (student - same-start twin, test):" in p.stdout
    assert "what the start bought (same-start twin - random-start twin, test):" in p.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["start"] == "teacher" and result["random_twin"] is not None and "start_gain" in result


def test_a_search_says_how_often_its_teacher_ran():
    from workflows.session import teacher_passes_line

    once = teacher_passes_line("cached", 1, 288, 288)
    assert once == ("teacher outputs: made once in this process, 1 forward batch over 288 samples, and shared by every trial "
                    "(no trial runs the teacher)")
    assert "3 forward batches over 2,304 samples (8 stored views)" in teacher_passes_line("views", 3, 2304, 288)
    assert "read from the cache (0 forward passes)" in teacher_passes_line("cached", 0, 0, 288)
    assert "runs on every training batch of every distilling trial" in teacher_passes_line("online", 0, 0, 288)


def test_a_warmup_given_to_a_teacher_trained_from_random_weights_is_honoured(monkeypatch):
    """teacher.warmup was once accepted and dropped for a teacher that starts at random (a constant lr regardless)."""
    import distill.teacher as teacher_module

    seen = []

    def fake_run(config, data, start=None):
        seen.append(config.train)
        raise RuntimeError("stop after the recipe")

    monkeypatch.setattr(teacher_module, "run", fake_run)
    warm = RunConfig.from_dict({"data": {"name": "digits"}, "teacher": {"family": "mlp", "width": 8, "epochs": 1, "warmup": 0.2}})
    assert warm.teacher.recipe.startswith("trained from random weights: Adam lr 0.003 warmup 20% then linear decay")
    with pytest.raises(RuntimeError, match="stop after the recipe"):
        get_teacher(warm, load_data(warm.data), log=lambda s: None)
    assert (seen[-1].schedule, seen[-1].warmup, seen[-1].optimizer) == ("linear", 0.2, "adam")
    plain = RunConfig.from_dict({"data": {"name": "digits"}, "teacher": {"family": "mlp", "width": 8, "epochs": 1}})
    with pytest.raises(RuntimeError, match="stop after the recipe"):
        get_teacher(plain, load_data(plain.data), log=lambda s: None)
    assert (seen[-1].schedule, seen[-1].warmup) == ("constant", 0.0)  # the default from-random recipe, as before
