"""Enough seeds, chosen by the data: Stein's two-stage design runs a pilot, plans the seed count
from its paired standard deviation, runs the rest and survives a stop in either stage."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fail_with_nan, run_small

from augcompare.experiments import cli, config, stats
from augcompare.experiments import planning
from augcompare.experiments import run as run_mod
from augcompare.experiments.history import read_history
from augcompare.experiments.progress import RunProgress

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ["analysis.target_half_width=0.5", "analysis.pilot_seeds=2", "analysis.max_seeds=3", "train.seeds=[0]",
          "train.epochs=2"]


def numbers(run_dir):
    rows = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")]
    document = json.loads((run_dir / "runs.json").read_text())
    return rows, [{k: v for k, v in job.items() if k != "seconds"} for job in document["jobs"]], document["design"]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("design")
    return tmp_path, run_small(tmp_path, *DESIGN)


@pytest.mark.slow
def test_the_pilot_plans_the_seed_count(two_stage):
    _, run_dir = two_stage
    rows, jobs, design = numbers(run_dir)
    assert design["pilot_seeds"] == [0, 1]
    expected = stats.stein_seeds(design["planning_sd"] * 100, 2, 0.5, 3)
    assert len(design["seeds"]) == expected and design["seeds"] == [0, 1, 2][:expected]
    assert design["seeds_needed"] >= expected and design["capped"] == (design["seeds_needed"] > 3)
    assert {job["seed"] for job in jobs} == set(design["seeds"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["design"] == design and summary["vs_baseline"]["augmented"]["primary"]["seeds"] == expected
    assert "stein_ci95" in summary["vs_baseline"]["augmented"]["primary"]
    assert "Stein's two-stage design" in (run_dir / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("stop_at_epoch", [3, 9])  # in the pilot, and in the second stage
def test_a_stop_in_either_stage_resumes_to_the_same_run(two_stage, stop_at_epoch, monkeypatch):
    tmp_path, whole = two_stage
    epochs_seen = []
    epoch = RunProgress.epoch

    def stop(self, row, epochs, stopped_early=False):
        epoch(self, row, epochs, stopped_early)
        epochs_seen.append(row)
        if len(epochs_seen) == stop_at_epoch:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunProgress, "epoch", stop)
    with pytest.raises(AssertionError):  # run_small asserts exit 0; a stopped run exits 130
        run_small(tmp_path, *DESIGN, run_id=f"stopped{stop_at_epoch}")
    monkeypatch.undo()
    run_dir = tmp_path / "results" / "demo" / f"stopped{stop_at_epoch}"
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == numbers(whole)


@pytest.mark.slow
def test_a_pilot_whose_jobs_failed_is_a_one_line_error_not_a_plan(tmp_path, monkeypatch, capsys):
    fail_with_nan(monkeypatch, "augmented")
    with pytest.raises(AssertionError):  # run_small asserts exit 0
        run_small(tmp_path, *DESIGN, "train.epochs=1", "train.lr_schedule=constant")
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the two-stage design cannot plan the seeds: no arm has two pilot seeds" in error
    runs = json.loads((tmp_path / "results" / "demo" / "r" / "runs.json").read_text())
    assert [job["status"] for job in runs["jobs"] if job["arm"] == "augmented"] == ["failed", "failed"]
    assert runs["design"] is None  # nothing planned


def test_the_design_needs_two_arms(tmp_path, capsys):
    with pytest.raises(AssertionError):  # run_small asserts exit 0
        run_small(tmp_path, *DESIGN, "arms={baseline = {}}")
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "analysis.target_half_width needs two arms or more" in error


@pytest.mark.slow
def test_analyze_keeps_the_stein_interval_for_the_designs_metric_only_and_resume_adds_no_seeds(two_stage, tmp_path,
                                                                                            capsys):
    import shutil
    run_dir = tmp_path / "r"
    shutil.copytree(two_stage[1], run_dir)
    own = json.loads((run_dir / "summary.json").read_text())["vs_baseline"]["augmented"]["primary"]
    assert cli.main(["analyze", str(run_dir), "--set", "analysis.min_effect=0.5"]) == 0
    same = json.loads((run_dir / "analyses" / "min_effect-0.5" / "summary.json").read_text())
    assert same["vs_baseline"]["augmented"]["primary"]["stein_ci95"] == own["stein_ci95"]
    # The pilot's sd is of test accuracy: no Stein interval for a loss from it.
    assert cli.main(["analyze", str(run_dir), "--set", "analysis.primary=test_loss"]) == 0
    loss = json.loads((run_dir / "analyses" / "primary-test_loss" / "summary.json").read_text())
    assert "stein_ci95" not in loss["vs_baseline"]["augmented"]["primary"] and loss["design"]["seeds"]
    seeds = json.loads((run_dir / "runs.json").read_text())["design"]["seeds"]
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run_dir), "--set", f"train.seeds=[0, {max(seeds) + 1}]"]) == 2
    assert "uses the two-stage design (analysis.target_half_width = 0.5)" in capsys.readouterr().err


# -- racing: analysis.eliminate stops the arms the pilot shows worse -----------------------------

def pilot(means, spread=0.002, seeds=(0, 1, 2)):
    """Synthetic pilot accuracies: arm -> {seed: mean + a seeded wobble shared by every arm (the
    seed's data) + a small one of its own}."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.05, len(seeds))
    return {arm: {seed: mean + shared[i] + rng.normal(0, spread) for i, seed in enumerate(seeds)}
            for arm, mean in means.items()}


def test_an_arm_far_below_the_others_is_eliminated_against_the_arm_it_trails():
    stopped = stats.pilot_eliminations(pilot({"baseline": 0.60, "standard": 0.605, "broken": 0.30}, spread=0.01),
                                       "test_accuracy", 0.01)
    assert set(stopped) == {"broken"}
    assert stopped["broken"]["worse_than"] in ("baseline", "standard") and stopped["broken"]["seeds"] == 3
    assert stopped["broken"]["difference"] < -0.25 and stopped["broken"]["p_holm"] < 0.01


def test_for_a_loss_the_higher_arm_is_eliminated():
    stopped = stats.pilot_eliminations(pilot({"baseline": 0.9, "broken": 2.0}), "test_loss", 0.01)
    assert list(stopped) == ["broken"] and stopped["broken"]["worse_than"] == "baseline"


def test_arms_within_the_noise_or_tested_at_a_stricter_level_go_on():
    close = pilot({"baseline": 0.60, "standard": 0.61, "other": 0.605}, spread=0.02)
    assert stats.pilot_eliminations(close, "test_accuracy", 0.01) == {}
    # Holm across every pair: the same gap that stops an arm of two stops none at a far smaller level.
    gap = pilot({"baseline": 0.60, "broken": 0.57}, spread=0.002)
    assert stats.pilot_eliminations(gap, "test_accuracy", 0.01)
    assert stats.pilot_eliminations(gap, "test_accuracy", 1e-6) == {}


def test_a_pair_without_two_shared_pilot_seeds_eliminates_nothing():
    values = pilot({"baseline": 0.6, "broken": 0.1})
    values["broken"] = {0: values["broken"][0]}  # the other pilot jobs failed
    assert stats.pilot_eliminations(values, "test_accuracy", 0.01) == {}


def test_the_final_verdicts_run_at_the_level_left_after_the_pilots_look():
    assert stats.final_alpha(None) == stats.ALPHA
    assert stats.final_alpha({"eliminate_alpha": 0.01}) == pytest.approx(0.04)
    # p = 0.045 passes at 0.05, not at 0.04.
    assert stats.verdict("test_accuracy", 0.05, [0.01, 0.09], 0.045, 0.01, 0.03) == "better"
    assert stats.verdict("test_accuracy", 0.05, [0.01, 0.09], 0.045, 0.01, 0.03, alpha=0.04) == "inconclusive"


def test_elimination_needs_the_two_stage_design(tmp_path, capsys):
    with pytest.raises(AssertionError):  # run_small asserts exit 0
        run_small(tmp_path, "analysis.eliminate=true")
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "analysis.eliminate stops beaten arms" in error


THREE_ARMS = 'arms={baseline = {}, augmented = {horizontal_flip = true}, broken = {brightness = 0.9}}'


@pytest.mark.slow
def test_an_eliminated_arm_trains_no_second_stage_seed(tmp_path, monkeypatch):
    """The pilot's numbers are faked (broken far below, every pair spread) so that the decision
    is certain on a tiny run; what is checked is what the run does with it."""
    fake = pilot({"baseline": 0.60, "augmented": 0.61, "broken": 0.20}, spread=0.03)
    monkeypatch.setattr(run_mod.Run, "primary_values", lambda self, arm, seeds: {s: fake[arm][s] for s in seeds})
    run_dir = run_small(tmp_path, THREE_ARMS, "analysis.target_half_width=0.1", "analysis.pilot_seeds=3",
                        "analysis.max_seeds=4", "analysis.eliminate=true", "analysis.comparisons=all",
                        "train.epochs=1")
    _, jobs, design = numbers(run_dir)
    assert design["seeds"] == [0, 1, 2, 3] and design["eliminate_alpha"] == 0.01
    assert list(design["eliminated"]) == ["broken"] and design["eliminated"]["broken"]["seeds"] == 3
    ran = {(job["arm"], job["seed"]) for job in jobs}
    assert {seed for arm, seed in ran if arm == "broken"} == {0, 1, 2}
    assert {seed for arm, seed in ran if arm != "broken"} == {0, 1, 2, 3}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["design"]["eliminated"] == design["eliminated"] and summary["primary"]["alpha"] == pytest.approx(0.04)
    assert summary["ranking"]["order"][-1] == "broken" and summary["ranking"]["eliminated"] == ["broken"]
    assert "broken" not in summary["ranking"]["picks"]
    assert {pair["seeds"] == [0, 1, 2] for pair in summary["pairs"] if "broken" in (pair["arm"], pair["other"])} == {True}
    text = (run_dir / "summary.md").read_text()
    assert "broken (eliminated after 3 pilot seeds)" in text and "| broken | 3 |" in text
    assert "Arms the pilot eliminated come last" in text
    assert "Holm-adjusted p < 0.04" in text
    # augcompare analyze reads the eliminated arms and the final level from the run, and refuses to change them.
    assert cli.main(["analyze", str(run_dir), "--set", "analysis.min_effect=0.5"]) == 0
    analysed = json.loads((run_dir / "analyses" / "min_effect-0.5" / "summary.json").read_text())
    assert analysed["design"]["eliminated"] == design["eliminated"] and analysed["primary"]["alpha"] == pytest.approx(0.04)
    assert analysed["ranking"]["eliminated"] == ["broken"]
    assert cli.main(["analyze", str(run_dir), "--set", "analysis.eliminate=false"]) == 2
    (tmp_path / "summary.md").write_text(text)  # for a reader of the test's tmp_path


@pytest.mark.slow
def test_when_one_arm_is_left_the_run_ends_with_the_pilot(tmp_path, monkeypatch):
    fake = pilot({"baseline": 0.20, "augmented": 0.61, "broken": 0.25}, spread=0.01)
    monkeypatch.setattr(run_mod.Run, "primary_values", lambda self, arm, seeds: {s: fake[arm][s] for s in seeds})
    run_dir = run_small(tmp_path, THREE_ARMS, "analysis.target_half_width=0.1", "analysis.pilot_seeds=3",
                        "analysis.max_seeds=4", "analysis.eliminate=true", "train.epochs=1")
    _, jobs, design = numbers(run_dir)
    assert sorted(design["eliminated"]) == ["baseline", "broken"] and design["seeds"] == [0, 1, 2, 3]
    assert {job["seed"] for job in jobs} == {0, 1, 2}


def test_every_bundled_two_stage_experiment_of_several_arms_races():
    # As written (an LSUN file's data.root need not exist here), the defaults filled in.
    bundled = {path.stem: config.read_toml(path) for path in sorted((ROOT / "experiments").glob("*.toml"))}
    analysis = {name: {**config.to_dict(config.load())["analysis"], **raw.get("analysis", {})}
                for name, raw in bundled.items()}
    two_stage = [name for name, raw in bundled.items()
                 if analysis[name]["target_half_width"] and len(raw.get("arms", {})) > 2]
    assert {"cifar10", "fashion_mnist", "resnet20_cifar10"} <= set(two_stage)
    assert [name for name in two_stage if not analysis[name]["eliminate"]] == []


def test_the_plan_says_how_the_pilot_eliminates_and_at_what_level_the_verdicts_run():
    experiment = config.load(ROOT / "experiments" / "cifar10.toml")  # bundled: 7 arms, eliminate on
    (line,) = [line for line in planning.plan_lines(experiment) if line.startswith("eliminate:")]
    assert "Holm across all 21 pairs, p < 0.01" in line and "the final verdicts run at 0.04" in line
    assert "could never reach 0.01 at 5 pilot seeds (its smallest p is 0.0625)" in line
    off = config.build(config.apply_overrides(config.to_dict(experiment), ["analysis.eliminate=false"]))
    assert not [line for line in planning.plan_lines(off) if line.startswith("eliminate:")]


@pytest.mark.slow
def test_a_stop_in_the_second_stage_resumes_without_the_eliminated_arm(tmp_path, monkeypatch):
    fake = pilot({"baseline": 0.60, "augmented": 0.61, "broken": 0.20}, spread=0.03)
    monkeypatch.setattr(run_mod.Run, "primary_values", lambda self, arm, seeds: {s: fake[arm][s] for s in seeds})
    epochs_seen = []
    epoch = RunProgress.epoch

    def stop(self, row, epochs, stopped_early=False):
        epoch(self, row, epochs, stopped_early)
        epochs_seen.append(row)
        if len(epochs_seen) == 10:  # 9 pilot jobs of one epoch, then the second stage's first
            raise KeyboardInterrupt
    monkeypatch.setattr(RunProgress, "epoch", stop)
    racing = [THREE_ARMS, "analysis.target_half_width=0.1", "analysis.pilot_seeds=3", "analysis.max_seeds=4",
              "analysis.eliminate=true", "train.epochs=1"]
    with pytest.raises(AssertionError):  # run_small asserts exit 0; a stopped run exits 130
        run_small(tmp_path, *racing)
    monkeypatch.setattr(RunProgress, "epoch", epoch)
    run_dir = tmp_path / "results" / "demo" / "r"
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    _, jobs, design = numbers(run_dir)
    assert list(design["eliminated"]) == ["broken"]
    assert sorted((job["arm"], job["seed"]) for job in jobs) == sorted(
        [(arm, seed) for arm in ("baseline", "augmented", "broken") for seed in (0, 1, 2)]
        + [("baseline", 3), ("augmented", 3)])
