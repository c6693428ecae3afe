"""Jobs side by side (run.jobs_at_once): worker processes spawned once per run, each on its share
of the cores. For a given jobs_at_once the files are the same however the run goes: stopped with
Ctrl-C and resumed, a worker killed in the middle of a job, the driver itself killed."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import SMALL, kill_a_job_after_its_first_epoch, numbers, overrides, rows_in, run_small

from augcompare.experiments import cli, executors
from augcompare.experiments.config import RunConfig
from augcompare.experiments.history import read_history

EPOCHS = 3
SETTINGS = SMALL + ["data.train_per_class=48", f"train.epochs={EPOCHS}", "train.seeds=[0, 1]", "model.dropout=0.25",
                    "run.jobs_at_once=2"]


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("side")
    run_dir = run_small(tmp_path, *SETTINGS, run_id="whole")
    return tmp_path, run_dir, numbers(run_dir)


def job_pids(run_dir):
    """The processes training the unfinished jobs (their job locks name them)."""
    pids = set()
    for lock in run_dir.glob("jobs/*/.lock"):
        try:
            pids.add(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
    return pids


def alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def in_the_middle(run_dir):
    return any(0 < rows_in(path) < EPOCHS for path in run_dir.glob("jobs/*/rows.csv"))


def start(tmp_path, cache, run_id):
    """The run in a subprocess of its own session, as a terminal's foreground job."""
    sets = SETTINGS + [f"data.cache_dir={cache}"]
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli", "run", "--out",
                                str(tmp_path / "results"), "--run-id", run_id] + overrides(*sets),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return process, tmp_path / "results" / "demo" / run_id


def start_until_mid_job(tmp_path, cache, run_id):
    """The run started (start()) and left to train until a job is in the middle of its epochs;
    returns the process, its run directory and the processes seen training its jobs."""
    process, run_dir = start(tmp_path, cache, run_id)
    seen = set()

    def ready():
        seen.update(job_pids(run_dir))
        return process.poll() is not None or in_the_middle(run_dir)
    wait_until(ready)
    return process, run_dir, seen


def test_jobs_side_by_side_record_their_plan_and_train_every_job(side_by_side):
    _, run_dir, (rows, jobs) = side_by_side
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["jobs_at_once"] == 2
    assert environment["threads_per_job"] == max(1, environment["kernels"]["cores"] // 2)
    assert len(rows) == 2 * 2 * EPOCHS and len(jobs) == 4 and {job["status"] for job in jobs} == {"finished"}
    assert not (run_dir / "jobs").exists()


def test_ctrl_c_stops_the_workers_between_writes_and_resume_ends_as_the_uninterrupted_run(side_by_side, tmp_path):
    shared, _, whole = side_by_side
    process, run_dir, seen = start_until_mid_job(tmp_path, shared / "cache", "stopped")
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its foreground process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith(f"Continue with: augcompare run --resume {run_dir}")
    workers = seen - {process.pid}
    assert workers and not any(alive(pid) for pid in workers)  # stopped before the driver ended
    assert list(run_dir.glob("jobs/*/rows.csv"))  # stopped with jobs unfinished
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == whole
    assert json.loads((run_dir / "environment.json").read_text())["threads_per_job"] == json.loads(
        (side_by_side[1] / "environment.json").read_text())["threads_per_job"]


def test_a_worker_killed_in_the_middle_of_a_job_is_replaced_and_its_job_continues(side_by_side, tmp_path):
    shared, _, whole = side_by_side
    run_dir = tmp_path / "results" / "demo" / "killed"
    finished = []
    runner = threading.Thread(target=lambda: finished.append(run_small(tmp_path, *SETTINGS, run_id="killed",
                                                                       cache=shared / "cache")))
    runner.start()
    killed = kill_a_job_after_its_first_epoch(run_dir, runner)
    assert killed is not None, "no job was seen in the middle of its training"
    assert finished, "the run did not finish"
    assert numbers(run_dir) == whole
    [after] = [row for row in read_history(run_dir / "history.csv")
               if (row["arm"], row["seed"], row["epoch"]) == (killed["arm"], killed["seed"], 1)]
    assert after == killed  # epoch_seconds included: continued from the checkpoint, not trained again


def test_workers_end_with_a_killed_driver_and_the_run_resumes(side_by_side, tmp_path):
    shared, _, whole = side_by_side
    process, run_dir, seen = start_until_mid_job(tmp_path, shared / "cache", "driver-killed")
    process.kill()
    process.communicate(timeout=60)
    workers = seen - {process.pid}
    assert workers
    wait_until(lambda: not any(alive(pid) for pid in workers), seconds=30)  # PR_SET_PDEATHSIG
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == whole


@pytest.mark.parametrize(("requested", "jobs", "flops", "cores", "memory", "expected"), [
    (0, 12, 1e13, 2, None, 2),           # the demo on 2 cores: one job per core
    (0, 12, 1e13, 16, None, 12),         # never more workers than jobs
    (0, 12, 1e13, 16, 4 * 2**30, 2),     # nor than memory holds
    (0, 12, 1e9, 16, None, 1),           # too little training to repay the workers' start
    (0, 1, 1e13, 16, None, 1),           # one job
    (3, 12, 1e9, 2, None, 3),            # what the user asks for
    (4, 2, 1e9, 2, None, 2),
])
def test_the_default_jobs_at_once_follows_cores_work_and_memory(requested, jobs, flops, cores, memory, expected):
    assert executors.choose_jobs_at_once(requested, jobs, flops, cores, memory) == expected


def test_a_resumed_run_keeps_the_thread_count_it_started_with(monkeypatch):
    monkeypatch.setattr(executors, "available_cores", lambda: 4)
    config = RunConfig()
    assert executors.plan(config, 12, 1e13) == (4, 1)
    assert executors.plan(config, 1, 1e13, threads=1) == (1, 1)  # one job left: a worker on 1 thread
    assert executors.plan(config, 12, 1e13, threads=2) == (2, 2)
    assert executors.plan(config, 12, 1e13, threads=0) == (1, 0)  # started in-process: stays there
    assert executors.plan(RunConfig(jobs_at_once=1), 12, 1e13) == (1, 0)
