"""Benchmarks, each measured side by side in one run and reported as a ratio (never a timed test).

prepare: LSUN-style preparation on all cores against the single-process Pillow loop
(decode, resize the shorter side, centre crop) over the same WebP images; and the peak memory of
the augcompare prepare command for 3,000 and 30,000 images.
pipeline: float32 batches of the standard set (rotation +-20 degrees, brightness +-0.2,
horizontal flip, rescale) from get_generator_cyclic, against albumentations per image and
Keras 3 preprocessing layers in tf.data, with the no-augmentation floor beside them.
training: epochs of the demo's network with and without augmentation, in turn.
memory: peak anonymous memory of a DataGenerator pass over memory-mapped caches of 10,000 and
100,000 images.
run: the whole `augcompare run` command of the demo (or --experiment), once per variant (or
--repeat K times, the variants in turn), each in a fresh process: its wall time, where that time
goes, and each variant's wall time against the first's (medians over the repeats, with the range).
"""

import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from augcompare.experiments import demo_scenes, lsun_release, stats, timing
from augcompare.experiments.config import DataConfig
from augcompare.experiments.images import decode, open_database
from augcompare.experiments.prepare import prepare_source
from PIL import Image


def lsun_like_database(path, count, seed=0, distinct=None):
    """count WebP scenes with a 256 px shorter side and varied aspect ratios, like LSUN's; with
    distinct, only that many are drawn and their values repeated under other keys (decoding costs
    the same, drawing much less)."""
    rng = np.random.default_rng(seed)
    values = []
    for i in range(min(count, distinct or count)):
        drawn = Image.fromarray(demo_scenes.draw_scene(i % 2, rng, 256))
        width = int(rng.choice([256, 320, 341, 384]))
        buffer = io.BytesIO()
        drawn.resize((width, 256), Image.Resampling.BILINEAR).save(buffer, format="WEBP", quality=85)
        values.append(buffer.getvalue())
    items = {f"{rng.integers(0, 2**63):016x}".ljust(40, "0")[:40]: values[i % len(values)] for i in range(count)}
    lsun_release.write_database(path, items)
    return list(items)


CATEGORIES = ("bedroom", "tower")


def _lsun_settings(root, count, size):
    """The DataConfig that prepares count images of the two categories, nearly all of them train."""
    return DataConfig(source="lsun", root=str(root), categories=CATEGORIES, train_per_class=count // 2 - 2,
                      val_per_class=1, test_per_class=1, image_size=size, workers=0)


def _process_tree(pid):
    """pid and its descendants, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree = {pid}
    while grown := {child for child, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    return tree


def _status_kib(pid, field):
    """A field of /proc/<pid>/status in KiB; 0 for a process that is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _peak_memory(command):
    """Runs command; returns (peak RssAnon summed over it and its worker processes, its own peak
    RSS VmHWM), in KiB, sampled every 10 ms. Anonymous memory is what a list of images would
    grow; the LMDB values the workers read are file pages the kernel can drop (left out)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anon = peak_rss = 0
    while process.poll() is None:
        peak_anon = max(peak_anon, sum(_status_kib(pid, "RssAnon") for pid in _process_tree(process.pid)))
        peak_rss = max(peak_rss, _status_kib(process.pid, "VmHWM"))
        time.sleep(0.01)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read()}")
    return peak_anon, peak_rss


def _cpu_seconds():
    """CPU seconds of this process and of its children that ended (the preparation's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_prepare(count=3000, size=64, memory_counts=(3000, 30_000), log=print):
    """Speed: augcompare prepare on all cores against the single-process Pillow loop over the same
    WebP images, both through images.decode. Memory: the peak of the augcompare prepare command
    for each of memory_counts images, side by side."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "lsun"
        for category in CATEGORIES:
            lsun_like_database(root / f"{category}_train_lmdb", count // 2 + 4, seed=len(category))
        log(f"bench prepare: {count} WebP images (256 px shorter side) -> {size} x {size}, "
            f"{os.cpu_count()} cores")

        started, cpu_started = time.perf_counter(), _cpu_seconds()
        decoded = 0
        for category in CATEGORIES:
            path = root / f"{category}_train_lmdb"
            with open_database(path).begin() as txn:
                for key in lsun_release.keys_from(path, 0, count // 2):
                    decode(txn.get(key), size)
                    decoded += 1
        single = decoded / (time.perf_counter() - started)
        single_cpu = (_cpu_seconds() - cpu_started) / decoded

        started, cpu_started = time.perf_counter(), _cpu_seconds()
        prepare_source(_lsun_settings(root, count, size), Path(folder) / "cache", progress=False)
        pooled = count / (time.perf_counter() - started)
        pooled_cpu = (_cpu_seconds() - cpu_started) / count
        # CPU time per image says what the machine's other load does not: the work each image costs.
        log(f"  single-process Pillow loop  {single:8,.0f} images/s  {single_cpu * 1000:5.2f} ms CPU per image")
        log(f"  augcompare prepare          {pooled:8,.0f} images/s  {pooled_cpu * 1000:5.2f} ms CPU per image, "
            f"workers included  ({pooled / single:.2f}x, start-up and writing included)")

        largest = max(memory_counts)
        many = Path(folder) / "many"
        for category in CATEGORIES:
            lsun_like_database(many / f"{category}_train_lmdb", largest // 2 + 4, seed=len(category), distinct=256)
        log("bench prepare memory: the augcompare prepare command, peak RssAnon of it and its workers "
            "(sampled every 10 ms) and its own peak RSS")
        peaks = {}
        for images in memory_counts:
            settings = _lsun_settings(many, images, size)
            command = [sys.executable, "-m", "augcompare.experiments.cli", "prepare", "lsun", "--root", str(many),
                       "--categories", ",".join(CATEGORIES), "--image-size", str(size),
                       "--train-per-class", str(settings.train_per_class), "--val-per-class", "1",
                       "--test-per-class", "1", "--out", str(Path(folder) / f"memory-{images}")]
            peaks[images] = _peak_memory(command)
            log(f"  {images:>8,} images  peak RssAnon {peaks[images][0] / 1024:7.1f} MiB  "
                f"main process peak RSS {peaks[images][1] / 1024:7.1f} MiB")
    small, large = min(memory_counts), largest
    memory_ratio = peaks[large][0] / peaks[small][0]
    log(f"  {large:,} vs {small:,} images: {memory_ratio:.3f}x (RssAnon), "
        f"{peaks[large][1] / peaks[small][1]:.3f}x (main process RSS)")
    return {"cores": os.cpu_count(), "images": count, "single_process_images_per_s": round(single, 1),
            "prepare_images_per_s": round(pooled, 1), "ratio": round(pooled / single, 2),
            "cpu_ms_per_image": {"single_process": round(single_cpu * 1000, 3), "prepare": round(pooled_cpu * 1000, 3)},
            "peak_rss_anon_kib": {n: p[0] for n, p in peaks.items()},
            "main_process_peak_rss_kib": {n: p[1] for n, p in peaks.items()},
            "memory_ratio": round(memory_ratio, 3)}


def _images_per_second(batches, batch_size, seconds):
    """Pulls batches from an endless iterator for about `seconds` after a warm-up."""
    for _ in range(5):
        next(batches)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        x, _ = next(batches)
        count += len(x)
    return count / (time.perf_counter() - started)


def _albumentations_batches(images, labels, batch_size, seed):
    """The anchor of the issue: albumentations per image, stacked and rescaled to float32."""
    import albumentations
    import cv2
    pipeline = albumentations.Compose([
        albumentations.Rotate(limit=20, interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101, p=1.0),
        albumentations.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.0, p=1.0),
        albumentations.HorizontalFlip(p=0.5)], seed=seed)
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(images))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            x = np.stack([pipeline(image=images[i])["image"] for i in index]).astype(np.float32) / 255.0
            yield x, labels[index]


def _keras_layers_batches(images, labels, batch_size, seed):
    """The usual Keras 3 recipe: preprocessing layers mapped over a batched tf.data pipeline."""
    from augcompare.augment.backend import keras, tf
    layers = keras.Sequential([
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.RandomRotation(20 / 360, fill_mode="reflect", seed=seed),
        keras.layers.RandomBrightness(0.2, value_range=(0.0, 1.0), seed=seed),
        keras.layers.RandomFlip("horizontal", seed=seed)])
    data = (tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(images), seed=seed).repeat()
            .batch(batch_size, drop_remainder=True)
            .map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
    return ((x.numpy(), y.numpy()) for x, y in data)


def bench_pipeline(count=4096, size=64, batch_size=32, seconds=3.0, rounds=3, log=print):
    """Images/s of each pipeline, the median of `rounds` measurements taken in turn."""
    from augcompare.augment import PRESETS, Augmentation, get_generator_cyclic
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, count)
    standard = Augmentation(**PRESETS["standard"])
    pipelines = {
        "get_generator_cyclic, no augmentation (floor)": lambda: get_generator_cyclic(
            images, labels, batch_size, augment=None, normalize="rescale", seed=0),
        "get_generator_cyclic, standard set": lambda: get_generator_cyclic(
            images, labels, batch_size, augment=standard, normalize="rescale", seed=0),
        "tf.data + Keras 3 layers (anchor)": lambda: _keras_layers_batches(images, labels, batch_size, 0),
    }
    try:
        import albumentations  # noqa: F401
        pipelines["albumentations per image (anchor)"] = lambda: _albumentations_batches(
            images, labels, batch_size, 0)
    except ImportError:
        log("  albumentations is not installed (pip install -e \".[bench]\"); its row is left out")
    log(f"bench pipeline: {size} x {size} RGB uint8, batch {batch_size}, rotation +-20 deg, brightness +-0.2, "
        f"horizontal flip, rescale -> float32; {os.cpu_count()} cores; median of {rounds} rounds of {seconds:g} s")
    streams = {name: make() for name, make in pipelines.items()}
    measured = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, batches in streams.items():
            measured[name].append(_images_per_second(batches, batch_size, seconds))
    speeds = {name: statistics.median(values) for name, values in measured.items()}
    ours = speeds["get_generator_cyclic, standard set"]
    anchors = {name: value for name, value in speeds.items() if "anchor" in name}
    best_anchor = max(anchors.values())
    for name, value in speeds.items():
        log(f"  {name:48s} {value:9,.0f} images/s")
    log(f"  standard set vs the best anchor: {ours / best_anchor:.2f}x")
    return {"cores": os.cpu_count(), "images_per_s": {k: round(v, 1) for k, v in speeds.items()},
            "ratio_vs_best_anchor": round(ours / best_anchor, 2)}


def bench_training(epochs=12, experiment_path=None, log=print):
    """Seconds per training epoch of an experiment's network and data (the demo's by default)
    for each of its arms, trained inside the model as augcompare run trains them, plus Keras 3
    layers in tf.data as an anchor (the standard set, as the usual Keras recipe). Each arm trains
    one epoch to trace and compile, then the arms take turns one epoch at a time, so that the
    machine's slow phases fall on all of them alike; the median of `epochs` epochs per arm. Speed
    is relative to the arm without augmentation (the baseline)."""
    from augcompare.augment import get_generator_cyclic
    from augcompare.augment.backend import keras, tf
    from augcompare.augment.params import augments
    from augcompare.experiments import config, stats
    from augcompare.experiments.data import load_dataset
    from augcompare.experiments.training import (
        Trainer,
        check_arms,
        one_hot_batches,
        steps_per_epoch,
        write_initial_weights,
    )
    experiment = config.load(experiment_path)
    dataset = load_dataset(experiment.data)
    check_arms(experiment, dataset)
    images, labels = dataset.train_images, dataset.train_labels
    shape, classes, batch_size = dataset.image_shape, len(dataset.class_names), experiment.train.batch_size
    steps = steps_per_epoch(len(labels), batch_size)
    weights = Path(tempfile.mkdtemp()) / "initial.weights.h5"
    write_initial_weights(experiment, shape, classes, 0, weights)
    baseline = stats.baseline_arm(experiment.arms, augments)

    class EpochTimer(keras.callbacks.Callback):
        """Seconds from an epoch's start to its last batch, as history.csv's epoch_seconds."""

        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.finished = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(self.finished - self.started)

    def trainer(arm):
        made = Trainer(experiment, arm, shape, classes, dataset.value_range, steps, tf.distribute.get_strategy())
        made.reset(0, weights)
        return made

    runs = {arm: (trainer(arm), one_hot_batches(get_generator_cyclic(images, labels, batch_size, normalize=None,
                                                                     seed=0), classes))
            for arm in experiment.arms}
    if baseline is not None and dataset.kind == "pixels" and dataset.image_shape[-1] == 3:
        batches = _keras_layers_batches(np.asarray(images), labels, batch_size, 0)
        # The layers already rescale: the model only has to take pixels, so undo the rescale.
        runs["Keras 3 layers in tf.data (anchor)"] = (trainer(baseline), one_hot_batches(
            ((x * 255.0, y) for x, y in batches), classes))
    log(f"bench training: {experiment.name} network and data ({len(labels)} images {shape[0]} x {shape[1]} x "
        f"{shape[2]}, batch {batch_size}), {os.cpu_count()} cores; median s/epoch of {epochs} epochs per arm, arms "
        "in turn, after one to compile")
    timers = {name: EpochTimer() for name in runs}
    for epoch in range(epochs + 1):
        for name, (made, batches) in runs.items():
            made.model.fit(batches, steps_per_epoch=steps, initial_epoch=epoch, epochs=epoch + 1,
                           callbacks=[timers[name]], verbose=0, shuffle=False)
    seconds = {name: statistics.median(timer.seconds[1:]) for name, timer in timers.items()}
    base = seconds[baseline] if baseline is not None else None
    for name, value in seconds.items():
        relative = f"  speed {base / value:.2f}x of {baseline}" if base else ""
        log(f"  {name:44s} {value:6.3f} s/epoch{relative}")
    keras.backend.clear_session()
    return {"cores": os.cpu_count(), "experiment": experiment.name, "baseline": baseline,
            "seconds_per_epoch": {k: round(v, 4) for k, v in seconds.items()},
            "speed_vs_baseline": {k: round(base / v, 3) for k, v in seconds.items()} if base else None}


def _peak_rss_anon(cache, batch_size):
    """Runs one DataGenerator pass over cache/train_images.npy in a fresh process and returns
    its peak RssAnon in kB, sampled after every batch."""
    code = f"""
import numpy as np
from augcompare.augment import DataGenerator
images = np.load({str(cache / "train_images.npy")!r}, mmap_mode="r", allow_pickle=False)
labels = np.zeros(len(images), dtype=np.int64)
data = DataGenerator(range(len(images)), labels, source=images, batch_size={batch_size},
                     dim=images.shape[1:], shuffle=True, norm="rescale", seed=0)
def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
peak = rss_anon()
for i in range(len(data)):
    data[i]
    peak = max(peak, rss_anon())
print(peak)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[-1])


def bench_memory(small=10_000, large=100_000, size=64, batch_size=32, log=print):
    log(f"bench memory: one shuffled DataGenerator pass over a memory-mapped cache of {size} x {size} RGB images, "
        f"batch {batch_size}; peak RssAnon of the process")
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in (small, large):
            cache = Path(folder) / str(count)
            cache.mkdir()
            images = np.lib.format.open_memmap(cache / "train_images.npy", mode="w+", dtype=np.uint8,
                                               shape=(count, size, size, 3))
            for start in range(0, count, 10_000):  # written in slices: the writer's memory stays bounded too
                images[start:start + 10_000] = np.random.default_rng(start).integers(
                    0, 256, images[start:start + 10_000].shape, dtype=np.uint8)
            images.flush()
            del images
            peaks[count] = _peak_rss_anon(cache, batch_size)
            log(f"  {count:>8,} images ({count * size * size * 3 / 2**30:.2f} GiB on disk)  "
                f"peak RssAnon {peaks[count] / 1024:7.1f} MiB")
    ratio = peaks[large] / peaks[small]
    log(f"  {large:,} vs {small:,} images: {ratio:.3f}x")
    return {"peak_rss_anon_kib": peaks, "ratio": round(ratio, 3)}


# What `bench run` can compare: --set overrides and environment variables of the command.
RUN_VARIANTS = {
    "default": ([], {}),
    "one-job-at-a-time": (["run.jobs_at_once=1"], {}),
    "two-jobs-at-once": (["run.jobs_at_once=2"], {}),
    "eigen": ([], {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    # oneDNN held to AVX2 on a CPU with more (AVX-512, AMX): near what an AVX2-only CPU's kernels do.
    "onednn-avx2": ([], {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "mixed_bfloat16": (["train.precision=mixed_bfloat16"], {}),
}
# The parts of a run, as experiments.timing names them, in the order of a run. Job parts are
# summed over every job and divided by the jobs trained at once: their share of the job lanes.
DRIVER_PARTS = ("run: start-up (imports)", "run: data", "run: checks", "run: preview grid", "run: merging job files",
                "run: summary and figures")
WORK_PARTS = ("job: training steps", "job: validation", "job: test evaluation")


def _timed_run(experiment_path, cache_dir, out, variant, run_id):
    """One `augcompare run` in a fresh process; (wall seconds, its timing file's content)."""
    sets, env = RUN_VARIANTS[variant]
    timings = Path(out) / f"{run_id}.timings.json"
    command = [sys.executable, "-m", "augcompare.experiments.cli", "run", str(experiment_path), "--out", str(out),
               "--run-id", run_id, "--set", f"data.cache_dir={cache_dir}"]
    for item in sets:
        command += ["--set", item]
    launched = time.time()
    result = subprocess.run(command, check=False, env={**os.environ, **env, "AUGCOMPARE_TIMINGS": str(timings)},
                            capture_output=True, text=True)
    wall = time.time() - launched
    if result.returncode != 0:
        raise RuntimeError(f"bench run {variant}: augcompare run exited {result.returncode}: "
                           f"{result.stderr.strip()[-500:]}")
    document = json.loads(timings.read_text())
    document["startup_seconds"] = document["main_started_at"] - launched
    run_dir = next(Path(out).glob(f"*/{run_id}"))
    environment = json.loads((run_dir / "environment.json").read_text())
    return wall, document, environment, _answer(json.loads((run_dir / "summary.json").read_text()))


def _answer(summary):
    """Each arm's primary comparison with the baseline: {arm: (mean, low, high, verdict)}, in
    points where the metric is a fraction; what a variant (a precision, the kernels) changes in
    the answer."""
    answer = {}
    for arm, entry in summary.get("vs_baseline", {}).items():
        primary = entry.get("primary")
        if primary and primary.get("ci95"):
            scale = 100 if stats.is_fraction(primary["metric"]) else 1
            low, high = primary["ci95"]
            answer[arm] = (primary["mean"] * scale, low * scale, high * scale, primary["verdict"])
    return answer


def _breakdown(wall, document, environment):
    """Seconds and share of the wall time per part; job parts per job lane."""
    spans = document["spans"]
    lanes = max(1, environment.get("jobs_at_once") or 1)
    parts = {"start-up: Python and augcompare's imports": document["startup_seconds"]
             + spans.get("run: start-up (imports)", 0.0)}
    parts.update({name: spans.get(name, 0.0) for name in DRIVER_PARTS[1:]})
    worker_start = spans.get("workers: start-up (a Python and TensorFlow each)", 0.0)
    if worker_start:
        parts["workers: start-up, per lane (overlaps the driver's parts)"] = worker_start / lanes
    job_parts = [name for name in timing.JOB_PARTS if name in spans]
    parts.update({f"{name}, per lane": spans[name] / lanes for name in job_parts})
    work = sum(spans.get(name, 0.0) for name in WORK_PARTS) / lanes
    return {"wall_seconds": wall, "jobs_at_once": lanes, "threads_per_job": environment.get("threads_per_job"),
            "onednn": environment.get("kernels", {}).get("onednn"), "parts_seconds": parts,
            "training_and_evaluation_fraction": work / wall, "other_fraction": 1 - work / wall}


def _median_of(repeats):
    """One variant's figures over its repeats (each a _breakdown with its answer): the median of
    each time and share, the wall time's range [fastest, slowest], the first repeat's answer, and
    every repeat's own figures."""
    walls = [repeat["wall_seconds"] for repeat in repeats]
    names = dict.fromkeys(name for repeat in repeats for name in repeat["parts_seconds"])
    fractions = ("training_and_evaluation_fraction", "other_fraction")
    return {**repeats[0], "wall_seconds": statistics.median(walls), "wall_seconds_range": [min(walls), max(walls)],
            "parts_seconds": {name: statistics.median(repeat["parts_seconds"].get(name, 0.0) for repeat in repeats)
                              for name in names},
            **{key: statistics.median(repeat[key] for repeat in repeats) for key in fractions},
            "repeats": repeats}


def bench_run(experiment_path=None, variants=None, repeat=1, log=print):
    """The whole `augcompare run` command, once per variant (RUN_VARIANTS), or `repeat` times
    each, the variants in turn (A, B, A, B, ...) so that the machine's slow phases fall on all of
    them alike; one run's time is noise on a shared machine. All on the same prepared data (drawn
    or prepared once first, and timed apart: a first run pays it once). Where the wall time goes
    comes from the run's own timing (experiments.timing); the figures are medians over the repeats."""
    from augcompare.experiments import config
    from augcompare.experiments.data import load_dataset
    variants = list(variants or ("default", "one-job-at-a-time"))
    experiment_path = experiment_path or config.DEFAULT_EXPERIMENT
    experiment = config.load(experiment_path)
    repeats = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as folder:
        cache_dir = Path(folder) / "cache"
        started = time.perf_counter()
        load_dataset(config.load(experiment_path, [f"data.cache_dir={cache_dir}"]).data)
        prepared = time.perf_counter() - started
        times = "once" if repeat == 1 else f"{repeat} times, the variants in turn (medians, range)"
        log(f"bench run: augcompare run {experiment.name}, whole command in a fresh process per variant, {times}, "
            f"{os.cpu_count()} cores; the data drawn or prepared once first ({prepared:.1f} s, not in the runs)")
        for round_ in range(repeat):
            for index, variant in enumerate(variants):
                wall, document, environment, answer = _timed_run(experiment_path, cache_dir, Path(folder) / "out",
                                                                 variant, f"{index}-{variant}-{round_}")
                repeats[variant].append({**_breakdown(wall, document, environment), "answer": answer})
    results = {variant: _median_of(runs) for variant, runs in repeats.items()}
    first = results[variants[0]]["wall_seconds"]
    names = list(dict.fromkeys(name for result in results.values() for name in result["parts_seconds"]))
    log(f"  {'':58s}" + "".join(f"{variant:>24s}" for variant in variants))
    log(f"  {'jobs at once x TensorFlow threads per job':58s}" + "".join(
        f"{str(r['jobs_at_once']) + ' x ' + str(r['threads_per_job']):>24s}" for r in results.values()))
    for name in names:
        cells = [(r["parts_seconds"].get(name, 0.0), r["wall_seconds"]) for r in results.values()]
        log(f"  {name:58s}" + "".join(f"{seconds:9.1f} s {100 * seconds / wall:6.1f} %" for seconds, wall in cells))
    log(f"  {'wall time':58s}" + "".join(f"{r['wall_seconds']:9.1f} s {'':8s}" for r in results.values()))
    if repeat > 1:
        log(f"  {f'wall time range over {repeat} runs':58s}" + "".join(
            f"{'%.1f-%.1f s' % tuple(r['wall_seconds_range']):>24s}" for r in results.values()))
    log(f"  {'training steps, validation and test evaluation':58s}" + "".join(
        f"{100 * r['training_and_evaluation_fraction']:17.1f} %" for r in results.values()))
    log(f"  {'everything else (start-up, data, building, tracing, files)':58s}" + "".join(
        f"{100 * r['other_fraction']:17.1f} %" for r in results.values()))
    log(f"  {'speed against ' + variants[0]:58s}" + "".join(
        f"{first / r['wall_seconds']:16.2f} x " for r in results.values()))
    for arm in dict.fromkeys(arm for result in results.values() for arm in result["answer"]):
        log(f"  {'answer: ' + arm + ' against the baseline (95% CI, verdict)':58s}" + "".join(
            "  " + ("%+.1f [%+.1f, %+.1f] %s" % r["answer"][arm] if arm in r["answer"] else "-").rjust(22)
            for r in results.values()))
    for result in results.values():
        result["speed_vs_first"] = round(first / result["wall_seconds"], 3)
    return {"cores": os.cpu_count(), "experiment": experiment.name, "prepare_seconds": round(prepared, 2),
            "repeat": repeat, "variants": results}


BENCHMARKS = {"prepare": bench_prepare, "pipeline": bench_pipeline, "training": bench_training,
              "memory": bench_memory, "run": bench_run}


def record(figures, command):
    """A measurement record as results/bench/ keeps them (docs/generate.py draws the speed tables
    from them): the machine (the CPU's model name, as lscpu and /proc/cpuinfo give it, its cores and
    the instruction sets that decide the kernels), the versions, the command, the date (UTC), the
    conditions (empty: say them before you keep the record) and the figures."""
    import datetime
    import importlib.metadata
    import platform
    from augcompare.augment.backend import keras, tf
    from augcompare.experiments.machine import cpu
    processor = cpu()
    versions = {"augcompare": importlib.metadata.version("augcompare"), "Python": platform.python_version(),
                "TensorFlow": tf.__version__, "Keras": keras.__version__, "NumPy": np.__version__}
    try:
        versions["albumentations"] = importlib.metadata.version("albumentations")
    except importlib.metadata.PackageNotFoundError:
        pass
    return {"machine": {"cpu": processor["model"] or platform.processor() or "unknown", "cores": os.cpu_count(),
                        "instruction_sets": processor["features"]},
            "versions": versions, "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), "conditions": "",
            "figures": figures}


def run(names, json_path=None, experiment_path=None, variants=None, repeat=1, log=print):
    """Runs the named benchmarks; experiment_path: the experiment `training` and `run` measure;
    variants: what `run` compares; repeat: how many times `run` runs each variant. json_path:
    where to write their record (record())."""
    results = {}
    for name in names:
        extra = {"experiment_path": experiment_path} if name in ("training", "run") else {}
        if name == "run":
            extra.update(variants=variants, repeat=repeat)
        results[name] = BENCHMARKS[name](log=log, **extra)
    if json_path:
        command = ["augcompare", "bench", *names, *(["--experiment", str(experiment_path)] if experiment_path else []),
                   *(item for variant in variants or () for item in ("--variant", variant)),
                   *(["--repeat", str(repeat)] if repeat > 1 else []), "--json", str(json_path)]
        Path(json_path).write_text(json.dumps(record(results, " ".join(command)), indent=2) + "\n")
    return results
