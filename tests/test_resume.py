"""Reproducibility and resume: the same config and seed give the same history and test results,
and a run stopped at any moment (SIGKILL, SIGINT, SIGTERM) and resumed ends with the history and
test results of a run that was never stopped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import SMALL, numbers, overrides, rows_in, run_small

from augcompare.experiments import cli, config
from augcompare.experiments.history import read_history

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
        with StopOnSignal(tmp_path):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler runs in this thread as soon as the signal arrives
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


# -- more seeds for a run, and no other change (started.json) ------------------------------------

def hashes(run_dir):
    return {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".lock"}


@pytest.fixture(scope="module")
def one_seed_run(tmp_path_factory):
    """A finished small run of seed 0."""
    return run_small(tmp_path_factory.mktemp("one_seed"), run_id="one")


def test_resume_with_more_seeds_trains_only_their_jobs_as_a_run_of_every_seed_would(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "grown"
    shutil.copytree(one_seed_run, run_dir)
    seed_0 = read_history(run_dir / "history.csv")  # epoch_seconds too: a job trained again would differ
    assert cli.main(["run", "--resume", str(run_dir), "--set", "train.seeds=[0, 1]"]) == 0
    assert "seeds added: 1; their 2 jobs train now, and the summary covers every seed" in capsys.readouterr().out
    rows = read_history(run_dir / "history.csv")
    assert [row for row in rows if row["seed"] == 0] == seed_0
    both = run_small(tmp_path, "train.seeds=[0, 1]", run_id="both", cache=one_seed_run.parent.parent.parent / "cache")
    assert numbers(run_dir) == numbers(both)  # each seed's initial weights and sample order, as always
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["arms"]["augmented"]["seeds"] == [0, 1] and summary["vs_baseline"]["augmented"]["seeds"] == [0, 1]
    assert config.load(run_dir / "config.toml").train.seeds == (0, 1)
    before = hashes(run_dir)
    assert cli.main(["run", "--resume", str(run_dir)]) == 0  # the seeds are the run's now: nothing to train
    assert hashes(run_dir)[run_dir / "history.csv"] == before[run_dir / "history.csv"]


def refused(run_dir, capsys, *sets):
    """The one-line error of a resume with sets, after checking that it changed no file."""
    before = hashes(run_dir)
    assert cli.main(["run", "--resume", str(run_dir)] + overrides(*sets)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert hashes(run_dir) == before
    return error


def test_a_resume_that_changes_any_setting_but_added_seeds_is_refused_naming_it(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(one_seed_run, run_dir)
    toml = run_dir / "config.toml"
    written = toml.read_text()
    # Edited by hand: once, this resumed nothing and wrote "at the last of 6 epochs" where every job ran 2.
    toml.write_text(written.replace("epochs = 2\n", "epochs = 6\n", 1))
    error = refused(run_dir, capsys)
    assert f"{toml} was edited since the run started: train.epochs = 6 (started with 2)" in error
    assert f"augcompare run {toml}" in error
    before = hashes(run_dir)
    assert cli.main(["plot", str(run_dir)]) == 2  # nor is the summary redrawn as a run of 6 epochs
    assert "train.epochs = 6 (started with 2); set it back to use this run (augcompare plot)" in capsys.readouterr().err
    assert hashes(run_dir) == before
    toml.write_text(written)
    error = refused(run_dir, capsys, "train.epochs=3")
    assert "--set may only add seeds (train.seeds); it changes train.epochs = 3 (started with 2)" in error
    assert f"augcompare run {toml} --set train.epochs=3" in error
    error = refused(run_dir, capsys, "analysis.min_effect=0.5")
    assert f"augcompare analyze {run_dir} --set analysis.KEY=VALUE" in error
    for seeds in ("[1]", "[1, 0]", "[1, 2]"):
        error = refused(run_dir, capsys, f"train.seeds={seeds}")
        assert "a resumed run keeps its seeds [0] first, in order, and may only add more, e.g. " \
               "train.seeds=[0,1]" in error
    assert "unknown key train.seed;" in refused(run_dir, capsys, "train.seed=[0, 1]")


def test_the_two_stage_design_refuses_added_seeds(tmp_path, capsys):
    from augcompare.experiments import started
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    experiment = config.load(None, SMALL + ["analysis.target_half_width=2", "train.seeds=[0, 1]"])
    (run_dir / "config.toml").write_text(config.dumps(config.to_dict(experiment)))
    started.write(run_dir, experiment)
    error = refused(run_dir, capsys, "train.seeds=[0, 1, 2]")
    assert "the run uses the two-stage design (analysis.target_half_width = 2)" in error
    assert "start a new run for more seeds" in error


def test_a_damaged_or_edited_record_of_the_start_is_a_one_line_error(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(one_seed_run, run_dir)
    record = run_dir / "started.json"
    written = record.read_text()
    record.write_text(written[:len(written) // 2])
    assert "started.json is not valid JSON" in refused(run_dir, capsys)
    record.write_text(written.replace('"epochs": 2', '"epochs": 6', 1))
    assert "started.json was changed since it was written (its sha256 does not match)" in refused(run_dir, capsys)
    record.write_text('{"config": {}}')
    assert "started.json lacks its fields (config, sha256)" in refused(run_dir, capsys)


def test_a_run_without_the_record_resumes_as_before_and_gets_one(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(one_seed_run, run_dir)
    record = run_dir / "started.json"
    written = record.read_text()
    record.unlink()  # a run started before the record existed
    toml = (run_dir / "config.toml").read_text()
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert f"warning: {run_dir} has no started.json" in capsys.readouterr().out
    assert record.read_text() == written and (run_dir / "config.toml").read_text() == toml
