"""Where a run's data comes from: every source ends as a prepared cache (experiments.cache) that
training memory-maps. The demo is drawn here; LSUN, folders, .npy files, arrays, TFDS's and
Keras' data sets are prepared by experiments.prepare.
"""

import os
import time
from pathlib import Path

from augcompare.experiments import cache, console, demo_scenes
from augcompare.experiments.errors import Interrupted, UserError

SHOW_AFTER = 2.0  # seconds of drawing before the demo's progress line appears


def default_cache_dir():
    return Path(os.environ.get("AUGCOMPARE_CACHE", Path.home() / ".cache" / "augcompare"))


def demo_dataset(data, cache_dir, check=None):
    """The synthetic rooms-versus-towers set, drawn on first use (seconds) and cached."""
    params = {"source": "demo", "version": demo_scenes.VERSION, "image_size": data.image_size,
              "train_per_class": data.train_per_class, "val_per_class": data.val_per_class,
              "test_per_class": data.test_per_class, "seed": data.seed}
    directory = Path(cache_dir) / f"demo-{cache.key(params)}"
    if not cache.is_complete(directory):
        if check is not None:
            check((data.image_size, data.image_size, 3), len(demo_scenes.CLASS_NAMES))
        arrays = {}
        total = len(demo_scenes.CLASS_NAMES) * sum(getattr(data, f"{split}_per_class") for split in cache.SPLITS)
        drawn, started, shown = 0, time.perf_counter(), 0.0

        def on_image():
            nonlocal drawn, shown
            drawn += 1
            now = time.perf_counter() - started
            if now >= SHOW_AFTER and (now - shown >= 0.25 or drawn == total):  # a quick draw stays quiet
                rate = drawn / max(now, 1e-9)
                console.status(f"  drawing the demo data: {drawn:,}/{total:,} images  {rate:,.0f} images/s  "
                               f"ETA {(total - drawn) / rate:.0f} s")
                shown = now
        try:
            for index, split in enumerate(cache.SPLITS):
                per_class = getattr(data, f"{split}_per_class")
                arrays[f"{split}_images"], arrays[f"{split}_labels"] = demo_scenes.draw_split(
                    split, per_class, data.image_size, [data.seed, index], on_image)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while drawing the demo data ({drawn:,} of {total:,} images); nothing is "
                              "kept: the same command draws it again, then caches it") from None
        finally:
            console.end()
        meta = cache.describe_meta(arrays, demo_scenes.CLASS_NAMES, "pixels", source="demo", params=params)
        try:
            cache.write(directory, arrays, meta)
        except OSError as error:
            # Where another process renamed the same cache into place first, use that one.
            if not (directory / "meta.json").is_file():
                raise UserError(f"cannot write the demo data to {directory} ({error.strerror}); "
                                  "set data.cache_dir or AUGCOMPARE_CACHE to a writable folder") from None
    return cache.open_cache(directory)


def load_dataset(data, check=None):
    """The Dataset named by a DataConfig. check(image_shape, num_classes): called before the data
    is drawn or prepared, as soon as its shape is known (where nothing is prepared: on the cache);
    it raises to stop (a run checks its network there)."""
    cache_dir = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    if data.source == "demo":
        dataset = demo_dataset(data, cache_dir, check)
    elif data.source == "cache":
        dataset = cache.open_cache(Path(data.path).expanduser())
    elif data.source in ("lsun", "folder", "npy", "arrays", "tfds", "keras"):
        from augcompare.experiments.prepare import prepare_source, source_params
        out = cache_dir / f"{data.source}-{cache.key(source_params(data))}"
        dataset = cache.open_cache(prepare_source(data, out, check=check))
    else:
        raise UserError(f"unknown data.source {data.source!r}")
    if check is not None:  # the data's own shape (a check already made with it is not repeated: run._network)
        check(tuple(dataset.image_shape), len(dataset.class_names))
    return dataset
