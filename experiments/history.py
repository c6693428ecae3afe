"""history.csv: one row per arm x seed x epoch, appended and flushed as each epoch ends."""

import csv
import os
from pathlib import Path

COLUMNS = ("arm", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
_TYPES = {"arm": str, "seed": int, "epoch": int}


class HistoryWriter:
    """Appends rows to a history.csv, writing the header when the file is new. Each row reaches
    the disk before the next epoch starts, so a run killed at any moment keeps what it trained."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, row):
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({key: row[key] for key in COLUMNS})
            handle.flush()
            os.fsync(handle.fileno())


def read_history(path):
    """The rows of a history.csv as dicts, numbers parsed."""
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path} does not have the columns {', '.join(COLUMNS)}")
        return [{key: _TYPES.get(key, float)(value) for key, value in row.items()} for row in reader]
