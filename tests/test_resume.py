"""Reproducibility and resume: the same config and seed give the same history, and a run
stopped at any moment (SIGKILL, SIGINT, SIGTERM) and resumed ends with the history of a run
that was never stopped."""

import signal
import subprocess
import sys
import time

import pytest

from augcompare.experiments import cli
from augcompare.experiments.history import read_history

SETTINGS = ["data.image_size=32", "data.train_per_class=64", "data.val_per_class=8", "train.epochs=4",
            "train.seeds=[0, 1]", "train.batch_size=16", "model.filters=[8, 16]", "model.dense_units=16",
            "model.dropout=0.5"]
TOTAL_ROWS = 2 * 2 * 4  # arms x seeds x epochs


def run_args(tmp_path, run_id):
    sets = SETTINGS + [f"data.cache_dir={tmp_path.parent / 'cache'}"]
    return ["run", "--out", str(tmp_path / "results"), "--run-id", run_id] + [
        arg for item in sets for arg in ("--set", item)]


def numbers(run_dir):
    """history.csv without epoch_seconds, the one column that may differ."""
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("whole")
    assert cli.main(run_args(tmp_path, "whole")) == 0
    return tmp_path / "results" / "demo" / "whole"


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return numbers(uninterrupted_run)


def test_same_config_and_seed_give_an_identical_history_and_config_toml_repeats_a_run(
        uninterrupted_run, uninterrupted, tmp_path):
    assert len(uninterrupted) == TOTAL_ROWS
    assert cli.main(run_args(tmp_path, "again")) == 0
    assert numbers(tmp_path / "results" / "demo" / "again") == uninterrupted
    repeat = ["run", str(uninterrupted_run / "config.toml"), "--out", str(tmp_path / "results"), "--run-id", "repeat"]
    assert cli.main(repeat) == 0
    assert numbers(tmp_path / "results" / "demo" / "repeat") == uninterrupted


def start_and_stop(tmp_path, stop, after_rows):
    """Starts `augcompare run` in a subprocess, stops it with `stop(process)` once history.csv has
    after_rows rows, and returns (run_dir, rows written, exit code, stderr)."""
    run_dir = tmp_path / "results" / "demo" / "stopped"
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli"] + run_args(tmp_path, "stopped"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    history, deadline = run_dir / "history.csv", time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) - 1 >= after_rows:
            stop(process)
            break
        time.sleep(0.01)
    _, stderr = process.communicate(timeout=120)
    return run_dir, len(read_history(history)), process.returncode, stderr


def test_a_run_killed_by_sigkill_resumes_to_the_uninterrupted_history(uninterrupted, tmp_path):
    run_dir, written, code, _ = start_and_stop(tmp_path, lambda p: p.kill(), after_rows=5)
    assert code == -signal.SIGKILL and written < TOTAL_ROWS  # killed in the middle
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == uninterrupted
    assert not list((run_dir / "checkpoints").iterdir())  # ended runs keep no checkpoint


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_cleanly_with_the_resume_command(uninterrupted, tmp_path, number, code):
    run_dir, written, exit_code, stderr = start_and_stop(tmp_path, lambda p: p.send_signal(number), after_rows=3)
    assert exit_code == code and written < TOTAL_ROWS
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith(f"Continue with: augcompare run --resume {run_dir}")
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == uninterrupted


def test_resume_of_an_ended_run_changes_nothing(uninterrupted_run):
    before = (uninterrupted_run / "history.csv").read_text()
    assert cli.main(["run", "--resume", str(uninterrupted_run)]) == 0
    assert (uninterrupted_run / "history.csv").read_text() == before


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert cli.main(["run", "--resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
