"""Executors hand a run's jobs to something that trains them and report each job's epochs and
end back to the run, which alone writes history.csv and runs.json.

- local, one job at a time (run.jobs_at_once = 1): one job after another in this process, on the
  plan's threads (by default all its cores); each arm's model is compiled once and reset for
  every seed.
- local, jobs side by side (WorkerPool): run.jobs_at_once worker processes, spawned once for the
  run, each on its share of the cores, taking job after job and keeping its compiled models. A
  small CNN cannot keep many cores busy, so on 2 cores two jobs on one thread each train more
  images per second than one job on two (README, Speed).
- ray: each job a Ray core task in a fresh worker process, on this machine or a cluster, on the
  plan's threads; a job whose worker dies is retried from its last epoch checkpoint.

A job's numbers may depend on the thread count it trains with (how TensorFlow splits its sums):
plan() resolves that count once for the run (environment.json's threads_per_job) and every
executor trains each job on it, so the same run on the same machine gives the same numbers
whichever executor runs it.

This module loads no TensorFlow (a job trains through experiments.job, imported where one trains):
the run plans and starts its workers first, and where they train its jobs it loads none itself
(set_up runs in a worker).
"""

import collections
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection, wait

from augcompare.experiments.machine import available_cores, users_threads
from augcompare.experiments import gpus as gpus_mod
from augcompare.experiments import timing
from augcompare.experiments.errors import RunStopped, UserError
from augcompare.experiments.history import read_history
from augcompare.experiments.jobfiles import ROWS
from augcompare.experiments.processes import safe_point

# Side by side only pays when the run trains long enough to repay starting the workers (a fresh
# interpreter and TensorFlow each, about 8 s on 2 cores) and compiling each arm in each of them:
# below this many floating-point operations of training, one job at a time is faster. Measured
# with `augcompare bench run` on the demo's network on 2 cores (README, Speed): 2 jobs (1.1e12)
# ran 0.96x as fast side by side, 4 jobs (2.3e12) 1.12x, the demo's 12 jobs (6.8e12) 1.23x.
MIN_SIDE_BY_SIDE_FLOPS = 2e12
# Memory a worker process may take (TensorFlow, the data's memory map, a few compiled models).
WORKER_MEMORY = 1.5 * 2**30
# A container's memory limit (cgroup v2, then v1); "max" or a huge number where there is none.
CGROUP_MEMORY = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_bytes():
    """This machine's memory in bytes: the physical memory, or the container's limit where that is
    smaller; None where neither can be read. Total, not free: the memory free at the moment (or
    available beside the page cache) changes from run to run, and with it the plan and the digits."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        pass
    for path in CGROUP_MEMORY:
        try:
            with open(path) as handle:
                value = handle.read().strip()
        except OSError:
            continue
        if value.isdigit():
            sizes.append(int(value))
        break
    return min(sizes) if sizes else None


def choose_jobs_at_once(requested, jobs, flops, cores=None, memory=None):
    """How many jobs train side by side: run.jobs_at_once when set (never more than the jobs);
    else one per core when the run's training (flops) is long enough to repay the workers' start,
    as many as memory (memory_bytes: the machine's total) holds; else 1."""
    if jobs <= 1:
        return 1
    if requested:
        return min(requested, jobs)
    cores = cores or available_cores()
    if flops < MIN_SIDE_BY_SIDE_FLOPS:
        return 1
    count = min(cores, jobs)
    if memory:
        count = min(count, max(1, int(memory // WORKER_MEMORY)))
    return max(1, count)


def set_up_here(setup):
    """jobfiles.Setup in this process (TensorFlow loads here)."""
    with timing.span("run: start-up (imports)"):
        from augcompare.experiments.job import set_up
    return set_up(setup)


class LocalExecutor:
    """One job after another in this process, on `threads` TensorFlow threads (make_executor has
    checked that this process's TensorFlow runs on that many)."""

    jobs_at_once = 1

    def __init__(self, threads):
        self.threads = threads

    def set_up(self, setup):
        """What the run needs TensorFlow for before the jobs train (jobfiles.Setup), where they
        train; returns experiments.job.set_up's answer."""
        return set_up_here(setup)

    def measure(self, task):
        """[experiments.job.measure's answer] for jobfiles.Measure, in this process."""
        from augcompare.experiments.job import measure
        return [measure(task)]

    def run(self, jobs, on_epoch, on_done, protect):
        """Trains jobs in order; on_epoch(job, row, stopped_early) after every epoch,
        on_done(job, record) after every job; protect(): the run's signal-safe section."""
        from augcompare.experiments.job import TRAINERS, run_job
        for job in jobs:
            record = run_job(job, TRAINERS, on_epoch=lambda row, stop, job=job: on_epoch(job, row, stop),
                             protect=protect)
            on_done(job, record)

    def close(self):
        pass


def plan(run_config, jobs, flops, threads=None, gpus=None, step_flops=None):
    """(jobs at once, TensorFlow threads per job) for `jobs` pending jobs whose training takes
    `flops` in all, on this machine. Every executor trains each job on that thread count (the
    local one in its process or its workers, Ray's workers), so the same run gives the same numbers
    whichever runs it: run.threads_per_job, else the user's TF_NUM_INTRAOP_THREADS, else this
    machine's cores shared among the jobs the local executor trains side by side (all of them for
    one job at a time). threads: the count a run recorded when it started, which its resumption
    keeps. Jobs at once of Ray: as many as the cluster's CPUs allow (1 here).

    gpus: this machine's (experiments.gpus.GPU; None: detected). Where there are any, the local
    executor's jobs at once count the GPUs, not the cores: gpus.jobs_per_gpu on each for a step of
    step_flops (one training step's operations), no more than the cores can feed (one each) nor
    the machine's memory holds."""
    cores = available_cores()
    if gpus is None and run_config.executor != "ray":
        gpus = gpus_mod.detect()
    on_gpus = 0  # the jobs the GPUs take side by side
    if gpus and run_config.executor != "ray" and flops >= MIN_SIDE_BY_SIDE_FLOPS:
        on_gpus = sum(gpus_mod.jobs_per_gpu(step_flops or flops, gpu) for gpu in gpus)
    if threads is None:
        if on_gpus and not run_config.jobs_at_once:
            count = max(1, min(on_gpus, jobs, cores))  # a core to feed each
            memory = memory_bytes()
            if memory:
                count = max(1, min(count, int(memory // WORKER_MEMORY)))
        else:
            count = choose_jobs_at_once(run_config.jobs_at_once, jobs, flops, cores, memory_bytes())
        threads = run_config.threads_per_job or users_threads()
        if not threads:
            threads = max(1, cores // count)
        elif not run_config.jobs_at_once:
            count = max(1, min(count, cores // threads))  # no more threads than cores
    else:  # a resumption: the choice the run started with, on its thread count
        count = run_config.jobs_at_once or on_gpus or choose_jobs_at_once(0, jobs, flops, cores, memory_bytes())
        count = max(1, min(jobs, count, cores // threads))
    return (1 if run_config.executor == "ray" else count), threads


# TF_NUM_INTRAOP_THREADS as this process started: the count its TensorFlow takes when it starts.
_STARTING_THREADS = users_threads()


def trains_here_on(threads):
    """Whether this process's TensorFlow trains on `threads` threads: set now, before its first op,
    or the count it already runs on (its setting, TF_NUM_INTRAOP_THREADS as the process started,
    or every core). Loads TensorFlow."""
    with timing.span("run: start-up (imports)"):
        from augcompare.augment.backend import tf
        from augcompare.experiments.machine import set_threads
    if set_threads(threads):
        return True
    return (tf.config.threading.get_intra_op_parallelism_threads() or _STARTING_THREADS
            or available_cores()) == threads


def make_executor(run_config, jobs_at_once, threads, gpus=()):
    """The executor of a plan(). One job at a time trains in this process unless its TensorFlow
    already runs on another thread count (a notebook's earlier run): then in one worker process.
    gpus: the plan's (experiments.gpus.GPU), which the workers take in turn, one each."""
    if run_config.executor == "ray":
        return RayExecutor(run_config, threads)
    if gpus:
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # read as this process's TensorFlow loads
    if jobs_at_once == 1 and trains_here_on(threads):
        return LocalExecutor(threads)
    return WorkerPool(jobs_at_once, threads, gpus)


# Retries of a job whose worker process died (killed, out of memory, a node lost): each retry
# continues from the job's last checkpoint, so nothing trained is lost or repeated twice.
WORKER_RETRIES = 3


def lost_job(job, attempts, reason):
    return RunStopped(f"job {job.arm} seed {job.seed} was lost after {attempts} retries ({reason}); every finished "
                      f"epoch is saved. Continue with: augcompare run --resume {job.run_dir}", job.run_dir)


class _Worker:
    """One worker process (experiments.worker) and the driver's end of its connection."""

    def __init__(self, threads, gpu=None):
        self.gpu = gpu  # experiments.gpus.GPU, the one GPU it sees; None: as the driver's
        ours, theirs = socket.socketpair()
        # A process group of its own: Ctrl-C at the terminal reaches the driver alone, which
        # stops the workers between writes.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "augcompare.experiments.worker", str(theirs.fileno()), str(threads),
             str(os.getpid())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, process_group=0,
            env=gpus_mod.worker_environment(gpu))
        theirs.close()
        self.connection = Connection(ours.detach())
        self.started = time.perf_counter()
        self.ready = False
        self.job = None
        self.arms = set()  # arms this worker has compiled

    def give(self, job):
        self.job = job
        self.connection.send(job)

    def signal(self, number):
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, number)

    def end(self, timeout):
        """Waits up to timeout seconds for the process to end, then kills it."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        self.connection.close()


class WorkerPool:
    """Jobs side by side on this machine: `count` worker processes of `threads` TensorFlow
    threads each, started as soon as the pool is made (TensorFlow loads in them while the driver
    prepares, loading none of its own: set_up runs in the first worker ready) and kept for the
    whole run. A worker takes the next job of an arm it has already compiled where there is one.
    A worker that dies (killed, out of memory) is replaced and its job continues from its last
    checkpoint, up to WORKER_RETRIES times. gpus: the machine's, one for each worker in turn
    (experiments.gpus.assign), which it alone sees."""

    STOP_SECONDS = 60  # how long a stopped worker may take to finish the epoch's writes

    def __init__(self, count, threads, gpus=()):
        self.jobs_at_once, self.threads = count, threads
        self.workers = [_Worker(threads, gpu) for gpu in gpus_mod.assign(count, list(gpus))]

    def set_up(self, setup):
        """jobfiles.Setup in the first worker to be ready, while any other is still loading: the
        driver loads no TensorFlow of its own, and the cores load the workers' sooner. Stopped
        (Ctrl-C, an error), it stops every worker at once, the one setting up included."""
        asked = None
        try:
            while True:
                if asked is None and (asked := next((worker for worker in self.workers if worker.ready), None)):
                    asked.connection.send(setup)
                for worker, message in self._messages():
                    if message is None:
                        if worker is asked:
                            raise UserError(f"a job worker process ended while it set up the run (exit code "
                                            f"{worker.process.wait()}; its messages are above); set "
                                            "run.jobs_at_once = 1 to train in this process")
                        self._replace(worker, collections.deque(), collections.Counter())
                    elif message[0] == "set up":
                        timing.merge(message[2])
                        return message[1]
                    else:
                        self._handle(worker, message, {}, None, None)  # "ready", or the set-up's "error"
        except BaseException:
            self.stop()
            raise

    def measure(self, task):
        """[experiments.job.measure's answer of each worker] for jobfiles.Measure, sent to every
        worker once all are ready, so that they measure side by side as they would train."""
        try:
            while not all(worker.ready for worker in self.workers):
                for worker, message in self._messages():
                    if message is None:
                        raise UserError(f"a job worker process ended as it started (exit code "
                                        f"{worker.process.wait()}; its messages are above); set "
                                        "run.jobs_at_once = 1 to train in this process")
                    self._handle(worker, message, {}, None, None)
            for worker in self.workers:
                worker.connection.send(task)
            answers = {}
            while len(answers) < len(self.workers):
                for worker, message in self._messages():
                    if message is None:
                        raise UserError(f"a job worker process ended while it measured (exit code "
                                        f"{worker.process.wait()}; its messages are above); set "
                                        "run.jobs_at_once = 1 to measure in this process")
                    if message[0] == "measured":
                        answers[worker] = message[1]
                    else:
                        self._handle(worker, message, {}, None, None)  # the measurement's "error"
            return [answers[worker] for worker in self.workers]
        except BaseException:
            self.stop()
            raise

    def run(self, jobs, on_epoch, on_done, protect):
        queue = collections.deque(jobs)
        names = {job.name: job for job in jobs}
        attempts = collections.Counter()
        try:
            while queue or any(worker.job for worker in self.workers):
                for worker in self.workers:
                    if worker.ready and worker.job is None and queue:
                        mine = [job for job in queue if job.arm in worker.arms]
                        job = mine[0] if mine else queue[0]
                        queue.remove(job)
                        worker.give(job)
                for worker, message in self._messages():
                    if message is None:
                        self._replace(worker, queue, attempts)
                    else:
                        self._handle(worker, message, names, on_epoch, on_done)
                safe_point(protect)  # at least once a second: a stop is not left waiting for a worker's news
        except BaseException:
            self.stop()
            raise

    def _messages(self):
        """(worker, message) for each message the workers send within a second; message None
        where a worker's process has ended."""
        owners = {worker.connection: worker for worker in self.workers}
        for connection in wait(list(owners), timeout=1.0):
            try:
                message = connection.recv()
            except (EOFError, OSError):
                message = None
            yield owners[connection], message

    def _handle(self, worker, message, names, on_epoch, on_done):
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            timing.add("workers: start-up (a Python and TensorFlow each)", time.perf_counter() - worker.started)
        elif kind == "epoch":
            _, name, row, stopped_early = message
            on_epoch(names[name], row, stopped_early)
        elif kind == "done":
            _, name, record, spans = message
            timing.merge(spans)
            worker.job = None
            worker.arms.add(names[name].arm)
            on_done(names[name], record)
        elif kind == "error":
            _, name, what, detail = message  # name None: the run's set-up
            job, worker.job = names.get(name), None
            if what == "user":
                raise UserError(detail)
            if what == "os":
                raise OSError(*detail)
            raise RuntimeError(f"job {job.arm} seed {job.seed} failed: {detail}" if job else
                               f"setting up the run failed: {detail}")

    def _replace(self, worker, queue, attempts):
        """A worker ended without being asked: its job goes back to the front of the queue (it
        continues from its checkpoint) and a new worker takes its place."""
        code = worker.process.wait()
        job = worker.job
        worker.connection.close()
        if job is None and not worker.ready:
            raise UserError(f"a job worker process ended as it started (exit code {code}; its messages are above); "
                            "set run.jobs_at_once = 1 to train in this process")
        if job is not None:
            attempts[job.name] += 1
            if attempts[job.name] > WORKER_RETRIES:
                raise lost_job(job, WORKER_RETRIES, f"its worker process ended with exit code {code}")
            queue.appendleft(job)
        self.workers[self.workers.index(worker)] = _Worker(self.threads, worker.gpu)

    def stop(self):
        """Stops every worker with a job between an epoch's writes (SIGTERM), killing one that does
        not end in STOP_SECONDS: whatever it trained since its last checkpoint is trained again on
        resume. A worker without a job (loading, setting the run up, idle) has nothing to finish
        and is killed at once: one Ctrl-C in 11 during a set-up here waited the full STOP_SECONDS
        for a worker sent SIGTERM (why it did not end was not found)."""
        for worker in self.workers:
            worker.signal(signal.SIGTERM if worker.job is not None else signal.SIGKILL)
        for worker in self.workers:
            worker.end(self.STOP_SECONDS)
        self.workers = []

    def close(self):
        for worker in self.workers:
            if not worker.ready:  # still loading TensorFlow (a run stopped before training): nothing to finish
                worker.signal(signal.SIGKILL)
            elif worker.process.poll() is None:
                try:
                    worker.connection.send(None)
                except OSError:
                    pass
        for worker in self.workers:
            worker.end(self.STOP_SECONDS)
        self.workers = []


def _ray_job(job, threads):
    """A job in a Ray worker: a fresh process for each (max_calls=1), TensorFlow deterministic as
    in `augcompare run`, on `threads` threads (the run's threads per job, plan()). GPU memory grows as needed
    instead of TensorFlow's default of taking the whole card at once, so that jobs given a
    fraction of a GPU (gpus_per_job < 1) can share it."""
    from augcompare.experiments.jobfiles import check_visible
    check_visible(job)  # before TensorFlow loads: a node without the files fails at once
    from augcompare.experiments.machine import lean_keras, set_threads
    lean_keras()
    from augcompare.augment.backend import tf
    from augcompare.experiments.job import run_job
    set_threads(threads)
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)
    tf.config.experimental.enable_op_determinism()
    return run_job(job)


class RayExecutor:
    """Jobs as Ray core tasks. address "": start a Ray cluster on this machine; "auto" or
    "host:port": join one. The run directory and the prepared data must be on a file system every
    node mounts at the same path (a job that cannot see them fails once, with that message)."""

    jobs_at_once = 1  # as many at once as the cluster's CPUs allow (run.cpus_per_job each)

    def __init__(self, run_config, threads):
        self.threads = threads  # each job's TensorFlow threads (plan()), whatever it reserves
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
        self.owns_ray = not ray.is_initialized()  # this run started or joined the cluster: it leaves it
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

    def set_up(self, setup):
        """jobfiles.Setup in the driver, before any job is sent (a user's mistake stops the run
        here, with one line, rather than in a task on the cluster)."""
        return set_up_here(setup)

    def measure(self, task):
        """[experiments.job.measure's answer] for jobfiles.Measure, in the driver (as a job on one
        of this cluster's machines like it would take)."""
        from augcompare.experiments.job import measure
        return [measure(task)]

    def run(self, jobs, on_epoch, on_done, protect):
        ray = self.ray
        options = {"num_cpus": self.config.cpus_per_job, "num_gpus": self.config.gpus_per_job}
        pending = {self.remote.options(**options).remote(job, self.threads): job for job in jobs}
        seen = {job.name: self._rows(job) for job in jobs}  # rows from before a resume are not news
        # No ray.cancel: cancelling a task whose reply is on its way crashes the driver in
        # Ray's own check (task_manager.cc "Tried to complete task that was not pending",
        # a C++ stack trace and exit 1; ray-project/ray#54527). Leaving the cluster ends this
        # driver's tasks instead: Ray kills the workers of a job whose driver has gone. A
        # job that still writes as the run stops is waited for on resume (its job lock).
        while pending:
            # A stop takes effect as each protected call returns (once a second at least), never
            # inside Ray's wait and get, where an exception would come back as a SystemError.
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
                    raise lost_job(job, WORKER_RETRIES, message) from None
                self._report_rows(job, seen, on_epoch)
                on_done(job, record)

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
        if self.owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

