"""A job's rows.csv, appended and synced as each epoch ends, and the run's history.csv, replaced
whole as each job ends: one row per arm x seed x epoch, read back strictly (a damaged line is an
error naming the file and line)."""

import csv
import io
import math
import os
from pathlib import Path

from augcompare.experiments.errors import UserError
from augcompare.experiments.files import write_text

COLUMNS = ("arm", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
_TYPES = {"arm": str, "seed": int, "epoch": int}


def _csv_text(rows, header):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    return buffer.getvalue()


class HistoryWriter:
    """Appends rows to a history file, writing the header when the file is new. Each row reaches
    the disk before the next epoch starts, so a process killed at any moment keeps what it
    trained. A write that fails (a full disk) is undone, so the file keeps its earlier rows whole;
    no library does that for an append, hence os.write and ftruncate here."""

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
        """Replaces the file with rows, atomically."""
        write_text(self.path, _csv_text(rows, header=True))


def _parse(row, line_number, path, recover):
    values = {}
    for key in COLUMNS:
        text = row.get(key)
        try:
            value = _TYPES.get(key, float)(text)
        except (TypeError, ValueError):
            raise UserError(f"{path} line {line_number} is damaged ({key} = {text!r}); {recover}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{path} line {line_number} is damaged ({key} is not a finite number); {recover}")
        values[key] = value
    return values


def read_history(path, recover="restore it from a copy or start the run again (augcompare run RUN_DIR/config.toml)",
                 appended=True):
    """The rows of a history file as dicts, numbers parsed. appended: the file grows by appends
    (a job's rows.csv), so a last line cut short (a process killed while appending) is not a row
    and is left out; a file that is only ever replaced whole (history.csv) has no such line, and
    one there is damage. Any damage (a wrong header, a field that does not parse, a line with too
    few or too many fields, bytes that are not text) is a UserError naming the file, the line and
    `recover`."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is damaged (bytes that are not text at offset {error.start}); {recover}") from None
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror}); {recover}") from None
    if text and not text.endswith("\n"):
        if not appended:
            raise UserError(f"{path} ends in a line cut short (line {text.count(chr(10)) + 1}); {recover}")
        text = text[:text.rfind("\n") + 1]
    if not text:
        return []
    reader = csv.DictReader(io.StringIO(text), restkey="_extra")
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise UserError(f"{path} does not start with the header {','.join(COLUMNS)}; {recover}")
    rows = []
    for row in reader:
        line_number = reader.line_num
        if "_extra" in row or None in row.values():
            fields = len(COLUMNS) + len(row.get("_extra", ())) - sum(value is None for value in row.values())
            raise UserError(f"{path} line {line_number} is damaged ({fields} fields where a row has {len(COLUMNS)}); "
                            f"{recover}")
        rows.append(_parse(row, line_number, path, recover))
    return rows
