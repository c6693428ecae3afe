"""Preparing a data set once: from an LSUN release, a folder of images or a folder of .npy samples to
the cache that training memory-maps (experiments.cache: train, val and test, which never share an
image; val decides, test only reports).

1. A plan (lsun_plan, folder_plan, npy_plan): for each split and class a Group with how many
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
import csv
import dataclasses
import hashlib
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from augcompare.experiments import cache, console, lsun
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import DirectoryLock, read_json, write_json
from augcompare.experiments.images import (
    IMAGE_SUFFIXES,
    close_databases,
    decode_chunk,
    npy_header,
    npy_sample_kind,
)
from augcompare.experiments.processes import end_with_parent
from PIL import features

DECODING = 2            # changes whenever the same source and settings would give other images
RECORD_SECONDS = 2.0    # how often the progress record is brought up to date
EXAMPLES = 5            # names kept per skip reason, and of upsampled images
CHUNK_IMAGES = 32       # most candidates per chunk handed to a worker
CHUNK_BYTES = 8 << 20   # most bytes of decoded images per chunk
CHUNKS_PER_WORKER = 4   # chunks in flight per worker: enough to keep it busy, few enough to bound memory


@dataclasses.dataclass
class Group:
    """The images of one class in one split: the first `needed` candidates that decode, in order."""
    split: str
    label: int
    needed: int
    kind: str           # what a candidate is: "lmdb" (a key of the database `location`), "file" or
    location: str       # "npy" (a path relative to the folder `location`)
    candidates: list    # in order of preference
    where: str          # where the images come from, for messages and meta.json's split_from
    offset: int = 0     # position of its first image in the split's array

    def item(self, index):
        """What images.decode_chunk reads for candidate `index`."""
        if self.kind == "lmdb":
            return ("lmdb", self.location, self.candidates[index])
        return (self.kind, os.path.join(self.location, self.candidates[index]))

    def name(self, index):
        """Candidate `index` in words: database/key or the path relative to the source's root."""
        if self.kind == "lmdb":
            return f"{Path(self.location).name}/{self.candidates[index].decode('ascii')}"
        return self.candidates[index]


@dataclasses.dataclass
class Plan:
    class_names: list
    groups: list        # ordered by split (cache.SPLITS) then label, offsets set
    kind: str           # "pixels" | "values" (cache.KINDS)
    image_shape: tuple  # [S, S, C]
    converted: dict = dataclasses.field(default_factory=dict)  # values: {source dtype: example file}


def _allowance(needed, max_skip_fraction):
    """Extra candidates a held-out split keeps for images that fail to decode."""
    return math.ceil(needed * max_skip_fraction)


def _consecutive(candidates, wanted, max_skip_fraction):
    """Cuts candidates, in order, into one part per (split, needed) of wanted, the last taking the
    rest: each earlier part holds its needed candidates, plus room for ones that fail to decode
    where the later parts' needs leave some."""
    parts, start = {}, 0
    for position, (split, needed) in enumerate(wanted):
        if position == len(wanted) - 1:
            parts[split] = candidates[start:]
            break
        later = sum(n for _, n in wanted[position + 1:])
        room = len(candidates) - start - later
        end = start + max(needed, min(needed + _allowance(needed, max_skip_fraction), room))
        parts[split], start = candidates[start:end], end
    return parts


def _per_class(data, split):
    return getattr(data, f"{split}_per_class")


def _asked(wanted):
    """'300 train + 200 val + 200 test' for [(split, needed)]."""
    needs = dict(wanted)
    return " + ".join(f"{needs[s]} {s}" for s in cache.SPLITS if s in needs)


def _ordered(class_names, groups, kind, image_shape, converted=None):
    """The Plan of groups: ordered by split and label, each group's offset in its split's array."""
    groups = sorted(groups, key=lambda g: (cache.SPLITS.index(g.split), g.label))
    filled = collections.Counter()
    for group in groups:
        group.offset = filled[group.split]
        filled[group.split] += group.needed
    return Plan(list(class_names), groups, kind, tuple(image_shape), converted or {})


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
    for label, category in enumerate(data.categories):
        train_db = lsun.database_path(root, category, "train")
        held = ["val"] if has_val[category] else ["test", "val"]
        wanted = [(split, _per_class(data, split)) for split in held] + [("train", data.train_per_class)]
        total, available = sum(n for _, n in wanted), lsun.count(train_db)
        if available < total:
            raise UserError(f"{train_db} holds {available} images; asked for {total} ({_asked(wanted)}); "
                            "lower the per-class counts")
        keys = lsun.keys_from(train_db, data.seed, sum(n + _allowance(n, f) for _, n in wanted))
        parts = _consecutive(keys, wanted, f)
        location = {split: train_db for split in cache.SPLITS}
        where = {split: f"{train_db} (held out)" for split in held} | {"train": str(train_db)}
        if has_val[category]:
            val_db = lsun.database_path(root, category, "val")
            in_val = lsun.count(val_db)
            if in_val < data.test_per_class:
                raise UserError(f"{val_db} holds {in_val} images; asked for test_per_class = {data.test_per_class} "
                                "(test comes from the official val set); lower it")
            parts["test"] = lsun.keys_from(val_db, data.seed, data.test_per_class + _allowance(data.test_per_class, f))
            location["test"], where["test"] = val_db, f"{val_db} (the official val set)"
        groups += [Group(split, label, _per_class(data, split), "lmdb", str(location[split]), parts[split],
                         where[split]) for split in cache.SPLITS]
    size = data.image_size
    return _ordered(data.categories, groups, "pixels", (size, size, 3))


def _class_dirs(directory):
    return sorted(p for p in Path(directory).iterdir() if p.is_dir() and not p.name.startswith("."))


def _shuffled(names, seed):
    """names (sorted) in a seeded random order."""
    names = sorted(names)
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]


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
        return _shuffled(names, seed)

    groups = []
    for label, name in enumerate(classes):
        source = root / "train" / name if present else root / name
        parts = {"train": images_in(source, [data.seed, label])}
        where = {"train": str(source)}
        for split in present[1:]:
            parts[split] = images_in(root / split / name, [data.seed, label, cache.SPLITS.index(split)])
            where[split] = str(root / split / name)
        held = [split for split in ("test", "val") if split not in present]
        wanted = [(split, _per_class(data, split)) for split in held] + [("train", data.train_per_class)]
        if len(parts["train"]) < sum(n for _, n in wanted):
            raise UserError(f"{source} has {len(parts['train'])} images; asked for {_asked(wanted)}")
        parts.update(_consecutive(parts["train"], wanted, data.max_skip_fraction))
        where |= {split: f"{source} (held out, seeded)" for split in held}
        for split in cache.SPLITS:
            if len(parts[split]) < _per_class(data, split):
                raise UserError(f"{where[split]} has {len(parts[split])} images; asked for "
                                f"{_per_class(data, split)} {split}")
            groups.append(Group(split, label, _per_class(data, split), "file", str(root), parts[split], where[split]))
    size = data.image_size
    return _ordered(classes, groups, "pixels", (size, size, 3))


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
    wanted = [(split, _per_class(data, split)) for split in ("test", "val", "train")]
    groups = []
    for label, name in enumerate(classes):
        members = _shuffled([f for f, value in labels.items() if value == name], [data.seed, label])
        if len(members) < sum(n for _, n in wanted):
            raise UserError(f"class {name!r} in {root} has {len(members)} samples; asked for {_asked(wanted)}")
        parts = _consecutive(members, wanted, data.max_skip_fraction)
        for split, needed in wanted:
            where = f"{root} class {name!r}" + ("" if split == "train" else " (held out, seeded)")
            groups.append(Group(split, label, needed, "npy", str(root), parts[split], where))
    return _ordered(classes, groups, kind, image_shape, converted)


PLANS = {"lsun": lsun_plan, "folder": folder_plan, "npy": npy_plan}


def source_params(data):
    """Everything that makes one prepared data set differ from another (data: a DataConfig):
    stored in meta.json and compared before a cache is reused."""
    return {"source": data.source, "root": str(Path(data.root).expanduser().resolve()),
            "categories": list(data.categories), "train_per_class": data.train_per_class,
            "val_per_class": data.val_per_class, "test_per_class": data.test_per_class,
            "image_size": data.image_size, "seed": data.seed, "max_skip_fraction": data.max_skip_fraction,
            "version": cache.VERSION, "decoding": DECODING}


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
        digest.update(b"\n".join(c if isinstance(c, bytes) else c.encode() for c in group.candidates))
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
                raise UserError(f"{group.where}: only {filled} decodable images for {group.split}, asked for "
                                f"{group.needed}; lower {group.split}_per_class (skipped: {reasons})")
    except BaseException:
        try:
            save(snapshot)
        except OSError:
            pass  # the disk that failed the write may fail the record too; the last one stands
        raise
    finally:
        if executor:
            executor.shutdown(wait=True, cancel_futures=True)
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
    """Prepares the cache of data (a DataConfig whose source is lsun, folder or npy) at out, or reuses
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
            _prepare(PLANS[data.source](data, Path(params["root"])), params, out, data, progress)
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
        decode_groups(plan, state, files, workers, data.max_skip_fraction, save, progress)
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
