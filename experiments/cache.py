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

Preparation writes the image arrays in place (ImageFile), one image at a time at its final
position, so that its memory does not grow with the data set.
"""

import dataclasses
import hashlib
import io
import json
import os
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


def describe_meta(arrays, class_names, kind, value_range=None, **extra):
    """meta.json's content for arrays (a dict over <split>_images / <split>_labels). value_range:
    the (low, high) of values where the writer tracked it (else it is read from the arrays)."""
    images = arrays["train_images"]
    if kind == "pixels":
        value_range = [0.0, 255.0]
    elif value_range is not None:
        value_range = [float(value_range[0]), float(value_range[1])]
    else:
        # the training images' range: augmentation clips to it, and test must decide nothing
        value_range = [float(np.min(images)), float(np.max(images))]
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


class ImageFile:
    """An .npy file of count images of image_shape written in place: its header first, then each
    image at its final position with os.pwrite. Neither a list of images nor the dirty pages of a
    memory map grow with count, and an interrupted writer's file can be reopened and continued."""

    def __init__(self, path, count, image_shape, dtype):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.image_shape = tuple(image_shape)
        self.image_bytes = int(np.prod(self.image_shape)) * self.dtype.itemsize
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": (count, *self.image_shape)})
        self.header = header.getvalue()
        self.size = len(self.header) + count * self.image_bytes
        self.descriptor = None

    def open(self, keep):
        """Opens the file; keep=True keeps the content of an existing file with this header and
        size (returns True where it did), else the file is created empty (sparse) at its full size."""
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if keep and os.fstat(self.descriptor).st_size == self.size and \
                os.pread(self.descriptor, len(self.header), 0) == self.header:
            return True
        os.ftruncate(self.descriptor, 0)
        self._write_at(self.header, 0)
        os.ftruncate(self.descriptor, self.size)
        return False

    def write(self, index, image):
        """Writes image (of image_shape) at position index."""
        image = np.ascontiguousarray(image, dtype=self.dtype)
        if image.shape != self.image_shape:
            raise ValueError(f"image of shape {image.shape} written to {self.path} of {self.image_shape}")
        self._write_at(image.tobytes(), len(self.header) + index * self.image_bytes)

    def _write_at(self, data, offset):
        view = memoryview(data)
        while view:  # pwrite may write less than asked; the rest follows
            written = os.pwrite(self.descriptor, view, offset)
            view, offset = view[written:], offset + written

    def sync(self):
        """Flushes what was written to the disk (before a progress record that counts on it)."""
        os.fdatasync(self.descriptor)

    def close(self):
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


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
            arrays[f"{split}_{part}"] = _map_array(path, recover)
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


def _map_array(path, recover):
    """The array in an .npy file, memory-mapped, after checking that the file is exactly as long as
    its header says (a truncated copy or data appended to it is a UserError naming the file)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"format {version} is not one this version writes")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(handle)
            data_offset = handle.tell()
        if dtype.hasobject or fortran_order:
            raise ValueError("not an array this version writes")
        expected = data_offset + int(np.prod(shape)) * dtype.itemsize
        found = os.path.getsize(path)
        if found < expected:
            raise UserError(f"{path} is cut short ({found:,} of {expected:,} bytes); {recover}")
        if found > expected:
            raise UserError(f"{path} has {found - expected:,} bytes after its data (it holds {expected:,}); {recover}")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"{path} cannot be read as an array ({error}); {recover}") from None
