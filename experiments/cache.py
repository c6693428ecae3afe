"""The prepared data set (cache) format, read and written by both sides: preparation and the demo
write it, training memory-maps it.

A cache is a directory holding, for each split in SPLITS, <split>_images.npy ([N, H, W, C]) and
<split>_labels.npy (int64 [N], the index of the class), and meta.json, written last. Its "kind"
says what the arrays hold:
- "pixels": uint8 in [0, 255] (decoded photographs, the demo);
- "values": float32 kept exactly as the source gave them (the .npy source with float data), with
  the observed range in meta.json's "value_range".
meta.json also holds the class names in label order, the image shape, the count per split, the
settings it was made with ("params") and what was skipped while making it, with examples.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from augcompare.experiments.errors import UserError
from augcompare.experiments.files import read_json, staged_directory

VERSION = 2
SPLITS = ("train", "val", "test")
KINDS = {"pixels": np.uint8, "values": np.float32}


@dataclasses.dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # [N, H, W, C], uint8 pixels or float32 values, possibly memory-mapped
    train_labels: np.ndarray  # int64 [N]
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple
    kind: str                 # "pixels" | "values"
    value_range: tuple        # (low, high): (0, 255) for pixels, the observed range for values
    path: Path                # the cache directory it was read from
    meta: dict                # meta.json

    @property
    def image_shape(self):
        return tuple(self.train_images.shape[1:])

    def split(self, name):
        """(images, labels) of a split: train, val or test."""
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")


def key(params):
    """A short stable hash of the parameters a cache was made from."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def describe_meta(arrays, class_names, kind, **extra):
    """meta.json's content for arrays (a dict over <split>_images / <split>_labels)."""
    images = arrays["train_images"]
    if kind == "pixels":
        value_range = [0.0, 255.0]
    else:
        lows = [float(np.min(arrays[f"{s}_images"])) for s in SPLITS if len(arrays[f"{s}_images"])]
        highs = [float(np.max(arrays[f"{s}_images"])) for s in SPLITS if len(arrays[f"{s}_images"])]
        value_range = [min(lows), max(highs)]
    return {"version": VERSION, "kind": kind, "dtype": np.dtype(KINDS[kind]).name,
            "image_shape": list(images.shape[1:]), "image_size": int(images.shape[1]),
            "channels": int(images.shape[3]), "value_range": value_range, "class_names": list(class_names),
            "counts": {s: int(len(arrays[f"{s}_labels"])) for s in SPLITS}, **extra}


def write(directory, arrays, meta):
    """Writes arrays (a dict over <split>_images / <split>_labels) and meta atomically to
    directory, which must not exist; meta.json last."""
    with staged_directory(directory) as staging:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array, allow_pickle=False)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(directory)


def is_complete(directory):
    return (Path(directory) / "meta.json").is_file()


def open_cache(directory):
    """The Dataset in a cache directory, memory-mapped, after checking every array against
    meta.json; anything damaged or inconsistent is a UserError naming the file."""
    directory = Path(directory)
    recover = "delete the directory and prepare it again"
    if not is_complete(directory):
        raise UserError(f"{directory} is not a prepared data set (no meta.json); run augcompare prepare")
    meta = read_json(directory / "meta.json", recover)
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        found = meta.get("version") if isinstance(meta, dict) else None
        raise UserError(f"{directory} was prepared by another version of augcompare (format {found}, this one reads "
                        f"{VERSION}); {recover}")
    try:
        kind, class_names = meta["kind"], tuple(meta["class_names"])
        shape, counts, value_range = tuple(meta["image_shape"]), meta["counts"], tuple(meta["value_range"])
        dtype = KINDS[kind]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{directory / 'meta.json'} lacks the fields of a prepared data set; {recover}") from None
    arrays = {}
    for split in SPLITS:
        for part in ("images", "labels"):
            path = directory / f"{split}_{part}.npy"
            try:
                arrays[f"{split}_{part}"] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise UserError(f"{path} cannot be read ({error}); {recover}") from None
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = directory / f"{split}_images.npy"
        if images.dtype != dtype or images.shape != (counts.get(split), *shape):
            raise UserError(f"{where} holds {images.dtype} {images.shape} but meta.json says {counts.get(split)} "
                            f"{np.dtype(dtype).name} images of {shape}; {recover}")
        if labels.dtype != np.int64 or labels.shape != (len(images),):
            raise UserError(f"{directory / f'{split}_labels.npy'} holds {labels.dtype} {labels.shape}, not one "
                            f"int64 label per image; {recover}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise UserError(f"{directory}: {split} labels outside 0..{len(class_names) - 1}; {recover}")
    return Dataset(**arrays, class_names=class_names, kind=kind, value_range=value_range, path=directory,
                   meta=meta)
