"""The arrays source: a data set held as whole arrays, named as Keras' loaders name them.

data.path is either an .npz file or a folder of .npy files holding x_train and y_train, and, where
the user has them, x_val / y_val and x_test / y_test. Images are [N, H, W, C] or [N, H, W]: uint8
pixels (resized like every pixel source) or other real numbers, kept as values (float32, bit for
bit). Labels are [N] or [N, 1] (Keras' CIFAR loaders), integers or strings.

Only headers and labels are read here: a folder's .npy images are memory-mapped one sample at a
time by the decoding workers (images.read_item), never read whole. An .npz member cannot be
memory-mapped (it is a zip entry): each decoding process reads the image arrays it needs once.
Nothing is ever unpickled: object arrays are refused from their header.
"""

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from augcompare.experiments.errors import UserError
from augcompare.experiments.images import npy_sample_kind

SPLITS = ("train", "val", "test")
NAMES = tuple(f"{axis}_{split}" for split in SPLITS for axis in ("x", "y"))


@dataclasses.dataclass(frozen=True)
class ArrayFile:
    """One named array: where it is (an .npy path, or an .npz path and its member) and its header."""
    name: str        # x_train, y_val, ...
    path: str        # the .npy file, or the .npz file
    member: str      # the .npz member ("x_train"), or "" for an .npy file
    shape: tuple
    dtype: np.dtype

    @property
    def where(self):
        return f"{self.name} in {self.path}"


def _read_header(handle):
    version = np.lib.format.read_magic(handle)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read:
        raise ValueError(f".npy format {version[0]}.{version[1]} is not supported")
    shape, fortran_order, dtype = read[version](handle)
    if fortran_order:
        raise ValueError("Fortran-ordered; save it with np.ascontiguousarray")
    return tuple(shape), dtype


def find(path):
    """{name: ArrayFile} of the arrays under data.path (an .npz file or a folder of .npy files),
    from their headers alone; a UserError for anything that is not such a data set."""
    path = Path(path).expanduser()
    found = {}
    try:
        if path.is_dir():
            for name in NAMES:
                file = path / f"{name}.npy"
                if file.is_file():
                    with open(file, "rb") as handle:
                        shape, dtype = _read_header(handle)
                    found[name] = ArrayFile(name, str(file), "", shape, dtype)
            strays = sorted(p.name for p in path.glob("[xy]_*.npy") if p.stem not in NAMES)
            listing = [f"{p.stem}.npy" for p in path.glob("*.npy")]
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [m[:-4] for m in archive.namelist() if m.endswith(".npy")]
                for name in NAMES:
                    if name in members:
                        with archive.open(f"{name}.npy") as handle:
                            shape, dtype = _read_header(handle)
                        found[name] = ArrayFile(name, str(path), name, shape, dtype)
            strays = sorted(m for m in members if m not in NAMES and m[:2] in ("x_", "y_"))
            listing = members
        else:
            raise UserError(f"data.path {path} is neither an .npz file (np.savez) nor a folder of .npy files")
    except (OSError, ValueError, EOFError, SyntaxError, zipfile.BadZipFile) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"{path} cannot be read as arrays ({error}); save it again with np.savez or np.save") from None
    if strays:
        raise UserError(f"{path} holds {strays[0]}, which is not one of {', '.join(NAMES)}; rename it (a split named "
                        "otherwise would be silently held out of train)")
    if "x_train" not in found or "y_train" not in found:
        missing = "x_train" if "x_train" not in found else "y_train"
        raise UserError(f"{path} has no {missing} (found: {', '.join(sorted(listing)) or 'no arrays'}); save the "
                        "training images as x_train and their labels as y_train (Keras' names)")
    for split in SPLITS[1:]:
        x, y = f"x_{split}", f"y_{split}"
        if (x in found) != (y in found):
            have, lack = (x, y) if x in found else (y, x)
            raise UserError(f"{path} has {have} but no {lack}; give both, or neither (then {split} is held out of "
                            "train)")
    return found


def sample_kind(image_file):
    """("pixels" or "values", [H, W, C]) of the samples of an image array; a UserError naming
    what is wrong."""
    if image_file.dtype.hasobject:
        raise UserError(f"{image_file.where} is an object array (pickled), which is never loaded; save the images as "
                        "a uint8 or float array")
    if len(image_file.shape) not in (3, 4):
        raise UserError(f"{image_file.where} has shape {image_file.shape}; give images as [N, H, W, C] or [N, H, W]")
    try:
        return npy_sample_kind(image_file.shape[1:], image_file.dtype)
    except ValueError as error:
        raise UserError(f"{image_file.where}: {error}; give uint8 pixels with 1 or 3 channels, or real-number "
                        "values") from None


def read_labels(label_file, count, image_file):
    """The labels of a split as a 1-D array of int64 or str, checked against its images' count."""
    if label_file.dtype.hasobject:
        raise UserError(f"{label_file.where} is an object array (pickled), which is never loaded; save the labels as "
                        "integers or strings")
    shape = label_file.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise UserError(f"{label_file.where} has shape {shape}; give one label per image, [N] or [N, 1]")
    if shape[0] != count:
        raise UserError(f"{image_file.where} holds {count} images but {label_file.where} holds {shape[0]} labels; "
                        "give one label per image")
    kind = label_file.dtype.kind
    if kind not in "iuUS":
        raise UserError(f"{label_file.where} holds {label_file.dtype} labels; give integers or strings (class "
                        "indices or names)")
    labels = load(label_file).reshape(-1)
    if kind == "S":
        labels = np.char.decode(labels, "utf-8", "replace")
    return labels.astype(np.int64) if kind in "iu" else labels.astype(str)


def load(array_file, mmap=False):
    """The array itself (allow_pickle=False); a folder's .npy memory-mapped where mmap."""
    try:
        if not array_file.member:
            return np.load(array_file.path, mmap_mode="r" if mmap else None, allow_pickle=False)
        with np.load(array_file.path, allow_pickle=False) as archive:
            return archive[array_file.member]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{array_file.where} cannot be read ({error}); save it again") from None


def fingerprint(path):
    """{file: [size, mtime_ns]} of the files under data.path: a changed file makes another cache."""
    path = Path(path).expanduser()
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path]
    stats = {}
    for file in files:
        try:
            info = os.stat(file)
        except OSError:
            continue
        stats[file.name] = [info.st_size, info.st_mtime_ns]
    return stats
