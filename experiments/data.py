"""Data sources and the uint8 cache they all prepare.

A cache is a directory holding train_images.npy (uint8 [N, S, S, 3]), train_labels.npy (int64),
val_images.npy, val_labels.npy and meta.json (class names in label order, source, sizes). It is
written under a temporary name with meta.json last and renamed into place, so a directory that
has meta.json is complete; training memory-maps its arrays, so memory stays bounded.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from augcompare.experiments import demo_scenes
from augcompare.experiments.errors import ConfigError

ARRAYS = ("train_images", "train_labels", "val_images", "val_labels")


@dataclasses.dataclass(frozen=True)
class Dataset:
    train_images: np.ndarray  # uint8 [N, S, S, 3], possibly memory-mapped
    train_labels: np.ndarray  # int64 [N]
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: tuple
    path: Path                # the cache directory it was read from


def default_cache_dir():
    return Path(os.environ.get("AUGCOMPARE_CACHE", Path.home() / ".cache" / "augcompare"))


@contextlib.contextmanager
def staged_cache(directory):
    """Yields a hidden staging directory beside directory and renames it into place when the
    block ends; on any failure or interruption the staging directory is removed. Write
    meta.json last: a directory without it is never taken for a complete cache."""
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.partial-", dir=directory.parent))
    except OSError as error:
        raise ConfigError(f"cannot write to {directory.parent} ({error.strerror}); choose a writable folder") from None
    try:
        yield staging
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_cache(directory, arrays, meta):
    """Writes arrays (a dict over ARRAYS) and meta atomically to directory, which must not exist."""
    with staged_cache(directory) as staging:
        for name in ARRAYS:
            np.save(staging / f"{name}.npy", arrays[name], allow_pickle=False)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(directory)


def open_cache(directory):
    """The Dataset in a cache directory, memory-mapped, after checking it against meta.json."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(f"{directory} is not a prepared data set (no meta.json); run augcompare prepare")
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in ARRAYS}
    except (OSError, ValueError) as error:
        raise ConfigError(f"{directory} is damaged ({error}); delete it and prepare it again") from None
    class_names = tuple(meta.get("class_names", ()))
    for split in ("train", "val"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if f"{split}_count" in meta and (len(images) != meta[f"{split}_count"]
                                         or images.shape[1:3] != (meta["image_size"],) * 2):
            raise ConfigError(f"{directory}/{split}_images.npy holds {images.shape} but meta.json says "
                              f"{meta[f'{split}_count']} images of {meta['image_size']} px; delete it and prepare it again")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(f"{directory}/{split}_images.npy must be uint8 [N, S, S, 3], "
                              f"got {images.dtype} {images.shape}; prepare it again")
        if labels.shape != (len(images),):
            raise ConfigError(f"{directory}: {len(images)} {split} images but labels of shape "
                              f"{labels.shape}; prepare it again")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ConfigError(f"{directory}: {split} labels outside 0..{len(class_names) - 1}; prepare it again")
    return Dataset(arrays["train_images"], arrays["train_labels"], arrays["val_images"],
                   arrays["val_labels"], class_names, directory)


def cache_key(params):
    """A short stable hash of the parameters a cache was made from."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def demo_dataset(data, cache_dir):
    """The synthetic rooms-versus-towers set, drawn on first use (seconds) and cached."""
    params = {"source": "demo", "version": 1, "image_size": data.image_size,
              "train_per_class": data.train_per_class, "val_per_class": data.val_per_class,
              "seed": data.seed}
    directory = Path(cache_dir) / f"demo-{cache_key(params)}"
    if not (directory / "meta.json").is_file():
        train_images, train_labels = demo_scenes.draw_split(data.train_per_class, data.image_size,
                                                            [data.seed, 0])
        val_images, val_labels = demo_scenes.draw_split(data.val_per_class, data.image_size,
                                                        [data.seed, 1])
        arrays = {"train_images": train_images, "train_labels": train_labels,
                  "val_images": val_images, "val_labels": val_labels}
        meta = {**params, "class_names": list(demo_scenes.CLASS_NAMES),
                "train_count": len(train_labels), "val_count": len(val_labels)}
        try:
            write_cache(directory, arrays, meta)
        except OSError as error:
            # Where another process renamed the same cache into place first, use that one.
            if not (directory / "meta.json").is_file():
                raise ConfigError(f"cannot write the demo data to {directory} ({error.strerror}); "
                                  "set data.cache_dir or AUGCOMPARE_CACHE to a writable folder") from None
    return open_cache(directory)


def load_dataset(data):
    """The Dataset named by a DataConfig."""
    cache_dir = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    if data.source == "demo":
        return demo_dataset(data, cache_dir)
    if data.source == "cache":
        return open_cache(Path(data.path).expanduser())
    if data.source in ("lsun", "folder", "npy"):
        from augcompare.experiments.prepare import prepare_source, source_params
        settings = {"categories": list(data.categories), "train_per_class": data.train_per_class,
                    "val_per_class": data.val_per_class, "image_size": data.image_size, "seed": data.seed,
                    "max_skip_fraction": data.max_skip_fraction}
        out = cache_dir / f"{data.source}-{cache_key(source_params(data.source, data.root, **settings))}"
        return open_cache(prepare_source(data.source, data.root, out, workers=data.workers, **settings))
    raise ConfigError(f"unknown data.source {data.source!r}")
