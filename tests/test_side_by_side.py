"""Jobs side by side (run.jobs_at_once): worker processes spawned once per run, each on its share
of the cores. On the same thread count the files are those of one job at a time however the run
goes: a worker killed in the middle of a job, the run stopped with Ctrl-C, the driver itself
killed, each resumed."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import SMALL, kill_a_job_after_its_first_epoch, numbers, overrides, rows_in, run_small

from augcompare.experiments import cli, executors, planning
from augcompare.experiments.config import RunConfig
from augcompare.experiments.history import read_history
from augcompare.models import small_cnn, training_flops

EPOCHS = 3
SETTINGS = SMALL + ["data.train_per_class=48", f"train.epochs={EPOCHS}", "train.seeds=[0, 1]", "model.dropout=0.25",
                    "run.jobs_at_once=2"]


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory):
    """The same run one job at a time in this process, on the one TensorFlow thread a worker gets
    here (TF_NUM_INTRAOP_THREADS, conftest): same threads, same numbers, whatever runs beside."""
    tmp_path = tmp_path_factory.mktemp("side")
    return tmp_path, numbers(run_small(tmp_path, *SETTINGS, "run.jobs_at_once=1", run_id="whole"))


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


def has_tensorflow(pid):
    """Whether the process has TensorFlow's library mapped: a driver of jobs side by side loads
    none (its workers check the arms and draw the grid), so that the cores load the workers'."""
    with open(f"/proc/{pid}/maps") as maps:
        return "_pywrap_tensorflow_internal" in maps.read()


def in_the_middle(run_dir):
    return any(0 < rows_in(path) < EPOCHS for path in run_dir.glob("jobs/*/rows.csv"))


def start(tmp_path, cache, run_id):
    """The run in a subprocess of its own session, as a terminal's foreground job."""
    sets = SETTINGS + [f"data.cache_dir={cache}"]
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli", "run", "--out",
                                str(tmp_path / "results"), "--run-id", run_id] + overrides(*sets),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return process, tmp_path / "results" / "demo" / run_id


def rows_written(run_dir):
    """Rows in history.csv and in the folders of unfinished jobs."""
    return sum(rows_in(path) for path in [run_dir / "history.csv"] + sorted(run_dir.glob("jobs/*/rows.csv")))


def resume_until(run_dir, ready):
    """`augcompare run --resume run_dir` in a subprocess, left to train until ready() holds;
    returns the process and the processes seen training its jobs."""
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli", "run", "--resume", str(run_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = set()

    def watch():
        seen.update(job_pids(run_dir))
        return process.poll() is not None or ready()
    wait_until(watch)
    assert process.poll() is None, "the resumed run ended before it could be killed"
    return process, seen


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


@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_job_is_replaced_and_the_run_ends_as_one_job_at_a_time(
        one_at_a_time, tmp_path):
    shared, whole = one_at_a_time
    run_dir = tmp_path / "results" / "demo" / "killed"
    finished = []
    runner = threading.Thread(target=lambda: finished.append(run_small(tmp_path, *SETTINGS, run_id="killed",
                                                                       cache=shared / "cache")))
    runner.start()
    killed = kill_a_job_after_its_first_epoch(run_dir, runner)
    assert killed is not None, "no job was seen in the middle of its training"
    assert finished, "the run did not finish"
    environment = json.loads((run_dir / "environment.json").read_text())
    assert (environment["jobs_at_once"], environment["threads_per_job"]) == (2, 1)  # the user's thread count
    assert numbers(run_dir) == whole
    [after] = [row for row in read_history(run_dir / "history.csv")
               if (row["arm"], row["seed"], row["epoch"]) == (killed["arm"], killed["seed"], 1)]
    assert after == killed  # epoch_seconds included: continued from the checkpoint, not trained again
    assert not (run_dir / "jobs").exists()


@pytest.mark.slow
def test_ctrl_c_and_a_killed_driver_end_the_workers_and_the_run_resumes_as_one_never_stopped(one_at_a_time,
                                                                                             tmp_path):
    shared, whole = one_at_a_time
    process, run_dir, seen = start_until_mid_job(tmp_path, shared / "cache", "stopped")
    assert not has_tensorflow(process.pid) and all(has_tensorflow(pid) for pid in seen - {process.pid})
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its foreground process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith(f"Continue with: augcompare run --resume {run_dir}")
    workers = seen - {process.pid}
    assert workers and not any(alive(pid) for pid in workers)  # stopped before the driver ended
    assert list(run_dir.glob("jobs/*/rows.csv"))  # stopped with jobs unfinished

    # Resumed, and the resuming driver killed (SIGKILL) once its workers have trained an epoch more.
    rows_at_stop = rows_written(run_dir)
    process, seen = resume_until(run_dir, lambda: rows_written(run_dir) > rows_at_stop and in_the_middle(run_dir))
    assert not has_tensorflow(process.pid)
    process.kill()
    process.communicate(timeout=60)
    workers = seen - {process.pid}
    assert workers
    wait_until(lambda: not any(alive(pid) for pid in workers), seconds=30)  # PR_SET_PDEATHSIG
    assert rows_written(run_dir) < 2 * 2 * EPOCHS

    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == whole
    assert json.loads((run_dir / "environment.json").read_text())["threads_per_job"] == 1  # kept from the start


@pytest.mark.slow
def test_ctrl_c_while_a_worker_sets_the_run_up_stops_it_at_once_and_leaves_no_run_directory(tmp_path):
    """A function of the user's that hangs as a worker checks the arms: Ctrl-C stops that worker
    at once (it has no job to finish) instead of waiting the minute a stopped worker may take."""
    checking = tmp_path / "checking"
    (tmp_path / "hangs.py").write_text(f"import pathlib\nimport time\n\n\ndef hang(images, seed):\n"
                                       f"    pathlib.Path({str(checking)!r}).touch()\n    time.sleep(300)\n"
                                       f"    return images\n")
    (tmp_path / "hangs.toml").write_text('name = "hangs"\n[arms]\nbaseline = {}\n'
                                         'hangs = {function = "hangs.py:hang"}\n')
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", "run.jobs_at_once=2"]
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli", "run", str(tmp_path / "hangs.toml"),
                                "--out", str(tmp_path / "results")] + overrides(*sets),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_until(lambda: checking.exists() or process.poll() is not None)
    assert process.poll() is None, process.communicate()[1]
    assert not has_tensorflow(process.pid)
    signalled = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert time.monotonic() - signalled < executors.WorkerPool.STOP_SECONDS / 2  # not waited for
    assert not list((tmp_path / "results").glob("*/*"))  # no run directory is left


@pytest.mark.slow
def test_a_worker_waiting_for_its_next_job_ends_on_sigterm():
    """The worker records SIGTERM and stops at a safe point: waiting for a job is one, so a stop
    that arrives between two jobs ends it there, rather than after the next job's first step
    (the driver waits up to STOP_SECONDS, then kills it)."""
    worker = executors._Worker(1)
    try:
        assert worker.connection.poll(120) and worker.connection.recv()[0] == "ready"
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(timeout=executors.WorkerPool.STOP_SECONDS / 2) == 0
    finally:
        worker.end(0)


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


@pytest.mark.parametrize(("shape", "filters"), [((32, 32, 3), (32, 64, 128)), ((30, 30, 1), (8, 16, 4))])
def test_the_training_cost_behind_the_default_counts_the_models_own_layers(shape, filters):
    from augcompare.augment.backend import keras
    model = small_cnn(shape, 10, filters=filters, dense_units=64)
    forward = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out = layer.output.shape
            rows, columns, channels, _ = layer.kernel.shape
            forward += 2 * height * width * rows * columns * channels * out
        elif isinstance(layer, keras.layers.Dense):
            inputs, out = layer.kernel.shape
            forward += 2 * inputs * out
    assert training_flops(shape, 10, filters, 64, train_count=5, epochs=2) == 3 * forward * 5 * 2


def test_the_plan_gives_every_executor_one_thread_count_and_a_resumed_run_keeps_it(monkeypatch):
    monkeypatch.setattr(executors, "available_cores", lambda: 4)
    config = RunConfig()
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert executors.plan(config, 12, 1e13) == (4, 1)
    assert executors.plan(RunConfig(jobs_at_once=2), 12, 1e13) == (2, 2)  # each its share of the cores
    assert executors.plan(RunConfig(jobs_at_once=1), 12, 1e13) == (1, 4)  # one at a time: every core, counted
    assert executors.plan(config, 12, 1e9) == (1, 4)  # a small run: one at a time
    assert executors.plan(RunConfig(executor="ray"), 12, 1e9) == (1, 4)  # Ray's jobs: the local executor's count
    assert executors.plan(RunConfig(executor="ray"), 12, 1e13) == (1, 1)
    assert executors.plan(RunConfig(threads_per_job=2), 12, 1e13) == (2, 2)  # the setting; no more threads than cores
    assert executors.plan(RunConfig(executor="ray", threads_per_job=3), 12, 1e13) == (1, 3)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert executors.plan(RunConfig(jobs_at_once=2), 12, 1e13) == (2, 3)  # the user's count
    assert executors.plan(config, 1, 1e13, threads=1) == (1, 1)  # one job left
    assert executors.plan(config, 12, 1e13, threads=2) == (2, 2)  # a resume keeps the count it started with
    assert executors.plan(config, 12, 1e9, threads=1) == (1, 1)  # and, for a small run, one job at a time
    assert executors.plan(RunConfig(executor="ray"), 12, 1e13, threads=2) == (1, 2)


def test_a_resume_keeps_the_count_of_a_run_that_recorded_every_core_as_0():
    assert planning.recorded_threads({"threads_per_job": 2}) == 2
    every_core = {"threads_per_job": 0, "kernels": {"intra_op_threads": 0, "TF_NUM_INTRAOP_THREADS": None, "cores": 8}}
    assert planning.recorded_threads(every_core) == 8  # those of the machine it started on, not this one's
    every_core["kernels"]["TF_NUM_INTRAOP_THREADS"] = "3"
    assert planning.recorded_threads(every_core) == 3
    assert planning.recorded_threads({}) is None and planning.recorded_threads(None) is None


def test_the_default_plan_counts_the_machines_memory_not_what_is_free_now(monkeypatch, tmp_path):
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2**22, "SC_AVPHYS_PAGES": 2**20}  # 16 GiB, 4 GiB of it free
    monkeypatch.setattr(executors.os, "sysconf", lambda name: pages[name])
    monkeypatch.setattr(executors, "CGROUP_MEMORY", (str(tmp_path / "absent"),))
    assert executors.memory_bytes() == 16 * 2**30
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(executors, "CGROUP_MEMORY", (str(limit),))
    limit.write_text("3221225472\n")
    assert executors.memory_bytes() == 3 * 2**30  # a container's limit
    limit.write_text("max\n")
    assert executors.memory_bytes() == 16 * 2**30


@pytest.mark.slow
def test_one_job_at_a_time_on_another_thread_count_than_this_process_trains_in_a_worker_on_it(tmp_path):
    """This process's TensorFlow already runs on 1 thread (conftest): a run asking for 2 gets them
    in a worker process rather than silently training here on 1."""
    from augcompare.augment.backend import tf
    tf.constant(0.0) + 1  # started: its thread count is fixed
    run_dir = run_small(tmp_path, "run.jobs_at_once=1", "run.threads_per_job=2", "train.epochs=1")
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["jobs_at_once"] == 1 and environment["threads_per_job"] == 2
    assert environment["kernels"]["intra_op_threads"] == 2  # where the jobs trained
