"""The keras source: the files keras.datasets keeps in ~/.keras/datasets ($KERAS_HOME/datasets),
read here without Keras and without a network.

- cifar10, cifar100: CIFAR's pickled batches (data_batch_1 ... 5 and test_batch; train and test),
  in the folder each Keras version extracts them to; read through an unpickler that admits
  NumPy's array reconstruction and nothing else (images.read_cifar_batch). CIFAR-100's classes
  are its 100 fine labels.
- fashion_mnist: the four gzipped IDX files in fashion-mnist/ (images.read_idx).
- mnist: mnist.npz, whose arrays are named as the arrays source names them.

Train is Keras' training set, test its test set; val is held out of train, seeded and
stratified, as a folder's. Labels are read here; the decoding workers read the images, each
process the files it needs once (CIFAR-10's training batches are 150 MB).
"""

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np

from augcompare.experiments import array_files, cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.images import read_cifar_batch
from augcompare.experiments.sources.plan import Group, each_class, ordered, shuffled

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")

# Per data set: the folders it may be in (relative to the datasets folder; Keras 3's current
# extraction folder first, then older ones), its training and test files, and how they are read.
LAYOUTS = {
    "cifar10": {"folders": ("cifar-10-batches-py-target/cifar-10-batches-py",
                            "cifar-10-batches-py_extracted/cifar-10-batches-py", "cifar-10-batches-py"),
                "train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",), "kind": "cifar"},
    "cifar100": {"folders": ("cifar-100-python-target/cifar-100-python", "cifar-100-python_extracted/cifar-100-python",
                             "cifar-100-python"),
                 "train": ("train",), "test": ("test",), "kind": "cifar"},
    "fashion_mnist": {"folders": ("fashion-mnist",), "train": ("train-images-idx3-ubyte.gz",),
                      "test": ("t10k-images-idx3-ubyte.gz",), "kind": "idx"},
    "mnist": {"folders": (".",), "train": ("mnist.npz",), "test": (), "kind": "array"},
}
SPLIT_FILES = {"train": "train", "test": "test"}

# What Keras' loaders (keras.datasets.<name>.load_data, Keras 3) fetch, as keras.utils.get_file's
# arguments, relative to the datasets folder. Called here with that folder given, so that the
# files land where find() looks: load_data() itself writes to the KERAS_HOME Keras read when it
# was imported (or to /tmp/.keras where that cannot be written).
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
DOWNLOADS = {
    "cifar10": [{"fname": "cifar-10-batches-py-target", "extract": True,
                 "origin": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                 "file_hash": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}],
    "cifar100": [{"fname": "cifar-100-python-target", "extract": True,
                  "origin": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                  "file_hash": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"}],
    "fashion_mnist": [{"fname": file, "origin": KERAS_ORIGIN + file, "cache_subdir": "fashion-mnist"}
                      for file in ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                                   "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")],
    "mnist": [{"fname": "mnist.npz", "origin": KERAS_ORIGIN + "mnist.npz",
               "file_hash": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}],
}


def datasets_folder(data):
    """Where Keras keeps its data sets: data.data_dir, else $KERAS_HOME/datasets, else
    ~/.keras/datasets."""
    if data.data_dir:
        return Path(data.data_dir).expanduser()
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "datasets"


def _labels_file(images_file):
    return images_file.replace("images-idx3", "labels-idx1")


def _needed_files(name):
    layout = LAYOUTS[name]
    files = [*layout["train"], *layout["test"]]
    return files + [_labels_file(f) for f in files] if layout["kind"] == "idx" else files


def find(data):
    """The folder holding data.name's files; downloads them through Keras where data.download,
    else a UserError saying how to get them."""
    root, name = datasets_folder(data), data.name
    for relative in LAYOUTS[name]["folders"]:
        folder = root / relative
        if all((folder / f).is_file() for f in _needed_files(name)):
            return folder.resolve()
    if data.download:
        if data.data_dir:
            raise UserError(f"data.download fetches {name} into Keras' own folder ($KERAS_HOME/datasets); leave "
                            "data.data_dir out, or download it there yourself")
        download(name, root)
        return find(dataclasses.replace(data, download=False))
    first = Path(LAYOUTS[name]["folders"][0]) / _needed_files(name)[0]
    raise UserError(f"Keras' {name} is not in {root} (looked for {first}); get it once with "
                    f"python -c \"import keras; keras.datasets.{name}.load_data()\", or set data.download = true")


def download(name, root):
    """Downloads data set name's files into the datasets folder root as Keras' loader does
    (keras.utils.get_file, DOWNLOADS), archives extracted; a UserError naming what could not be
    fetched and where to put it by hand where that fails."""
    from augcompare.augment import backend  # Keras, quietly
    root.mkdir(parents=True, exist_ok=True)  # get_file writes to /tmp/.keras where its folder is not writable
    for spec in DOWNLOADS[name]:
        folder = root / spec.get("cache_subdir", "")
        try:
            backend.keras.utils.get_file(**{**spec, "cache_dir": str(root), "cache_subdir": str(folder)})
        except Exception as error:  # get_file raises Exception itself for a URL it cannot fetch
            if type(error) is not Exception and not isinstance(error, (OSError, ValueError)):
                raise
            reason = " ".join(str(error).split())
            files = [other["origin"].rsplit("/", 1) for other in DOWNLOADS[name]]
            by_hand = (f"{', '.join(file for _, file in files)} from {files[0][0]}/ into {folder}"
                       + (" and extract it there" if spec.get("extract") else ""))
            raise UserError(f"cannot download Keras' {name} ({reason}); where there is a network, download "
                            f"{by_hand}, then run again") from None


def fingerprint(data):
    """{file: [size, mtime_ns]} of the data set's files (a changed file makes another cache), {}
    where they are not there yet."""
    root = datasets_folder(data)
    for relative in LAYOUTS[data.name]["folders"]:
        folder = root / relative
        if all((folder / f).is_file() for f in _needed_files(data.name)):
            return {f: [os.stat(folder / f).st_size, os.stat(folder / f).st_mtime_ns]
                    for f in _needed_files(data.name)}
    return {}


def _idx_count(path, dims):
    """The first size in an IDX file's header, checked to have dims dimensions."""
    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(4 + 4 * dims)
    except (OSError, EOFError) as error:
        raise UserError(f"{path} cannot be read ({error}); download it again") from None
    if len(header) != 4 + 4 * dims or header[:2] != b"\0\0" or header[3] != dims:
        raise UserError(f"{path} is not an IDX file of {dims} dimension(s); download it again")
    return int(np.frombuffer(header, ">i4", 1, 4)[0])


def _read_labels(folder, name, split):
    """{file: labels} of a split (in the split's file order)."""
    layout, found = LAYOUTS[name], {}
    for file in layout[split]:
        path = folder / file
        if layout["kind"] == "cifar":
            try:
                batch = read_cifar_batch(path)
            except (OSError, ValueError) as error:
                raise UserError(f"{path} cannot be read as a CIFAR batch ({error}); download it again") from None
            key = "labels" if name == "cifar10" else "fine_labels"
            data = batch.get("data")
            labels = np.asarray(batch.get(key, []), np.int64).reshape(-1)
            if not isinstance(data, np.ndarray) or data.ndim != 2 or len(data) != len(labels):
                raise UserError(f"{path} holds no {key} for its images; download it again")
        else:
            from augcompare.experiments.images import read_idx
            try:
                labels = read_idx(folder / _labels_file(file)).astype(np.int64)
            except (OSError, ValueError) as error:
                raise UserError(f"{folder / _labels_file(file)} cannot be read ({error}); download it again") from None
            count = _idx_count(path, 3)
            if count != len(labels):
                raise UserError(f"{path} holds {count} images but {_labels_file(file)} {len(labels)} labels; download "
                                "them again")
        found[file] = labels
    return found


def _class_names(folder, name):
    if name == "cifar10" or name == "cifar100":
        meta, key = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
        try:
            names = read_cifar_batch(folder / meta)[key]
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        except (OSError, ValueError, KeyError):
            return list(CIFAR10_CLASSES) if name == "cifar10" else [str(i) for i in range(100)]
    return list(FASHION_MNIST_CLASSES) if name == "fashion_mnist" else [str(i) for i in range(10)]


def plan(data, root, scratch):
    """The Plan of Keras' data set data.name (root: its folder, from find)."""
    name, layout = data.name, LAYOUTS[data.name]
    folder = find(data)
    class_names = _class_names(folder, name)
    if layout["kind"] == "array":
        found = array_files.find(folder / "mnist.npz")
        labels = {split: {f"x_{split}": array_files.read_labels(found[f"y_{split}"], found[f"x_{split}"].shape[0],
                                                          found[f"x_{split}"])}
                  for split in SPLIT_FILES}
        channels = 1
    else:
        labels = {split: _read_labels(folder, name, split) for split in SPLIT_FILES}
        channels = 3 if layout["kind"] == "cifar" else 1
    own = []
    for label, class_name in enumerate(class_names):
        own.append({})
        for split, files in labels.items():
            candidates = [(file, int(i)) for file, values in files.items() for i in np.flatnonzero(values == label)]
            seed = [data.seed, label] + ([] if split == "train" else [cache.SPLITS.index(split)])
            own[label][split] = (shuffled(candidates, seed), f"Keras' {name} {split} class {class_name!r}")
    for split, files in labels.items():
        values = np.concatenate(list(files.values()))
        if values.min() < 0 or values.max() >= len(class_names):
            raise UserError(f"Keras' {name} in {folder} has {split} label {values.max()}, outside its "
                            f"{len(class_names)} classes; download it again")
    groups = []
    for label, splits in enumerate(each_class(data, own)):
        for split, (candidates, where, needed) in splits.items():
            source = split if split in labels else "train"
            if layout["kind"] == "array":
                groups.append(Group(split, label, needed, "array", str(folder / "mnist.npz"),
                                    [index for _, index in candidates], where, member=f"x_{source}",
                                    array_name=f"x_{source}"))
            else:
                groups.append(Group(split, label, needed, layout["kind"], str(folder), candidates, where))
    size = data.image_size
    return ordered(class_names, groups, "pixels", (size, size, channels))
