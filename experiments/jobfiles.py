"""What a job is and what it leaves on disk, without TensorFlow: the run plans, merges and checks
jobs through this module before (or without) loading TensorFlow, so that its worker processes can
start loading theirs at once. experiments.job trains them.

A job is one arm and one seed of a run. Its inputs are plain data (Job). The seed's first job
writes weights/initial-seed<S>.weights.h5, which every arm of the seed starts from (any job makes
the same file from the seed); otherwise a job writes only to its own folder, jobs/<arm>-seed<S>/:

- rows.csv: its history rows, appended and synced as each epoch ends;
- checkpoint.npz: everything training changes, renamed into place after each epoch's row
  (save_checkpoint, read_checkpoint; NumPy alone reads it);
- record.json: how it ended and its test results, written last;
- .lock: held by the process training the job, so that two never train one job at once.
"""

import dataclasses
import re
import socket
from pathlib import Path

import numpy as np

from augcompare.experiments.errors import UserError
from augcompare.experiments.files import read_json, write_atomically

ROWS, CHECKPOINT, RECORD = "rows.csv", "checkpoint.npz", "record.json"


@dataclasses.dataclass(frozen=True)
class Job:
    arm: str
    seed: int
    run_dir: str   # the run's directory: the job writes weights/ (if absent) and jobs/<arm>-seed<S>/
    cache: str     # the prepared data set (experiments.cache)
    config: dict   # the run's resolved configuration (config.to_dict)

    @property
    def name(self):
        return f"{self.arm}-seed{self.seed}"

    @property
    def folder(self):
        return job_folder(self.run_dir, self.arm, self.seed)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run asks of TensorFlow before its jobs train, in the process that holds it (a job
    worker, or the driver itself when it trains or hands jobs to Ray): the arms checked on the
    data, the preview grid drawn into preview_dir (None: not drawn; a resumed run has it) and
    which TensorFlow, devices and kernels the jobs train with (experiments.job.set_up)."""
    cache: str     # the prepared data set (experiments.cache)
    config: dict   # the run's resolved configuration (config.to_dict)
    preview_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class Measure:
    """What `augcompare run --estimate` asks of each process that would train the run's jobs:
    time every arm's build, a few training steps and an evaluation there, side by side with the
    others doing the same (experiments.job.measure)."""
    cache: str     # the prepared data set (experiments.cache)
    config: dict   # the run's resolved configuration (config.to_dict)
    steps: int = 8          # training steps timed after the warm-up
    warm_up_steps: int = 2  # training steps first (the step's tracing among them), not timed


class JobSetupError(UserError):
    """A job cannot see the files it needs (on a cluster: the run directory or the data are not
    on a file system its node mounts)."""


def check_visible(job):
    """JobSetupError where this node cannot see the job's run directory or prepared data: before
    anything loads TensorFlow, so that a job on a node without them fails at once."""
    host = socket.gethostname()
    for what, path in (("the run directory", Path(job.run_dir)), ("the prepared data", Path(job.cache))):
        if not path.is_dir():
            raise JobSetupError(f"job {job.arm} seed {job.seed} on {host} cannot see {what} {path}; on a cluster the "
                                "run directory (--out) and the prepared data (data.cache_dir) must be on a file system "
                                "every node mounts at the same path")


def job_folder(run_dir, arm, seed):
    return Path(run_dir) / "jobs" / f"{arm}-seed{seed}"


def initial_weights_path(run_dir, seed):
    return Path(run_dir) / "weights" / f"initial-seed{seed}.weights.h5"


def best_model_path(run_dir, arm, seed):
    return Path(run_dir) / "best" / f"{arm}-seed{seed}.keras"


STATUSES = ("finished", "stopped_early", "failed")


def check_record(record):
    """ValueError unless record has the fields of a job's record (runs.json, record.json)."""
    if not isinstance(record, dict) or not isinstance(record.get("arm"), str):
        raise ValueError("not a job record")
    if not isinstance(record.get("seed"), int) or not isinstance(record.get("epochs"), int):
        raise ValueError("seed and epochs must be integers")
    if record.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    for key in ("test_loss", "test_accuracy", "selected_test_loss", "selected_test_accuracy"):
        if record["status"] != "failed" and not isinstance(record.get(key), (int, float)):
            raise ValueError(f"{key} is missing")
    return record


def read_record(folder):
    """A job's record.json, or None when it has not ended."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    recover = "delete it to evaluate that job again from its last checkpoint"
    try:
        return check_record(read_json(path, recover))
    except ValueError as error:
        raise UserError(f"{path} is damaged ({error}); {recover}") from None


def best_index(rows, monitor):
    """The index of the epoch with the best monitor (val_loss lowest, val_accuracy highest);
    the first one that reached it."""
    values = [row[monitor] for row in rows]
    best = min(values) if monitor == "val_loss" else max(values)
    return values.index(best)


def should_stop_early(rows, monitor, patience):
    """True when the last `patience` epochs of rows (one job's, in epoch order) brought no
    better value of monitor than the best before them. Computed from the rows alone, so a
    resumed job decides exactly as an uninterrupted one."""
    if not patience or len(rows) <= patience:
        return False
    return len(rows) - 1 - best_index(rows, monitor) >= patience


# The checkpoint: an .npz of the trainer's state ("v<i>"), the val-selected classifier weights
# ("s<i>"), the epochs done and the selected epoch.

def save_checkpoint(path, trainer, epochs_done, selected_epoch, selected_weights):
    """Writes a job's checkpoint; trainer: an experiments.training.Trainer (its state() arrays)."""
    arrays = {f"v{i}": a for i, a in enumerate(trainer.state())}
    arrays.update({f"s{i}": a for i, a in enumerate(selected_weights)})

    def write(staging):
        with open(staging, "wb") as handle:
            np.savez(handle, epochs_done=epochs_done, selected_epoch=selected_epoch, **arrays)
    write_atomically(path, write)


def read_checkpoint(path, recover):
    """(epochs done, selected epoch, state arrays, selected weights) of a checkpoint; a damaged
    file is a UserError naming it and `recover`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as saved:
            files = set(saved.files)
            state = [saved[f"v{i}"] for i in range(sum(1 for f in files if re.fullmatch(r"v\d+", f)))]
            selected = [saved[f"s{i}"] for i in range(sum(1 for f in files if re.fullmatch(r"s\d+", f)))]
            return int(saved["epochs_done"]), int(saved["selected_epoch"]), state, selected
    except Exception as error:  # BadZipFile, a missing key, a truncated member, ...: all mean damaged
        problem = " ".join(str(error).split())[:160] or type(error).__name__
        raise UserError(f"{path} is damaged ({type(error).__name__}: {problem}); {recover}") from None


def checkpoint_epochs(path, recover):
    """Epochs a checkpoint holds; 0 when there is none."""
    return read_checkpoint(path, recover)[0] if Path(path).is_file() else 0
