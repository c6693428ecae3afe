"""A worker process of the local executor (`python -m augcompare.experiments.worker FD THREADS
PARENT`): a fresh interpreter, never forked from one that runs TensorFlow, that lives for the
whole run and trains job after job on its share of the cores, keeping each arm's compiled model.

It talks to the driver over the connected socket FD (multiprocessing's Connection: pickled
messages). The driver sends a Setup (one worker, before the first job: experiments.job.set_up), a
Job, or None to end; the worker answers

- ("ready", pid) once TensorFlow has loaded;
- ("set up", what set_up returned, timings) or ("error", None, ...) after a Setup;
- ("measured", what job.measure returned, timings) or ("error", None, ...) after a Measure;
- ("epoch", job name, row, stopped_early) as each epoch's row and checkpoint reach the disk;
- ("done", job name, record, timings) when the job has ended (its record.json is written);
- ("error", job name, kind, message): kind "user" (a UserError: a one-line message), "os"
  ((errno, strerror, filename): a full disk, a lost folder) or "crash" (anything else).

Ctrl-C is the driver's alone (this process ignores SIGINT and is in a process group of its own);
the driver stops a worker with SIGTERM, recorded and taken at the next safe point (between training
steps, after an epoch's writes, never in the middle of them, or as it waits for a job), as it does
in the driver itself. The worker dies with the driver (PR_SET_PDEATHSIG).
"""

import os
import signal
import sys
from multiprocessing.connection import Connection

from augcompare.experiments.errors import Signalled, UserError
from augcompare.experiments.machine import lean_keras
from augcompare.experiments.processes import DeferredSignals, end_with_parent


WAKE_SECONDS = 0.2  # how often a worker waiting for a task looks for a stop


def serve(connection, threads):
    stop = DeferredSignals([signal.SIGTERM])  # from the driver: the job ends where it is
    stop.install()
    from augcompare.augment.backend import tf
    from augcompare.experiments.machine import set_threads
    set_threads(threads)
    tf.config.experimental.enable_op_determinism()
    from augcompare.experiments import timing
    from augcompare.experiments.job import TRAINERS, measure, run_job, set_up
    from augcompare.experiments.jobfiles import Measure, Setup
    connection.send(("ready", os.getpid()))
    while True:
        # Between jobs, a SIGTERM the handler recorded ends the worker here; one that arrives while
        # it waits for a task is seen within WAKE_SECONDS (a blocking recv would not return).
        stop.check()
        while not connection.poll(WAKE_SECONDS):
            stop.check()
        try:
            task = connection.recv()
        except EOFError:  # the driver has gone
            return
        if task is None:
            return
        timing.take()
        setup = isinstance(task, (Setup, Measure))
        try:
            if isinstance(task, Measure):
                result = measure(task)
            elif setup:
                result = set_up(task)
            else:
                result = run_job(task, TRAINERS, protect=stop.protected,
                                 on_epoch=lambda row, stopped_early: connection.send(("epoch", task.name, row,
                                                                                      stopped_early)))
        except Exception as error:  # reported by the driver, which stops the run with it
            connection.send(("error", None if setup else task.name, *_failure(error)))
        else:
            kind = "measured" if isinstance(task, Measure) else "set up"
            connection.send((kind, result, timing.take()) if setup else ("done", task.name, result, timing.take()))


def _failure(error):
    """(kind, detail) of an ("error", ...) message: "user" (a UserError's one-line message), "os"
    ((errno, strerror, filename)) or "crash" (anything else)."""
    if isinstance(error, UserError):
        return "user", str(error)
    if isinstance(error, OSError):
        return "os", (error.errno, error.strerror, error.filename)
    return "crash", f"{type(error).__name__}: {error}"


def main():
    descriptor, threads, parent = (int(argument) for argument in sys.argv[1:4])
    end_with_parent(parent)
    lean_keras()
    connection = Connection(descriptor)
    try:
        serve(connection, threads)
    except (Signalled, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        connection.close()


if __name__ == "__main__":
    main()
