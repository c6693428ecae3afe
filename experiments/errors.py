"""The exceptions the command line turns into one-line messages; kept free of heavy imports so
that data preparation workers can use them without loading TensorFlow."""


class UserError(ValueError):
    """Something the user can fix: a mistake in an experiment file or an override, bad data, a
    damaged file, a folder that cannot be written, a run directory another process holds.
    Described in one line that names the problem and the fix. Exit code 2."""


class RunStopped(Exception):
    """A run ended early (a signal, a full disk) with everything it finished kept on disk.

    message says what happened; run_dir is the directory `augcompare run --resume` continues;
    exit_code is what the command line returns (130 for SIGINT, 143 for SIGTERM, 1 otherwise).
    """

    def __init__(self, message, run_dir, exit_code=1):
        super().__init__(message)
        self.run_dir = run_dir
        self.exit_code = exit_code


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while data is drawn or prepared, before anything trains: message says what is kept
    and what continues it. A KeyboardInterrupt still, so that whatever cleans up on one does."""
