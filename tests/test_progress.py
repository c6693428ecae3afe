"""Live progress of a run: plain lines when stdout is not a terminal, with jobs and epochs done,
elapsed time and an ETA from the measured epochs."""

import io

from augcompare.experiments.progress import RunProgress, duration


def row(arm, seed, epoch, seconds=2.0):
    return {"arm": arm, "seed": seed, "epoch": epoch, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.6,
            "val_accuracy": 0.7, "epoch_seconds": seconds}


def test_plain_lines_with_totals_and_an_eta_from_the_measured_epochs():
    stream, now = io.StringIO(), [100.0]
    progress = RunProgress(0, 0, 0, format_primary=lambda record: "test_accuracy 71.0%", stream=stream,
                           clock=lambda: now[0])
    progress.add_jobs(4, 4 * 10)
    assert progress.eta() is None  # nothing measured yet
    now[0] = 105.0
    progress.epoch(row("baseline", 0, 1), 10)
    assert progress.eta() == (40 - 1) * 5.0  # the wall time per epoch: start-up and validation included,
    # where epoch_seconds says 2
    now[0] = 108.0
    progress.epoch(row("baseline", 0, 2), 10)
    assert progress.eta() == (40 - 2) * 4.0
    progress.job_done({"arm": "baseline", "seed": 0, "status": "stopped_early", "seconds": 12.5}, skipped_epochs=8)
    assert progress.eta() == (32 - 2) * 4.0  # an early stop removes the epochs it skips
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("      baseline seed 0  epoch   1/10  loss 0.500")
    assert lines[-1].startswith("job baseline seed 0 done: test_accuracy 71.0%  (stopped early)  12.5 s  "
                                "[1/4 jobs, 2/32 epochs, ")
    assert "8s elapsed, ETA 2m00s" in lines[-1]
    progress.close()


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (12, 185, 3725)] == ["12s", "3m05s", "1h02m"]


def test_a_notebook_gets_the_live_bar_where_rich_can_draw_it(monkeypatch):
    import importlib.util

    from rich.console import Console

    from augcompare.experiments import progress
    notebook = Console(file=io.StringIO(), force_jupyter=True, force_terminal=False)
    log_file = Console(file=io.StringIO(), force_jupyter=False, force_terminal=False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "ipywidgets" else find_spec(name))
    assert progress.live_bar(notebook) and not progress.live_bar(log_file)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ipywidgets" else find_spec(name))
    assert not progress.live_bar(notebook)  # rich would only warn: plain lines instead


def test_quiet_shows_the_totals_on_the_status_line_and_only_a_failed_jobs_line(capsys):
    stream = io.StringIO()
    progress = RunProgress(0, 0, 0, format_primary=lambda record: "test_accuracy 71.0%", stream=stream, quiet=True)
    progress.add_jobs(2, 4)
    progress.epoch(row("baseline", 0, 1), 2)
    progress.job_done({"arm": "baseline", "seed": 0, "status": "finished", "seconds": 3.0})
    progress.job_done({"arm": "augmented", "seed": 0, "status": "failed", "reason": "loss is NaN"}, skipped_epochs=2)
    progress.close()
    (line,) = stream.getvalue().splitlines()  # no epoch's line, no finished job's: only the failure
    assert line.startswith("job augmented seed 0 done: FAILED: loss is NaN")
    err = capsys.readouterr().err
    assert "\r  1/2 jobs, 1/4 epochs" in err and "2/2 jobs, 1/2 epochs" in err and err.endswith("\n")

