"""Enough seeds, chosen by the data: Stein's two-stage design runs a pilot, plans the seed count
from its paired standard deviation, runs the rest and survives a stop in either stage."""

import json

import pytest
from conftest import fail_with_nan, run_small

from augcompare.experiments import cli, stats
from augcompare.experiments.history import read_history
from augcompare.experiments.progress import RunProgress

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
