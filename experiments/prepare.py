"""Preparing a data set once: from an LSUN release, a folder of images, a folder of .npy samples,
whole arrays, a TFDS data set or Keras' files (each a module of experiments.sources) to the cache
that training memory-maps (experiments.cache: train, val and test, which never share an image; val
decides, test only reports).

1. A plan (PLANS, each source's plan function): for each split and class a Group with how many
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

from augcompare.experiments import array_files, cache, console
from augcompare.experiments.errors import Interrupted, UserError
from augcompare.experiments.files import DirectoryLock, read_json, write_json
from augcompare.experiments.images import close_arrays, close_databases, decode_chunk
from augcompare.experiments.processes import end_with_parent
from augcompare.experiments.sources import arrays as arrays_source
from augcompare.experiments.sources import folder as folder_source
from augcompare.experiments.sources import keras as keras_source
from augcompare.experiments.sources import lsun as lsun_source
from augcompare.experiments.sources import npy as npy_source
from augcompare.experiments.sources import tfds as tfds_source

DECODING = 2            # changes whenever the same source and settings would give other images
RECORD_SECONDS = 2.0    # how often the progress record is brought up to date
EXAMPLES = 5            # names kept per skip reason, and of upsampled images
CHUNK_IMAGES = 32       # most candidates per chunk handed to a worker
CHUNK_BYTES = 8 << 20   # most bytes of decoded images per chunk
CHUNKS_PER_WORKER = 4   # chunks in flight per worker: enough to keep it busy, few enough to bound memory


# source -> plan(data, root, scratch): scratch is a folder of the source's own beside the output
# (.<name>.source), removed once the cache is complete.
PLANS = {"lsun": lsun_source.plan, "folder": folder_source.plan, "npy": npy_source.plan,
         "arrays": arrays_source.plan, "tfds": tfds_source.plan, "keras": keras_source.plan}


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
        params["files"] = array_files.fingerprint(data.path)
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


def prepare_source(data, out, progress=True, check=None):
    """Prepares the cache of data (a DataConfig whose source is one of PLANS) at out, or reuses
    the one there (made with the same settings); returns out. check(image_shape, num_classes):
    called once the source is planned, before anything is decoded."""
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
            plan = PLANS[data.source](data, Path(params["root"]), scratch)
            if check is not None:
                check(tuple(plan.image_shape), len(plan.class_names))
            _prepare(plan, params, out, data, progress)
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
