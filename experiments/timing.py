"""Where a run's time goes: seconds per named part, summed in each process.

The run and its jobs time their parts (loading the data, building a model, training steps,
validation, test evaluation, checkpoints, merging, figures) into this process's `spans`; a worker
process sends its spans with each job it ends, and the executor adds them to the driver's. With
AUGCOMPARE_TIMINGS=<file> set, `augcompare` writes the driver's spans there as it ends, which is
what `augcompare bench run` reads. Timing costs two perf_counter calls per part and changes no
result.
"""

import collections
import contextlib
import json
import os
import time

spans = collections.Counter()  # part -> seconds, in this process (plus what workers sent)

# The parts a job times, in the order a report lists them.
JOB_PARTS = ("job: build and compile", "job: tracing and first batches", "job: training steps", "job: validation",
             "job: test evaluation", "job: checkpoints and rows", "job: other")


@contextlib.contextmanager
def span(name):
    started = time.perf_counter()
    try:
        yield
    finally:
        spans[name] += time.perf_counter() - started


def add(name, seconds):
    spans[name] += seconds


def take():
    """This process's spans since the last take(), as a plain dict; the counter starts again."""
    taken = dict(spans)
    spans.clear()
    return taken


def merge(taken):
    """Adds spans another process took."""
    spans.update({name: float(seconds) for name, seconds in taken.items()})


@contextlib.contextmanager
def written_if_asked(started_at):
    """Writes the spans, the wall-clock time main() started at and the time it ended to
    $AUGCOMPARE_TIMINGS, if set, as the block ends (however it ends)."""
    try:
        yield
    finally:
        path = os.environ.get("AUGCOMPARE_TIMINGS")
        if path:
            with open(path, "w") as handle:
                json.dump({"main_started_at": started_at, "ended_at": time.time(), "spans": dict(spans)}, handle)
