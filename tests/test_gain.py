"""The equal-budget gain (search.twins: tuned): its arms in MLflow, the replayed duplicate, the verdict."""

import math
import re

import pytest
from mlflow import MlflowClient

from analysis import schema
from analysis.gains import Candidate, gain_info, race_mean, race_pick, race_settings, t_critical, verdict_line
from analysis.runs import load_runs
from search_helpers import write_config
from workflows.experiment import load_experiment
from workflows.gain import TEXTBOOK, _arm_candidates
from workflows.warm import warm_start


def arm_runs(tiny_search, arm: str) -> list:
    return [r for r in tiny_search.runs if r.data.tags.get(schema.TAG_ARM) == arm]


def test_every_arm_gets_the_same_recipe_budget_then_the_seeds(tiny_search):
    from analysis.frontier import frontier_info

    trials_front = frontier_info(load_runs(f"sqlite:///{tiny_search.folder / 'mlflow.db'}", "tiny")).front
    archs = list(dict.fromkeys(trials_front.arch))  # the gain measures the search trials' front (the exported front ranges wider)
    archs = {archs[0], archs[-1]}  # gain_archs 2: the smallest and the largest
    assert archs and {r.data.tags[schema.TAG_GAIN_ARCH] for r in arm_runs(tiny_search, "kd")} == archs
    parent = next(r for r in tiny_search.runs if r.data.tags.get(schema.TAG_ROLE) == schema.ROLE_SEARCH)
    for arch in archs:
        for arm, role in (("kd", schema.ROLE_STUDENT), ("twin", schema.ROLE_TWIN), ("smooth", schema.ROLE_TWIN)):
            mine = [r for r in arm_runs(tiny_search, arm) if r.data.tags[schema.TAG_GAIN_ARCH] == arch]
            candidates = [r for r in mine if not r.data.tags.get(schema.TAG_SEED_OF)]
            repeats = [r for r in mine if r.data.tags.get(schema.TAG_SEED_OF)]
            # recipe_trials 2, then the race (2 best on 2 seeds, seeds 2 caps race_seeds 3): each candidate once more,
            # which is also the winner's second seed, so phase 3 adds no repeat
            assert len(candidates) == 2 and len(repeats) == 2, (arch, arm)
            assert all(r.info.status == "FINISHED" and r.data.tags[schema.TAG_ROLE] == role for r in mine)
            assert {r.data.params["train.epochs"] for r in mine} == {"2"}  # the search's budget, every arm
            assert {r.data.params["seed"] for r in repeats} == {"1"}
            assert {r.data.tags[schema.TAG_SEED_OF] for r in repeats} == {r.info.run_id for r in candidates}
            if arm == "kd":  # the controls follow the winner: the best mean val_acc over the race's two seeds, unless the
                # textbook candidate trails it by less than twice the noise of seeds and validation split (analysis.gains.run_race)
                again = {r.data.tags[schema.TAG_SEED_OF]: r.data.metrics[schema.VAL_ACC] for r in repeats}
                mean = {r.info.run_id: (r.data.metrics[schema.VAL_ACC] + again[r.info.run_id]) / 2 for r in candidates}
                order = sorted(candidates, key=lambda r: (-r.data.metrics[schema.VAL_ACC], r.info.start_time))
                winner = order[max(range(2), key=lambda i: (mean[order[i].info.run_id], -i))]
                book = [r for r in candidates if r.data.tags.get(schema.TAG_TEXTBOOK) == "true"]
                if book and book[0] is not winner:
                    a, b = winner.info.run_id, book[0].info.run_id
                    d = [winner.data.metrics[schema.VAL_ACC] - book[0].data.metrics[schema.VAL_ACC], again[a] - again[b]]
                    n = int(parent.data.params["search.val_samples"])
                    split = (min(1.0, (1 - mean[a]) + (1 - mean[b])) - (mean[a] - mean[b]) ** 2) / n
                    noise = math.sqrt((d[0] - d[1]) ** 2 / 2 / 2 + split)  # the paired differences' variance / 2 seeds
                    winner = book[0] if mean[a] - mean[b] < 2 * noise else winner
                controls = [r for r in tiny_search.runs if r.data.tags.get(schema.TAG_GAIN_ARCH) == arch and r.data.tags.get(schema.TAG_CONTROL_OF)]
                assert {r.data.tags[schema.TAG_CONTROL_OF] for r in controls} == {winner.info.run_id}
        for control in ("shuffled", "same_recipe"):
            mine = [r for r in arm_runs(tiny_search, control) if r.data.tags[schema.TAG_GAIN_ARCH] == arch]
            assert sorted(r.data.params["seed"] for r in mine) == ["0", "1"]
        shuffled = [r for r in arm_runs(tiny_search, "shuffled") if r.data.tags[schema.TAG_GAIN_ARCH] == arch]
        assert all(r.data.params["losses.kd.shuffle_nontarget"] == "True" for r in shuffled)
    for r in arm_runs(tiny_search, "twin"):
        assert r.data.params["losses.ce.label_smoothing"] == "0.0" and "mix.kd" not in r.data.params
    assert all(float(r.data.params["losses.ce.label_smoothing"]) > 0 for r in arm_runs(tiny_search, "smooth"))


def test_a_config_that_already_ran_is_replayed_not_trained(tiny_search):
    """The KD arm's first candidate is the front student's own recipe: the same config, so the
    earlier result is reported and logged as a duplicate, and nothing trains (no weights)."""
    client = MlflowClient(f"sqlite:///{tiny_search.folder / 'mlflow.db'}")
    by_id = {r.info.run_id: r for r in tiny_search.runs}
    firsts = [r for r in arm_runs(tiny_search, "kd") if " #1 = " in r.info.run_name]  # named after the run it repeats
    assert firsts
    for r in firsts:
        earlier = by_id[r.data.tags[schema.TAG_DUPLICATE_OF]]
        assert earlier.data.tags[schema.TAG_ROLE] == schema.ROLE_STUDENT and not earlier.data.tags.get(schema.TAG_ARM)
        assert r.data.tags[schema.TAG_CONFIG_KEY] == earlier.data.tags[schema.TAG_CONFIG_KEY]
        assert r.data.metrics[schema.VAL_ACC] == earlier.data.metrics[schema.VAL_ACC]
        assert client.list_artifacts(r.info.run_id, "model") == []  # nothing was trained


def test_the_report_and_the_summary_open_with_the_answer(tiny_search):
    info = gain_info(load_runs(f"sqlite:///{tiny_search.folder / 'mlflow.db'}", "tiny"))
    assert info is not None and info.recipe_trials == 2 and info.seeds == 2
    assert set(info.arms.arm) == {"kd", "twin", "smooth", "shuffled", "same_recipe"}
    assert (info.arms.n == 2).all() and math.isfinite(info.noise)
    for v in info.verdicts.itertuples():
        assert v.gain_n == 2 and v.best_control in ("twin", "smooth", "shuffled") and v.compute_s > 0
    out = tiny_search.process.stdout
    assert "what distillation bought" in out and "over the tuned twin" in out and "objective noise" in out
    assert out.index("what distillation bought") < out.index("Pareto front:")
    page = (tiny_search.folder / "end-report" / "report.html").read_text()
    assert page.index("What distillation bought") < page.index("The Pareto front") and "Equal-budget protocol" in page


def test_racing_picks_the_better_recipe_when_one_seed_says_otherwise():
    """Recipe A wins at the base seed by luck (0.80 against 0.79) and loses at the two other seeds;
    the race picks B on the mean, and a candidate below the race's cut is never picked."""
    a = Candidate("A", 0.80, 1.0, 0, {1: 0.70, 2: 0.71, 3: 0.99})  # seed 3: a later repeat, outside a 3-seed race
    b = Candidate("B", 0.79, 2.0, 0, {1: 0.78, 2: 0.79})
    c = Candidate("C", 0.60, 3.0, 0, {1: 0.99, 2: 0.99})  # third at the base seed: not raced with race 2
    assert race_pick([a, b, c], race=2, seeds=3) == ("B", [a, b])
    assert race_pick([a, b, c], race=1, seeds=3)[0] == "A"  # no race: the single-seed pick
    assert race_pick([a, b], race=2, seeds=1)[0] == "A"  # one seed: the repeats are not looked at
    assert race_mean(a, 3) == pytest.approx((0.80 + 0.70 + 0.71) / 3)
    assert race_pick([Candidate("A", 0.8, 1.0, 0, {}), Candidate("B", 0.8, 0.5, 0, {})], 2, 3)[0] == "B"  # a tie: the earlier run
    assert race_settings({"seeds": "5", "race": "2", "race_seeds": "3"}) == (2, 3)
    assert race_settings({"seeds": "2", "race": "2", "race_seeds": "3"}) == (2, 2)
    assert race_settings({"seeds": "5"}) == (1, 1)  # a search from before racing: picked on one seed, as it ran


def test_verdicts_say_when_a_difference_is_noise():
    assert t_critical(5) == pytest.approx(2.776, abs=1e-3) and t_critical(1) == math.inf
    row = dict(arch="mlp:w8", params=100, kd_recipe="", gain_n=5, gain_mean=0.01, gain_std=0.02, gain_t=1.1, gain_distinguishable=False,
               best_control="smooth", vs_control_mean=0.03, vs_control_std=0.01, vs_control_t=6.7, vs_control_distinguishable=True)
    line = verdict_line(type("V", (), row))
    assert "within the noise (|t| < 2.78)" in line and "KD beats it" in line
    one = verdict_line(type("V", (), {**row, "gain_n": 1}))
    assert "one seed" in one


def test_too_few_seeds_or_no_spread_give_no_verdict_and_no_t():
    from analysis.gains import distinguishable
    from analysis.runs import paired

    # two seeds whose differences are equal up to float rounding: once printed as t -351255681243381.0
    two = paired({0: 0.6020, 1: 0.7315}, {0: 0.6215, 1: 0.7510})
    assert two["n"] == 2 and two["std"] == 0.0 and two["t"] != two["t"] and not distinguishable(two)
    row = dict(arch="mlp:w8", params=100, kd_recipe="", gain_n=2, gain_mean=two["mean"], gain_std=two["std"], gain_t=two["t"],
               gain_distinguishable=False, best_control="smooth", vs_control_mean=0.03, vs_control_std=0.01, vs_control_t=6.7,
               vs_control_distinguishable=False)
    line = verdict_line(type("V", (), row))
    assert "KD -1.95 points over the tuned twin (2 seeds: too few to tell)" in line and "(t " not in line
    # two seeds with spread and a large t: still too few (one degree of freedom)
    wide = paired({0: 0.70, 1: 0.75}, {0: 0.60, 1: 0.66})
    assert wide["std"] > 0 and not distinguishable(wide)
    assert "2 seeds: too few to tell" in verdict_line(type("V", (), {**row, "gain_std": wide["std"], "gain_t": wide["t"]}))
    # five seeds, all the same difference: no spread, no verdict
    flat = paired({s: 0.8 for s in range(5)}, {s: 0.7 for s in range(5)})
    assert flat["n"] == 5 and flat["std"] == 0.0 and not distinguishable(flat)
    flat_line = verdict_line(type("V", (), {**row, "gain_n": 5, "gain_mean": flat["mean"], "gain_std": 0.0, "gain_t": flat["t"]}))
    assert "5 seeds with zero spread: the seeds cannot tell" in flat_line and "(t " not in flat_line.split(";")[0]
    # three seeds with spread: a verdict, as before
    three = paired({0: 0.80, 1: 0.82, 2: 0.81}, {0: 0.70, 1: 0.71, 2: 0.72})
    assert distinguishable(three)


def test_the_search_starts_from_the_textbook_recipes(tmp_path):
    cfg = write_config(tmp_path)  # the space samples losses.kd.temperature in [1, 8]
    exp = load_experiment(str(cfg))
    assert warm_start(exp) == [{"losses.kd.temperature": 4.0}, {"losses.kd.temperature": 8.0}]  # T 20 clipped; the base is T 4 again


def test_recipe_candidates_start_from_the_known_good_and_are_reproducible(tmp_path):
    import numpy as np

    exp = load_experiment(str(write_config(tmp_path)))
    own = {"losses.kd.temperature": 2.5, "mix.kd": 0.5, "mix.ce": 0.5, "train.lr": 0.02}
    arms = _arm_candidates(exp, own, 6, np.random.default_rng(0))
    kd, base = arms["kd"], {"train.lr": exp.run.train.lr, "train.weight_decay": exp.run.train.weight_decay}
    assert kd[0] == own | {"train.weight_decay": exp.run.train.weight_decay}  # the front student's own recipe: replayed, not retrained
    assert kd[1] == TEXTBOOK[0] | base and len(kd) == 6
    assert arms == _arm_candidates(exp, own, 6, np.random.default_rng(0))
    assert all(math.isclose(c["mix.ce"] + c["mix.kd"], 1.0) for c in kd[4:])
    assert all(c["losses.ce.label_smoothing"] == 0 for c in arms["twin"]) and arms["smooth"][0]["losses.ce.label_smoothing"] == 0.1


def test_the_arms_search_lr_and_weight_decay_alike(tmp_path):
    """Every arm's candidate i trains with the same (lr, weight decay): KD adds T and kd on top,
    and its textbook recipes ride on the draws, not on the base lr alone (issue 23)."""
    import numpy as np

    exp = load_experiment(str(write_config(tmp_path)))
    for own, k in (({"losses.kd.temperature": 2.5, "mix.kd": 0.5, "mix.ce": 0.5, "train.lr": 0.02}, 4), ({"mix.kd": 0.7}, 5)):
        arms = _arm_candidates(exp, own, k, np.random.default_rng(3))
        shared = [[(c["train.lr"], c["train.weight_decay"]) for c in arms[arm]] for arm in ("kd", "twin", "smooth")]
        assert shared[0] == shared[1] == shared[2] and len(shared[0]) == k and len(set(shared[0])) == k
        assert len({c["train.lr"] for c in arms["kd"][1:3]}) == 2  # the two textbook recipes at two different draws
        assert len({c["train.weight_decay"] for c in arms["kd"]}) > 1  # KD searches weight decay too


@pytest.mark.slow  # a whole --resume through the CLI (about 20 s): kept out of the default suite's 4-minute budget
def test_resuming_a_finished_search_changes_no_run(tiny_search):
    """--resume on the finished search: its trials, twins and every arm are found done; nothing
    is deleted (the gain's runs are not unknown trials) and nothing is queued again (candidates
    are known by their kdx.candidate tag, not by a name a replay changes)."""
    from search_helpers import kdx, runs

    before = {r.info.run_id for r in runs(tiny_search.folder / "mlflow.db", "tiny")}
    p = kdx("search", "tiny.yaml", "--resume", "--report-dir", "resumed-report", cwd=tiny_search.folder)
    assert p.returncode == 0, p.stdout + p.stderr
    # no phase had anything left to run: no phase's line (the front's sentences may say "(gain: tuned twin; ...)")
    assert not re.search(r"^\s*gain: ", p.stdout, re.M) and "scratch twins:" not in p.stdout, p.stdout
    assert {r.info.run_id for r in runs(tiny_search.folder / "mlflow.db", "tiny")} == before
