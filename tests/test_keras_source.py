"""The keras source: the files keras.datasets keeps in $KERAS_HOME/datasets, read offline (small
files in the same formats, in a temporary KERAS_HOME)."""

import gzip
import hashlib
import http.server
import pickle
import re
import shutil
import socket
import tarfile
import threading

import numpy as np
import pytest

from augcompare.experiments import config, data, prepare
from augcompare.experiments.cache import open_cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.sources import keras as keras_source

TRAIN, TEST = 6, 3  # images per class in the small copies


def _cifar_batch(path, images, labels, key):
    """A CIFAR batch as the CIFAR release pickles it: a dict of bytes keys, data as [N, 3072] planes."""
    content = {b"batch_label": b"small", key.encode(): list(map(int, labels)),
               b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1)}
    path.write_bytes(pickle.dumps(content, protocol=2))


def _idx(path, array):
    header = b"\0\0\x08" + bytes([array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_keras_files(home, name, seed=0):
    """Small copies of Keras' files of data set name under home/datasets, laid out as Keras 3
    extracts them; returns {split: (images [N, H, W, C], labels)}."""
    rng = np.random.default_rng(seed)
    classes = 100 if name == "cifar100" else 10
    shape = (32, 32, 3) if name.startswith("cifar") else (28, 28, 1)
    splits = {}
    for split, per_class in (("train", TRAIN), ("test", TEST)):
        labels = np.repeat(np.arange(classes), per_class)
        rng.shuffle(labels)
        splits[split] = (rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8), labels)
    root = home / "datasets"
    if name.startswith("cifar"):
        folder = root / keras_source.LAYOUTS[name]["folders"][0]
        folder.mkdir(parents=True)
        key = "labels" if name == "cifar10" else "fine_labels"
        for split in ("train", "test"):
            files = keras_source.LAYOUTS[name][split]
            x, y = splits[split]
            for part, file in enumerate(files):
                _cifar_batch(folder / file, x[part::len(files)], y[part::len(files)], key)
            splits[split] = (np.concatenate([x[p::len(files)] for p in range(len(files))]),
                             np.concatenate([y[p::len(files)] for p in range(len(files))]))
        meta = {b"label_names": [n.encode() for n in keras_source.CIFAR10_CLASSES]} if name == "cifar10" else \
            {b"fine_label_names": [f"class{i}".encode() for i in range(100)]}
        (folder / ("batches.meta" if name == "cifar10" else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    elif name == "fashion_mnist":
        (root / "fashion-mnist").mkdir(parents=True)
        for split, prefix in (("train", "train"), ("test", "t10k")):
            x, y = splits[split]
            _idx(root / "fashion-mnist" / f"{prefix}-images-idx3-ubyte.gz", x[..., 0])
            _idx(root / "fashion-mnist" / f"{prefix}-labels-idx1-ubyte.gz", y)
    else:
        root.mkdir(parents=True)
        np.savez(root / "mnist.npz", x_train=splits["train"][0][..., 0], y_train=splits["train"][1],
                 x_test=splits["test"][0][..., 0], y_test=splits["test"][1])
    return splits


def keras_config(name, **settings):
    size = 32 if name.startswith("cifar") else 28
    table = {"source": "keras", "name": name, "image_size": size, "train_per_class": "all", "val_per_class": 1,
             "test_per_class": TEST, "workers": 1, **settings}
    return config.data_config(table)


@pytest.mark.parametrize("name", config.KERAS_DATASETS)
def test_keras_data_sets_prepare_from_their_files_offline(tmp_path, monkeypatch, name):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    splits = write_keras_files(tmp_path / "keras", name)
    settings = keras_config(name, cache_dir=str(tmp_path / "cache"))
    dataset = data.load_dataset(settings)
    classes = 100 if name == "cifar100" else 10
    expected_names = {"cifar10": list(keras_source.CIFAR10_CLASSES), "cifar100": [f"class{i}" for i in range(100)],
                      "fashion_mnist": list(keras_source.FASHION_MNIST_CLASSES),
                      "mnist": [str(i) for i in range(10)]}[name]
    assert list(dataset.class_names) == expected_names
    assert dataset.train_images.shape[1:] == ((32, 32, 3) if name.startswith("cifar") else (28, 28, 1))
    # test is Keras' test set, whole; val held out of train (one per class, one spare), train the rest
    test_images, test_labels = dataset.split("test")
    assert np.bincount(test_labels).tolist() == [TEST] * classes
    assert np.bincount(dataset.split("val")[1]).tolist() == [1] * classes
    assert np.bincount(dataset.split("train")[1]).tolist() == [TRAIN - 2] * classes
    source = {(label, image.tobytes()) for image, label in zip(*splits["test"])}
    assert {(label, image.tobytes()) for image, label in zip(test_images, test_labels)} == source
    train_source = {(label, image.tobytes()) for image, label in zip(*splits["train"])}
    held = [(label, image.tobytes()) for split in ("train", "val") for image, label in zip(*dataset.split(split))]
    assert set(held) <= train_source and len(set(held)) == len(held)  # each its own class, no image twice
    assert open_cache(next((tmp_path / "cache").glob("keras-*"))).meta["params"]["name"] == name


@pytest.mark.parametrize("name", config.KERAS_DATASETS)
def test_missing_keras_files_are_a_one_line_error_saying_how_to_get_them(tmp_path, monkeypatch, name):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError) as error:
        data.load_dataset(keras_config(name, cache_dir=str(tmp_path / "cache")))
    message = str(error.value)
    assert "\n" not in message and f"keras.datasets.{name}.load_data()" in message
    assert "data.download = true" in message and str(tmp_path / "empty" / "datasets") in message
    assert not (tmp_path / "empty").exists() and not (tmp_path / "cache").exists()  # nothing fetched or written


@pytest.fixture
def server(tmp_path):
    """A local HTTP server (127.0.0.1) of the folder it returns, and the paths it was asked for."""
    folder, asked = tmp_path / "served", []
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            asked.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder, asked
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve_keras_files(tmp_path, name, folder):
    """Small copies of the files Keras downloads for data set name, in folder, as they are at
    their origins (CIFAR as the release's .tar.gz); returns {split: (images, labels)}."""
    staging = tmp_path / "staging"
    splits = write_keras_files(staging, name)
    for spec in keras_source.DOWNLOADS[name]:
        file = spec["origin"].rsplit("/", 1)[1]
        if spec.get("extract"):
            extracted = next(staging.rglob(keras_source.LAYOUTS[name]["folders"][-1]))
            with tarfile.open(folder / file, "w:gz") as archive:
                archive.add(extracted, arcname=extracted.name)
        else:
            shutil.copy(next(staging.rglob(file)), folder / file)
    return splits


@pytest.mark.parametrize("name", config.KERAS_DATASETS)
def test_data_download_fetches_through_keras_get_file_then_prepares(tmp_path, monkeypatch, server, name):
    """data.download = true runs Keras' own get_file (download, hash check, extraction) on each
    file's origin, here a local server, into KERAS_HOME/datasets, then prepares what it fetched."""
    url, folder, asked = server
    splits = serve_keras_files(tmp_path, name, folder)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    specs = [{**spec, "origin": url + spec["origin"].rsplit("/", 1)[1]} for spec in keras_source.DOWNLOADS[name]]
    for spec in specs:
        if "file_hash" in spec:  # checked by Keras as the real one is
            spec["file_hash"] = hashlib.sha256((folder / spec["origin"].rsplit("/", 1)[1]).read_bytes()).hexdigest()
    monkeypatch.setitem(keras_source.DOWNLOADS, name, specs)
    settings = keras_config(name, download=True, cache_dir=str(tmp_path / "cache"))
    test_images, test_labels = data.load_dataset(settings).split("test")
    assert len(asked) == len(specs)
    assert {(label, image.tobytes()) for image, label in zip(test_images, test_labels)} == \
        {(label, image.tobytes()) for image, label in zip(*splits["test"])}
    data.load_dataset(settings)
    assert len(asked) == len(specs)  # on disk now: neither fetched nor prepared again


def test_a_download_that_cannot_reach_its_origin_is_a_one_line_error_saying_where_to_put_the_files(
        tmp_path, monkeypatch):
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    origin = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    monkeypatch.setitem(keras_source.DOWNLOADS, "cifar10", [{**keras_source.DOWNLOADS["cifar10"][0], "origin": origin}])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(UserError) as error:
        data.load_dataset(keras_config("cifar10", download=True, cache_dir=str(tmp_path / "cache")))
    message = str(error.value)
    assert "\n" not in message and message.startswith("cannot download Keras' cifar10 (")
    assert origin in message  # what could not be reached
    assert (f"download cifar-10-python.tar.gz from http://127.0.0.1:{port}/ into {tmp_path / 'keras' / 'datasets'} "
            "and extract it there") in message


def test_a_cifar_batch_that_asks_the_unpickler_for_anything_but_arrays_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    write_keras_files(tmp_path / "keras", "cifar10")
    batch = next((tmp_path / "keras").rglob("data_batch_1"))

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))  # would create a file if it were ever called
    batch.write_bytes(pickle.dumps({b"labels": [0], b"data": Payload()}, protocol=2))
    with pytest.raises(UserError, match=re.escape("cannot be read as a CIFAR batch (pickle asks for")):
        prepare.prepare_source(keras_config("cifar10"), tmp_path / "cache")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("table, message", [
    ({"source": "keras", "name": "cifar11"}, "choose one of cifar10, cifar100, fashion_mnist, mnist"),
    ({"source": "keras"}, "with no data.name; choose one of"),
    ({"source": "keras", "name": "mnist", "data_dir": "/no/such/folder"}, "data.data_dir /no/such/folder does not"),
    ({"source": "tfds"}, "needs data.name, a TFDS data set"),
    ({"source": "tfds", "name": "cifar10", "names": ["a", "b"]}, "not both"),
    ({"source": "tfds", "names": ["lsun/bedroom"]}, "must name at least 2 different data sets"),
    ({"source": "tfds", "name": "cifar10", "download": "yes"}, "data.download must be a bool"),
])
def test_bad_tfds_and_keras_settings_are_one_line_errors(table, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        config.data_config(table)
    assert "\n" not in str(error.value)


def test_augcompare_prepare_keras_reads_keras_home(tmp_path, monkeypatch):
    from augcompare.experiments import cli
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    write_keras_files(tmp_path / "keras", "mnist")
    assert cli.main(["prepare", "keras", "--name", "mnist", "--out", str(tmp_path / "mnist"), "--image-size", "28",
                     "--train-per-class", "all", "--val-per-class", "1", "--test-per-class", "3", "--workers",
                     "1"]) == 0
    dataset = open_cache(tmp_path / "mnist")
    assert dataset.class_names == tuple(str(i) for i in range(10)) and dataset.test_images.shape == (30, 28, 28, 1)
