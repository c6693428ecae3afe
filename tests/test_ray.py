"""run.executor = "ray": every job a Ray task in a fresh worker process, on a local Ray cluster
that the tests start once (2 CPUs, loopback, no dashboard, no usage statistics). The run's files
end exactly as the local executor's, even when a worker is killed in the middle of a job or the
run is stopped with Ctrl-C and resumed."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import SMALL, kill_a_job_after_its_first_epoch, numbers, overrides, rows_in, run_small

from augcompare.experiments import cli
from augcompare.experiments.history import read_history

# Set before Ray is imported: loopback only, no token file (a cluster of this machine alone).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster, and a fresh worker process for every job

SETTINGS = ["train.seeds=[0]", "train.epochs=3", "model.dropout=0.25"]


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("local")
    return tmp_path, numbers(run_small(tmp_path, *SETTINGS))


def test_a_run_on_ray_gives_the_local_executors_files_even_when_a_worker_is_killed(ray_cluster, local_run):
    """2 arms on Ray, side by side on the cluster's 2 CPUs; the worker of one job is killed
    (SIGKILL) once that job has checkpointed its first epoch: the job is retried from that
    checkpoint (its first row is kept, not trained again) and the run ends with the local
    executor's files."""
    tmp_path, local = local_run
    run_dir = tmp_path / "results" / "demo" / "ray"
    finished = []
    runner = threading.Thread(target=lambda: finished.append(run_small(
        tmp_path, *SETTINGS, "run.executor=ray", run_id="ray")))
    runner.start()
    killed = kill_a_job_after_its_first_epoch(run_dir, runner)
    assert killed is not None, "no job was seen in the middle of its training"
    assert finished, "the run did not finish"
    assert numbers(run_dir) == local
    [after] = [row for row in read_history(run_dir / "history.csv")
               if (row["arm"], row["seed"], row["epoch"]) == (killed["arm"], killed["seed"], 1)]
    assert after == killed  # epoch_seconds included: continued from the checkpoint, not from scratch
    assert json.loads((run_dir / "environment.json").read_text())["executor"] == "ray"
    assert not (run_dir / "jobs").exists()


def test_a_ray_run_stopped_with_ctrl_c_resumes_on_ray_to_the_local_executors_files(ray_cluster, local_run, tmp_path):
    shared, local = local_run
    run_dir = tmp_path / "results" / "demo" / "stopped"
    address = ray.get_runtime_context().gcs_address  # the driver joins the tests' cluster
    sets = SMALL + [f"data.cache_dir={shared / 'cache'}", *SETTINGS, "run.executor=ray", f"run.address={address}"]
    process = subprocess.Popen([sys.executable, "-m", "augcompare.experiments.cli", "run", "--out",
                                str(tmp_path / "results"), "--run-id", "stopped"] + overrides(*sets),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        if any(rows_in(p) >= 1 for p in run_dir.glob("jobs/*/rows.csv")):
            process.send_signal(signal.SIGINT)  # in the middle of a job
            break
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith(f"Continue with: augcompare run --resume {run_dir}")
    assert list(run_dir.glob("jobs/*/rows.csv"))  # stopped with jobs unfinished
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert numbers(run_dir) == local
    assert not (run_dir / "jobs").exists()


def test_a_small_run_on_ray_gives_the_local_executors_files_on_its_thread_count(ray_cluster, tmp_path, monkeypatch):
    """Without TF_NUM_INTRAOP_THREADS (which the tests set) a small run trains one job at a time on
    every core of this machine (here in a worker process, as this one's TensorFlow runs on 1); on
    Ray its jobs train on that same count (cpus_per_job = 1 is only what each reserves, and the
    cluster's workers inherited TF_NUM_INTRAOP_THREADS = 1), so the files are the local executor's."""
    from augcompare.experiments.machine import available_cores
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name)
    local, on_ray = (run_small(tmp_path, *executor, run_id=run_id)
                     for run_id, executor in (("local", []), ("ray", ["run.executor=ray"])))
    assert numbers(on_ray) == numbers(local)
    threads = [json.loads((run_dir / "environment.json").read_text())["threads_per_job"] for run_dir in (local, on_ray)]
    assert threads == [available_cores()] * 2


def test_a_cluster_without_gpus_refuses_gpus_per_job(ray_cluster, tmp_path, capsys):
    assert cli.main(["run", "--out", str(tmp_path), "--set", "run.executor=ray", "--set", "run.gpus_per_job=0.5",
                     "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.epochs=1",
                     "--set", "data.train_per_class=8", "--set", "data.val_per_class=4",
                     "--set", "data.test_per_class=4", "--set", "data.image_size=16"]) == 2
    assert "the Ray cluster has no GPU" in capsys.readouterr().err


def test_a_worker_that_cannot_see_the_run_directory_fails_its_job_once_with_the_reason(ray_cluster, tmp_path):
    from augcompare.experiments import config
    from augcompare.experiments.errors import UserError
    from augcompare.experiments.executors import RayExecutor
    from augcompare.experiments.jobfiles import Job
    experiment = config.load(overrides=["run.executor=ray"])
    missing = Job("baseline", 0, str(tmp_path / "not-mounted" / "run"), str(tmp_path), config.to_dict(experiment))
    executor = RayExecutor(experiment.run, 1)
    done = []
    with pytest.raises(UserError, match="cannot see the run directory .*not-mounted.* a file system every node mounts"):
        executor.run([missing], lambda *args: None, lambda job, record: done.append(record),
                     contextlib.nullcontext)
    assert not done
