"""Decoding one stored image into a uint8 [S, S, 3] array: format from the magic bytes, Pillow's
draft mode for JPEG, shorter side resized to S, centre crop. Used by the preparation workers, so
it imports no TensorFlow."""

import io
import os

import lmdb
import numpy as np
from PIL import Image, UnidentifiedImageError

MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


def image_format(data):
    """The format named by the first bytes of an encoded image, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in MAGIC if data.startswith(magic)), None)


def resize_and_crop(image, size):
    """Resizes the shorter side to size (antialiased bilinear) and crops the centre size x size."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def open_picture(data, size):
    """A decoded RGB Pillow image from encoded bytes (JPEG decoded at a reduced scale whose
    shorter side is still >= size); raises ValueError naming what is wrong."""
    kind = image_format(data)
    if kind is None:
        raise ValueError("unknown image format")
    try:
        image = Image.open(io.BytesIO(data), formats=[kind])
        if kind == "JPEG":
            image.draft("RGB", (size, size))  # decode at a reduced scale still >= size
        return image.convert("RGB")  # grayscale, CMYK and palettes become RGB
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"undecodable {kind}: {error}") from None


def array_picture(array):
    """An RGB Pillow image from a sample array [H, W, 3], [H, W, 1] or [H, W] of pixels in [0, 255]."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"shape {array.shape} is not an image [H, W, 3]")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"dtype {array.dtype} is not real pixel values")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def decode(data, size):
    """uint8 [size, size, 3] from encoded bytes; raises ValueError naming what is wrong."""
    return resize_and_crop(open_picture(data, size), size)


def from_array(array, size):
    """uint8 [size, size, 3] from a sample array [H, W, 3] or [H, W] of pixels in [0, 255]."""
    return resize_and_crop(array_picture(array), size)


# LMDB handles are not fork-safe: each process opens its own, on first use.
_DATABASES = {}


def open_database(path):
    """A read-only LMDB environment that works on read-only and network file systems."""
    key = (os.getpid(), str(path))
    if key not in _DATABASES:
        _DATABASES[key] = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False,
                                    max_readers=2048)
    return _DATABASES[key]


def close_databases():
    """Closes this process's handles, so that forked workers can open their own."""
    for env in _DATABASES.values():
        env.close()
    _DATABASES.clear()


def read_item(item):
    """The raw content of an item: ("lmdb", database, key) or ("file", path) -> bytes;
    ("npy", path) -> array."""
    kind = item[0]
    if kind == "lmdb":
        with open_database(item[1]).begin(buffers=False) as txn:
            data = txn.get(item[2])
        if data is None:
            raise ValueError("key vanished from the database")
        return data
    if kind == "file":
        with open(item[1], "rb") as handle:
            return handle.read()
    return np.load(item[1], allow_pickle=False)


def load_item(task):
    """Worker entry point: (item, size) -> (uint8 array or None, reason it was skipped, whether
    it was smaller than size and so upsampled)."""
    item, size = task
    try:
        content = read_item(item)
        picture = array_picture(content) if item[0] == "npy" else open_picture(content, size)
        return resize_and_crop(picture, size), None, min(picture.size) < size
    except (ValueError, OSError, lmdb.Error) as error:
        return None, str(error).split(":")[0][:60] or type(error).__name__, False
