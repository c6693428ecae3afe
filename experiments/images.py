"""Decoding one stored sample into the array the cache holds. Used by the preparation workers, so
it imports no TensorFlow.

- Encoded images (LSUN values, image files) become uint8 RGB "pixels" [S, S, 3]: the format is
  read from the magic bytes, the shorter side resized to S (antialiased bilinear) and the centre
  square kept. JPEG is decoded in Pillow's draft mode only down to a scale whose shorter side is
  still at least DRAFT_GAP x S (Pillow's reducing_gap idea): the DCT's own reduction straight to
  S changes textured photographs by ~20 levels against a full decode, while from twice the size
  the antialiased resize makes JPEG and WebP copies of a photograph agree within a few levels.
- .npy samples keep what they are. uint8 arrays are pixels, resized like images but with their
  channels kept ([H, W] -> [H, W, 1], 1 stays 1, 3 stays 3). Other real numbers are "values":
  float32 [S, S, C], kept exactly (no resize, crop or clipping; other dtypes converted to float32).
- Keras' files (experiments.sources.keras) are read here too: CIFAR's pickled batches (through an
  unpickler that admits NumPy's array reconstruction and nothing else) and MNIST-style IDX files
  (gzipped); their samples are uint8 pixels, like an .npy sample's.
- TFDS's encoded images (experiments.sources.tfds, copied into an LMDB) keep their channels: a
  grayscale PNG stays one channel.
"""

import gzip
import io
import os
import pickle

import lmdb
import numpy as np
from PIL import Image, UnidentifiedImageError

MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
DRAFT_GAP = 2  # JPEG draft decoding stops at a shorter side of at least DRAFT_GAP x the target size


def image_format(data):
    """The format named by the first bytes of an encoded image, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in MAGIC if data.startswith(magic)), None)


def resize_and_crop(image, size):
    """uint8 [size, size, C] from a Pillow image: its centre square resized to size x size
    (antialiased bilinear), C = 3 for RGB, 1 for L."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def open_picture(data, size, mode="RGB"):
    """A decoded Pillow image of mode ("RGB" or "L") from encoded bytes; raises ValueError naming
    what is wrong."""
    kind = image_format(data)
    if kind is None:
        raise ValueError("unknown image format")
    try:
        image = Image.open(io.BytesIO(data), formats=[kind])
        if kind == "JPEG":
            image.draft(mode, (DRAFT_GAP * size, DRAFT_GAP * size))  # both sides stay >= DRAFT_GAP x size
        return image.convert(mode)  # RGB: grayscale, CMYK and palettes become RGB
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"undecodable {kind}: {error}") from None


def decode(data, size):
    """uint8 [size, size, 3] from encoded bytes; raises ValueError naming what is wrong."""
    return resize_and_crop(open_picture(data, size), size)


def npy_header(path):
    """(shape, dtype) from the header of an .npy file, without reading its data (so nothing is
    ever unpickled); raises ValueError naming what is wrong."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f".npy format {version[0]}.{version[1]} is not supported")
            shape, _, dtype = read[version](handle)
    except (OSError, EOFError, SyntaxError) as error:
        raise ValueError(f"unreadable .npy header: {error}") from None
    return shape, dtype


def npy_sample_kind(shape, dtype):
    """("pixels" or "values", [H, W, C]) of an .npy sample of this shape and dtype; raises
    ValueError naming what is wrong."""
    if dtype.hasobject:
        raise ValueError("object array (pickled): never loaded")
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape {tuple(shape)} is not an image [H, W, C] or [H, W]")
    if dtype == np.uint8:
        if shape[2] not in (1, 3):
            raise ValueError(f"uint8 pixels with {shape[2]} channels, not 1 or 3")
        return "pixels", tuple(shape)
    if dtype.kind in "fiu":
        return "values", tuple(shape)
    raise ValueError(f"dtype {dtype} is not real numbers")


def from_npy(array, kind, image_shape):
    """The cache image of an .npy sample: kind "pixels" (uint8, resized to image_shape's size,
    channels kept) or "values" (float32, exactly as given); raises ValueError where the sample
    is not of that kind and shape."""
    found, shape = npy_sample_kind(array.shape, array.dtype)
    array = array.reshape(shape)
    if found != kind:
        raise ValueError(f"{array.dtype} sample in a data set of {kind}")
    if shape[2] != image_shape[2]:
        raise ValueError(f"{shape[2]} channels in a data set of {image_shape[2]}")
    if kind == "pixels":
        picture = Image.fromarray(array[:, :, 0] if shape[2] == 1 else array)
        return resize_and_crop(picture, image_shape[0]), min(picture.size) < image_shape[0]
    if shape != tuple(image_shape):
        raise ValueError(f"values of shape {shape} in a data set of {tuple(image_shape)}")
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("values not finite (NaN or infinity)")
    return values, False


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


# Image arrays of the arrays source, per process: an .npy memory-mapped (pages read as samples
# are), an .npz member read once (a zip entry cannot be memory-mapped).
_ARRAYS = {}


def _kept(path, what, read):
    """read() of the file at path, once per process (a file rewritten since is read again)."""
    info = os.stat(path)
    key = (os.getpid(), path, what, info.st_size, info.st_mtime_ns)
    if key not in _ARRAYS:
        _ARRAYS[key] = read()
    return _ARRAYS[key]


def open_array(path, member):
    """The image array at path (an .npy file, member "") or member of the .npz file at path."""
    def read():
        if member:
            with np.load(path, allow_pickle=False) as archive:
                return archive[member]
        return np.load(path, mmap_mode="r", allow_pickle=False)
    return _kept(path, member, read)


# What a CIFAR batch may ask the unpickler for: NumPy's array reconstruction (numpy 1 and 2 names),
# and the bytes a protocol-2 pickle written by Python 3 encodes through _codecs.encode.
_CIFAR_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("_reconstruct", "scalar")} | {("numpy", "ndarray"), ("numpy", "dtype"),
                                                             ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _CIFAR_GLOBALS:
            raise ValueError(f"pickle asks for {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def read_cifar_batch(path):
    """{key: value} of a CIFAR batch file (a pickled dict, keys as str): "data" [N, 3072] uint8
    (each row three 32 x 32 planes, R, G, B), "labels" (CIFAR-10) or "fine_labels" and
    "coarse_labels" (CIFAR-100), or a meta file's names; raises ValueError naming what is wrong."""
    try:
        with open(path, "rb") as handle:
            content = _ArraysOnly(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as error:
        raise ValueError(f"not a CIFAR batch: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"not a CIFAR batch: a pickled {type(content).__name__}, not a dict")
    return {key.decode("latin-1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def cifar_images(path):
    """uint8 [N, 32, 32, 3] of a CIFAR batch file."""
    data = read_cifar_batch(path).get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError("not a CIFAR batch: no uint8 [N, 3072] data")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """The array of an IDX file (MNIST's format, gzipped where the name ends in .gz): a header of
    two zero bytes, the type, the number of dimensions and each size (big-endian int32), then the
    values; raises ValueError naming what is wrong."""
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as handle:
            content = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"unreadable IDX file: {error}") from None
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in IDX_TYPES:
        raise ValueError("not an IDX file (its first bytes are not an IDX header)")
    dims = content[3]
    shape = tuple(int(size) for size in np.frombuffer(content, ">i4", dims, 4)) if len(content) >= 4 + 4 * dims else ()
    dtype = np.dtype(IDX_TYPES[content[2]])
    if len(shape) != dims or len(content) != 4 + 4 * dims + int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"IDX file of {len(content)} bytes does not hold the shape {shape} its header gives (cut "
                         "short?)")
    return np.frombuffer(content, dtype, offset=4 + 4 * dims).reshape(shape)


def close_arrays():
    """Forgets this process's image arrays (an .npz member is held in memory until then)."""
    _ARRAYS.clear()


def read_item(item):
    """The raw content of an item: ("lmdb", database, key), ("encoded", database, key, channels)
    or ("file", path) -> bytes; ("npy", path) -> array; ("array", path, member, index),
    ("cifar", path, index) and ("idx", path, index) -> one sample of an image array."""
    kind = item[0]
    if kind == "array":
        return np.array(open_array(item[1], item[2])[item[3]])
    if kind == "cifar":
        return np.array(_kept(item[1], "cifar", lambda: cifar_images(item[1]))[item[2]])
    if kind == "idx":
        return np.array(_kept(item[1], "idx", lambda: read_idx(item[1]))[item[2]])
    if kind in ("lmdb", "encoded"):
        with open_database(item[1]).begin(buffers=False) as txn:
            data = txn.get(item[2])
        if data is None:
            raise ValueError("key vanished from the database")
        return data
    if kind == "file":
        with open(item[1], "rb") as handle:
            return handle.read()
    return np.load(item[1], allow_pickle=False)


def skip_reason(error):
    """A short reason for a skipped sample, the same for every sample that fails the same way."""
    if isinstance(error, EOFError) or str(error).startswith("EOF"):  # numpy's ValueError for a short .npy
        return "file cut short"
    return str(error).split(":")[0][:60] or type(error).__name__


def decode_item(item, kind, image_shape):
    """(image, upsampled) of an item: image of the cache's kind and image_shape, upsampled True
    where the source's shorter side was below the image size; raises ValueError, OSError or
    lmdb.Error where it cannot be decoded."""
    content = read_item(item)
    if item[0] in ("npy", "array", "cifar", "idx"):
        return from_npy(content, kind, image_shape)
    picture = open_picture(content, image_shape[0], "L" if item[0] == "encoded" and item[3] == 1 else "RGB")
    return resize_and_crop(picture, image_shape[0]), min(picture.size) < image_shape[0]


def decode_chunk(items, kind, image_shape):
    """Worker entry point: for each item, (image, None, upsampled) or (None, the reason it was
    skipped, False)."""
    results = []
    for item in items:
        try:
            image, upsampled = decode_item(item, kind, image_shape)
            results.append((image, None, upsampled))
        except (ValueError, OSError, EOFError, lmdb.Error) as error:
            results.append((None, skip_reason(error), False))
    return results
