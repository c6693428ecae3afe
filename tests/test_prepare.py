"""Preparation: LSUN, image-folder and .npy sources to a cache, on data the tests make themselves:
splits, kinds, fidelity, resuming, two processes at once, and damaged input."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import command_line
from PIL import Image

from augcompare.experiments import cache, cli, config, console, prepare
from augcompare.experiments.cache import open_cache
from augcompare.experiments.config import DataConfig
from augcompare.experiments.data import load_dataset
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import DirectoryLock
from augcompare.experiments.images import decode, image_format, open_database, resize_and_crop
from augcompare.experiments.lsun_release import keys_from, start_key, write_database

SIZE = 16


def scene(rng, tint, width, height):
    """A smooth image with a class tint, so a resized crop can be matched to its source."""
    y, x = np.mgrid[0:height, 0:width]
    base = 60 + 40 * np.sin(x / rng.uniform(5, 15)) + 40 * np.cos(y / rng.uniform(5, 15))
    image = np.stack([base + t for t in tint], axis=-1)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(array, kind, mode="RGB"):
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"lossless": True} if kind == "WEBP" else {"quality": 95}))
    return buffer.getvalue()


def hex_key(rng):
    return "".join(rng.choice(list("0123456789abcdef"), 40))


def make_database(path, rng, count, tint, corrupt=()):
    """count images: WebP and JPEG, non-square, one grayscale and one CMYK, plus corrupt values.
    Returns {key: source array} of the decodable ones."""
    items, sources = {}, {}
    for i in range(count):
        width, height = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        array = scene(rng, tint, width, height)
        mode = "L" if i == 0 else "CMYK" if i == 1 else "RGB"
        kind = "JPEG" if i % 2 else "WEBP"
        key = hex_key(rng)
        items[key] = encode(array, kind, mode)
        sources[key] = np.asarray(Image.open(io.BytesIO(items[key])).convert("RGB"))
    for key in corrupt:
        items[key] = b"RIFF\x00\x00\x00\x00WEBPVP8 garbage"
    write_database(path, items)
    return sources


START = start_key(0).decode()
CORRUPT = (START, START[:-2] + "ff")  # the first keys at or after the start key
TINTS = {"bedroom": (80, 0, 0), "church_outdoor": (0, 0, 80), "tower": (0, 80, 0)}


@pytest.fixture(scope="module")
def lsun_root(tmp_path_factory):
    """bedroom with a val database; church_outdoor without one (test and val are held out) and 2
    corrupt values at the seed-0 start key, where a subset begins; tower as a third category."""
    root = tmp_path_factory.mktemp("lsun")
    rng = np.random.default_rng(0)
    sources = {
        "bedroom_train": make_database(root / "bedroom_train_lmdb", rng, 30, TINTS["bedroom"]),
        "bedroom_val": make_database(root / "bedroom_val_lmdb", rng, 6, (80, 80, 0)),
        "church_outdoor_train": make_database(root / "church_outdoor_train_lmdb", rng, 40,
                                              TINTS["church_outdoor"], corrupt=CORRUPT),
        "tower_train": make_database(root / "tower_train_lmdb", rng, 20, TINTS["tower"]),
    }
    for path in root.glob("*_lmdb/lock.mdb"):
        path.unlink()  # released without lock files, like a read-only copy
    return root, sources


def small(source, root, **changes):
    """The DataConfig of a small preparation: SIZE pixels, one worker, 10 / 5 / 4 images per class."""
    settings = {"source": source, "root": str(root), "image_size": SIZE, "workers": 1, "train_per_class": 10,
                "val_per_class": 5, "test_per_class": 4, **changes}
    return DataConfig(**settings)


def prepared(out, source, root, **changes):
    return prepare.prepare_source(small(source, root, **changes), out, progress=False)


def prepare_lsun(root, out, categories=("bedroom", "church_outdoor"), **changes):
    changes.setdefault("max_skip_fraction", 0.5)  # church_outdoor starts with 2 corrupt values
    return prepared(out, "lsun", root, categories=tuple(categories), **changes)


def references(sources):
    return [resize_and_crop(Image.fromarray(a), SIZE).astype(float) for a in sources.values()]


def closest(image, refs):
    return min(np.abs(image.astype(float) - ref).mean() for ref in refs)


def image_set(images):
    return {image.tobytes() for image in images}


def same_cache(a, b):
    """Two caches hold the same arrays and meta.json, timings aside."""
    one, two = open_cache(a), open_cache(b)
    for split in cache.SPLITS:
        assert np.array_equal(one.split(split)[0], two.split(split)[0])
        assert np.array_equal(one.split(split)[1], two.split(split)[1])
    untimed = [{k: v for k, v in d.meta.items() if k != "decode_seconds"} for d in (one, two)]
    assert untimed[0] == untimed[1]


def cli_command(*args):
    return [sys.executable, "-m", "augcompare.experiments.cli", *args]


def one_error_line(stderr):
    """The error of a failed command: its last line, which must be its only error line."""
    lines = stderr.strip().splitlines()
    assert sum(line.startswith("augcompare: error:") for line in lines) == 1 and "Traceback" not in stderr
    assert lines[-1].startswith("augcompare: error:")
    return lines[-1]


# LSUN

def test_labels_follow_the_requested_category_order(lsun_root, tmp_path):
    root, sources = lsun_root
    dataset = open_cache(prepare_lsun(root, tmp_path / "c", ("church_outdoor", "bedroom")))
    assert dataset.class_names == ("church_outdoor", "bedroom")
    assert np.bincount(dataset.train_labels).tolist() == [10, 10]
    church = dataset.train_images[dataset.train_labels == 0]
    assert church[..., 2].mean() > church[..., 0].mean() + 40  # blue tint: church_outdoor


def test_images_equal_a_reference_resize_and_centre_crop(lsun_root, tmp_path):
    root, sources = lsun_root
    dataset = open_cache(prepare_lsun(root, tmp_path / "c"))
    assert dataset.train_images.dtype == np.uint8 and dataset.train_images.shape == (20, SIZE, SIZE, 3)
    refs = references(sources["bedroom_train"])
    for image in dataset.train_images[dataset.train_labels == 0]:
        assert closest(image, refs) < 3.0  # JPEG at quality 95 differs slightly


def decoded_keys(database, count, skip=0):
    """The images of the first count keys from the seed-0 start key, after `skip` of them."""
    with open_database(database).begin() as txn:
        return [decode(txn.get(key), SIZE) for key in keys_from(database, 0, skip + count)[skip:]]


def test_lsun_test_comes_from_the_val_database_and_val_is_held_out(lsun_root, tmp_path):
    root, _ = lsun_root
    out = prepare_lsun(root, tmp_path / "c")
    dataset, bedroom = open_cache(out), 0
    # bedroom: test = the official val set's first keys; val = the train database's first keys, then train
    assert np.array_equal(dataset.test_images[dataset.test_labels == bedroom],
                          decoded_keys(root / "bedroom_val_lmdb", 4))
    assert np.array_equal(dataset.val_images[dataset.val_labels == bedroom],
                          decoded_keys(root / "bedroom_train_lmdb", 5))
    spare = 3  # val keeps ceil(5 x max_skip_fraction 0.5) keys for images that fail to decode
    assert np.array_equal(dataset.train_images[dataset.train_labels == bedroom],
                          decoded_keys(root / "bedroom_train_lmdb", 10, skip=5 + spare))
    # church_outdoor has no val database: test, val and train are held out in that order, disjoint
    church = [image_set(dataset.split(s)[0][dataset.split(s)[1] == 1]) for s in cache.SPLITS]
    assert [len(s) for s in church] == [10, 5, 4]
    assert not (church[0] & church[1]) and not (church[0] & church[2]) and not (church[1] & church[2])
    split_from = json.loads((out / "meta.json").read_text())["split_from"]
    assert split_from["test"]["bedroom"].endswith("bedroom_val_lmdb (the official val set)")
    assert split_from["val"]["bedroom"].endswith("bedroom_train_lmdb (held out)")
    assert split_from["test"]["church_outdoor"].endswith("church_outdoor_train_lmdb (held out)")
    assert split_from["train"]["church_outdoor"].endswith("church_outdoor_train_lmdb")


def test_corrupt_values_are_skipped_counted_and_named(lsun_root, tmp_path, capsys):
    root, _ = lsun_root
    out = prepare_lsun(root, tmp_path / "c", ("church_outdoor", "tower"), train_per_class=11, max_skip_fraction=0.5)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"] == {"undecodable WEBP": 2} and meta["counts"] == {"train": 22, "val": 10, "test": 8}
    assert meta["skipped_examples"] == {"undecodable WEBP": [f"church_outdoor_train_lmdb/{key}" for key in CORRUPT]}
    assert f"skipped 2 image(s): undecodable WEBP (e.g. church_outdoor_train_lmdb/{CORRUPT[0]}" in capsys.readouterr().err
    with pytest.raises(UserError, match="could not be decoded.*max_skip_fraction"):
        prepare_lsun(root, tmp_path / "d", ("church_outdoor", "tower"), train_per_class=11, max_skip_fraction=0.0)


def test_workers_in_processes_give_the_same_cache(lsun_root, tmp_path):
    root, _ = lsun_root
    same_cache(prepare_lsun(root, tmp_path / "one"), prepare_lsun(root, tmp_path / "two", workers=2))


def test_the_root_is_only_read(lsun_root, tmp_path):
    root, _ = lsun_root
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    prepare_lsun(root, tmp_path / "c")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # no lock.mdb, nothing written


def test_same_arguments_reuse_the_cache_and_others_are_refused(lsun_root, tmp_path, monkeypatch):
    root, _ = lsun_root
    out = prepare_lsun(root, tmp_path / "c")
    monkeypatch.setattr(prepare, "decode_groups", lambda *a, **k: pytest.fail("decoded again"))
    assert prepare_lsun(root, tmp_path / "c") == out
    with pytest.raises(UserError, match="prepared with other settings"):
        prepare_lsun(root, tmp_path / "c", train_per_class=11)


@pytest.mark.parametrize("case,message", [
    ("missing root", "LSUN root .* does not exist"),
    ("unknown category", "category 'kitchen' not found: .* categories found in .*: bedroom, church_outdoor, tower"),
    ("too few", r"holds 20 images; asked for 30 \(25 train \+ 1 val \+ 4 test\)"),
    ("test beyond the val set", r"bedroom_val_lmdb holds 6 images; asked for test_per_class = 7"),
    ("no data.mdb", "data.mdb is missing"),
    ("corrupt data.mdb", "cannot be read as LMDB"),
])
def test_bad_lsun_input_is_a_one_line_error(lsun_root, tmp_path, case, message):
    root, _ = lsun_root
    categories, changes = ("bedroom",), {"train_per_class": 5, "val_per_class": 1}
    if case == "missing root":
        root = tmp_path / "nowhere"
    elif case == "unknown category":
        categories = ("kitchen",)
    elif case == "too few":
        categories, changes["train_per_class"] = ("tower",), 25
    elif case == "test beyond the val set":
        changes["test_per_class"] = 7
    elif case in ("no data.mdb", "corrupt data.mdb"):
        broken = tmp_path / "broken"
        (broken / "bedroom_train_lmdb").mkdir(parents=True)
        if case == "corrupt data.mdb":
            (broken / "bedroom_train_lmdb" / "data.mdb").write_bytes(b"not an lmdb" * 100)
        root = broken
    with pytest.raises(UserError, match=message) as error:
        prepare_lsun(root, tmp_path / "c", categories, **changes)
    assert "\n" not in str(error.value)


def test_a_truncated_lsun_database_is_an_error_not_a_crash(lsun_root, tmp_path):
    """An interrupted unzip leaves data.mdb cut short: reading a value past its end would kill the
    process with SIGBUS (exit 135). Run as a command, so that a crash could not take pytest along."""
    root, _ = lsun_root
    copy = tmp_path / "lsun" / "bedroom_train_lmdb"
    copy.mkdir(parents=True)
    data = (root / "bedroom_train_lmdb" / "data.mdb").read_bytes()
    (copy / "data.mdb").write_bytes(data[:len(data) // 2])
    result = subprocess.run(cli_command("prepare", "lsun", "--root", str(tmp_path / "lsun"), "--categories", "bedroom",
                                        "--train-per-class", "5", "--val-per-class", "1", "--test-per-class", "1",
                                        "--image-size", "8", "--out", str(tmp_path / "c")),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    error = one_error_line(result.stderr)
    assert f"{copy}/data.mdb is cut short" in error and "unzip bedroom_train_lmdb.zip again" in error
    assert not (tmp_path / "c").exists()


def process_children(pid):
    """The ids of the processes whose parent is pid."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


def test_a_worker_that_dies_is_an_error_naming_the_database(tmp_path):
    """A decoding process killed (as the out-of-memory killer does) ends preparation with an error
    naming the database, instead of hanging."""
    rng = np.random.default_rng(0)
    value = encode(scene(rng, (0, 0, 0), 160, 160), "WEBP")
    for category in ("bedroom", "tower"):
        write_database(tmp_path / "lsun" / f"{category}_train_lmdb", {hex_key(rng): value for _ in range(1500)})
    command = subprocess.Popen(cli_command(
        "prepare", "lsun", "--root", str(tmp_path / "lsun"), "--categories", "bedroom,tower", "--workers", "2",
        "--train-per-class", "1400", "--val-per-class", "10", "--test-per-class", "10", "--image-size", "32",
        "--out", str(tmp_path / "c")), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (workers := process_children(command.pid)) and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = command.communicate(timeout=60)
    assert command.returncode == 2, stderr
    error = one_error_line(stderr)
    assert "a decoding process died while decoding" in error and "_train_lmdb" in error
    assert not (tmp_path / "c").exists()


def test_format_comes_from_magic_bytes():
    array = scene(np.random.default_rng(1), (0, 0, 0), 30, 20)
    assert image_format(encode(array, "WEBP")) == "WEBP" and image_format(encode(array, "JPEG")) == "JPEG"
    assert decode(encode(array, "PNG"), 8).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="unknown image format"):
        decode(b"hello world", 8)


def textured_photograph(rng, size=512):
    """Fine texture over the whole frame (sinusoids up to 1.5 rad/pixel and sensor noise), the
    content that a JPEG decoder's own reduction straight to a small size changes most."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    image = np.full((size, size, 3), 128.0)
    for channel in range(3):
        for _ in range(8):
            frequency, angle = rng.uniform(0.05, 1.5), rng.uniform(0, np.pi)
            image[..., channel] += rng.uniform(8, 25) * np.sin(
                frequency * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 6))
    image += rng.normal(0, 20, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_jpeg_and_webp_copies_of_a_photograph_give_the_same_cache(tmp_path):
    photograph = textured_photograph(np.random.default_rng(0))
    for kind, suffix in (("JPEG", "jpg"), ("WEBP", "webp")):
        for name in ("a", "b"):
            (tmp_path / kind / name).mkdir(parents=True)
            for i in range(3):
                (tmp_path / kind / name / f"{i}.{suffix}").write_bytes(encode(photograph, kind))
    jpeg, webp = (open_cache(prepared(tmp_path / f"{kind}.cache", "folder", tmp_path / kind, image_size=64,
                                      train_per_class=1, val_per_class=1, test_per_class=1)).train_images[0]
                  for kind in ("JPEG", "WEBP"))
    difference = np.abs(jpeg.astype(float) - webp.astype(float)).mean()
    assert difference < 3.0
    # The test can fail: the draft decoding straight down to 64 px differs much more.
    straight = Image.open(io.BytesIO(encode(photograph, "JPEG")))
    straight.draft("RGB", (64, 64))
    assert straight.size == (64, 64)
    assert np.abs(resize_and_crop(straight.convert("RGB"), 64).astype(float) - webp).mean() > 2 * difference


# Interruptions and concurrency

def test_an_interrupted_preparation_continues_to_the_same_cache(lsun_root, tmp_path, monkeypatch, capsys):
    """Ctrl-C in this process, then SIGKILL of a command: each time, the next run continues from the
    progress record and ends with the uninterrupted run's cache."""
    root, _ = lsun_root
    uninterrupted = prepare_lsun(root, tmp_path / "whole")
    out = tmp_path / "c"
    real_write, writes = cache.ImageFile.write, []

    def interrupted_write(self, index, image):
        writes.append(index)
        if len(writes) == 13:
            raise KeyboardInterrupt
        real_write(self, index, image)
    monkeypatch.setattr(cache.ImageFile, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_lsun(root, out)
    monkeypatch.undo()
    staging = tmp_path / ".c.preparing"
    assert not out.exists() and (staging / "progress.json").is_file()
    capsys.readouterr()
    same_cache(uninterrupted, prepare_lsun(root, out, workers=2))
    assert "continuing the preparation" in capsys.readouterr().err and not staging.exists()

    killed = tmp_path / "k"
    script = f"""
import os, signal
from augcompare.experiments import cache, prepare
from augcompare.experiments.config import DataConfig
prepare.RECORD_SECONDS = 0  # a record after every chunk: the kill comes between two
real_write, writes = cache.ImageFile.write, []
def write(self, index, image):
    writes.append(index)
    if len(writes) == 21:
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(self, index, image)
cache.ImageFile.write = write
prepare.prepare_source(DataConfig(**{small('lsun', root, categories=('bedroom', 'church_outdoor'),
                                           max_skip_fraction=0.5, workers=2).__dict__!r}), {str(killed)!r},
                       progress=False)
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == -signal.SIGKILL
    assert not killed.exists()
    # Its decoding workers died with it, and the lock they were forked under went with them.
    time.sleep(0.5)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and command_line(pid).endswith(script.encode())]
    DirectoryLock(tmp_path / ".k.lock", "the test").acquire().release()
    same_cache(uninterrupted, prepare_lsun(root, killed))
    progress = capsys.readouterr().err
    assert "continuing the preparation" in progress and "20 of 38 images are already prepared" in progress


def test_two_processes_preparing_one_cache(tmp_path):
    """The second process waits for the first (one line naming it), then uses its cache; neither
    fails or leaves a partial directory. The first waits for a file before it prepares, so that the
    second surely finds it at work."""
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 12)
    arguments = ["prepare", "folder", "--root", str(tmp_path / "images"), "--out", str(tmp_path / "c"),
                 "--train-per-class", "6", "--val-per-class", "2", "--test-per-class", "2", "--image-size", "8"]
    go = tmp_path / "go"
    first_script = f"""
import os, sys, time
from augcompare.experiments import cli, prepare
real_prepare = prepare._prepare
def prepare_when_told(*args):
    while not os.path.exists({str(go)!r}):
        time.sleep(0.01)
    return real_prepare(*args)
prepare._prepare = prepare_when_told
sys.exit(cli.main({arguments!r}))
"""
    first = subprocess.Popen([sys.executable, "-c", first_script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock, second_log = tmp_path / ".c.lock", tmp_path / "second.log"
    deadline = time.monotonic() + 30
    try:
        while f'"pid": {first.pid}' not in (lock.read_text() if lock.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(second_log, "w") as log:
            second = subprocess.Popen(cli_command(*arguments), stdout=subprocess.PIPE, stderr=log, text=True)
        while "waiting" not in second_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        go.touch()  # the first one goes on whatever happened, so that no process is left waiting
    first_out, first_err = first.communicate(timeout=60)
    second_out, _ = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, first_err + second_log.read_text()
    waiting = second_log.read_text()
    assert waiting == f"augcompare: waiting for process {first.pid} on {socket.gethostname()} " \
                      f"(preparing {tmp_path / 'c'}) to finish\n"
    assert "prepared data set in" in first_out and "prepared data set in" in second_out
    assert "images/s" in first_err
    assert open_cache(tmp_path / "c").train_images.shape == (12, 8, 8, 3)
    assert sorted(os.listdir(tmp_path)) == [".c.lock", "c", "go", "images", "second.log"]


# Damaged caches

@pytest.mark.parametrize("damage,message", [
    ("meta.json is garbage", r"meta.json is not valid JSON"),
    ("images cut short", r"train_images.npy is cut short \(\d[\d,]* of [\d,]+ bytes\)"),
    ("garbage appended", r"val_images.npy has 7 bytes after its data"),
    ("labels of another length", r"test_labels.npy holds int64 \(3,\), not one int64 label per image"),
])
def test_a_damaged_cache_is_a_one_line_error_and_is_left_as_it_is(tmp_path, capsys, damage, message):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 8)
    arguments = ["prepare", "folder", "--root", str(tmp_path / "images"), "--out", str(tmp_path / "c"),
                 "--train-per-class", "4", "--val-per-class", "2", "--test-per-class", "2", "--image-size", "8",
                 "--workers", "1"]
    assert cli.main(arguments) == 0
    out = tmp_path / "c"
    if damage == "meta.json is garbage":
        (out / "meta.json").write_bytes(b"\x00\x13{garbage")
    elif damage == "images cut short":
        os.truncate(out / "train_images.npy", os.path.getsize(out / "train_images.npy") - 100)
    elif damage == "garbage appended":
        with open(out / "val_images.npy", "ab") as handle:
            handle.write(b"garbage")
    else:
        np.save(out / "test_labels.npy", np.zeros(3, np.int64))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert cli.main(arguments) == 2
    error = one_error_line(capsys.readouterr().err)
    assert re.search(message, error), error
    assert str(out) in error and "delete the directory and prepare it again" in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing deleted or rewritten


def test_experiment_with_lsun_source_prepares_and_trains_from_the_cache(lsun_root, tmp_path):
    root, _ = lsun_root
    experiment = config.load(config.EXPERIMENTS_DIR / "lsun_bedroom_vs_church.toml", [
        f"data.root={root}", f"data.cache_dir={tmp_path}", "data.train_per_class=10", "data.val_per_class=5",
        "data.test_per_class=3", f"data.image_size={SIZE}", "data.workers=1", "data.max_skip_fraction=0.5"])
    dataset = load_dataset(experiment.data)
    assert dataset.class_names == ("bedroom", "church_outdoor") and dataset.path.parent == tmp_path
    assert np.bincount(dataset.test_labels).tolist() == [3, 3]
    assert load_dataset(experiment.data).path == dataset.path  # reused
    assert config.load(config.EXPERIMENTS_DIR / "lsun10.toml", [f"data.root={root}"]).data.categories[9] == "tower"


# Folders

def write_folder(root, classes, count, suffix=".png", seed=3):
    rng = np.random.default_rng(seed)
    for name, tint in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(scene(rng, tint, 24, 30)).save(root / name / f"{i:03d}{suffix}")


def decoded_folder(directory):
    return image_set(decode(p.read_bytes(), SIZE) for p in directory.iterdir())


@pytest.mark.parametrize("folders", [(), ("train",), ("train", "val"), ("train", "val", "test")])
def test_folder_splits_come_from_their_folders_or_are_held_out(tmp_path, folders):
    classes = {"cat": (60, 0, 0), "dog": (0, 60, 0)}
    for seed, split in enumerate(folders or ("",)):
        write_folder(tmp_path / "images" / split, classes, 20 if split in ("train", "") else 6, seed=seed)
    out = prepared(tmp_path / "c", "folder", tmp_path / "images")
    dataset, split_from = open_cache(out), json.loads((out / "meta.json").read_text())["split_from"]
    assert dataset.class_names == ("cat", "dog")
    for split, per_class in (("train", 10), ("val", 5), ("test", 4)):
        images, labels = dataset.split(split)
        assert np.bincount(labels).tolist() == [per_class, per_class]
        for label, name in enumerate(classes):
            given = split in folders or (split == "train" and not folders)
            source = tmp_path / "images" / (split if split in folders else "train" if folders else "") / name
            assert split_from[split][name] == str(source) + ("" if given else " (held out, seeded)")
            assert image_set(images[labels == label]) <= decoded_folder(source)
    held = [image_set(dataset.split(split)[0]) for split in cache.SPLITS]
    assert not (held[0] & held[1]) and not (held[0] & held[2]) and not (held[1] & held[2])


def test_folder_errors(tmp_path):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 4)
    (tmp_path / "images" / "empty").mkdir()
    with pytest.raises(UserError, match="empty has no images"):
        prepared(tmp_path / "c", "folder", tmp_path / "images", train_per_class=2, val_per_class=1, test_per_class=1)
    (tmp_path / "images" / "empty").rmdir()
    with pytest.raises(UserError, match=r"cat has 4 images; asked for 5 train \+ 1 val \+ 1 test"):
        prepared(tmp_path / "c", "folder", tmp_path / "images", train_per_class=5, val_per_class=1, test_per_class=1)
    write_folder(tmp_path / "split" / "val", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 4)
    with pytest.raises(UserError, match="has val/ but no train/"):
        prepared(tmp_path / "c", "folder", tmp_path / "split", train_per_class=2, val_per_class=1, test_per_class=1)
    write_folder(tmp_path / "split" / "train", {"cat": (60, 0, 0), "dog": (0, 60, 0), "eel": (0, 0, 60)}, 4)
    with pytest.raises(UserError, match="val/eel is missing"):
        prepared(tmp_path / "c", "folder", tmp_path / "split", train_per_class=2, val_per_class=1, test_per_class=1)


# .npy samples

def write_npy_samples(root, arrays):
    """Each array as root/<i>.npy, labelled a and b in turn; returns {file name: array}."""
    root.mkdir(parents=True, exist_ok=True)
    files = {f"{i:03d}.npy": array for i, array in enumerate(arrays)}
    for name, array in files.items():
        np.save(root / name, array)
    (root / "labels.json").write_text(json.dumps({name: "ab"[i % 2] for i, name in enumerate(files)}))
    return files


VALUE_SAMPLES = {  # name: (draw one sample from rng, what the cache holds of it)
    "float32 -1/+1 lattice": (lambda rng: rng.choice(np.array([-1, 1], np.float32), (32, 32, 1)), None),
    "float32 continuous, 1 channel": (lambda rng: rng.normal(0, 1e-3, (32, 32, 1)).astype(np.float32), None),
    "float32 continuous, 3 channels": (lambda rng: rng.normal(0, 300, (32, 32, 3)).astype(np.float32), None),
    "float64, converted": (lambda rng: rng.normal(0, 1, (32, 32)), "float64"),
    "int16, converted": (lambda rng: rng.integers(-2000, 2000, (32, 32, 2)).astype(np.int16), "int16"),
}


@pytest.mark.parametrize("name", VALUE_SAMPLES)
def test_npy_values_are_kept_bit_for_bit(tmp_path, capsys, name):
    draw, converted = VALUE_SAMPLES[name]
    rng = np.random.default_rng(0)
    files = write_npy_samples(tmp_path / "npy", [draw(rng) for _ in range(40)])
    out = prepared(tmp_path / "c", "npy", tmp_path / "npy", image_size=32)
    dataset, meta = open_cache(out), json.loads((out / "meta.json").read_text())
    expected = {array.astype(np.float32).reshape(32, 32, -1).tobytes() for array in files.values()}
    channels = next(iter(files.values())).reshape(32, 32, -1).shape[2]
    assert dataset.kind == "values" and dataset.train_images.dtype == np.float32
    assert (meta["kind"], meta["channels"], meta["image_shape"]) == ("values", channels, [32, 32, channels])
    every = np.concatenate([dataset.split(split)[0] for split in cache.SPLITS])
    assert len(image_set(every)) == 38 and image_set(every) <= expected  # each image is one file, exactly
    train = dataset.train_images  # the range augmentation clips to comes from training images alone
    assert meta["value_range"] == [float(train.min()), float(train.max())]
    assert meta["converted_to_float32"] == ([converted] if converted else [])
    assert (f"values converted to float32 from {converted}" in capsys.readouterr().err) == bool(converted)


@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 1), (20, 24, 3)])
def test_npy_uint8_pixels_are_resized_and_keep_their_channels(tmp_path, shape):
    rng = np.random.default_rng(0)
    files = write_npy_samples(tmp_path / "npy", [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(40)])
    dataset = open_cache(prepared(tmp_path / "c", "npy", tmp_path / "npy"))
    channels = 1 if len(shape) == 2 else shape[2]
    assert dataset.kind == "pixels" and dataset.train_images.shape == (20, SIZE, SIZE, channels)
    expected = {resize_and_crop(Image.fromarray(a.squeeze(-1) if a.ndim == 3 and channels == 1 else a), SIZE).tobytes()
                for a in files.values()}
    assert image_set(dataset.train_images) <= expected


@pytest.mark.parametrize("arrays,message", [
    ([np.zeros((32, 32, 1), np.uint8), np.zeros((32, 32, 1), np.float32)],
     r"mixes uint8 pixels \(e.g. 000.npy\) and float32 values \(e.g. 001.npy\)"),
    ([np.zeros((32, 32, 1), np.float32), np.zeros((28, 28, 1), np.float32)],
     r"values of shape \(32, 32, 1\) \(e.g. 000.npy\) and \(28, 28, 1\) \(e.g. 001.npy\)"),
    ([np.zeros((32, 32, 1), np.float32)] * 2, r"set data.image_size = 32"),
    ([np.zeros((32, 32, 1), np.uint8), np.zeros((32, 32, 3), np.uint8)],
     r"mixes uint8 pixels with 1 channel\(s\) \(e.g. 000.npy\) and 3 \(e.g. 001.npy\)"),
])
def test_npy_of_mixed_kinds_or_shapes_is_an_error_naming_a_file_of_each(tmp_path, arrays, message):
    write_npy_samples(tmp_path / "npy", arrays * 10)
    with pytest.raises(UserError, match=message) as error:
        prepared(tmp_path / "c", "npy", tmp_path / "npy", train_per_class=1, val_per_class=1, test_per_class=1)
    assert "\n" not in str(error.value)


def test_npy_source_reads_the_original_layout(tmp_path):
    rng = np.random.default_rng(4)
    labels = {}
    for i in range(24):
        name = f"id-{i}.npy"
        np.save(tmp_path / name, scene(rng, (60, 0, 0) if i % 2 else (0, 0, 60), 20, 20))
        labels[name] = "red" if i % 2 else "blue"
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    dataset = open_cache(prepared(tmp_path / "out" / "c", "npy", tmp_path, train_per_class=4, val_per_class=2,
                                  test_per_class=2))
    assert dataset.class_names == ("blue", "red") and len(dataset.train_labels) == 8
    red = dataset.train_images[dataset.train_labels == 1]
    assert red[..., 0].mean() > red[..., 2].mean() + 30
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "labels.json").write_text(json.dumps({**labels, "ghost.npy": "red"}))
    with pytest.raises(UserError, match="names 1 missing file"):
        prepared(tmp_path / "out" / "d", "npy", tmp_path)


# The command

def test_prepare_command_writes_and_reuses_a_cache(tmp_path, capsys):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 9)
    args = ["prepare", "folder", "--root", str(tmp_path / "images"), "--out", str(tmp_path / "c"),
            "--train-per-class", "4", "--val-per-class", "2", "--test-per-class", "3", "--image-size", "8",
            "--workers", "1"]
    assert cli.main(args) == 0 and cli.main(args) == 0
    dataset = open_cache(tmp_path / "c")
    assert dataset.train_images.shape == (8, 8, 8, 3) and len(dataset.test_labels) == 6
    assert dataset.meta["params"]["seed"] == DataConfig().seed  # the default comes from DataConfig
    assert cli.main(["prepare", "lsun", "--root", str(tmp_path / "none"), "--categories", "bedroom",
                     "--out", str(tmp_path / "d")]) == 2
    assert "--root" in capsys.readouterr().err


@pytest.mark.parametrize("option,value,message", [
    ("--train-per-class", "0", "--train-per-class = 0 is out of range; it must be at least 1"),
    ("--test-per-class", "many", "--test-per-class must be an integer"),
    ("--max-skip-fraction", "2", "--max-skip-fraction = 2.0 is out of range; it must be between 0.0 and 1.0"),
    ("--categories", "bedroom,attic", "unknown LSUN category 'attic'"),
])
def test_prepare_options_are_checked_as_data_settings(tmp_path, capsys, option, value, message):
    (tmp_path / "lsun").mkdir()
    assert cli.main(["prepare", "lsun", "--root", str(tmp_path / "lsun"), "--out", str(tmp_path / "c"),
                     "--categories", "bedroom", option, value]) == 2
    assert message in one_error_line(capsys.readouterr().err)


def test_the_status_line_is_ended_before_anything_else_is_printed(capsys):
    console.status("prepared 10/20 images")
    console.status("prepared 2/20")
    console.line("augcompare: warning: something")
    console.end()  # nothing open: no empty line
    console.status("prepared 20/20")
    console.end()
    assert capsys.readouterr().err == ("\rprepared 10/20 images\rprepared 2/20        \n"
                                       "augcompare: warning: something\n\rprepared 20/20\n")
