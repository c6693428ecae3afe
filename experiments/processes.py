"""Helper processes of a run (decoding workers, job workers): they end with the process that
started them and leave Ctrl-C to it."""

import ctypes
import os
import signal
import sys


def end_with_parent(parent):
    """Ignores SIGINT (Ctrl-C reaches every process of the terminal's group; the main one stops
    its helpers) and asks Linux to SIGKILL this process when its parent dies, even by SIGKILL: a
    helper would otherwise wait for work forever, holding what it holds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the signal was asked for
            os._exit(1)
