"""Benchmarks, each measured side by side in one run and reported as a ratio (never a timed test).

prepare: LSUN-style preparation on all cores against the single-process Pillow loop
(decode, resize the shorter side, centre crop) over the same WebP images.
"""

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from experiments import demo_scenes, lsun
from experiments.images import decode, open_database
from experiments.prepare import prepare_source


def lsun_like_database(path, count, seed=0):
    """count WebP scenes with a 256 px shorter side and varied aspect ratios, like LSUN's."""
    rng = np.random.default_rng(seed)
    items = {}
    for i in range(count):
        drawn = Image.fromarray(demo_scenes.draw_scene(i % 2, rng, 256))
        width = int(rng.choice([256, 320, 341, 384]))
        buffer = io.BytesIO()
        drawn.resize((width, 256), Image.Resampling.BILINEAR).save(buffer, format="WEBP", quality=85)
        items[f"{rng.integers(0, 2**63):016x}".ljust(40, "0")[:40]] = buffer.getvalue()
    lsun.write_database(path, items)
    return list(items)


def bench_prepare(count=3000, size=64, log=print):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "lsun"
        half = count // 2
        for category in ("bedroom", "tower"):
            lsun_like_database(root / f"{category}_train_lmdb", count // 2 + 4, seed=len(category))
        log(f"bench prepare: {count} WebP images (256 px shorter side) -> {size} x {size}, "
            f"{os.cpu_count()} cores")

        started = time.perf_counter()
        decoded = 0
        for category in ("bedroom", "tower"):
            path = root / f"{category}_train_lmdb"
            with open_database(path).begin() as txn:
                for key in lsun.keys_from(path, 0, half):
                    decode(txn.get(key), size)
                    decoded += 1
        single = decoded / (time.perf_counter() - started)

        started = time.perf_counter()
        prepare_source("lsun", root, Path(folder) / "cache", ("bedroom", "tower"), half - 1, 1, size,
                       workers=0, progress=False)
        pooled = count / (time.perf_counter() - started)
    result = {"cores": os.cpu_count(), "images": count, "single_process_images_per_s": round(single, 1),
              "prepare_images_per_s": round(pooled, 1), "ratio": round(pooled / single, 2)}
    log(f"  single-process Pillow loop  {single:8,.0f} images/s")
    log(f"  augcompare prepare          {pooled:8,.0f} images/s  ({result['ratio']:.2f}x, start-up and writing included)")
    return result


BENCHMARKS = {"prepare": bench_prepare}


def run(names, json_path=None, log=print):
    results = {name: BENCHMARKS[name](log=log) for name in names}
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    return results
