"""The tfds source: data sets written with TFDS's own machinery
(tfds.dataset_builders.store_as_tfds_dataset) into a temporary data directory, read offline."""

import re
import sys

import numpy as np
import pytest

from augcompare.experiments import config, data
from augcompare.experiments.cache import open_cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.sources import tfds as tfds_source

try:
    import tensorflow_datasets as tfds
except ImportError:  # the tests that need it skip; the one that checks the error without it runs
    tfds = None


def _store(root, name, features, splits, config_name=None):
    import tensorflow as tf
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", features=tfds.features.FeaturesDict(features), data_dir=str(root),
        split_datasets={split: tf.data.Dataset.from_tensor_slices(columns) for split, columns in splits.items()},
        config=tfds.core.BuilderConfig(name=config_name) if config_name else None)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data directory of small data sets; returns (it, {data set: {split: (images, labels)}})."""
    if tfds is None:
        pytest.skip("tensorflow-datasets is not installed")
    root, rng, source = tmp_path_factory.mktemp("tfds"), np.random.default_rng(0), {}
    for name, channels, splits in (("augtiny", 3, {"train": 10, "test": 4}), ("auggray", 1, {"train": 6})):
        columns = {split: {"image": rng.integers(0, 256, (3 * n, 8, 8, channels), dtype=np.uint8),
                           "label": np.arange(3 * n) % 3} for split, n in splits.items()}
        _store(root, name, {"image": tfds.features.Image(shape=(8, 8, channels)),
                            "label": tfds.features.ClassLabel(names=["cat", "dog", "eel"])}, columns)
        source[name] = {split: (c["image"], c["label"]) for split, c in columns.items()}
    for scene in ("bedroom", "church"):  # one class per data set, as TFDS's LSUN categories
        images = rng.integers(0, 256, (20, 12, 16, 3), dtype=np.uint8)
        _store(root, "augscenes", {"image": tfds.features.Image(shape=(12, 16, 3))}, {"train": {"image": images}},
               config_name=scene)
    _store(root, "augnolabel", {"image": tfds.features.Image(shape=(8, 8, 3)), "caption": tfds.features.Text()},
           {"train": {"image": np.zeros((4, 8, 8, 3), np.uint8), "caption": ["a"] * 4}})
    _store(root, "augnoimage", {"x": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                                "label": tfds.features.ClassLabel(names=["a", "b"])},
           {"train": {"x": np.zeros((4, 2), np.float32), "label": np.arange(4) % 2}})
    return root, source


def tfds_config(root, tmp_path, **settings):
    table = {"source": "tfds", "data_dir": str(root), "image_size": 8, "train_per_class": "all",
             "val_per_class": 1, "test_per_class": 2, "workers": 1, "cache_dir": str(tmp_path / "cache"),
             **settings}
    return config.data_config(table)


@pytest.mark.parametrize("name, channels", [("augtiny", 3), ("auggray", 1)])
def test_a_tfds_data_set_prepares_with_its_classes_channels_and_test_split(tfds_dir, tmp_path, name, channels):
    root, source = tfds_dir
    dataset = data.load_dataset(tfds_config(root, tmp_path, name=name))
    assert dataset.class_names == ("cat", "dog", "eel") and dataset.train_images.shape[1:] == (8, 8, channels)
    counts = {split: np.bincount(dataset.split(split)[1]).tolist() for split in ("train", "val", "test")}
    if name == "augtiny":  # TFDS's test split is test; val is held out of train (one, and one spare)
        assert counts == {"train": [8] * 3, "val": [1] * 3, "test": [2] * 3}
    else:  # no test split: test and val both held out of train (each with a spare)
        assert counts == {"train": [1] * 3, "val": [1] * 3, "test": [2] * 3}
    pairs = {split: {(int(label), image.tobytes()) for image, label in zip(*source[name][split])}
             for split in source[name]}
    for split in ("train", "val", "test"):  # PNG is lossless: every image is one of the split it came from
        taken_from = pairs["test" if split == "test" and "test" in pairs else "train"]
        assert {(int(label), image.tobytes()) for image, label in zip(*dataset.split(split))} <= taken_from
    assert not list((tmp_path / "cache").glob(".*.source"))  # the copy of the records is gone with the cache done


def test_one_data_set_per_class_reads_only_the_images_asked(tfds_dir, tmp_path, monkeypatch):
    root, _ = tfds_dir
    read, real = [], tfds_source._read

    def counting(*args):
        for record in real(*args):
            read.append(record)
            yield record
    monkeypatch.setattr(tfds_source, "_read", counting)
    settings = tfds_config(root, tmp_path, names=["augscenes/bedroom", "augscenes/church"], train_per_class=3,
                           test_per_class=1)
    dataset = data.load_dataset(settings)
    assert dataset.class_names == ("augscenes/bedroom", "augscenes/church")
    assert dataset.train_images.shape == (6, 8, 8, 3)  # resized and centre-cropped from 12 x 16
    assert len(read) == 2 * (3 + 1 + 1 + 1 + 1 + 1)  # of 40: each class's train, val and test, and their spares
    read.clear()
    data.load_dataset(settings)
    assert read == []  # the cache is reused: TFDS is not read again


def test_an_interrupted_preparation_continues_without_reading_tfds_again(tfds_dir, tmp_path, monkeypatch, capsys):
    from augcompare.experiments import cli, prepare
    root, _ = tfds_dir
    read, real_read, decode_chunk = [], tfds_source._read, prepare.decode_chunk

    def counting(*args):
        for record in real_read(*args):
            read.append(record)
            yield record

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(tfds_source, "_read", counting)
    monkeypatch.setattr(prepare, "decode_chunk", interrupted)
    command = ["prepare", "tfds", "--name", "augtiny", "--data-dir", str(root), "--out", str(tmp_path / "tiny"),
               "--image-size", "8", "--train-per-class", "all", "--val-per-class", "1", "--test-per-class", "2",
               "--workers", "1"]
    assert cli.main(command) == 130
    assert len(read) == 42 and (tmp_path / ".tiny.source").is_dir()  # TFDS's records, copied once
    monkeypatch.setattr(prepare, "decode_chunk", decode_chunk)
    assert cli.main(command) == 0
    assert len(read) == 42 and not (tmp_path / ".tiny.source").exists()  # the copy was used, then removed
    assert open_cache(tmp_path / "tiny").class_names == ("cat", "dog", "eel")


@pytest.mark.parametrize("settings, message", [
    ({"name": "no_such_set_xyz"}, "TFDS has no data set 'no_such_set_xyz'"),
    ({"name": "mnist"}, "TFDS data set mnist is not in {root}; get it once with `tfds build mnist --data_dir {root}`"),
    ({"names": ["augscenes/bedroom", "mnist"]}, "TFDS data set mnist is not in {root}"),
    ({"name": "augnolabel"}, "augnolabel has 0 class label features (caption (Text), image (Image))"),
    ({"name": "augnoimage"}, "augnoimage has 0 image features (label (ClassLabel), x (Tensor))"),
])
def test_bad_tfds_data_sets_are_one_line_errors_and_nothing_is_downloaded(tfds_dir, tmp_path, settings, message):
    root, _ = tfds_dir
    with pytest.raises(UserError, match=re.escape(message.format(root=root))) as error:
        data.load_dataset(tfds_config(root, tmp_path, **settings))
    assert "\n" not in str(error.value)
    assert not (root / "downloads" / "mnist").exists() and not (root / "mnist").exists()


def test_without_tensorflow_datasets_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    with pytest.raises(UserError, match=re.escape('needs TensorFlow Datasets (')) as error:
        data.load_dataset(tfds_config(tmp_path, tmp_path, name="cifar10"))
    assert str(error.value).endswith('pip install -e ".[tfds]"')
