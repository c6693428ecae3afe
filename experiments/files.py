"""How the harness writes the files it reads back, and how it keeps a second process out.

- write_atomically / staged_directory: a reader finds the old file (or no directory) or the new
  one, never half of one; a failed write leaves what was there.
- read_json: a damaged JSON file is a one-line UserError naming it and the way to recover.
- DirectoryLock: an exclusive OS lock (flock) that the kernel releases when its process dies, so
  a killed process never leaves a stale lock; whoever holds it is recorded in the lock file, for
  the message the next process gets.

Imports nothing heavy: preparation workers use it without loading TensorFlow.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from augcompare.experiments.errors import UserError


def write_atomically(path, write, shared=False):
    """write(staging_path), then rename it over path: whoever reads path (a resumed run) finds
    the old file or the new one, never half of one. A failed write leaves the old file.
    shared: other processes, on this host or another, may write the same content to path at the
    same time (a seed's initial weights, made by each of its first jobs), so each stages a file
    of its own."""
    path = Path(path)
    # The name keeps the suffix Keras checks; a shared path's staging name is unique on any host.
    staging = path.with_name(f".partial-{uuid.uuid4().hex}-{path.name}" if shared else f".partial-{path.name}")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def write_text(path, text):
    """Writes text to path atomically."""
    write_atomically(path, lambda staging: Path(staging).write_text(text))


def write_json(path, document):
    write_text(path, json.dumps(document, indent=2) + "\n")


def read_json(path, recover):
    """The JSON document at path; a file that cannot be read or parsed is a UserError naming it,
    what is wrong and `recover` (what the user can do about it)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError:
        problem = "is not text"
    except json.JSONDecodeError as error:
        problem = f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    except OSError as error:
        problem = f"cannot be read ({error.strerror})"
    raise UserError(f"{path} {problem}; {recover}")


@contextlib.contextmanager
def staged_directory(directory):
    """Yields a hidden staging directory beside directory and renames it into place when the
    block ends; on any failure or interruption the staging directory is removed. Write the file
    that marks the directory complete (a cache's meta.json) last."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    except OSError as error:
        raise UserError(f"cannot write to {directory.parent} ({error.strerror}); choose a writable folder") from None
    try:
        yield staging
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class DirectoryLock:
    """An exclusive lock on a lock file, held by this process until release() or its death.

    The lock file records who holds it (pid, host, what for), so that a process refused the lock
    can name the holder. It is never deleted: a process waiting on a lock file that another one
    removes would lock a file nobody else sees.
    """

    _held = set()  # the locks this process holds

    def __init__(self, path, purpose):
        self.path = Path(path)
        self.purpose = purpose
        self.descriptor = None

    def holder(self):
        """Who holds (or last held) the lock, in words."""
        try:
            record = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            record = {}
        if not record:
            return "another process"
        return f"process {record.get('pid')} on {record.get('host')} ({record.get('purpose')})"

    def acquire(self, wait=False, on_wait=None):
        """Takes the lock. wait=False: a UserError naming the holder if another process has it;
        wait=True: blocks until it is free, calling on_wait(holder) once first."""
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot create the lock file {self.path} ({error.strerror}); "
                            "check that the folder is writable") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(descriptor)
                raise UserError(f"cannot lock {self.path} ({error.strerror}); the file system may not support "
                                "locks (flock)") from None
            if not wait:
                os.close(descriptor)
                raise UserError(f"{self.path.parent} is in use by {self.holder()}; wait for it to end or stop it, "
                                "then try again") from None
            if on_wait:
                on_wait(self.holder())
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv[:3])}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(record).encode(), 0)
        self.descriptor = descriptor
        DirectoryLock._held.add(self)
        return self

    def release(self):
        if self.descriptor is not None:
            DirectoryLock._held.discard(self)
            fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            self.descriptor = None

    @classmethod
    def _close_in_child(cls):
        # A forked child (a decoding worker) shares its parent's lock until it closes its copy:
        # the kernel frees a flock only when the last descriptor of it is closed, so a child
        # outliving a killed parent would keep the lock held. Closing the copy leaves the
        # parent's lock as it is (flock(LOCK_UN) here would free it for the parent too).
        for lock in cls._held:
            os.close(lock.descriptor)
            lock.descriptor = None
        cls._held.clear()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()


os.register_at_fork(after_in_child=DirectoryLock._close_in_child)
