"""Bad input and faults: a one-line error that names the problem and the fix, and nothing that
was trained is lost. The README's "When something goes wrong" table points here."""

import errno
import json
import os

import numpy as np
import pytest
from conftest import SMALL, overrides
from test_prepare import prepared, scene, write_folder

from augcompare.experiments import cli, config, planning
from augcompare.experiments.cache import open_cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.history import HistoryWriter, read_history


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
    args = ["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + overrides(*sets)
    assert cli.main(args) == 1
    run_dir = tmp_path / "results" / "demo" / "r"
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "No space left on device" in error
    assert "the 2 finished epochs are intact" in error and f"augcompare run --resume {run_dir}" in error
    assert len(read_history(run_dir / "history.csv")) == 2  # the first job, merged
    monkeypatch.undo()
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert len(read_history(run_dir / "history.csv")) == 4


# Bad data: a one-line error naming the problem and the fix, or a warning where the data is usable.

def test_a_class_with_one_image_cannot_be_split(tmp_path):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0)}, 1)
    write_folder(tmp_path / "more", {"dog": (0, 60, 0)}, 4)
    (tmp_path / "more" / "dog").rename(tmp_path / "images" / "dog")
    with pytest.raises(UserError, match=r"cat has 1 images; asked for 1 train \+ 1 val \+ 1 test"):
        prepared(tmp_path / "c", "folder", tmp_path / "images", train_per_class=1, val_per_class=1, test_per_class=1)


def write_npy_folder(root, extra):
    rng = np.random.default_rng(0)
    labels = {}
    for i in range(16):
        np.save(root / f"id-{i}.npy", scene(rng, (60, 0, 0) if i % 2 else (0, 0, 60), 20, 20))
        labels[f"id-{i}.npy"] = "red" if i % 2 else "blue"
    for name, array in extra.items():
        np.save(root / name, array, allow_pickle=True)
        labels[name] = "red"
    (root / "labels.json").write_text(json.dumps(labels))


def test_npy_files_of_the_wrong_shape_or_dtype_are_skipped_and_never_unpickled(tmp_path):
    write_npy_folder(tmp_path, {"flat.npy": np.zeros(5), "words.npy": np.array([["a"]]),
                                "pickled.npy": np.array([{"x": 1}], dtype=object)})
    (tmp_path / "cut.npy").write_bytes((tmp_path / "id-0.npy").read_bytes()[:100])  # a copy cut short
    labels = json.loads((tmp_path / "labels.json").read_text())
    (tmp_path / "labels.json").write_text(json.dumps({**labels, "cut.npy": "red"}))
    with pytest.raises(UserError, match="could not be decoded.*max_skip_fraction"):
        prepared(tmp_path / "out" / "c", "npy", tmp_path, train_per_class=4, val_per_class=2, test_per_class=1,
                 max_skip_fraction=0.0)
    out = prepared(tmp_path / "out" / "d", "npy", tmp_path, train_per_class=5, val_per_class=2, test_per_class=1,
                   max_skip_fraction=0.9, seed=2)  # a seed whose order tries every bad file
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"] == {"shape (5,) is not an image [H, W, C] or [H, W]": 1, "dtype <U1 is not real numbers": 1,
                               "Object arrays cannot be loaded when allow_pickle=False": 1, "file cut short": 1}
    assert meta["skipped_examples"]["file cut short"] == ["cut.npy"]


def test_labels_that_do_not_match_the_files(tmp_path):
    write_npy_folder(tmp_path, {})
    np.save(tmp_path / "stray.npy", np.zeros((20, 20, 3)))
    with pytest.raises(UserError, match="1 .npy file\\(s\\) have no label, e.g. stray.npy"):
        prepared(tmp_path / "out" / "c", "npy", tmp_path)


def test_images_smaller_than_image_size_are_upsampled_with_a_warning(tmp_path, capsys):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 5)  # 24 x 30 pixels
    out = prepared(tmp_path / "c", "folder", tmp_path / "images", image_size=32, train_per_class=3, val_per_class=1,
                   test_per_class=1)
    assert open_cache(out).train_images.shape == (6, 32, 32, 3)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["upsampled"] == 10 and len(meta["upsampled_examples"]) == 5
    assert all(name.startswith(("cat/", "dog/")) for name in meta["upsampled_examples"])
    assert (f"warning: 10 image(s) had a shorter side below 32 px and were upsampled (e.g. "
            f"{', '.join(meta['upsampled_examples'])})") in capsys.readouterr().err


def test_a_cache_whose_arrays_do_not_match_its_meta_json(tmp_path):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 5)
    out = prepared(tmp_path / "c", "folder", tmp_path / "images", train_per_class=3, val_per_class=1, test_per_class=1)
    np.save(out / "train_images.npy", np.zeros((5, 16, 16, 3), np.uint8))
    with pytest.raises(UserError, match=r"train_images.npy holds uint8 \(5, 16, 16, 3\) but meta.json says 6"):
        open_cache(out)


def test_an_output_folder_that_cannot_be_written_fails_before_any_data_is_read(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(planning, "load_dataset", lambda data, check=None: pytest.fail("data was read before the check"))
    assert cli.main(["run", "--out", str(tmp_path / "file" / "results")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("augcompare: error: cannot create") and "choose another --out" in error


def test_a_missing_data_root_is_an_error_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="data.root .*nowhere does not exist"):
        config.load(overrides=["data.source=folder", f"data.root={tmp_path / 'nowhere'}"])
