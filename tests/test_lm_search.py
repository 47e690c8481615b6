"""examples/lm.yaml as a user runs it: `kdx search --smoke` on the hmm source end to end (trials
ranked on val_ppl, scratch twins, the tuned-twin gain in nats), `kdx export`, and each exported
student reloaded with `AutoModelForCausalLM.from_pretrained` to the logged test perplexity, its
card's `generate` snippet run as written. Slow step (about 2 minutes)."""

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from search_helpers import ROOT, kdx, runs

pytestmark = pytest.mark.slow


def test_the_lm_example_searches_exports_and_reloads_at_the_logged_perplexity(tmp_path):
    out = kdx("search", str(ROOT / "examples/lm.yaml"), "--smoke", cwd=tmp_path, extra_env={"KDX_CACHE": str(tmp_path / "cache")}, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "nats per predicted test token" in out.stdout and "test_ppl" in out.stdout, out.stdout[-3000:]
    every = runs(tmp_path / "mlflow.db", "lm-hmm")
    search = next(r for r in every if r.data.tags.get("kdx.role") == "search")
    assert search.data.params["search.task"] == "lm" and search.data.params["search.objectives"] == "val_ppl:min,params:min"
    teacher = next(r for r in every if r.data.tags.get("kdx.role") == "teacher")
    assert teacher.data.metrics["test_floor"] < teacher.data.metrics["test_loss"]  # nothing beats the source's entropy
    assert "val_loss" in teacher.data.metrics  # drawn on the frontier's validation axis
    students = [r for r in every if r.data.tags.get("kdx.role") == "student" and r.info.status == "FINISHED"]
    assert students and all(r.data.metrics["val_ppl"] == pytest.approx(math.exp(r.data.metrics["val_loss"])) for r in students)
    assert {r.data.tags.get("kdx.arm") for r in every} >= {"kd", "twin", "smooth", "same_recipe"}
    assert "shuffled" not in {r.data.tags.get("kdx.arm") for r in every}  # no next-token meaning: not run

    out = kdx("export", "--experiment", "lm-hmm", "--out", "exported", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    folders = sorted((tmp_path / "exported").glob("p*-*"))
    assert folders
    from transformers import AutoModelForCausalLM

    from distill.config import DataConfig
    from distill.data import IGNORE, load_data

    by_id = {r.info.run_id: r for r in every}
    for folder in folders:
        card = json.loads((folder / "card.json").read_text())
        logged = by_id[card["lineage"]["student_run"]].data.metrics
        data = load_data(DataConfig.parse(card["config"]["data"]))
        model = AutoModelForCausalLM.from_pretrained(folder / "hf", local_files_only=True).eval()
        with torch.no_grad():
            logits = model(input_ids=data.x_test, attention_mask=(data.x_test != data.tokens.pad_id).long()).logits
        ce = float(F.cross_entropy(logits.flatten(0, 1), data.y_test.flatten(), ignore_index=IGNORE))
        assert ce == pytest.approx(logged["test_loss"], rel=1e-4) and math.exp(ce) == pytest.approx(logged["test_ppl"], rel=1e-4)
        assert card["metrics"]["test_ppl"] == pytest.approx(logged["test_ppl"]) and card["entropy_floor"] < ce
        cwd = os.getcwd()
        try:  # the card's snippet as a user pastes it, in the folder
            os.chdir(folder)
            scope: dict = {}
            exec(card["how_to_load"]["hf/"], scope)
        finally:
            os.chdir(cwd)
        generated = scope["out"]
        assert generated.shape[1] > 3 and int(generated.max()) < card["tokens"]["vocab_size"]
