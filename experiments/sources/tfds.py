"""The tfds source: a TensorFlow Datasets data set already prepared in TFDS's data directory
(data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets), read offline.

- data.name: one data set with one image feature and one class label (cifar10, fashion_mnist,
  ...); its classes are the label's names. data.names: one data set per class, each with one
  image feature (LSUN's categories: ["lsun/bedroom", "lsun/church_outdoor"]), in label order.
- Train is TFDS's train split, test its test split where it has one, else held out of train; val
  is held out of train, seeded and stratified, as a folder's.
- Nothing is fetched unless data.download: a data set missing from the data directory is found
  from its files alone, before TFDS is imported, and is a one-line error saying how to get it.
  TFDS itself reads no metadata from the network here (it is asked with try_gcs=False).

Reading: TFDS's records are read in order, in this process (TensorFlow reads TFRecords), with
the image left encoded (PNG or JPEG as TFDS stores it); each image is copied into an LMDB in a
scratch folder beside the output, a few records at a time, and the decoding workers read it from
there in parallel (TensorFlow never loads in them). A data set of one class per data set is read
only as far as the images asked need: a window from a seeded start, which is a random sample
because TFDS shuffles records when it prepares a data set. The scratch folder is kept until the
cache is complete, so that an interrupted preparation continues without reading TFDS again.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import lmdb
import numpy as np

from augcompare.experiments import cache, console
from augcompare.experiments.config import ALL
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import read_json, write_json
from augcompare.experiments.sources.plan import Group, allowance, each_class, ordered, per_class, shuffled

COMMIT_RECORDS = 512       # records copied per LMDB transaction
MAP_SIZE = 1 << 40         # the LMDB's address space (sparse: only what is written takes disk)


def data_folder(data):
    """TFDS's data directory: data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(data.data_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets").expanduser()


def _datasets(data):
    return list(data.names) if data.names else [data.name]


def _info_files(root, dataset):
    """The dataset_info.json files TFDS wrote for dataset ("name", "name/config", "name:version")
    under root; [] where it was never prepared there."""
    name, _, version = dataset.partition(":")
    folder = root / name
    if not folder.is_dir():
        return []
    found = sorted(folder.glob("*/dataset_info.json")) + sorted(folder.glob("*/*/dataset_info.json"))
    return [f for f in found if not version or f.parent.name == version]


def _missing(dataset, root):
    return UserError(f"TFDS data set {dataset} is not in {root}; get it once with `tfds build {dataset} --data_dir "
                     f"{root}` (pip install -e \".[tfds]\"), or set data.download = true")


def fingerprint(data):
    """{file: [size, mtime_ns]} of the data sets' dataset_info.json files (a data set prepared again
    makes another cache); fetches a missing data set where data.download, else the one-line error."""
    root, stats = data_folder(data), {}
    for dataset in _datasets(data):
        files = _info_files(root, dataset)
        if not files and data.download:
            _builder(_import(), dataset, root, download=True)
            files = _info_files(root, dataset)
        if not files:
            _check_known(dataset, root)
            raise _missing(dataset, root)
        for file in files:
            info = os.stat(file)
            stats[str(file.relative_to(root))] = [info.st_size, info.st_mtime_ns]
    return stats


def _check_known(dataset, root):
    """A UserError where dataset names no data set TFDS knows (TFDS's list of its own builders;
    TensorFlow is not loaded for it)."""
    name = dataset.partition(":")[0].split("/")[0]
    if name not in _import().list_builders(with_community_datasets=False):
        raise UserError(f"TFDS has no data set {dataset!r} (neither one of its own nor one prepared in {root}); see "
                        "https://www.tensorflow.org/datasets/catalog for the names")


def _import():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise UserError(f"data.source = \"tfds\" needs TensorFlow Datasets ({error}); pip install -e \".[tfds]\"") \
            from None
    return tfds


def _builder(tfds, dataset, root, download=False):
    """TFDS's builder of dataset in root, prepared (downloaded first where download)."""
    try:
        builder = tfds.builder(dataset, data_dir=str(root), try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"TFDS has no data set {dataset!r} (neither one of its own nor one prepared in {root}); see "
                        "https://www.tensorflow.org/datasets/catalog for the names") from None
    except (ValueError, OSError, AssertionError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"TFDS cannot open {dataset} in {root}: {first}") from None
    if not builder.is_prepared():
        if not download:
            raise _missing(f"{dataset} (version {builder.version})" if ":" not in dataset else dataset, root)
        console.line(f"augcompare: downloading and preparing TFDS's {dataset} in {root} (data.download = true)")
        builder.download_and_prepare()
    return builder


def _features(tfds, builder, dataset, want_label):
    """(image key, its channels, label key or None) of a data set's top-level features."""
    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    listing = ", ".join(f"{k} ({type(f).__name__})" for k, f in sorted(features.items()))
    if len(images) != 1:
        raise UserError(f"TFDS data set {dataset} has {len(images)} image features ({listing}); augcompare reads data "
                        "sets with one image feature" + (" and one class label" if want_label else ""))
    if want_label and len(labels) != 1:
        raise UserError(f"TFDS data set {dataset} has {len(labels)} class label features ({listing}); augcompare reads "
                        "data sets with one image and one class label (or give one data set per class: data.names)")
    channels = features[images[0]].shape[-1] or 3
    return images[0], (1 if channels == 1 else 3), (labels[0] if want_label else None)


def _window(data, count, split, held, seed, shuffled_order):
    """(start, taken): the records of a one-class data set's split to read: all of them where
    train_per_class is "all" or TFDS did not shuffle the data set, else the images asked and
    their spares from a seeded start (wrapping around)."""
    wanted = [per_class(data, s) for s in held] + ([per_class(data, "train")] if split == "train" else [])
    if ALL in wanted or not shuffled_order:
        return 0, count
    taken = min(count, sum(n + allowance(n, data.max_skip_fraction) for n in wanted))
    return int(np.random.default_rng(seed).integers(count)), taken


def _read(tfds, builder, split, image_key, label_key, start, taken):
    """(encoded image, label) of taken records of split from start, in TFDS's order, wrapping
    around; label 0 where there is no label feature."""
    count = builder.info.splits[split].num_examples
    pieces = [(start, min(count, start + taken))]
    if start + taken > count:
        pieces.append((0, start + taken - count))
    for low, high in pieces:
        dataset = builder.as_dataset(split=f"{split}[{low}:{high}]", shuffle_files=False,
                                     decoders={image_key: tfds.decode.SkipDecoding()})
        for record in tfds.as_numpy(dataset):
            yield record[image_key], (int(record[label_key]) if label_key else 0)


def _export(data, root, scratch):
    """Copies the records the plan needs into scratch/images.lmdb (once: a complete copy of the same
    settings is reused); returns its index: {"class_names", "channels", "splits": {split:
    {"keys", "labels", "where"}}} with one entry per data set for data.names."""
    signature = hashlib.sha256(json.dumps([_datasets(data), str(root), data.seed, data.train_per_class,
                                           data.val_per_class, data.test_per_class, data.max_skip_fraction,
                                           fingerprint(data)]).encode()).hexdigest()
    index_file = scratch / "index.json"
    if index_file.is_file():
        try:
            index = read_json(index_file, "")
            if index.get("signature") == signature:
                return index
        except UserError:
            pass  # an index cut short: the copy starts over
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    tfds = _import()
    database = lmdb.open(str(scratch / "images.lmdb"), map_size=MAP_SIZE, subdir=True, lock=False)
    index = {"signature": signature, "class_names": [], "channels": None, "splits": {}}
    try:
        for number, dataset in enumerate(_datasets(data)):
            builder = _builder(tfds, dataset, root, download=data.download)
            image_key, channels, label_key = _features(tfds, builder, dataset, want_label=not data.names)
            if index["channels"] not in (None, channels):
                raise UserError(f"TFDS data set {dataset} has {channels}-channel images, the others "
                                f"{index['channels']}; give data sets of one kind")
            index["channels"] = channels
            splits = builder.info.splits
            if "train" not in splits:
                raise UserError(f"TFDS data set {dataset} has no train split (splits: {', '.join(splits)}); "
                                "augcompare trains on train")
            index["class_names"] += (builder.info.features[label_key].names if label_key else [dataset])
            own = ["train", "test"] if "test" in splits else ["train"]
            held = [s for s in ("test", "val") if s not in own]
            for split in own:
                count = splits[split].num_examples
                start, taken = ((0, count) if label_key else
                                _window(data, count, split, held if split == "train" else [split],
                                        [data.seed, number, cache.SPLITS.index(split)],
                                        not builder.info.disable_shuffling))
                keys, labels = [], []
                records = _read(tfds, builder, split, image_key, label_key, start, taken)
                while True:
                    batch = [record for record, _ in zip(records, range(COMMIT_RECORDS))]
                    if not batch:
                        break
                    with database.begin(write=True) as txn:
                        for image, label in batch:
                            key = f"{number}-{split}-{len(keys):09d}".encode()
                            txn.put(key, bytes(image))
                            keys.append(key.decode())
                            labels.append(label)
                    console.status(f"  reading TFDS's {dataset} {split}: {len(keys):,}/{taken:,} images")
                entry = index["splits"].setdefault(split, {"keys": [], "labels": [], "where": []})
                offset = len(index["class_names"]) - 1 if not label_key else 0
                entry["keys"] += keys
                entry["labels"] += [label + offset for label in labels]
                entry["where"].append(f"TFDS {dataset} {split}")
            console.end()
    finally:
        database.close()
    if data.names:
        present = {split for split in ("train", "test") if split in index["splits"]}
        if any(len(entry["where"]) != len(data.names) for entry in index["splits"].values()):
            raise UserError(f"the data sets of data.names do not all have the same splits ({', '.join(present)} in "
                            "some only); give data sets that do")
    write_json(index_file, index)
    return index


def plan(data, root, scratch):
    """The Plan of data.name (or data.names) in TFDS's data directory root; scratch: a folder of
    its own beside the output, for the copy of the records."""
    index = _export(data, root, Path(scratch))
    class_names, location = index["class_names"], str(Path(scratch) / "images.lmdb")
    if len(class_names) < 2:
        raise UserError(f"TFDS data set {data.name} has {len(class_names)} class; a comparison needs at least 2")
    own = []
    for label, class_name in enumerate(class_names):
        own.append({})
        for split, entry in index["splits"].items():
            labels = np.asarray(entry["labels"], np.int64)
            keys = [entry["keys"][i].encode() for i in np.flatnonzero(labels == label)]
            seed = [data.seed, label] + ([] if split == "train" else [cache.SPLITS.index(split)])
            where = entry["where"][label] if data.names else entry["where"][0]
            own[label][split] = (shuffled(keys, seed), f"{where} class {class_name!r}")
    groups = []
    for label, splits in enumerate(each_class(data, own)):
        groups += [Group(split, label, needed, "encoded", location, candidates, where, channels=index["channels"])
                   for split, (candidates, where, needed) in splits.items()]
    size = data.image_size
    return ordered(class_names, groups, "pixels", (size, size, index["channels"]))

