"""End to end: `kdx search` with real Ray and a real SQLite MLflow store, on a tiny budget."""

import pytest
from mlflow import MlflowClient

from analysis import schema
from conftest import SECRETS
from search_helpers import by_role, kdx, runs, write_config
from workflows.experiment import load_experiment
from workflows.tune import make_scheduler, make_searcher


@pytest.fixture(scope="module")
def searched(tiny_search):
    return tiny_search.folder, tiny_search.process, tiny_search.runs


def originals(all_runs: list) -> list:
    """The runs of the search proper: not the gain's arms (test_gain.py), not repeats with other seeds."""
    return [r for r in all_runs if not r.data.tags.get(schema.TAG_SEED_OF) and not r.data.tags.get(schema.TAG_ARM)]


def test_search_logs_the_run_schema(searched):
    folder, p, all_runs = searched
    parents = by_role(all_runs, schema.ROLE_SEARCH)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent_id = parents[0].info.run_id
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    assert {a.path for a in client.list_artifacts(parent_id)} >= {schema.CONFIG_ARTIFACT, schema.SPACE_ARTIFACT}

    teachers = by_role(all_runs, schema.ROLE_TEACHER)
    assert len(teachers) == 1 and teachers[0].data.tags[schema.TAG_PARENT] == parent_id
    assert {schema.TEST_ACC, schema.PARAMS, schema.LATENCY} <= set(teachers[0].data.metrics)

    students = originals(by_role(all_runs, schema.ROLE_STUDENT))
    assert len(students) == 4
    for r in students:
        assert r.info.status == "FINISHED"
        assert r.data.tags[schema.TAG_PARENT] == parent_id
        assert r.data.tags[schema.TAG_TEACHER_RUN] == teachers[0].info.run_id
        m = r.data.metrics
        assert {schema.VAL_ACC, schema.TEST_ACC, schema.PARAMS, schema.LATENCY, schema.TRAIN_LOSS, "loss/kd"} <= set(m)
        assert 0 <= m[schema.VAL_ACC] <= 1 and 0 <= m[schema.TEST_ACC] <= 1 and m[schema.PARAMS] > 0 and m[schema.LATENCY] > 0
        sampled = r.data.tags[schema.TAG_SAMPLED].split(",")
        assert set(sampled) == {"student.family", "student.width", "losses.kd.temperature"}
        for key in sampled:  # sampled keys logged verbatim, as params
            assert key in r.data.params
        assert r.data.params["train.epochs"] == "2" and r.data.params["mix.kd"] == "0.5"
        history = client.get_metric_history(r.info.run_id, schema.TRAIN_LOSS)
        assert sorted(h.step for h in history) == [1, 2]
        assert {a.path for a in client.list_artifacts(r.info.run_id, "model")} == {"model/model.safetensors", "model/config.json"}
        assert r.data.tags[schema.TAG_ARCH].startswith(r.data.params["student.family"] + ":")
        assert 0 <= m[schema.AGREEMENT] <= 1 and m[schema.TEACHER_KL] >= 0 and m[schema.TRAIN_S] > 0  # fidelity and cost
        assert m[schema.TEACHER_TRAIN_S] > 0  # the teacher was trained in this session: its cost is on every student

    twins = originals(by_role(all_runs, schema.ROLE_TWIN))
    student_archs = {r.data.tags[schema.TAG_ARCH] for r in students}
    assert sorted(t.data.tags[schema.TAG_ARCH] for t in twins) == sorted(student_archs)  # one twin per distinct arch
    for t in twins:
        assert t.info.status == "FINISHED" and t.data.tags[schema.TAG_PARENT] == parent_id
        assert t.data.params["mix.ce"] == "1.0" and "mix.kd" not in t.data.params
        assert t.data.params["train.epochs"] == "2"


def test_search_prints_progress_a_person_can_follow(searched):
    _, p, _ = searched
    assert "[  4/4] trial" in p.stdout and "best val_acc" in p.stdout and "left" in p.stdout
    assert "done in" in p.stdout and "4 finished" in p.stdout
    assert "INFO" not in p.stdout


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_a_second_search_under_the_same_name_is_refused(searched):
    folder, _, before = searched
    p = kdx("search", str(folder / "tiny.yaml"), cwd=folder)
    # Tune's folder is checked first, before Ray starts; the store's own refusal is the next test's
    assert p.returncode == 2 and "holds an earlier search of 'tiny'" in p.stderr and "--resume" in p.stderr
    assert len(runs(folder / "mlflow.db", "tiny")) == len(before)


@pytest.mark.slow
def test_a_second_search_elsewhere_under_the_same_name_is_refused_by_the_store(searched):
    folder, _, before = searched
    p = kdx("search", str(folder / "tiny.yaml"), "--set", f"search.storage={folder / 'elsewhere'}", cwd=folder)
    assert p.returncode == 2 and "already has a search" in p.stderr and "--resume" in p.stderr, p.stderr
    assert len(runs(folder / "mlflow.db", "tiny")) == len(before) and not (folder / "elsewhere" / "tiny").exists()


def test_directions_match_the_objectives(tmp_path):
    cfg = write_config(tmp_path, objectives="{val_acc: max, params: min, latency_ms: min}")
    exp = load_experiment(str(cfg))
    many = make_searcher(exp, exp.base)  # lists: OptunaSearch makes a multi-objective study
    assert (many.metric, many.mode) == (["val_acc", "params", "latency_ms"], ["max", "min", "min"])
    single = load_experiment(str(write_config(tmp_path, name="one", objectives="{val_acc: max}")))
    one = make_searcher(single, single.base)
    assert (one.metric, one.mode) == ("val_acc", "max")
    assert make_scheduler(single) is None


def test_asha_reads_val_acc_per_epoch_and_ends_at_the_last_epoch(tmp_path):
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    asha = load_experiment(str(write_config(tmp_path, name="asha", scheduler="asha", epochs=6)))
    sched = make_scheduler(asha)
    trial = Trial("stub", stub=True, trial_id="t1")
    sched.on_trial_add(None, trial)
    decisions = [sched.on_trial_result(None, trial, {"epoch": e, schema.VAL_ACC: 0.5}) for e in (1, 2, 6)]
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE, TrialScheduler.STOP]


def test_trial_actors_ask_for_no_runtime_env(monkeypatch):
    """Tune gives its trainable actors env_vars PL_DISABLE_FORK, which kept them off the workers Ray
    prestarts (a new worker process per actor, about 1 s); init_ray drops it. A Ray that sets
    another default again makes this fail: look at workflows/tune.py."""
    from ray.tune.execution.class_cache import ENV_VARS_TO_PROPAGATE, _ActorClassCache
    from ray.tune.trainable import wrap_function

    from workflows.tune import _trials_on_prestarted_workers

    for name in ENV_VARS_TO_PROPAGATE:  # the driver's own AWS_* and RAY_TRAIN_* would rightly travel
        monkeypatch.delenv(name, raising=False)
    _trials_on_prestarted_workers()
    actor = _ActorClassCache().get(wrap_function(lambda config: None))
    assert not actor._default_options.get("runtime_env"), actor._default_options


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_validate_checks_and_runs_nothing(tmp_path):
    cfg = write_config(tmp_path)
    p = kdx("validate", str(cfg), cwd=tmp_path)
    assert p.returncode == 0 and "valid" in p.stdout and "student.width: int 4 .. 32, log" in p.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "kdx-results").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("student.width: {int: [4, 32]", "student.widht: {int: [4, 32]"))
    p = kdx("validate", str(bad), cwd=tmp_path)
    assert p.returncode == 2 and "space.student.widht" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_bad_inputs_fail_before_anything_is_logged(tmp_path):
    cfg = write_config(tmp_path, name="early")
    p = kdx("search", str(cfg), "--tracking-uri", "http://127.0.0.1:9", cwd=tmp_path)
    assert p.returncode == 2 and "cannot reach the MLflow server" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("teacher: {family: mlp, width: 64, depth: 1, epochs: 5}",
                                           f"teacher: {{family: mlp, width: 64, depth: 1, checkpoint: {tmp_path / 'missing.pt'}}}"))
    p = kdx("search", str(bad), cwd=tmp_path)
    assert p.returncode == 2 and "teacher.checkpoint: no such file" in p.stderr
    assert not (tmp_path / "mlflow.db").exists() or runs(tmp_path / "mlflow.db", "early") == []
    assert not (tmp_path / "kdx-results").exists()


def test_secrets_in_the_environment_never_reach_mlflow(searched):
    folder, _, all_runs = searched
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    texts = []
    for r in all_runs:
        texts += [str(v) for v in r.data.params.values()] + [str(v) for v in r.data.tags.values()]
    for path in (folder / "mlruns").rglob("*"):  # every artifact: configs, spaces, reports, weights
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    blob = "\n".join(texts)
    assert len(texts) > 50
    for value in SECRETS.values():
        assert value not in blob


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_validate_catches_missing_files_and_imports(tmp_path):
    cfg = write_config(tmp_path)
    for old, new, message in [
        ("teacher: {family: mlp, width: 64, depth: 1, epochs: 5}", "teacher: {checkpoint: nope.pt}", "teacher.checkpoint: no such file"),
        ("teacher: {family: mlp, width: 64, depth: 1, epochs: 5}", f"teacher: {{checkpoint: {cfg}, factory: 'no_such_mod:f'}}",
         "teacher.factory: cannot import module 'no_such_mod'"),
        ("data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}", "data: {name: 'no_such_mod:make'}", "data.name: cannot import module"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(cfg.read_text().replace(old, new))
        p = kdx("validate", str(bad), cwd=tmp_path)
        assert p.returncode == 2 and message in p.stderr, p.stderr


def test_progress_pickles_even_when_ray_has_swapped_print_and_logs_where_the_caller_asked(monkeypatch):
    # After a node died, Ray had replaced builtins.print and Tune failed to pickle the twins' Tuner.
    import builtins
    import pickle
    from types import SimpleNamespace

    from workflows import tune

    lines = []
    monkeypatch.setattr(tune, "_driver_log", [lines.append])  # what fit_search/run_jobs set from the caller's log
    progress = tune.Progress(4, 2)
    monkeypatch.setattr(builtins, "print", lambda *a, **k: None)
    restored = pickle.loads(pickle.dumps(progress))  # as Tune restores a search's callbacks
    restored.on_trial_complete(0, [], SimpleNamespace(trial_id="t_1", last_result={"epoch": 2, schema.VAL_ACC: 0.5, schema.PARAMS: 10}))
    assert restored.total == 4 and len(lines) == 1 and "[  1/4] trial t_1: val_acc 0.5000" in lines[0]


# One search for the cases that need their own space: a trial that diverges, one
# sampled twice at once, the dark-knowledge control, teachers the space chooses, and a loss that exists only as
# a file the test drops into distill/losses/ (a new loss is one file: nothing else
# in kdx names it, yet its teacher features reach the trials).
VARIED = """
experiment: varied
data: {name: hgmm, classes: 20, superclasses: 4, dim: 16}
teacher: {family: mlp, width: 64, depth: 1, epochs: 5}
student: {family: mlp, width: 8, depth: 1}
train: {epochs: 2, batch_size: 64, optimizer: sgd}
mix: {ce: 0.5, kd: 0.5, zz_probe: 0.1}
space:
  train.lr: {choice: [0.05, 1.0e+12]}
  losses.kd.shuffle_nontarget: {choice: [false, true]}
  teacher.width: {choice: [16, 64]}
  teacher.epochs: {choice: [1, 5]}      # 1: an early-stopped teacher
search:
  num_samples: 5
  max_concurrent: 2
  sampler: random
  objectives: {val_acc: max}
  baselines: false
  enqueue:
    - {train.lr: 0.05, losses.kd.shuffle_nontarget: false, teacher.width: 64, teacher.epochs: 5}   # the search's own teacher
    - {train.lr: 0.05, losses.kd.shuffle_nontarget: false, teacher.width: 64, teacher.epochs: 5}   # the same, at the same time
    - {train.lr: 0.05, losses.kd.shuffle_nontarget: true, teacher.width: 64, teacher.epochs: 5}    # the control
    - {train.lr: 0.05, losses.kd.shuffle_nontarget: false, teacher.width: 16, teacher.epochs: 1}   # its own, early-stopped teacher
    - {train.lr: 1.0e+12, losses.kd.shuffle_nontarget: false, teacher.width: 64, teacher.epochs: 5} # diverges
"""

PROBE_LOSS = '''"""A throw-away loss written by tests/test_search.py: it must work as one file."""
from . import register_loss


@register_loss("zz_probe", reads=("features.embedding",))
def zz_probe(student, teacher, target):
    s, t = student.features["embedding"], teacher.features["embedding"].detach()  # sizes differ: compare mean squares
    return (s.pow(2).mean(1) - t.pow(2).mean(1)).pow(2).mean()
'''


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    from search_helpers import ROOT

    folder = tmp_path_factory.mktemp("varied")
    (folder / "varied.yaml").write_text(VARIED)
    probe = ROOT / "distill" / "losses" / "zz_probe.py"
    probe.write_text(PROBE_LOSS)
    try:
        p = kdx("search", "varied.yaml", cwd=folder, extra_env={"KDX_CACHE": str(folder / "cache")})
    finally:
        probe.unlink()
    assert p.returncode == 0, p.stdout + p.stderr
    return folder, p, by_role(runs(folder / "mlflow.db", "varied"), schema.ROLE_STUDENT)


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_a_failing_trial_is_logged_failed_and_the_search_goes_on(varied):
    _, p, students = varied
    assert "4 finished (1 of them duplicates" in p.stdout and "1 failed" in p.stdout
    failed = [r for r in students if r.info.status == "FAILED"]
    assert len(students) == 5 and len(failed) == 1
    assert "TrainingDiverged" in failed[0].data.tags[schema.TAG_ERROR] and "epoch 1" in failed[0].data.tags[schema.TAG_ERROR]
    assert float(failed[0].data.params["train.lr"]) == 1e12


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_dark_knowledge_controls_are_tagged(varied):
    _, _, students = varied
    tagged = {r.data.params["losses.kd.shuffle_nontarget"]: r.data.tags.get(schema.TAG_CONTROL) for r in students}
    assert tagged == {"True": "dark_knowledge", "False": None}


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_a_point_sampled_twice_at_once_trains_once(varied):
    """Two workers get the same config at the same moment: the run begun first trains, the
    other waits for it and records its result as a duplicate, with no weights of its own."""
    folder, _, students = varied
    dup = [r for r in students if r.data.tags.get(schema.TAG_DUPLICATE_OF)]
    assert len(dup) == 1
    first = next(r for r in students if r.info.run_id == dup[0].data.tags[schema.TAG_DUPLICATE_OF])
    assert dup[0].data.tags[schema.TAG_CONFIG_KEY] == first.data.tags[schema.TAG_CONFIG_KEY] and first.info.start_time <= dup[0].info.start_time
    assert dup[0].data.metrics[schema.TEST_ACC] == first.data.metrics[schema.TEST_ACC]
    assert MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").list_artifacts(dup[0].info.run_id, "model") == []
    trained = [r for r in students if not r.data.tags.get(schema.TAG_DUPLICATE_OF)]
    assert len({r.data.tags[schema.TAG_CONFIG_KEY] for r in trained}) == len(trained)  # nothing trained twice


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_a_loss_that_is_one_new_file_runs_in_a_search(varied):
    _, _, students = varied
    finished = [r for r in students if r.info.status == "FINISHED" and not r.data.tags.get(schema.TAG_DUPLICATE_OF)]
    assert len(finished) == 3
    for r in finished:  # its term is logged, so the teacher's embedding reached every trial
        assert r.data.params["mix.zz_probe"] == "0.1" and r.data.metrics["loss/zz_probe"] >= 0


@pytest.mark.slow  # end to end through the CLI: kept out of the default suite's 4-minute budget, run by CI's slow step
def test_the_teacher_size_and_epochs_are_searchable(varied):
    folder, _, students = varied
    teacher_run = by_role(runs(folder / "mlflow.db", "varied"), schema.ROLE_TEACHER)[0]
    expected_params = {16: 16 * 16 + 16 + 16 * 20 + 20, 64: 64 * 16 + 64 + 64 * 20 + 20}
    for s in (r for r in students if r.info.status == "FINISHED"):
        width, epochs = int(s.data.params["teacher.width"]), int(s.data.params["teacher.epochs"])
        m = s.data.metrics
        assert m[schema.TEACHER_PARAMS] == expected_params[width]  # each student names the teacher it learned from
        if (width, epochs) == (64, 5):  # the search's own teacher
            assert s.data.tags[schema.TAG_TEACHER_RUN] == teacher_run.info.run_id
            assert m[schema.TEACHER_TEST_ACC] == teacher_run.data.metrics[schema.TEST_ACC]
        else:
            assert schema.TAG_TEACHER_RUN not in s.data.tags and s.data.tags[schema.TAG_TEACHER_KEY] != teacher_run.data.tags[schema.TAG_TEACHER_KEY]
    combos = {(s.data.params["teacher.width"], s.data.params["teacher.epochs"]) for s in students}
    trained = len(list((folder / "cache" / "teachers").glob("*.pt")))
    assert trained == len(combos | {("64", "5")}) == 2  # one cached teacher per distinct teacher config
