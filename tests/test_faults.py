"""Faults during a run: a full disk keeps every epoch already written and says how to go on."""

import errno
import os

import pytest

from experiments import cli
from experiments.history import HistoryWriter, read_history

SMALL = ["data.image_size=32", "data.train_per_class=24", "data.val_per_class=8", "train.batch_size=16",
         "model.filters=[8, 16]", "model.dense_units=16", "train.epochs=2", "train.seeds=[0]"]


def row(epoch):
    return {"arm": "a", "seed": 0, "epoch": epoch, "loss": 0.5, "accuracy": 0.5, "val_loss": 0.5,
            "val_accuracy": 0.5, "epoch_seconds": 1.0}


def test_a_failed_append_leaves_the_earlier_rows_whole(tmp_path, monkeypatch):
    writer = HistoryWriter(tmp_path / "history.csv")
    writer.append(row(1))
    before = writer.path.read_bytes()
    real_write = os.write

    def write_half_then_fail(descriptor, data):
        real_write(descriptor, data[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", write_half_then_fail)
    with pytest.raises(OSError):
        writer.append(row(2))
    monkeypatch.undo()
    assert writer.path.read_bytes() == before
    assert [r["epoch"] for r in read_history(writer.path)] == [1]


def test_a_row_cut_short_by_a_kill_is_not_read(tmp_path):
    writer = HistoryWriter(tmp_path / "history.csv")
    writer.append(row(1))
    with writer.path.open("a") as handle:
        handle.write("a,0,2,0.5,0.")
    assert [r["epoch"] for r in read_history(writer.path)] == [1]


def test_disk_full_during_a_run_stops_it_with_a_clear_error(tmp_path, monkeypatch, capsys):
    real_append, calls = HistoryWriter.append, []

    def append(self, values):
        calls.append(values)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        real_append(self, values)
    monkeypatch.setattr(HistoryWriter, "append", append)
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}"]
    args = ["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + [a for s in sets for a in ("--set", s)]
    assert cli.main(args) == 1
    run_dir = tmp_path / "results" / "demo" / "r"
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "No space left on device" in error
    assert "the 2 epochs in history.csv are intact" in error and f"augcompare run --resume {run_dir}" in error
    assert len(read_history(run_dir / "history.csv")) == 2
    monkeypatch.undo()
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert len(read_history(run_dir / "history.csv")) == 4
