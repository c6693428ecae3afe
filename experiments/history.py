"""history.csv: one row per arm x seed x epoch, appended and flushed as each epoch ends; and the
atomic replacement every file a resumed run reads is written with."""

import csv
import io
import os
from pathlib import Path

COLUMNS = ("arm", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
_TYPES = {"arm": str, "seed": int, "epoch": int}


def write_atomically(path, write):
    """write(staging_path), then rename it over path: whoever reads path (a resumed run) finds
    the old file or the new one, never half of one. A failed write leaves the old file."""
    path = Path(path)
    staging = path.with_name(".partial-" + path.name)  # keeps the suffix Keras checks
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def _csv_text(rows, header):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    return buffer.getvalue()


class HistoryWriter:
    """Appends rows to a history.csv, writing the header when the file is new. Each row reaches
    the disk before the next epoch starts, so a run killed at any moment keeps what it trained.
    A write that fails (a full disk) is undone, so the file keeps its earlier rows whole."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, row):
        size = self.path.stat().st_size if self.path.exists() else 0
        data = _csv_text([row], header=size == 0).encode()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = 0
            while written < len(data):
                written += os.write(descriptor, data[written:])
            os.fsync(descriptor)
        except OSError:
            os.ftruncate(descriptor, size)
            raise
        finally:
            os.close(descriptor)

    def rewrite(self, rows):
        """Replaces the file with rows, atomically (used when a resumed run drops the epochs of
        the run it repeats)."""
        text = _csv_text(rows, header=True)
        write_atomically(self.path, lambda staging: staging.write_text(text))


def read_history(path):
    """The rows of a history.csv as dicts, numbers parsed. A last line cut short (a process
    killed while appending) is not a row and is left out."""
    text = Path(path).read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{path} does not have the columns {', '.join(COLUMNS)}")
    return [{key: _TYPES.get(key, float)(value) for key, value in row.items()} for row in reader]
