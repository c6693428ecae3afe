"""LSUN, image-folder and .npy sources, on LSUN-shaped databases the tests build themselves."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from augcompare.experiments import config, prepare
from augcompare.experiments.data import load_dataset, open_cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.images import decode, image_format, resize_and_crop
from augcompare.experiments.lsun import start_key, write_database

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
    """bedroom with a val database; church_outdoor without one (val is held out) and 2 corrupt
    values at the seed-0 start key, where a subset begins; tower as a third category."""
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


def references(sources):
    return [resize_and_crop(Image.fromarray(a), SIZE).astype(float) for a in sources.values()]


def closest(image, refs):
    return min(np.abs(image.astype(float) - ref).mean() for ref in refs)


def prepare_lsun(root, out, categories=("bedroom", "church_outdoor"), train=10, val=5, **kwargs):
    kwargs.setdefault("max_skip_fraction", 0.5)  # church_outdoor starts with 2 corrupt values
    return prepare.prepare_source("lsun", root, out, categories, train, val, SIZE, progress=False,
                                  workers=kwargs.pop("workers", 1), **kwargs)


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
        assert closest(image, refs) < 3.0  # JPEG draft decoding differs slightly


def test_val_comes_from_the_val_database_or_is_held_out(lsun_root, tmp_path):
    root, sources = lsun_root
    out = prepare_lsun(root, tmp_path / "c")
    dataset = open_cache(out)
    val_refs = references(sources["bedroom_val"])
    assert all(closest(image, val_refs) < 3.0 for image in dataset.val_images[dataset.val_labels == 0])
    meta = json.loads((out / "meta.json").read_text())
    assert any(v.endswith("bedroom_val_lmdb") for v in meta["val_from"])
    assert any("church_outdoor_train_lmdb (held out)" in v for v in meta["val_from"])
    # held out: no church image is both in train and val
    train = {img.tobytes() for img in dataset.train_images[dataset.train_labels == 1]}
    assert not train & {img.tobytes() for img in dataset.val_images[dataset.val_labels == 1]}


def test_corrupt_values_are_skipped_and_counted(lsun_root, tmp_path):
    root, _ = lsun_root
    out = prepare_lsun(root, tmp_path / "c", ("church_outdoor", "tower"), train=12, val=5, max_skip_fraction=0.5)
    meta = json.loads((out / "meta.json").read_text())
    assert sum(meta["skipped"].values()) == 2
    assert meta["train_count"] == 24 and meta["val_count"] == 10
    with pytest.raises(UserError, match="could not be decoded.*max_skip_fraction"):
        prepare_lsun(root, tmp_path / "d", ("church_outdoor", "tower"), train=12, val=5, max_skip_fraction=0.0)


def test_workers_in_processes_give_the_same_cache(lsun_root, tmp_path):
    root, _ = lsun_root
    one = open_cache(prepare_lsun(root, tmp_path / "one"))
    two = open_cache(prepare_lsun(root, tmp_path / "two", workers=2))
    assert np.array_equal(one.train_images, two.train_images) and np.array_equal(one.val_labels, two.val_labels)


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
        prepare_lsun(root, tmp_path / "c", train=11)


def test_an_interrupted_prepare_leaves_nothing_that_looks_complete(lsun_root, tmp_path, monkeypatch):
    root, _ = lsun_root

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare.np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_lsun(root, tmp_path / "c")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case,message", [
    ("missing root", "LSUN root .* does not exist"),
    ("unknown category", "category 'kitchen' not found: .* categories found in .*: bedroom, church_outdoor, tower"),
    ("too few", r"holds 20 images; asked for 26 \(25 train \+ 1 val\)"),
    ("no data.mdb", "data.mdb is missing"),
    ("corrupt data.mdb", "cannot be read as LMDB"),
])
def test_bad_lsun_input_is_a_one_line_error(lsun_root, tmp_path, case, message):
    root, _ = lsun_root
    categories = ("bedroom",)
    if case == "missing root":
        root = tmp_path / "nowhere"
    elif case == "unknown category":
        categories = ("kitchen",)
    elif case == "too few":
        categories = ("tower",)
    else:
        broken = tmp_path / "broken"
        (broken / "bedroom_train_lmdb").mkdir(parents=True)
        if case == "corrupt data.mdb":
            (broken / "bedroom_train_lmdb" / "data.mdb").write_bytes(b"not an lmdb" * 100)
        root = broken
    with pytest.raises(UserError, match=message) as error:
        prepare_lsun(root, tmp_path / "c", categories, train=25 if case == "too few" else 5, val=1)
    assert "\n" not in str(error.value)


def test_format_comes_from_magic_bytes():
    array = scene(np.random.default_rng(1), (0, 0, 0), 30, 20)
    assert image_format(encode(array, "WEBP")) == "WEBP" and image_format(encode(array, "JPEG")) == "JPEG"
    assert decode(encode(array, "PNG"), 8).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="unknown image format"):
        decode(b"hello world", 8)


def test_experiment_with_lsun_source_prepares_and_trains_from_the_cache(lsun_root, tmp_path):
    root, _ = lsun_root
    experiment = config.load(config.EXPERIMENTS_DIR / "lsun_bedroom_vs_church.toml", [
        f"data.root={root}", f"data.cache_dir={tmp_path}", "data.train_per_class=10", "data.val_per_class=5",
        f"data.image_size={SIZE}", "data.workers=1", "data.max_skip_fraction=0.5"])
    dataset = load_dataset(experiment.data)
    assert dataset.class_names == ("bedroom", "church_outdoor") and dataset.path.parent == tmp_path
    assert load_dataset(experiment.data).path == dataset.path  # reused
    assert config.load(config.EXPERIMENTS_DIR / "lsun10.toml", [f"data.root={root}"]).data.categories[9] == "tower"


def write_folder(root, classes, count, suffix=".png"):
    rng = np.random.default_rng(3)
    for name, tint in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(scene(rng, tint, 24, 30)).save(root / name / f"{i:03d}{suffix}")


def test_folder_source_with_a_seeded_stratified_split(tmp_path):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 12)
    out = prepare.prepare_source("folder", tmp_path / "images", tmp_path / "c", (), 8, 3, SIZE,
                                 workers=1, progress=False)
    dataset = open_cache(out)
    assert dataset.class_names == ("cat", "dog")
    assert np.bincount(dataset.train_labels).tolist() == [8, 8] and np.bincount(dataset.val_labels).tolist() == [3, 3]
    train = {img.tobytes() for img in dataset.train_images}
    assert not train & {img.tobytes() for img in dataset.val_images}


def test_folder_source_with_train_and_val_folders(tmp_path):
    write_folder(tmp_path / "images" / "train", {"a": (60, 0, 0), "b": (0, 60, 0)}, 5, ".jpg")
    write_folder(tmp_path / "images" / "val", {"a": (60, 0, 0), "b": (0, 60, 0)}, 2, ".webp")
    dataset = open_cache(prepare.prepare_source("folder", tmp_path / "images", tmp_path / "c", (), 5, 2, SIZE,
                                                workers=1, progress=False))
    assert len(dataset.train_labels) == 10 and len(dataset.val_labels) == 4


def test_folder_errors(tmp_path):
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 4)
    (tmp_path / "images" / "empty").mkdir()
    with pytest.raises(UserError, match="empty has no images"):
        prepare.prepare_source("folder", tmp_path / "images", tmp_path / "c", (), 2, 1, SIZE, workers=1, progress=False)
    (tmp_path / "images" / "empty").rmdir()
    with pytest.raises(UserError, match=r"cat has 4 images; asked for 5 train \+ 1 val"):
        prepare.prepare_source("folder", tmp_path / "images", tmp_path / "c", (), 5, 1, SIZE, workers=1, progress=False)


def test_npy_source_reads_the_original_layout(tmp_path):
    rng = np.random.default_rng(4)
    labels = {}
    for i in range(12):
        name = f"id-{i}.npy"
        np.save(tmp_path / name, scene(rng, (60, 0, 0) if i % 2 else (0, 0, 60), 20, 20))
        labels[name] = "red" if i % 2 else "blue"
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    dataset = open_cache(prepare.prepare_source("npy", tmp_path, tmp_path / "out" / "c", (), 4, 2, SIZE,
                                                workers=1, progress=False))
    assert dataset.class_names == ("blue", "red") and len(dataset.train_labels) == 8
    red = dataset.train_images[dataset.train_labels == 1]
    assert red[..., 0].mean() > red[..., 2].mean() + 30
    labels["ghost.npy"] = "red"
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(UserError, match="names 1 missing file"):
        prepare.prepare_source("npy", tmp_path, tmp_path / "out" / "d", (), 4, 2, SIZE, workers=1, progress=False)


def test_prepare_command_writes_and_reuses_a_cache(tmp_path, capsys):
    from augcompare.experiments import cli
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 6)
    args = ["prepare", "folder", "--root", str(tmp_path / "images"), "--out", str(tmp_path / "c"),
            "--train-per-class", "4", "--val-per-class", "2", "--image-size", "8", "--workers", "1"]
    assert cli.main(args) == 0 and cli.main(args) == 0
    assert open_cache(tmp_path / "c").train_images.shape == (8, 8, 8, 3)
    assert cli.main(["prepare", "lsun", "--root", str(tmp_path / "none"), "--categories", "bedroom",
                     "--out", str(tmp_path / "d")]) == 2
    assert "LSUN root" in capsys.readouterr().err
