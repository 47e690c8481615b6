"""Report and export on a real tiny search: files, checks, registry aliases, idempotence."""

import json
import os
import tempfile

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from analysis import schema
from distill.cache import sha256_file
from search_helpers import kdx, write_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reported")
    cfg = write_config(folder, name="rep", samples=4, epochs=3)
    p = kdx("search", str(cfg), "--report-dir", "end-report", cwd=folder)
    assert p.returncode == 0, p.stdout + p.stderr
    return folder, p


def test_search_ends_with_the_report(searched):
    folder, p = searched
    assert "Pareto front:" in p.stdout and "P1" in p.stdout
    assert (folder / "end-report" / "report.html").exists()


def test_report_writes_pictures_table_and_page(searched):
    folder, _ = searched
    p = kdx("report", "--experiment", "rep", "--out", "rep-out", cwd=folder)
    assert p.returncode == 0, p.stderr
    out = folder / "rep-out"
    for name in ("frontier.png", "gain_vs_ratio.png", "sensitivity.png"):
        assert (out / name).read_bytes().startswith(PNG)
    table = (out / "pareto.csv").read_text().splitlines()
    assert table[0].startswith("pareto,run_id,arch,params") and len(table) >= 2
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "#/experiments/" in page and "/runs/" in page
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rep")
    parent = client.search_runs([exp.experiment_id], f"tags.`{schema.TAG_ROLE}` = 'search'")[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.html", "report/pareto.csv", "report/frontier.png"}


def test_export_round_trip_and_registry(searched):
    folder, _ = searched
    p = kdx("export", "--experiment", "rep", "--out", "shipped", "--register", "rep-students", cwd=folder)
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

    before = {f.name: sha256_file(f / "model.safetensors") for f in folders}
    again = kdx("export", "--experiment", "rep", "--out", "shipped", "--register", "rep-students", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert {f.name: sha256_file(f / "model.safetensors") for f in sorted((folder / "shipped").iterdir())} == before
    assert len(client.search_model_versions("name = 'rep-students'")) == len(folders)  # idempotent
    assert not [p for p in (folder / "shipped").iterdir() if p.name.startswith(".")]


def test_report_and_export_of_a_missing_experiment_say_so(searched):
    folder, _ = searched
    for cmd in (["report", "--experiment", "nope", "--out", "x"], ["export", "--experiment", "nope", "--out", "x"]):
        p = kdx(*cmd, cwd=folder)
        assert p.returncode == 2 and "no experiment named 'nope'" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_report_of_a_search_with_no_finished_students_says_so(tmp_path):
    cfg = write_config(tmp_path, name="allfail", samples=2)
    text = cfg.read_text().replace("  losses.kd.temperature: {float: [1.0, 8.0], log: true}", "  train.lr: {float: [1.0e+11, 1.0e+12], log: true}")
    cfg.write_text(text.replace("train: {epochs: 2, batch_size: 64}", "train: {epochs: 2, batch_size: 64, optimizer: sgd}"))
    p = kdx("search", str(cfg), cwd=tmp_path)
    assert p.returncode == 0 and "2 failed" in p.stdout, p.stdout + p.stderr
    for cmd in (["report", "--experiment", "allfail", "--out", "r"], ["export", "--experiment", "allfail", "--out", "e"]):
        r = kdx(*cmd, cwd=tmp_path)
        assert r.returncode == 2 and "no finished full-budget students" in r.stderr, r.stderr


def test_seeds_repeat_the_front_paired_with_twins(tmp_path):
    cfg = write_config(tmp_path, name="seeded", samples=3, epochs=2)
    cfg.write_text(cfg.read_text().replace("  baselines: true", "  baselines: true\n  seeds: 3"))
    p = kdx("search", str(cfg), "--report-dir", "rep", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    import csv

    front = list(csv.DictReader(open(tmp_path / "rep" / "pareto.csv")))
    assert front
    for row in front:
        assert row["n_seeds"] == "3" and row["gain_n"] in ("3", "")  # every point says how many seeds stand behind it
    from search_helpers import by_role, runs

    all_runs = runs(tmp_path / "mlflow.db", "seeded")
    repeats = [r for r in all_runs if r.data.tags.get(schema.TAG_SEED_OF)]
    assert len([r for r in repeats if r.data.tags[schema.TAG_ROLE] == schema.ROLE_STUDENT]) == 2 * len(front)
    assert {r.data.params["seed"] for r in repeats} == {"1", "2"}
    students = by_role(all_runs, schema.ROLE_STUDENT)
    assert len([r for r in students if not r.data.tags.get(schema.TAG_SEED_OF)]) == 3
