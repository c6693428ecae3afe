"""Every file a run reads back can be damaged (a disk that filled, an editor, a copy cut short):
`augcompare run --resume` then ends in one line naming the file, what is wrong and how to
recover (exit 2, no traceback), and nothing is deleted or rewritten."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from conftest import SMALL, command_line, overrides

from augcompare.experiments import cli
from augcompare.experiments.files import DirectoryLock
from augcompare.experiments.history import read_history
from augcompare.experiments.progress import RunProgress


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A run stopped after the first epoch of its first job: its folder holds rows and a
    checkpoint."""
    tmp_path = tmp_path_factory.mktemp("interrupted")
    epoch = RunProgress.epoch

    def stop_after_one(self, row, epochs, stopped_early=False):
        epoch(self, row, epochs, stopped_early)
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunProgress, "epoch", stop_after_one)
        args = ["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + overrides(
            *SMALL, "train.epochs=3", f"data.cache_dir={tmp_path / 'cache'}")
        assert cli.main(args) == 130
    run_dir = tmp_path / "results" / "demo" / "r"
    assert (run_dir / "jobs" / "baseline-seed0" / "checkpoint.npz").is_file()
    return run_dir


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def damage_history(run_dir):
    rows = run_dir / "jobs" / "baseline-seed0" / "rows.csv"
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join([lines[0], lines[1].replace(",0,1,", ",0,one,", 1)]) + "\n")
    return rows


DAMAGE = {
    "rows.csv, a field that does not parse": (damage_history, "rows.csv line 2 is damaged \\(epoch = 'one'\\)"),
    "checkpoint cut short": (lambda d: truncate(d / "jobs" / "baseline-seed0" / "checkpoint.npz") or
                             d / "jobs" / "baseline-seed0" / "checkpoint.npz",
                             "checkpoint.npz is damaged \\(BadZipFile.*; delete .*baseline-seed0 to train "
                             "baseline seed 0 again"),
    "initial weights cut short": (lambda d: truncate(d / "weights" / "initial-seed0.weights.h5") or
                                  d / "weights" / "initial-seed0.weights.h5",
                                  "initial-seed0.weights.h5 is damaged .*delete it and resume: it is made again"),
    "runs.json garbage": (lambda d: (d / "runs.json").write_text('{"jobs": [') and d / "runs.json",
                          "runs.json is not valid JSON"),
    "config.toml garbage": (lambda d: (d / "config.toml").write_text("[train\nepochs = ") and d / "config.toml",
                            "config.toml is not valid TOML"),
    "config.toml not text": (lambda d: (d / "config.toml").write_bytes(b"name = \"\xff\xfe\"\n") and d / "config.toml",
                             "config.toml is not valid TOML: bytes that are not UTF-8"),
    "record.json without its fields": (lambda d: (d / "jobs" / "baseline-seed0" / "record.json").write_text(
        '{"arm": "baseline"}') and d / "jobs" / "baseline-seed0" / "record.json",
        "record.json is damaged \\(seed and epochs must be integers\\); delete it to evaluate that job again"),
    "started.json garbage": (lambda d: (d / "started.json").write_text('{"config": ') and d / "started.json",
                             "started.json is not valid JSON.*restore it from a copy"),
    "environment.json garbage": (lambda d: (d / "environment.json").write_bytes(b"\x00\xff") and d / "environment.json",
                                 "environment.json is not (text|valid JSON)"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_run_file_is_a_one_line_error_naming_it(interrupted_run, tmp_path, capsys, case):
    damage, message = DAMAGE[case]
    run_dir = tmp_path / "r"
    shutil.copytree(interrupted_run, run_dir)
    if case == "runs.json garbage":  # only an ended job writes runs.json
        (run_dir / "runs.json").write_text("")
    damaged = damage(run_dir)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert cli.main(["run", "--resume", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert str(damaged.name) in error
    assert re.search(message, error), error
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing deleted or "repaired"


@pytest.fixture(scope="module")
def resumed_history(interrupted_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resumed") / "r"
    shutil.copytree(interrupted_run, run_dir)
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert not (run_dir / "jobs").exists()
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")]


@pytest.mark.slow
def test_the_interrupted_run_resumes_when_nothing_is_damaged(resumed_history):
    assert [(row["arm"], row["epoch"]) for row in resumed_history] == [
        (arm, epoch) for arm in ("baseline", "augmented") for epoch in (1, 2, 3)]


@pytest.mark.slow
def test_a_row_cut_short_by_a_power_loss_is_trained_again(interrupted_run, resumed_history, tmp_path):
    """The process died while appending the second epoch's row (its checkpoint never written):
    the fragment is no row, and the next row starts on a line of its own."""
    run_dir = tmp_path / "r"
    shutil.copytree(interrupted_run, run_dir)
    with open(run_dir / "jobs" / "baseline-seed0" / "rows.csv", "a") as rows:
        rows.write("baseline,0,2,0.69")
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    rows = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")]
    assert rows == resumed_history


@pytest.mark.slow
def test_a_job_still_trained_by_another_process_is_waited_for_then_continued(interrupted_run, tmp_path):
    """A worker the scheduler gave up on may still hold its job when the job runs again: the new
    one waits for its lock, then continues from the checkpoint it left."""
    run_dir = tmp_path / "r"
    shutil.copytree(interrupted_run, run_dir)
    rows = run_dir / "jobs" / "baseline-seed0" / "rows.csv"
    before = rows.read_text()
    other = DirectoryLock(rows.parent / ".lock", "a worker still training").acquire()
    results = []
    resume = threading.Thread(target=lambda: results.append(cli.main(["run", "--resume", str(run_dir)])))
    resume.start()
    resume.join(timeout=5)
    assert resume.is_alive() and rows.read_text() == before  # waiting, nothing written
    other.release()
    resume.join(timeout=240)
    assert results == [0]
    assert len(read_history(run_dir / "history.csv")) == 2 * 3  # arms x epochs


def test_a_damaged_history_csv_of_ended_jobs_is_a_one_line_error(interrupted_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(interrupted_run, run_dir)
    assert cli.main(["run", "--resume", str(run_dir)]) == 0  # every job ends: history.csv holds their rows
    history = run_dir / "history.csv"
    lines = history.read_text().splitlines()
    history.write_text("\n".join(lines[:2] + ["baseline,x,2,0.5,0.5,0.5,0.5,0.1"] + lines[3:]) + "\n")
    before = history.read_bytes()
    assert cli.main(["run", "--resume", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "history.csv line 3 is damaged (seed = 'x')" in error
    assert history.read_bytes() == before
    for damaged, message in [("\n".join(lines) + "\nbaseline,0,4,0.5", "history.csv ends in a line cut short (line 8)"),
                             ("\n".join(lines[:2] + [lines[2].replace("baseline,0,2,", "baseline,0,5,")] + lines[3:])
                              + "\n", "holds epochs [1, 3, 5] of baseline seed 0, not 1 to 3")]:
        history.write_text(damaged)  # history.csv is only ever replaced whole: neither can come from a kill
        assert cli.main(["run", "--resume", str(run_dir)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and message in error, error
        assert history.read_text() == damaged
    history.write_text("\n".join(lines) + "\n")  # whole again; now runs.json goes missing
    (run_dir / "runs.json").rename(run_dir / "runs.json.moved")
    assert cli.main(["run", "--resume", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert "holds rows of augmented seed 0, which runs.json does not list (runs.json is missing)" in error
    assert history.read_text() == "\n".join(lines) + "\n"  # nothing dropped


def test_a_killed_process_frees_its_lock_even_while_a_child_it_forked_lives_on(tmp_path):
    """flock belongs to the open file, which a forked child shares: the child closes its copy at
    once, so the lock goes with the process that took it."""
    script = f"""
import os, signal, time
from augcompare.experiments.files import DirectoryLock
DirectoryLock({str(tmp_path / '.lock')!r}, "the parent").acquire()
if os.fork() == 0:
    time.sleep(30)  # a child that outlives its parent (no parent-death signal here)
    os._exit(0)
os.kill(os.getpid(), signal.SIGKILL)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert parent.wait(timeout=30) == -signal.SIGKILL
    children = [pid for pid in os.listdir("/proc") if pid.isdigit() and command_line(pid).endswith(script.encode())]
    try:
        assert children  # the child still runs
        DirectoryLock(tmp_path / ".lock", "the test").acquire().release()  # and the lock is free
    finally:
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
