"""The exceptions the command line turns into one-line messages; kept free of heavy imports so
that data preparation workers can use them without loading TensorFlow."""


class UserError(ValueError):
    """Something the user can fix: a mistake in an experiment file or an override, bad data, a
    damaged file, a folder that cannot be written, a run directory another process holds.
    Described in one line that names the problem and the fix. Exit code 2."""


class Stop(BaseException):
    """A run, or a process that trains for it, asked to stop before its end, with everything it
    finished kept on disk. The family of every early stop:

    - Signalled: SIGINT or SIGTERM, seen at the first safe point after it arrived (in the driver
      and in a job worker alike);
    - Interrupted: Ctrl-C while data is drawn or prepared, before anything trains;
    - RunStopped: what leaves a run that stopped, naming the command that continues it.

    A BaseException, as KeyboardInterrupt is, so that no `except Exception` on the way (Keras'
    callbacks, a user's function) takes a stop for an error of its own; RunStopped, which a caller
    handles, is an Exception too.
    """


class Signalled(Stop):
    """SIGINT or SIGTERM (number), raised at the first safe point after the signal: between
    training steps, after an epoch's writes, as an executor waits for its workers, as a worker
    waits for its next job (processes.DeferredSignals)."""

    def __init__(self, number):
        super().__init__(number)
        self.number = number


class RunStopped(Stop, Exception):
    """A run ended early (a signal, a full disk, a job lost) with everything it finished kept on disk.

    message says what happened; run_dir is the directory `augcompare run --resume` continues;
    exit_code is what the command line returns (130 for SIGINT, 143 for SIGTERM, 1 otherwise).
    """

    def __init__(self, message, run_dir, exit_code=1):
        super().__init__(message)
        self.run_dir = run_dir
        self.exit_code = exit_code


class Interrupted(Stop, KeyboardInterrupt):
    """Ctrl-C while data is drawn or prepared, before anything trains: message says what is kept
    and what continues it. A KeyboardInterrupt still, so that whatever cleans up on one does."""
