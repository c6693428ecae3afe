"""Executors hand a run's jobs to something that trains them and report each job's epochs and
end back to the run, which alone writes history.csv and runs.json.

- local: one job after another in this process; each arm's model is compiled once and reset for
  every seed (today's behaviour, and the fastest on one machine).
- ray: each job a Ray core task in a fresh worker process, on this machine or a cluster; a job
  whose worker dies is retried from its last epoch checkpoint.
"""

import importlib.util
import os

from augcompare.experiments.errors import RunStopped, UserError
from augcompare.experiments.history import read_history
from augcompare.experiments.job import ROWS, run_job


class LocalExecutor:
    def __init__(self):
        self.trainers = {}  # arm -> Trainer, compiled once per process

    def run(self, jobs, on_epoch, on_done, protect):
        """Trains jobs in order; on_epoch(job, row, stopped_early) after every epoch,
        on_done(job, record) after every job; protect(): the run's signal-safe section."""
        for job in jobs:
            record = run_job(job, self.trainers, on_epoch=lambda row, stop, job=job: on_epoch(job, row, stop),
                             protect=protect)
            on_done(job, record)

    def close(self):
        self.trainers.clear()


def make_executor(run_config):
    if run_config.executor == "ray":
        return RayExecutor(run_config)
    return LocalExecutor()


# Retries of a job whose worker process died (killed, out of memory, a node lost): each retry
# continues from the job's last checkpoint, so nothing trained is lost or repeated twice.
WORKER_RETRIES = 3


def _ray_job(job):
    """A job in a Ray worker: a fresh process for each (max_calls=1), TensorFlow deterministic as
    in `augcompare run`. GPU memory grows as needed instead of TensorFlow's default of taking the
    whole card at once, so that jobs given a fraction of a GPU (gpus_per_job < 1) can share it."""
    from augcompare.augment.backend import tf
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.experimental.enable_op_determinism()
    return run_job(job)


class RayExecutor:
    """Jobs as Ray core tasks. address "": start a Ray cluster on this machine; "auto" or
    "host:port": join one. The run directory and the prepared data must be on a file system every
    node mounts at the same path (a job that cannot see them fails once, with that message)."""

    def __init__(self, run_config):
        if importlib.util.find_spec("ray") is None:
            raise UserError("run.executor = \"ray\" needs Ray; pip install -e \".[ray]\"")
        if not run_config.address:
            # A cluster of this machine alone: listen on loopback only (read when ray is imported)
            # and without the token file a shared cluster needs.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray
        self.ray = ray
        self.config = run_config
        if not ray.is_initialized():
            try:
                if run_config.address:
                    ray.init(address=run_config.address, log_to_driver=False, logging_level="ERROR")
                else:
                    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except (ConnectionError, RuntimeError, ValueError) as error:
                message = " ".join(str(error).split())[:200]
                raise UserError(f"cannot start or join a Ray cluster at run.address = {run_config.address!r} "
                                f"({message}); start one with `ray start --head` or set run.address = \"\"") from None
        if run_config.gpus_per_job and not ray.cluster_resources().get("GPU"):
            raise UserError(f"run.gpus_per_job = {run_config.gpus_per_job} but the Ray cluster has no GPU; set "
                            "run.gpus_per_job = 0 or add GPU nodes")
        self.remote = ray.remote(max_calls=1, max_retries=WORKER_RETRIES)(_ray_job)

    def run(self, jobs, on_epoch, on_done, protect):
        ray = self.ray
        options = {"num_cpus": self.config.cpus_per_job, "num_gpus": self.config.gpus_per_job}
        pending = {self.remote.options(**options).remote(job): job for job in jobs}
        seen = {job.name: self._rows(job) for job in jobs}  # rows from before a resume are not news
        try:
            while pending:
                # Ray checks for signals inside wait and get, where an exception from the run's
                # handler would come back as a SystemError: a stop waits for the call to return.
                with protect():
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for job in pending.values():
                    self._report_rows(job, seen, on_epoch)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        with protect():
                            record = ray.get(ref)
                    except ray.exceptions.RayTaskError as error:
                        cause = error.cause
                        if isinstance(cause, UserError):
                            raise type(cause)(str(cause)) from None
                        if isinstance(cause, OSError):  # a full disk, a lost mount: the run says how to resume
                            raise OSError(cause.errno, cause.strerror, cause.filename) from None
                        raise RuntimeError(f"job {job.arm} seed {job.seed} failed: {cause!r}") from None
                    except ray.exceptions.RayError as error:
                        message = " ".join(str(error).split())[:300]
                        raise RunStopped(f"job {job.arm} seed {job.seed} was lost after {WORKER_RETRIES} retries "
                                         f"({message}); every finished epoch is saved. Continue with: augcompare run "
                                         f"--resume {job.run_dir}", job.run_dir) from None
                    self._report_rows(job, seen, on_epoch)
                    on_done(job, record)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    @staticmethod
    def _rows(job):
        path = job.folder / ROWS
        try:
            return len(read_history(path)) if path.is_file() else 0
        except UserError:
            return 0

    @staticmethod
    def _report_rows(job, seen, on_epoch):
        """Reports the rows a job appended since the last look (its rows.csv, on the shared file
        system); rows a retried job writes again are not counted twice."""
        path = job.folder / ROWS
        if not path.is_file():
            return
        try:
            rows = read_history(path)
        except UserError:
            return  # being rewritten by a retried job: read it on the next look
        for row in rows[seen[job.name]:]:
            on_epoch(job, row, False)
        seen[job.name] = max(seen[job.name], len(rows))

    def close(self):
        pass

