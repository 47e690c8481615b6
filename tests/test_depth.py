"""Depth on the frontier on hand-built transformer searches: the info object, the verdict, the report's section."""

import numpy as np
import pandas as pd
import pytest

from analysis import schema
from analysis.depth import BASE_RECIPE, KD_GAIN, KD_SEARCH, TUNED, depth_info, plot_depth
from analysis.annotate import search_note
from analysis.report import write_report
from analysis.runs import Experiment
from analysis.store import SearchRecord, search_params
from test_frontier import row

PNG = b"\x89PNG\r\n\x1a\n"
SPREAD = (-0.01, 0.0, 0.01)  # per-seed offsets: std 0.01 over three seeds


def shape(family, depth, width):
    if family == "hf":
        return {"student.family": "hf", "student.num_hidden_layers": depth, "student.hidden_size": width}
    return {"student.family": family, "student.depth": depth, "student.dim": width}


def arm(prefix, role, arch, acc, seeds, t, extra):
    """A run at seed 0 and its repeats (kdx.seed_of) at the other seeds, test accuracy acc + SPREAD."""
    out = [row(prefix, role, arch, val=acc[0], test=acc[0], params=1000, t=t, seed=seeds[0], **extra)]
    out += [row(f"{prefix}-s{s}", role, arch, val=a, test=a, params=1000, t=t, seed=s, seed_of=prefix, **extra)
            for s, a in zip(seeds[1:], acc[1:])]
    return out


def search(kd, twin, *, family="transformer", width=32, teacher=0.90, seeds=(0, 1, 2), extra_rows=()):
    """A search over depths: per depth a KD student and its base-recipe twin, each over `seeds`;
    kd and twin map depth -> mean test accuracy."""
    rows = [row("p", "search"), row("t", "teacher", val=teacher, test=teacher, params=50000)]
    for i, d in enumerate(sorted(set(kd) | set(twin))):
        arch = f"{family}:depth={d},dim={width}"
        params = shape(family, d, width)
        spread = SPREAD[: len(seeds)]
        if d in kd:
            rows += arm(f"s{d}", "student", arch, [kd[d] + o for o in spread], seeds, 10 + i, params)
        if d in twin:
            rows += arm(f"b{d}", "baseline", arch, [twin[d] + o for o in spread], seeds, 30 + i, params)
    rows += list(extra_rows)
    record = SearchRecord.read(search_params({}, {"val_acc": "max", "params": "min"}, {"val_acc": 0.1, "params": 10000}))
    return Experiment("synthetic", "1", "sqlite:///unused.db", pd.DataFrame(rows), "p", record)


SHALLOW_FAILS = dict(kd={1: 0.40, 2: 0.60, 4: 0.85, 6: 0.88}, twin={1: 0.35, 2: 0.55, 4: 0.80, 6: 0.86})


def test_a_search_without_transformer_students_has_no_depth():
    exp = search({2: 0.8, 4: 0.85}, {2: 0.7}, family="mlp")  # an mlp has a student.depth too: the family decides
    assert depth_info(exp) is None
    plain = search({}, {})
    assert depth_info(plain) is None


def test_kd_and_twin_per_depth_over_seeds():
    info = depth_info(search(**SHALLOW_FAILS))
    t = info.table.set_index("depth")
    assert list(t.index) == [1, 2, 4, 6] and set(t.width) == {32} and set(t.width_key) == {"dim"} and set(t.family) == {"transformer"}
    assert (t.kd_n == 3).all() and (t.twin_n == 3).all()
    assert t.loc[4, "kd_mean"] == pytest.approx(0.85) and t.loc[4, "twin_mean"] == pytest.approx(0.80)
    assert t.loc[4, "kd_std"] == pytest.approx(0.01) and t.loc[1, "twin_std"] == pytest.approx(0.01)
    assert set(t.kd_protocol) == {KD_SEARCH} and set(t.twin_protocol) == {BASE_RECIPE}
    assert t.loc[4, "kd_run"] == "s4" and t.loc[4, "twin_run"] == "b4"
    # the same offsets at every seed: the paired difference has no spread, so t is undefined and nothing is called
    assert (t.diff_n == 3).all() and t.loc[4, "diff_mean"] == pytest.approx(0.05) and not t.distinguishable.any()
    assert list(t.best_arm) == ["kd"] * 4
    assert info.teacher_acc == pytest.approx(0.90) and info.bar == pytest.approx(0.81) and info.fraction == 0.9 and info.chance == 0.1


def test_paired_differences_and_the_best_student_on_validation():
    exp = search(**SHALLOW_FAILS)
    runs = exp.runs.copy()
    runs.loc[runs.run_id == "b4-s2", schema.TEST_ACC] = 0.83  # seed 2's twin closer: the paired differences now vary
    worse = row("s4x", "student", "transformer:depth=4,dim=32", val=0.50, test=0.99, params=1000, t=99, seed=0, **shape("transformer", 4, 32))
    exp.runs = pd.concat([runs, pd.DataFrame([worse])], ignore_index=True)
    r = depth_info(exp).table.set_index("depth").loc[4]
    assert r.kd_run == "s4"  # chosen on validation, never on its 0.99 test accuracy
    d = np.array([0.05, 0.05, 0.86 - 0.83])
    assert r.diff_mean == pytest.approx(d.mean()) and r.diff_std == pytest.approx(d.std(ddof=1))
    assert r.diff_t == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(3))) and bool(r.distinguishable)


def test_the_gain_steps_winners_replace_the_search_where_they_ran():
    arch, params = "transformer:depth=2,dim=32", shape("transformer", 2, 32)
    gain = [*arm("g-kd", "student", arch, [0.86, 0.87, 0.88], (0, 1, 2), 50, {**params, "arm": "kd", "gain_arch": arch}),
            row("g-kd2", "student", arch, val=0.30, test=0.30, params=1000, t=51, seed=0, arm="kd", gain_arch=arch, **params),  # a losing candidate
            *arm("g-tw", "baseline", arch, [0.82, 0.84, 0.86], (0, 1, 2), 52, {**params, "arm": "twin", "gain_arch": arch})]
    for r in gain:
        r.setdefault("arm", "")
    info = depth_info(search(**SHALLOW_FAILS, extra_rows=gain))
    t = info.table.set_index("depth")
    assert t.loc[2, "kd_protocol"] == KD_GAIN and t.loc[2, "twin_protocol"] == TUNED
    assert t.loc[2, "kd_run"] == "g-kd" and t.loc[2, "kd_mean"] == pytest.approx(0.87) and t.loc[2, "twin_mean"] == pytest.approx(0.84)
    assert t.loc[2, "twin_std"] == pytest.approx(0.02) and t.loc[2, "diff_mean"] == pytest.approx(0.03)
    assert t.loc[4, "kd_protocol"] == KD_SEARCH and t.loc[4, "twin_protocol"] == BASE_RECIPE  # the search's, where the gain step did not run
    # depth 2 now reaches 0.81: the threshold moves down to 2 layers
    assert "below 2 layers the student fails whatever it is taught (best arm 40.0% at 1 layer vs teacher 90.0%)" in info.sentence


def test_the_fails_sentence_when_shallow_depths_fall_short():
    info = depth_info(search(**SHALLOW_FAILS))
    assert info.sentence.startswith("transformer students at dim 32: below 4 layers the student fails whatever it is taught "
                                    "(best arm 60.0% at 2 layers vs teacher 90.0%); from 4 layers the best arm reaches 85.0%")
    assert "base-recipe twins, not tuned" in info.sentence  # the failing depths' twins were not tuned: said so
    v = info.verdicts.iloc[0]
    assert v.threshold == 4 and v.shows_failure and v.depths == (1, 2, 4, 6)
    assert list(info.table.fails) == [True, True, False, False]


def test_no_fails_sentence_when_every_depth_passes():
    info = depth_info(search(kd={1: 0.85, 2: 0.87, 4: 0.89}, twin={1: 0.84, 2: 0.86, 4: 0.88}))
    assert "fails whatever it is taught" not in info.sentence and not info.verdicts.shows_failure.any()
    assert "every depth tried (1, 2 and 4 layers) reaches 90% of the teacher's test accuracy (90.0%)" in info.sentence
    assert "shallowest, 1 layer, has best arm 85.0% (kd)" in info.sentence


def test_one_arm_alone_does_not_show_whatever_it_is_taught():
    info = depth_info(search(kd={1: 0.40, 4: 0.85}, twin={4: 0.80}))
    assert "do not show that the student fails whatever it is taught" in info.sentence and "below 4 layers the student fails" not in info.sentence
    assert "at 1 layer only one arm ran" in info.sentence and not info.verdicts.shows_failure.any()


def test_at_chance_fails_even_without_a_teacher_accuracy():
    exp = search(kd={1: 0.10, 3: 0.50}, twin={1: 0.105, 3: 0.45})
    exp.runs.loc[exp.runs.role == "teacher", schema.TEST_ACC] = np.nan
    info = depth_info(exp)
    assert info.teacher_acc is None and info.bar is None
    t = info.table.set_index("depth")
    assert t.loc[1, "at_chance"] and t.loc[1, "fails"] and not t.loc[3, "fails"]
    assert "below 3 layers the student fails whatever it is taught (best arm 10.5% at 1 layer vs chance 10.0%)" in info.sentence


def test_hf_students_read_num_hidden_layers_and_the_widest_statement_leads():
    wide = [*arm("w2", "student", "hf:w64d2", [0.5, 0.5, 0.5], (0, 1, 2), 70, shape("hf", 2, 64))]
    info = depth_info(search(**SHALLOW_FAILS, family="hf", width=128, extra_rows=wide))
    assert info.main == ("hf", 128)  # four depths at hidden_size 128, one at 64
    assert set(info.table.width_key) == {"hidden_size"} and sorted(info.table.depth.unique()) == [1, 2, 4, 6]
    assert info.sentence.startswith("hf students at hidden_size 128: below 4 layers")
    assert list(info.verdicts.width) == [128, 64] and "no depth tried (2 layers)" in info.verdicts.sentence.iloc[1]
    folder = depth_info(search({2: 0.5, 4: 0.85}, {}, family="hf", width=None))  # hidden_size: the folder's own
    assert folder.main == ("hf", None) and folder.sentence.startswith("hf students at hidden_size (default): below 4 layers the arms")


def test_the_report_draws_depth_and_writes_its_section(tmp_path):
    exp = search(**SHALLOW_FAILS)
    report = write_report(exp, tmp_path, log_to_mlflow=False)
    assert report.depth is not None and (tmp_path / "depth.png").read_bytes().startswith(PNG)
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Depth</h2>" in page and "below 4 layers the student fails whatever it is taught" in page
    assert BASE_RECIPE in page and page.count("data:image/png;base64,") == len(report.pictures) + 1
    assert "**Depth**" in search_note(exp, report) and "below 4 layers the student fails" in search_note(exp, report)
    plain = write_report(search({2: 0.8, 4: 0.85}, {2: 0.7}, family="mlp"), tmp_path, log_to_mlflow=False)
    assert plain.depth is None and not (tmp_path / "depth.png").exists() and "<h2>Depth</h2>" not in (tmp_path / "report.html").read_text()


def test_the_picture_is_a_png(tmp_path):
    plot_depth(depth_info(search(**SHALLOW_FAILS)), tmp_path / "d.png")
    data = (tmp_path / "d.png").read_bytes()
    assert data.startswith(PNG) and len(data) > 2000
