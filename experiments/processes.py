"""Helper processes of a run (decoding workers, job workers): they end with the process that
started them and leave Ctrl-C to it."""

import contextlib
import ctypes
import os
import signal
import sys

from augcompare.experiments.errors import Signalled


def end_with_parent(parent):
    """Ignores SIGINT (Ctrl-C reaches every process of the terminal's group; the main one stops
    its helpers) and asks Linux to SIGKILL this process when its parent dies, even by SIGKILL: a
    helper would otherwise wait for work forever, holding what it holds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the signal was asked for
            os._exit(1)


class DeferredSignals:
    """Records signals in their handler and raises the first as errors.Signalled at the next safe
    point: check(), or the end of a protected() block, inside which no safe point stops, so that a
    stop never cuts an epoch's writes in the middle. The handler raises
    nothing itself: raised there, a stop that lands in a __del__ (or a weakref callback) was
    printed as "Exception ignored" and lost, and the process went on. install() takes the signals
    (main thread only); restore() gives them back."""

    def __init__(self, numbers):
        self.numbers = tuple(numbers)
        self.depth, self.pending, self.previous = 0, None, {}

    def install(self):
        self.previous = {number: signal.signal(number, self._handle) for number in self.numbers}

    def restore(self):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def _handle(self, number, frame):
        if self.pending is None:  # the first stop decides (its exit code)
            self.pending = number

    def check(self):
        """A safe point: raises the recorded signal's exception, unless inside protected()."""
        if self.pending is not None and not self.depth:
            number, self.pending = self.pending, None
            raise Signalled(number)

    @contextlib.contextmanager
    def protected(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        self.check()


def safe_point(protect):
    """A safe point for code given only a DeferredSignals' protected (run_job's protect): leaving
    the empty block raises a recorded stop. Nothing where protect is a null context."""
    with protect():
        pass
