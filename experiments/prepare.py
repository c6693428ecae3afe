"""Preparing a data set once: from an LSUN release, a folder of images, a folder of .npy samples or
whole arrays (experiments.arrays) to the cache that training memory-maps (experiments.cache: train,
val and test, which never share an image; val decides, test only reports).

1. A plan (lsun_plan, folder_plan, npy_plan, arrays_plan): for each split and class a Group with how many
   images it needs and its candidates in order of preference, and the kind and shape of the
   images (experiments.images).
2. Decoding runs in worker processes, a bounded number of chunks of candidates in flight, the
   results taken in the order they were handed out: each image lands at the same position
   whatever the number of workers, and is written there at once (cache.ImageFile), so memory
   stays flat at any size. A candidate that fails is skipped and counted, the next one takes its
   place; a group fails when its skips pass max_skip_fraction, or its candidates run out.
3. Labels, then meta.json, then the staging directory is renamed to the output.

The staging directory has a fixed name beside the output (.<name>.preparing) and a progress
record (progress.json), written every RECORD_SECONDS after the images it counts were flushed to
disk: an interrupted preparation with the same settings continues from it, and ends with the
cache an uninterrupted one writes. Of two processes preparing the same output, the one holding
the lock file beside it (.<name>.lock) prepares; the other waits, then uses the finished cache.
"""

import collections
import concurrent.futures
import concurrent.futures.process  # BrokenProcessPool, named in except clauses even without a pool
import csv
import dataclasses
import hashlib
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import features

from augcompare.experiments import arrays, cache, console, lsun
from augcompare.experiments.config import ALL
from augcompare.experiments.errors import Interrupted, UserError
from augcompare.experiments.files import DirectoryLock, read_json, write_json
from augcompare.experiments.images import (
    IMAGE_SUFFIXES,
    close_arrays,
    close_databases,
    decode_chunk,
    npy_header,
    npy_sample_kind,
)
from augcompare.experiments.processes import end_with_parent
from augcompare.experiments.sources import keras as keras_source
from augcompare.experiments.sources import tfds as tfds_source
from augcompare.experiments.sources.plan import (
    Group,
    allowance,
    asked,
    consecutive,
    each_class,
    fitting,
    least,
    ordered,
    per_class,
    shuffled,
)

DECODING = 2            # changes whenever the same source and settings would give other images
RECORD_SECONDS = 2.0    # how often the progress record is brought up to date
EXAMPLES = 5            # names kept per skip reason, and of upsampled images
CHUNK_IMAGES = 32       # most candidates per chunk handed to a worker
CHUNK_BYTES = 8 << 20   # most bytes of decoded images per chunk
CHUNKS_PER_WORKER = 4   # chunks in flight per worker: enough to keep it busy, few enough to bound memory



def lsun_plan(data, root):
    """Test comes from <category>_val_lmdb, the official val set (its first test_per_class keys from
    the seed's start key); val is held out from the train database (the first keys after the
    start key), then train. Without a val database, test and val are both held out: test first,
    then val, then train."""
    if not data.categories:
        raise UserError(f"name the LSUN categories to use, e.g. bedroom,church_outdoor; known: "
                        f"{', '.join(lsun.CATEGORIES)}")
    has_val = lsun.check_root(root, data.categories)
    groups, f = [], data.max_skip_fraction
    counts = {category: lsun.count(lsun.database_path(root, category, "train")) for category in data.categories}
    for label, category in enumerate(data.categories):
        train_db = lsun.database_path(root, category, "train")
        held = ["val"] if has_val[category] else ["test", "val"]
        wanted = [(split, per_class(data, split)) for split in held] + [("train", data.train_per_class)]
        total, available = least(wanted), counts[category]
        if available < total:
            raise UserError(f"{train_db} holds {available} images; asked for {total} ({asked(wanted)}); "
                            f"{fitting(min(counts.values()), wanted, f)}")
        taken = available if data.train_per_class == ALL else sum(n + allowance(n, f) for _, n in wanted)
        keys = lsun.keys_from(train_db, data.seed, taken)
        parts = consecutive(keys, wanted, f)
        location = {split: train_db for split in cache.SPLITS}
        where = {split: f"{train_db} (held out)" for split in held} | {"train": str(train_db)}
        if has_val[category]:
            val_db = lsun.database_path(root, category, "val")
            in_val = lsun.count(val_db)
            if in_val < data.test_per_class:
                raise UserError(f"{val_db} holds {in_val} images; asked for test_per_class = {data.test_per_class} "
                                "(test comes from the official val set); lower it")
            parts["test"] = lsun.keys_from(val_db, data.seed, data.test_per_class + allowance(data.test_per_class, f))
            location["test"], where["test"] = val_db, f"{val_db} (the official val set)"
        needed = {split: per_class(data, split) for split in cache.SPLITS}
        if needed["train"] == ALL:
            needed["train"] = len(parts["train"])
        groups += [Group(split, label, needed[split], "lmdb", str(location[split]), parts[split],
                         where[split]) for split in cache.SPLITS]
    size = data.image_size
    return ordered(data.categories, groups, "pixels", (size, size, 3))


def _class_dirs(directory):
    return sorted(p for p in Path(directory).iterdir() if p.is_dir() and not p.name.startswith("."))



def folder_plan(data, root):
    """root/train/<class>/, root/val/<class>/ and root/test/<class>/ where present, a missing split
    held out from train; without root/train/, root/<class>/ split three ways. Held out: the
    class's files in a seeded random order, test first, then val, then train."""
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; give a folder of <class>/ subfolders")
    present = [split for split in cache.SPLITS if (root / split).is_dir()]
    if present and "train" not in present:
        raise UserError(f"{root} has {present[0]}/ but no train/; put the training images in "
                        f"{root / 'train'}/<class>/, or use {root}/<class>/ alone")
    classes = [p.name for p in _class_dirs(root / "train" if present else root)]
    if len(classes) < 2:
        raise UserError(f"{root} has {len(classes)} class folder(s); give at least 2 <class>/ subfolders")

    def images_in(directory, seed):
        if not directory.is_dir():
            raise UserError(f"{directory} is missing: {root}/{directory.parent.name}/ must have the same classes "
                            f"as {root}/train/")
        names = [str(p.relative_to(root)) for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        if not names:
            raise UserError(f"{directory} has no images ({', '.join(IMAGE_SUFFIXES)}); add some or remove the folder")
        return shuffled(names, seed)

    own = []  # per class: {split: (files in a seeded order, where)} for the splits the folder has
    for label, name in enumerate(classes):
        source = root / "train" / name if present else root / name
        own.append({"train": (images_in(source, [data.seed, label]), str(source))})
        for split in present[1:]:
            own[label][split] = (images_in(root / split / name, [data.seed, label, cache.SPLITS.index(split)]),
                                 str(root / split / name))
    groups = []
    for label, splits in enumerate(each_class(data, own)):
        groups += [Group(split, label, needed, "file", str(root), candidates, where)
                   for split, (candidates, where, needed) in splits.items()]
    size = data.image_size
    return ordered(classes, groups, "pixels", (size, size, 3))



def read_npy_labels(root):
    """{file name: label} from root/labels.json ({"a.npy": "cat"}) or root/labels.csv (file,label)."""
    if (root / "labels.json").is_file():
        labels = read_json(root / "labels.json", 'write it as {"file.npy": "label", ...}')
        if not isinstance(labels, dict):
            raise UserError(f"{root / 'labels.json'} must map file names to labels")
        return {str(k): str(v) for k, v in labels.items()}
    if (root / "labels.csv").is_file():
        with open(root / "labels.csv", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
        if any(len(row) != 2 for row in rows):
            raise UserError(f"{root / 'labels.csv'} must have two columns per line: file,label")
        return {name.strip(): label.strip() for name, label in rows if name.strip() != "file"}
    raise UserError(f"{root} has no labels.json or labels.csv mapping each .npy file to its label")


def _npy_kind(root, names, image_size):
    """(kind, image_shape, converted) of the .npy samples, from their headers: one kind (uint8
    pixels or numeric values), one channel count, and for values one shape [S, S, C] with S ==
    image_size; anything else is a UserError naming an example file of each. Files whose header
    is not a sample are left to the workers, which skip them with the reason."""
    found = {"pixels": {}, "values": {}}  # kind -> {(shape or channels, dtype): example}
    for name in names:
        try:
            shape, dtype = npy_header(root / name)
            kind, shape = npy_sample_kind(shape, dtype)
        except ValueError:
            continue
        found[kind].setdefault((shape if kind == "values" else shape[2], str(dtype)), name)
    pixels, values = found["pixels"], found["values"]
    if pixels and values:
        (_, dtype), example = next(iter(values.items()))
        raise UserError(f"{root} mixes uint8 pixels (e.g. {next(iter(pixels.values()))}) and {dtype} values "
                        f"(e.g. {example}); a data set holds one kind: convert the files to one")
    if values:
        shapes = {}
        for (shape, _), example in values.items():
            shapes.setdefault(shape, example)
        if len(shapes) > 1:
            (a, example_a), (b, example_b) = list(shapes.items())[:2]
            raise UserError(f"{root} holds values of shape {a} (e.g. {example_a}) and {b} (e.g. {example_b}); "
                            "values are kept exactly, never resized, so every file must have one shape")
        (shape, example), = shapes.items()
        if shape[0] != shape[1] or shape[0] != image_size:
            raise UserError(f"{root} holds values of shape {shape} (e.g. {example}), kept exactly (never resized "
                            f"or cropped): give square [S, S, C] arrays and set data.image_size = {shape[0]} "
                            f"(augcompare prepare: --image-size {shape[0]})")
        converted = {dtype: example for (_, dtype), example in values.items() if dtype != "float32"}
        return "values", shape, converted
    channels = sorted({c for c, _ in pixels}) or [3]
    if len(channels) > 1:
        examples = {c: example for (c, _), example in pixels.items()}
        raise UserError(f"{root} mixes uint8 pixels with {channels[0]} channel(s) (e.g. {examples[channels[0]]}) and "
                        f"{channels[1]} (e.g. {examples[channels[1]]}); give every file the same channels")
    return "pixels", (image_size, image_size, channels[0]), {}


def npy_plan(data, root):
    """The original layout: one .npy array per sample and a labels file; a seeded stratified split
    (each class's files in a seeded random order: test first, then val, then train)."""
    if not root.is_dir():
        raise UserError(f"npy folder {root} does not exist")
    labels = read_npy_labels(root)
    files = {p.name for p in root.glob("*.npy")}
    missing = sorted(set(labels) - files)
    if missing:
        raise UserError(f"the labels file names {len(missing)} missing file(s), e.g. {missing[0]}; fix the labels file")
    unlabelled = sorted(files - set(labels))
    if unlabelled:
        raise UserError(f"{len(unlabelled)} .npy file(s) have no label, e.g. {unlabelled[0]}; add them to the labels "
                        "file")
    classes = sorted(set(labels.values()))
    if len(classes) < 2:
        raise UserError(f"{root} has {len(classes)} label(s); a comparison needs at least 2")
    kind, image_shape, converted = _npy_kind(root, sorted(labels), data.image_size)
    own = [{"train": (shuffled([f for f, value in labels.items() if value == name], [data.seed, label]),
                      f"{root} class {name!r}")} for label, name in enumerate(classes)]
    groups = []
    for label, splits in enumerate(each_class(data, own)):
        groups += [Group(split, label, needed, "npy", str(root), candidates, where)
                   for split, (candidates, where, needed) in splits.items()]
    return ordered(classes, groups, kind, image_shape, converted)


def arrays_plan(data, path):
    """x_train / y_train (and x_val / y_val, x_test / y_test where given) in an .npz file or a
    folder of .npy files (experiments.arrays). A split not given is held out of train, seeded and
    stratified, as a folder's; a given split takes each class's first images in a seeded order.
    uint8 images are pixels (resized to image_size, channels kept); other real numbers are values,
    kept bit for bit (float32), whose size must be image_size."""
    found = arrays.find(path)
    images = {split: found[f"x_{split}"] for split in cache.SPLITS if f"x_{split}" in found}
    kinds = {split: arrays.sample_kind(image_file) for split, image_file in images.items()}
    kind, shape = kinds["train"]
    for split, (other_kind, other_shape) in kinds.items():
        if other_kind != kind or (kind == "values" and other_shape != shape) or other_shape[2] != shape[2]:
            raise UserError(f"{images[split].where} holds {images[split].dtype} {images[split].shape[1:]} samples but "
                            f"x_train {images['train'].dtype} {images['train'].shape[1:]}; give every split the same "
                            "dtype kind (uint8 or float) and channels (and values one shape)")
    if kind == "values" and (shape[0] != shape[1] or shape[0] != data.image_size):
        raise UserError(f"{images['train'].where} holds values of shape {shape}, kept exactly (never resized or "
                        f"cropped): give square [S, S, C] samples and set data.image_size = {shape[0]}")
    labels = {split: arrays.read_labels(found[f"y_{split}"], image_file.shape[0], image_file)
              for split, image_file in images.items()}
    numbers = labels["train"].dtype.kind == "i"
    for split, values in labels.items():
        if (values.dtype.kind == "i") != numbers:
            raise UserError(f"y_{split} holds {'integer' if values.dtype.kind == 'i' else 'string'} labels but y_train "
                            f"{'integer' if numbers else 'string'} ones; give every split the same kind of labels")
    classes = np.unique(labels["train"])  # sorted: integers by value, strings alphabetically
    if len(classes) < 2:
        raise UserError(f"{images['train'].where}: y_train has {len(classes)} class; a comparison needs at least 2")
    for split, values in labels.items():
        unknown = np.setdiff1d(np.unique(values), classes)
        if len(unknown):
            raise UserError(f"y_{split} has class {unknown[0]!s}, which y_train does not have; every class must have "
                            "training images")
    own = []
    for label, value in enumerate(classes):
        own.append({split: (shuffled(np.flatnonzero(values == value).tolist(),
                                      [data.seed, label] + ([] if split == "train" else [cache.SPLITS.index(split)])),
                            f"{images[split].where} class {value!s}")
                    for split, values in labels.items()})
    groups = []
    for label, splits in enumerate(each_class(data, own)):
        for split, (candidates, where, needed) in splits.items():
            source = images[split if split in images else "train"]
            groups.append(Group(split, label, needed, "array", source.path, candidates, where,
                                member=source.member, array_name=source.name))
    image_shape = shape if kind == "values" else (data.image_size, data.image_size, shape[2])
    dtype = images["train"].dtype
    converted = {str(dtype): images["train"].where} if kind == "values" and dtype != np.float32 else {}
    return ordered([str(value) for value in classes], groups, kind, image_shape, converted)


# source -> plan(data, root, scratch): scratch is a folder of the source's own beside the output
# (.<name>.source), removed once the cache is complete.
PLANS = {"lsun": lambda data, root, scratch: lsun_plan(data, root),
         "folder": lambda data, root, scratch: folder_plan(data, root),
         "npy": lambda data, root, scratch: npy_plan(data, root),
         "arrays": lambda data, root, scratch: arrays_plan(data, root),
         "tfds": tfds_source.plan, "keras": keras_source.plan}


def source_params(data):
    """Everything that makes one prepared data set differ from another (data: a DataConfig):
    stored in meta.json and compared before a cache is reused."""
    params = {"source": data.source, "root": str(Path(data.root).expanduser().resolve()),
              "categories": list(data.categories), "train_per_class": data.train_per_class,
              "val_per_class": data.val_per_class, "test_per_class": data.test_per_class,
              "image_size": data.image_size, "seed": data.seed, "max_skip_fraction": data.max_skip_fraction,
              "version": cache.VERSION, "decoding": DECODING}
    if data.source == "arrays":
        # the arrays' own path (file or folder) is the root, and their sizes and times tell a
        # changed file: arrays are rewritten in place more often than image folders
        params["root"] = str(Path(data.path).expanduser().resolve())
        params["files"] = arrays.fingerprint(data.path)
    if data.source == "keras":
        # a missing data set fails here, before anything is prepared (or is downloaded, where asked)
        params.update(root=str(keras_source.find(data)), name=data.name)
        params["files"] = keras_source.fingerprint(data)
    if data.source == "tfds":
        params.update(root=str(tfds_source.data_folder(data).resolve()), name=data.name, names=list(data.names),
                      files=tfds_source.fingerprint(data))
    return params


@dataclasses.dataclass
class Progress:
    """How far a preparation got, per group (in plan order); JSON types only, for progress.json."""
    params: dict
    plan: str                 # digest of the plan's candidates: a changed source is never continued
    taken: list               # candidates taken (decoded or skipped)
    filled: list              # images written
    skipped: list             # [[candidate index, reason], ...] in candidate order
    upsampled: list           # images whose shorter side was below image_size
    upsampled_examples: list  # the first EXAMPLES of them, candidate indices
    value_range: list = None  # values: [low, high] so far
    seconds: float = 0.0      # decoding time of earlier sessions

    @classmethod
    def start(cls, params, plan_digest, count):
        return cls(params, plan_digest, [0] * count, [0] * count, [[] for _ in range(count)], [0] * count,
                   [[] for _ in range(count)])


def _plan_digest(plan):
    digest = hashlib.sha256(repr((plan.kind, plan.image_shape)).encode())
    for group in plan.groups:
        digest.update(repr((group.split, group.label, group.needed, group.kind, group.location)).encode())
        digest.update(repr((group.member, group.array_name)).encode() if group.kind == "array" else b"")
        digest.update(repr(group.channels).encode() if group.kind == "encoded" else b"")
        digest.update(b"\n".join(c if isinstance(c, bytes) else str(c).encode() for c in group.candidates))
    return digest.hexdigest()


def _executor(workers):
    # fork starts workers at once; after TensorFlow is loaded only spawn is safe. Workers open
    # their own LMDB handles either way (images.open_database keys them by pid).
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    close_databases()
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                                  initializer=end_with_parent, initargs=(os.getpid(),))




def _clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}" if minutes >= 60 else f"{minutes}:{seconds:02d}"


def decode_groups(plan, state, files, workers, max_skip_fraction, save, progress=True):
    """Fills each group of the plan with its images, written into files ({split: cache.ImageFile}),
    continuing from state (a Progress, updated as images are written). save(snapshot) records a
    consistent snapshot of state after flushing files; it is called every RECORD_SECONDS and when
    decoding stops for any reason."""
    groups = plan.groups
    handed = list(state.taken)     # next candidate to hand out, per group
    in_flight = [0] * len(groups)
    window = collections.deque()   # (group index, candidate indices, future or results), oldest first
    image_bytes = int(np.prod(plan.image_shape)) * np.dtype(cache.KINDS[plan.kind]).itemsize
    chunk = max(1, min(CHUNK_IMAGES, CHUNK_BYTES // image_bytes,
                       sum(g.needed for g in groups) // (CHUNKS_PER_WORKER * 2 * workers)))
    executor = _executor(workers) if workers > 1 else None
    limit = CHUNKS_PER_WORKER * workers if executor else 1

    def missing(g):
        return groups[g].needed - state.filled[g] - in_flight[g]

    def hand_out():
        while len(window) < limit:
            g = next((g for g, group in enumerate(groups) if missing(g) > 0 and handed[g] < len(group.candidates)),
                     None)
            if g is None:
                return
            indices = range(handed[g], min(handed[g] + min(missing(g), chunk), len(groups[g].candidates)))
            items = [groups[g].item(i) for i in indices]
            try:
                work = (executor.submit(decode_chunk, items, plan.kind, plan.image_shape) if executor
                        else decode_chunk(items, plan.kind, plan.image_shape))
            except concurrent.futures.process.BrokenProcessPool:
                raise _worker_died(groups[window[0][0]] if window else groups[g]) from None
            window.append((g, indices, work))
            handed[g], in_flight[g] = indices.stop, in_flight[g] + len(indices)

    total = sum(g.needed for g in groups)
    done_before = sum(state.filled)
    started = last_saved = last_shown = time.perf_counter()
    snapshot = dataclasses.asdict(state)
    try:
        hand_out()
        while window:
            g, indices, work = window.popleft()
            group = groups[g]
            try:
                results = work.result() if executor else work
            except concurrent.futures.process.BrokenProcessPool:
                raise _worker_died(group) from None
            in_flight[g] -= len(indices)
            for index, (image, reason, upsampled) in zip(indices, results):
                if state.filled[g] == group.needed:
                    break  # full: later candidates were handed out in vain and are not counted
                if image is None:
                    state.skipped[g].append([index, reason])
                    _check_skips(group, state.skipped[g], max_skip_fraction)
                else:
                    files[group.split].write(group.offset + state.filled[g], image)
                    state.filled[g] += 1
                    if upsampled:
                        state.upsampled[g] += 1
                        if len(state.upsampled_examples[g]) < EXAMPLES:
                            state.upsampled_examples[g].append(index)
                    if plan.kind == "values" and group.split == "train":
                        # the training images' range only: the clip bounds of augmentation must
                        # not depend on the test split (which decides nothing)
                        low, high = float(image.min()), float(image.max())
                        state.value_range = ([low, high] if state.value_range is None else
                                             [min(low, state.value_range[0]), max(high, state.value_range[1])])
                state.taken[g] = index + 1
            snapshot = dataclasses.asdict(state)  # consistent: every image it counts is written
            now = time.perf_counter()
            if now - last_saved >= RECORD_SECONDS:
                save(snapshot)
                last_saved = now
            done = sum(state.filled)
            if progress and (now - last_shown >= 0.25 or done == total):
                rate = (done - done_before) / max(now - started, 1e-9)
                eta = _clock((total - done) / rate) if rate > 0 else "?"
                console.status(f"  prepared {done:,}/{total:,} images  {rate:,.0f} images/s  ETA {eta}")
                last_shown = now
            hand_out()
        for group, filled, skipped in zip(groups, state.filled, state.skipped):
            if filled < group.needed:
                reasons = dict(collections.Counter(reason for _, reason in skipped)) or "none"
                examples = ", ".join(group.name(index) for index, _ in skipped[:EXAMPLES])
                named = f", e.g. {examples}" if examples else ""
                raise UserError(f"{group.where}: only {filled} decodable images for {group.split}, asked for "
                                f"{group.needed}; fix or remove the undecodable ones, or lower "
                                f"data.{group.split}_per_class (skipped: {reasons}{named})")
    except BaseException:
        try:
            save(snapshot)
        except OSError:
            pass  # the disk that failed the write may fail the record too; the last one stands
        raise
    finally:
        if executor:
            executor.shutdown(wait=True, cancel_futures=True)
        close_arrays()
        if progress:
            console.end()
    state.seconds += time.perf_counter() - started
    save(dataclasses.asdict(state))


def _worker_died(group):
    """The error for a worker process that died (it may have been decoding any chunk in flight:
    the oldest one's group is named)."""
    return UserError(f"a decoding process died while decoding {group.where}: the data there may be damaged (check "
                     "it, or unzip it again), or the machine ran out of memory (lower data.workers); the same command "
                     "continues")


def _check_skips(group, skipped, max_skip_fraction):
    """Fails as soon as a group's skips pass max_skip_fraction of what it tries, even if every
    candidate after them decodes (so the outcome does not depend on when it is checked)."""
    if len(skipped) > max_skip_fraction * (group.needed + len(skipped)):
        reasons = dict(collections.Counter(reason for _, reason in skipped))
        tried = group.needed + len(skipped)
        raise UserError(f"{group.where}: {len(skipped)} of at least {tried} images could not be decoded ({reasons}), "
                        f"more than max_skip_fraction = {max_skip_fraction}; check the files or raise the fraction")


def _reusable(out, params):
    """True where out holds the data set of params (checked whole); an error where out is anything else."""
    if cache.is_complete(out):
        dataset = cache.open_cache(out)  # a damaged cache is a UserError naming the file
        if dataset.meta.get("params") != params:
            raise UserError(f"{out} holds a data set prepared with other settings; choose another --out or delete it")
        return True
    if out.exists():
        raise UserError(f"{out} exists and is not a prepared data set; choose another --out or delete it")
    return False


def prepare_source(data, out, progress=True):
    """Prepares the cache of data (a DataConfig whose source is one of PLANS) at out, or reuses
    the one there (made with the same settings); returns out."""
    out = Path(out).expanduser()
    params = source_params(data)
    if _reusable(out, params):
        return out
    if data.source not in PLANS:
        raise UserError(f"cannot prepare source {data.source!r}; choose {', '.join(PLANS)}")
    if not features.check("webp"):
        raise UserError("this Pillow was built without WebP support; install a Pillow wheel from PyPI")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {out.parent} ({error.strerror}); choose a writable folder") from None
    lock = DirectoryLock(out.parent / f".{out.name}.lock", f"preparing {out}")
    lock.acquire(wait=True, on_wait=lambda holder: console.line(f"augcompare: waiting for {holder} to finish"))
    try:
        if not _reusable(out, params):  # where another process prepared it meanwhile, it is used
            scratch = out.parent / f".{out.name}.source"
            _prepare(PLANS[data.source](data, Path(params["root"]), scratch), params, out, data, progress)
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        lock.release()
    return out


def _resumable(record, params, plan_digest):
    """The Progress in a progress record of the same settings and source, or None."""
    if not record.is_file():
        return None
    try:
        saved = read_json(record, "")
        state = Progress(**saved)
    except (UserError, TypeError):
        return None  # a record cut short is the preparation's own scratch: it starts over
    return state if state.params == params and state.plan == plan_digest else None


def _prepare(plan, params, out, data, progress):
    staging = out.parent / f".{out.name}.preparing"
    record = staging / "progress.json"
    digest = _plan_digest(plan)
    state = _resumable(record, params, digest)
    if state is None and staging.exists():
        # another preparation's scratch (other settings or another source): only we use it, under the lock
        console.line(f"augcompare: starting over: {staging} holds an unfinished preparation of other settings")
        shutil.rmtree(staging)
    staging.mkdir(exist_ok=True)
    dtype = cache.KINDS[plan.kind]
    counts = collections.Counter()
    for group in plan.groups:
        counts[group.split] += group.needed
    files = {split: cache.ImageFile(staging / f"{split}_images.npy", counts[split], plan.image_shape, dtype)
             for split in cache.SPLITS}
    try:
        kept = [image_file.open(keep=state is not None) for image_file in files.values()]
        if state is not None and not all(kept):
            state = None
            for image_file in files.values():
                image_file.open(keep=False)
        total = sum(counts.values())
        if state is None:
            state = Progress.start(params, digest, len(plan.groups))
        else:
            console.line(f"augcompare: continuing the preparation in {staging}: {sum(state.filled):,} of {total:,} "
                         "images are already prepared")
        if plan.converted:
            examples = ", ".join(f"{dtype} (e.g. {example})" for dtype, example in plan.converted.items())
            console.line(f"augcompare: note: values converted to float32 from {examples}")

        def save(snapshot):
            for image_file in files.values():
                image_file.sync()
            write_json(record, snapshot)

        workers = data.workers or os.cpu_count() or 1
        try:
            decode_groups(plan, state, files, workers, data.max_skip_fraction, save, progress)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while preparing {out}: the {sum(state.filled):,} of {total:,} images "
                              f"prepared so far are kept in {staging}; the same command continues from them") from None
    finally:
        for image_file in files.values():
            image_file.close()
    _finish(plan, state, params, staging, out)


def _finish(plan, state, params, staging, out):
    """Labels, meta.json (last), the rename; then what was skipped and upsampled, on stderr."""
    arrays = {}
    for split in cache.SPLITS:
        members = [g for g in plan.groups if g.split == split]
        labels = np.concatenate([np.full(g.needed, g.label, np.int64) for g in members])
        np.save(staging / f"{split}_labels.npy", labels, allow_pickle=False)
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_images"] = np.load(staging / f"{split}_images.npy", mmap_mode="r", allow_pickle=False)
    used, skipped, skipped_examples, upsampled_examples = hashlib.sha256(), collections.Counter(), {}, []
    for g, group in enumerate(plan.groups):
        failed = dict(state.skipped[g])
        for index in range(state.taken[g]):
            if index in failed:
                skipped[failed[index]] += 1
                examples = skipped_examples.setdefault(failed[index], [])
                if len(examples) < EXAMPLES:
                    examples.append(group.name(index))
            else:
                used.update(group.name(index).encode() + b"\n")
        upsampled_examples += [group.name(i) for i in state.upsampled_examples[g]]
    upsampled = sum(state.upsampled)
    split_from = {split: {plan.class_names[g.label]: g.where for g in plan.groups if g.split == split}
                  for split in cache.SPLITS}
    meta = cache.describe_meta(
        arrays, plan.class_names, plan.kind, value_range=state.value_range, source=params["source"], params=params,
        split_from=split_from, items_sha256=used.hexdigest(), skipped=dict(skipped),
        skipped_examples=skipped_examples, upsampled=upsampled, upsampled_examples=upsampled_examples[:EXAMPLES],
        converted_to_float32=sorted(plan.converted), decode_seconds=round(state.seconds, 2))
    del arrays
    write_json(staging / "meta.json", meta)
    (staging / "progress.json").unlink()
    try:
        staging.rename(out)
    except OSError as error:
        raise UserError(f"cannot rename {staging} to {out} ({error.strerror}); move it there yourself") from None
    for reason, count in skipped.items():
        console.line(f"augcompare: skipped {count} image(s): {reason} (e.g. {', '.join(skipped_examples[reason])})")
    if upsampled:
        console.line(f"augcompare: warning: {upsampled} image(s) had a shorter side below {plan.image_shape[0]} px "
                     f"and were upsampled (e.g. {', '.join(upsampled_examples[:EXAMPLES])}); a smaller image_size "
                     "keeps them sharp")
