"""`augcompare run --estimate`: the plan and the predicted wall time, measured on this machine,
without training a job or writing a run directory; the schedule it predicts with."""

import json

import pytest
from conftest import SMALL, overrides

from augcompare.experiments import cli
from augcompare.experiments.estimate import job_seconds, schedule

PARTS = ("build", "trace", "step", "fit_start", "validation", "test", "checkpoint")


def test_a_jobs_seconds_are_its_steps_evaluations_and_checkpoints():
    costs = {"build": 9.0, "trace": 9.0, "step": 0.5, "fit_start": 1.0, "validation": 2.0, "test": 3.0,
             "checkpoint": 0.5}
    assert job_seconds(costs, epochs=4, steps=10) == 1.0 + 4 * (10 * 0.5 + 2.0 + 0.5) + 2 * 3.0


def test_the_schedule_hands_out_jobs_as_the_workers_do():
    jobs = [(arm, seed) for seed in range(2) for arm in ("a", "b")]
    seconds, compile_seconds = {"a": 10.0, "b": 20.0}, {"a": 1.0, "b": 2.0}
    assert schedule(jobs, 1, seconds, compile_seconds)[0] == 60.0 + 3.0  # each arm compiled once
    # Two workers: the first takes a, a again (its compiled arm), then b, compiling it (11 + 10 + 22),
    # before the second, busy with b until 22, is free.
    end, compiled = schedule(jobs, 2, seconds, compile_seconds)
    assert end == 43.0 and [sorted(arms) for arms in compiled] == [["a", "b"], ["b"]]
    # A second stage begins when the first has ended (the run plans it from the first's results),
    # the arms each worker compiled kept: the first takes a (53), the second b (63), compiling neither.
    assert schedule([("a", 2), ("b", 2)], 2, seconds, compile_seconds, end, compiled)[0] == 63.0
    assert schedule([], 3, seconds, compile_seconds, 5.0)[0] == 5.0


@pytest.mark.slow
@pytest.mark.parametrize("design", [[], ["analysis.target_half_width=5", "analysis.pilot_seeds=2", "analysis.max_seeds=3",
                                         "run.jobs_at_once=2"]], ids=["seeds", "two-stage, side by side"])
def test_estimate_prints_and_writes_the_prediction_and_trains_nothing(tmp_path, capsys, design):
    path = tmp_path / "estimate.json"
    args = ["run", "--estimate", "--json", str(path), "--out", str(tmp_path / "results")]
    assert cli.main(args + overrides(*SMALL, f"data.cache_dir={tmp_path / 'cache'}", *design)) == 0
    out = capsys.readouterr().out
    assert "predicted wall time" in out and "no run directory written" in out
    result = json.loads(path.read_text())
    assert result["jobs_at_once"] == (2 if design else 1) and set(result["arms"]) == {"baseline", "augmented"}
    assert all(set(costs) == set(PARTS) and costs["step"] > 0 for costs in result["arms"].values())
    if design:  # the pilot, and every seed the design may add
        assert (result["jobs"], result["jobs_most"]) == (4, 6)
        assert result["seconds"]["most"] > result["seconds"]["expected"] > 0
    else:
        assert (result["jobs"], result["jobs_most"]) == (2, 2)
        assert result["seconds"]["most"] == result["seconds"]["expected"] > 0
    assert not (tmp_path / "results").exists()  # no run directory


@pytest.mark.parametrize(("args", "message"), [
    (["--json", "x.json"], "--json writes the prediction of --estimate"),
    (["--estimate", "--resume", "somewhere"], "--estimate predicts a new run"),
])
def test_estimate_options_misused_are_one_line_errors(tmp_path, capsys, args, message):
    assert cli.main(["run", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
