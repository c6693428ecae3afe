"""Reproducibility and resume: the same config and seed give the same history and test results,
and a run stopped at any moment (SIGKILL, SIGINT, SIGTERM) and resumed ends with the history and
test results of a run that was never stopped."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SMALL, numbers, overrides, rows_in

from augcompare.experiments import cli
from augcompare.experiments.processes import safe_point

EPOCHS = 4
SETTINGS = SMALL + ["data.train_per_class=64", f"train.epochs={EPOCHS}", "train.seeds=[0]", "model.dropout=0.5"]
TOTAL_ROWS = 2 * EPOCHS  # arms x epochs


def run_args(tmp_path, run_id):
    sets = SETTINGS + [f"data.cache_dir={tmp_path.parent / 'cache'}"]
    return ["run", "--out", str(tmp_path / "results"), "--run-id", run_id] + overrides(*sets)


def rows_written(run_dir):
    """Rows in history.csv and in the folders of unfinished jobs."""
    return sum(rows_in(path) for path in [run_dir / "history.csv"] + sorted(run_dir.glob("jobs/*/rows.csv")))


def in_the_middle_of_a_job(run_dir):
    """Whether some job has trained some of its epochs but not all."""
    return any(0 < rows_in(path) < EPOCHS for path in run_dir.glob("jobs/*/rows.csv"))


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("whole")
    assert cli.main(run_args(tmp_path, "whole")) == 0
    return tmp_path / "results" / "demo" / "whole"


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return numbers(uninterrupted_run)


@pytest.mark.slow
def test_same_config_and_seed_give_an_identical_history_and_config_toml_repeats_a_run(
        uninterrupted_run, uninterrupted, tmp_path):
    assert len(uninterrupted[0]) == TOTAL_ROWS and len(uninterrupted[1]) == 2
    # The snapshot holds the whole resolved config: running it again is the same config and seed.
    repeat = ["run", str(uninterrupted_run / "config.toml"), "--out", str(tmp_path / "results"), "--run-id", "repeat"]
    assert cli.main(repeat) == 0
    assert numbers(tmp_path / "results" / "demo" / "repeat") == uninterrupted


def start(tmp_path, run_id):
    """`augcompare run` in a subprocess; returns it and its run directory."""
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli"] + run_args(tmp_path, run_id),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, tmp_path / "results" / "demo" / run_id


def stop_when(runs, ready):
    """Calls stop(process) for each (process, run_dir, stop) of runs once ready(run_dir) holds;
    returns each run's (rows written, exit code, stderr)."""
    waiting, deadline = list(runs), time.monotonic() + 120
    while waiting and time.monotonic() < deadline:
        for run in list(waiting):
            process, run_dir, stop = run
            if process.poll() is not None or (ready(run_dir) and stop(process, run_dir) is not False):
                waiting.remove(run)
        time.sleep(0.01)
    results = []
    for process, run_dir, _ in runs:
        _, stderr = process.communicate(timeout=120)
        results.append((rows_written(run_dir), process.returncode, stderr))
    return results


@pytest.mark.slow
def test_a_run_killed_by_sigkill_resumes_to_the_uninterrupted_history(uninterrupted, tmp_path, capsys):
    refusals = []

    def second_process_then_kill(process, run_dir):
        # Frozen, the run keeps its lock and its job stays half-trained while we look.
        process.send_signal(signal.SIGSTOP)
        while open(f"/proc/{process.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
            time.sleep(0.001)  # the signal is delivered asynchronously
        if not in_the_middle_of_a_job(run_dir):  # that job ended between the look and the stop
            process.send_signal(signal.SIGCONT)
            return False
        # While the run holds its directory a second writer is refused at once, naming the holder.
        refusals.append(cli.main(["run", "--resume", str(run_dir)]))
        refusals.append(capsys.readouterr().err)
        process.kill()
    process, run_dir = start(tmp_path, "stopped")
    ready = lambda run_dir: rows_written(run_dir) >= EPOCHS + 1 and in_the_middle_of_a_job(run_dir)  # noqa: E731
    [(written, code, _)] = stop_when([(process, run_dir, second_process_then_kill)], ready)
    assert refusals[0] == 2 and f"is in use by process {refusals[1].split('process ')[1].split()[0]}" in refusals[1]
    assert refusals[1].count("\n") == 1 and "augcompare run" in refusals[1]
    assert code == -signal.SIGKILL and written < TOTAL_ROWS
    assert in_the_middle_of_a_job(run_dir)  # killed in the middle of a job, after another had ended
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == uninterrupted  # rows and test results alike
    assert not (run_dir / "jobs").exists()  # ended jobs keep no folder


@pytest.mark.slow
def test_sigint_and_sigterm_stop_cleanly_with_the_resume_command(uninterrupted, tmp_path):
    cases = {signal.SIGINT: 130, signal.SIGTERM: 143}
    runs = [(*start(tmp_path, number.name), lambda p, _, number=number: p.send_signal(number)) for number in cases]
    results = stop_when(runs, lambda run_dir: rows_written(run_dir) >= 3)  # both side by side
    for (_, run_dir, _), (written, exit_code, stderr), code in zip(runs, results, cases.values()):
        assert exit_code == code and written < TOTAL_ROWS, stderr
        assert "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].endswith(f"Continue with: augcompare run --resume {run_dir}")
        assert cli.main(["run", "--resume", str(run_dir)]) == 0
        assert numbers(run_dir) == uninterrupted


@pytest.mark.slow
def test_resume_of_an_ended_run_changes_nothing(uninterrupted_run):
    before = (uninterrupted_run / "history.csv").read_text()
    assert cli.main(["run", "--resume", str(uninterrupted_run)]) == 0
    assert (uninterrupted_run / "history.csv").read_text() == before


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert cli.main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_a_stop_signal_is_never_taken_for_an_error_by_code_that_catches_exception(tmp_path):
    """A signal can land inside code wrapped in `except Exception` (TensorFlow's binding of a
    tf.function's inputs once turned it into a TypeError and a traceback): the stop still leaves
    the run as RunStopped with its exit code, and inside protected() it waits for the block."""
    from augcompare.experiments.errors import RunStopped
    from augcompare.experiments.run import StopOnSignal
    caught, finished = [], []
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(RunStopped) as stopped:
        with StopOnSignal(tmp_path) as signals:
            try:
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs in this thread before kill returns
                safe_point(signals.protected)
            except Exception as error:
                caught.append(error)
    assert not caught
    assert stopped.value.exit_code == 130 and f"augcompare run --resume {tmp_path}" in str(stopped.value)
    with pytest.raises(RunStopped) as stopped:
        with StopOnSignal(tmp_path) as signals:
            with signals.protected():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                finished.append(True)
    assert finished and stopped.value.exit_code == 143
    assert {number: signal.getsignal(number) for number in before} == before  # the handlers are given back


def test_a_stop_signal_that_lands_in_a_destructor_is_not_lost(tmp_path):
    """A handler that raised lost a signal landing in a __del__ (printed as "Exception ignored",
    and the run went on): the signal is recorded, and the next safe point stops the run."""
    from augcompare.experiments.errors import RunStopped
    from augcompare.experiments.run import StopOnSignal

    class SignalledAsItIsCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside __del__
    reached = []
    with pytest.raises(RunStopped) as stopped:
        with StopOnSignal(tmp_path) as signals:
            SignalledAsItIsCollected()  # no reference kept: collected at once
            safe_point(signals.protected)
            reached.append("past the safe point")
    assert stopped.value.exit_code == 143 and not reached
