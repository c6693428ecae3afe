import json
import os

import numpy as np
import pytest
from hypothesis import settings

# One TensorFlow thread per test process (TensorFlow reads these when it starts, here and in every
# subprocess a test starts): the two test workers then keep the 2 cores busy without fighting over
# them, and a run in a subprocess, a Ray worker and a job worker (the plan's threads_per_job) on one thread
# train with the same thread count as the test process, so their numbers can be compared.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# The test processes and every subprocess they start load Keras as the harness's own processes do
# (experiments.machine.lean_keras); the start-up test checks a user's process, which loads it whole.
os.environ.setdefault("AUGCOMPARE_LEAN_KERAS", "1")

import augcompare.augment  # noqa: E402,F401  (sets the Keras backend before any test imports keras)
from augcompare.experiments import cli  # noqa: E402

# Property tests draw the same examples on every run: a failure in CI reproduces here.
settings.register_profile("augcompare", derandomize=True, deadline=None)
settings.load_profile("augcompare")

# Whole files go to the two test workers (pyproject's --dist loadfile) in collection order: the
# longest first, so that no worker is left alone with a long file at the end while the other idles.
LONGEST_FIRST = ["test_ray.py", "test_side_by_side.py", "test_arms.py", "test_augmentation.py", "test_runs.py",
                 "test_resume.py", "test_networks.py", "test_design.py", "test_properties.py", "test_run_options.py",
                 "test_kernels.py", "test_bench.py", "test_strategy.py", "test_estimate.py", "test_api.py",
                 "test_tracking.py", "test_run_files.py", "test_values.py", "test_analyze.py",
                 "test_resume_settings.py", "test_compare.py", "test_generators.py", "test_plots.py"]


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order in a file


# A small demo experiment that trains in seconds: the overrides every end-to-end test starts from.
SMALL = ["data.image_size=32", "data.train_per_class=24", "data.val_per_class=8", "data.test_per_class=8",
         "train.batch_size=16", "train.epochs=2", "train.seeds=[0]", "model.filters=[8, 16]",
         "model.dense_units=16"]


def numbers(run_dir):
    """history.csv without epoch_seconds, and each job's record without its seconds: the values
    that may differ between two runs."""
    from augcompare.experiments.history import read_history
    rows = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")]
    jobs = [{k: v for k, v in job.items() if k != "seconds"}
            for job in json.loads((run_dir / "runs.json").read_text())["jobs"]]
    return rows, jobs


def kill_a_job_after_its_first_epoch(run_dir, runner, seconds=240):
    """While the thread runner trains the run in run_dir, kills (SIGKILL) the process of the first
    job seen with its first epoch checkpointed and not ended (its lock names the process): a
    worker lost in the middle of its job. Returns that epoch's row, or None if no job was seen
    there. Joins runner."""
    import signal
    import time

    from augcompare.experiments.history import read_history
    killed, deadline = None, time.monotonic() + seconds
    while killed is None and runner.is_alive() and time.monotonic() < deadline:
        for folder in sorted(run_dir.glob("jobs/*")):
            try:
                if (rows_in(folder / "rows.csv") != 1 or not (folder / "checkpoint.npz").is_file()
                        or (folder / "record.json").exists()):  # not yet checkpointed, or already ended
                    continue
                first_row = read_history(folder / "rows.csv")[0]
                os.kill(json.loads((folder / ".lock").read_text())["pid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError, IndexError):
                continue  # the folder changed under us (the job moved on or ended): look again
            killed = first_row
            break
        time.sleep(0.02)
    runner.join(timeout=300)
    return killed


def rows_in(path):
    """Lines in a history file after its header (a line still being appended counts); 0 for a
    file that is not there, as a job's folder is removed when its job ends."""
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def command_line(pid):
    """The command line of process pid (bytes, arguments joined by NUL); b"" once it has ended."""
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0")
    except OSError:
        return b""


def overrides(*items):
    """--set arguments for the command line."""
    return [arg for item in items for arg in ("--set", item)]


def fail_with_nan(monkeypatch, arm):
    """Makes every job of arm fail: its first update turns every weight into NaN."""
    from augcompare.experiments import training
    reset = training.Trainer.reset

    def reset_to_nan(self, seed, weights_path):
        reset(self, seed, weights_path)
        if self.arm == arm:
            self.model.optimizer.learning_rate.assign(float("nan"))
    monkeypatch.setattr(training.Trainer, "reset", reset_to_nan)


def run_small(tmp_path, *extra, run_id="r", experiment=None, cache=None):
    """`augcompare run` of the small demo with extra overrides; returns the run directory."""
    sets = SMALL + [f"data.cache_dir={cache or tmp_path / 'cache'}", *extra]
    args = ["run"] + ([str(experiment)] if experiment else []) + [
        "--out", str(tmp_path / "results"), "--run-id", run_id] + overrides(*sets)
    assert cli.main(args) == 0
    (run_dir,) = (tmp_path / "results").glob(f"*/{run_id}")
    return run_dir


@pytest.fixture
def images():
    """16 random uint8 images [16, 24, 24, 3] and alternating labels."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8), np.arange(16, dtype=np.int64) % 2
