"""Report and export on a real tiny search: files, checks, registry aliases, idempotence."""

import json
import os

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from analysis import schema
from distill.cache import sha256_file
from analysis.store import Store
from search_helpers import by_role, kdx, runs, write_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def searched(tiny_search):
    return tiny_search.folder, tiny_search.process


def test_search_ends_with_the_report(searched):
    folder, p = searched
    assert "Pareto front:" in p.stdout and "P1" in p.stdout
    assert (folder / "end-report" / "report.html").exists()


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_report_writes_pictures_table_and_page(searched):
    folder, _ = searched
    p = kdx("report", "--experiment", "tiny", "--out", "rep-out", cwd=folder)
    assert p.returncode == 0, p.stderr
    out = folder / "rep-out"
    for name in ("frontier.png", "gain_vs_ratio.png", "importance.png"):  # importance: 4 finished trials, 3 searched params
        assert (out / name).read_bytes().startswith(PNG)
    table = (out / "pareto.csv").read_text().splitlines()
    assert table[0].startswith("pareto,run_id,method,source,start,arch,params") and len(table) >= 2
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "#/experiments/" in page and "/runs/" in page
    assert "Parameter importance by fANOVA" in page and "these importances are noisy" in page
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    parent = client.search_runs([exp.experiment_id], f"tags.`{schema.TAG_ROLE}` = 'search'")[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.html", "report/pareto.csv", "report/frontier.png"}


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_export_round_trip_and_registry(searched):
    folder, _ = searched
    p = kdx("export", "--experiment", "tiny", "--out", "shipped", "--register", "rep-students", cwd=folder)
    assert p.returncode == 0, p.stdout + p.stderr
    folders = sorted((folder / "shipped").iterdir())
    front = (folder / "rep-out" / "pareto.csv").read_text().splitlines()[1:] if (folder / "rep-out").exists() else None
    assert folders and all(f.name.startswith("p") for f in folders)
    if front is not None:
        assert len(folders) == len(front)
    import onnxruntime

    for f in folders:
        card = json.loads((f / "card.json").read_text())
        assert set(card["files"]) == {"model.safetensors", "model.pt2", "model.onnx"}
        for name, meta in card["files"].items():
            assert sha256_file(f / name) == meta["sha256"]
        assert card["lineage"]["student_run"] and card["lineage"]["teacher_run"] and card["config"]["student"]["family"]
        shape = [2, *card["input"]["shape"][1:]]
        x = torch.randn(*shape)
        a = torch.export.load(f / "model.pt2").module()(x).detach().numpy()
        b = onnxruntime.InferenceSession(str(f / "model.onnx")).run(None, {"x": x.numpy()})[0]
        assert np.allclose(a, b, atol=1e-4)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'rep-students'")
    assert len(versions) == len(folders)
    for alias in ("most-accurate", "smallest", "pareto-1"):
        assert client.get_model_version_by_alias("rep-students", alias).run_id in {v.run_id for v in versions}

    for f in folders:  # each card's loading snippets work as written, in the card's folder
        card = json.loads((f / "card.json").read_text())
        here = os.getcwd()
        try:
            os.chdir(f)
            scope: dict = {}
            exec(card["how_to_load"]["model.safetensors"], scope)
            x = torch.randn(3, *card["input"]["shape"][1:])
            with torch.no_grad():
                expected = torch.export.load("model.pt2").module()(x)
                assert torch.allclose(scope["model"](x).logits, expected, atol=1e-5)
                assert torch.allclose(eval(card["how_to_load"]["model.pt2"].split("  #")[0], {"torch": torch, "x": x}), expected)
        finally:
            os.chdir(here)

    def no_nan(text):
        raise AssertionError(f"card.json holds {text}, which is not JSON")

    for f in folders:
        json.loads((f / "card.json").read_text(), parse_constant=no_nan)  # strict: null, never NaN


@pytest.mark.slow  # two CLI exports (about 30 s): kept out of the default suite's 4-minute budget
def test_exporting_again_replaces_the_folder_whole_and_registers_nothing_twice(searched):
    folder, _ = searched
    export = lambda: kdx("export", "--experiment", "tiny", "--out", "shipped-again", "--register", "again-students", cwd=folder)  # noqa: E731
    first = export()
    assert first.returncode == 0, first.stdout + first.stderr
    out = folder / "shipped-again"
    folders = sorted(out.iterdir())
    before = {f.name: sha256_file(f / "model.safetensors") for f in folders}
    stale = out / "p9-deadbeef"  # an earlier export's student, no longer on the front
    stale.mkdir()
    (stale / "card.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    again = export()
    assert again.returncode == 0, again.stderr
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"  # replaced whole; a user's file stays
    (out / "notes.txt").unlink()
    assert {f.name: sha256_file(f / "model.safetensors") for f in sorted(out.iterdir())} == before
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    assert len(client.search_model_versions("name = 'again-students'")) == len(folders)  # idempotent
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow  # CLI subprocesses (about 14 s): kept out of the default suite's 4-minute budget
def test_report_and_export_of_a_missing_experiment_say_so(searched):
    folder, _ = searched
    for cmd in (["report", "--experiment", "nope", "--out", "x"], ["export", "--experiment", "nope", "--out", "x"]):
        p = kdx(*cmd, cwd=folder)
        assert p.returncode == 2 and "no experiment named 'nope'" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # CLI subprocesses (about 14 s): kept out of the default suite's 4-minute budget
def test_report_of_a_search_with_no_finished_students_says_so(tmp_path):
    # The store a search whose every trial failed leaves (test_search runs such a trial for real).
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = store.experiment_id("allfail")
    parent = store.start(experiment_id, "allfail", {schema.TAG_ROLE: schema.ROLE_SEARCH})
    parent.end()
    for k in range(2):
        store.start(experiment_id, f"student-{k}", {schema.TAG_ROLE: schema.ROLE_STUDENT, schema.TAG_PARENT: parent.run_id}).end("FAILED")
    for cmd in (["report", "--experiment", "allfail", "--out", "r"], ["export", "--experiment", "allfail", "--out", "e"]):
        r = kdx(*cmd, cwd=tmp_path)
        assert r.returncode == 2 and "no finished full-budget students" in r.stderr, r.stderr


@pytest.mark.slow  # its own search: the cheap mode (search.twins: base_recipe) with seeds
def test_seeds_repeat_the_front_paired_with_twins(tmp_path):
    import csv

    cfg = write_config(tmp_path, name="seeded", samples=3, epochs=2, seeds=3)
    p = kdx("search", str(cfg), "--report-dir", "rep", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    front = list(csv.DictReader(open(tmp_path / "rep" / "pareto.csv")))
    assert front
    for row in front:
        assert row["n_seeds"] == "3" and row["gain_n"] in ("3", "")  # every point says how many seeds stand behind it
    all_runs = runs(tmp_path / "mlflow.db", "seeded")
    repeats = [r for r in all_runs if r.data.tags.get(schema.TAG_SEED_OF)]
    assert len([r for r in repeats if r.data.tags[schema.TAG_ROLE] == schema.ROLE_STUDENT]) == 2 * len(front)
    assert {r.data.params["seed"] for r in repeats} == {"1", "2"}
    students = by_role(all_runs, schema.ROLE_STUDENT)
    assert len([r for r in students if not r.data.tags.get(schema.TAG_SEED_OF)]) == 3
    assert "base-recipe twins" in (tmp_path / "rep" / "report.html").read_text()  # the report names the cheap mode


def test_a_card_writes_null_for_what_is_missing():
    from analysis.export import _json_safe

    card = {"twin_run": float("nan"), "metrics": {"gain": float("inf"), "ok": 0.5}, "seeds": [1.0, float("-inf")]}
    assert json.dumps(_json_safe(card), allow_nan=False) == '{"twin_run": null, "metrics": {"gain": null, "ok": 0.5}, "seeds": [1.0, null]}'
