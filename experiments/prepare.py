"""Preparing a data set once: decode, resize the shorter side, centre-crop, and write the uint8
cache that training memory-maps (experiments.data). Decoding runs on all cores, in processes.

A source is described by groups, one per (split, class): the label, how many images it needs and
its candidates in order of preference. Candidates that fail to decode are skipped and counted;
the next candidates take their place; preparation fails only when more than max_skip_fraction of
what was tried failed, or when the candidates run out.
"""

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from PIL import features

from augcompare.experiments import lsun
from augcompare.experiments.data import staged_cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.images import IMAGE_SUFFIXES, close_databases, load_item

CACHE_VERSION = 1


class Group:
    def __init__(self, split, label, needed, candidates, where):
        self.split, self.label, self.needed = split, label, needed
        self.candidates = list(candidates)
        self.where = where  # for messages: the class folder or database
        self.images, self.used, self.tried = [], [], 0
        self.skipped = {}
        self.upsampled = 0  # images whose shorter side was below the image size


def _progress(done, total, started, stream=sys.stderr):
    rate = done / max(time.perf_counter() - started, 1e-9)
    stream.write(f"\r  prepared {done}/{total} images  {rate:,.0f} images/s ")
    stream.flush()


def decode_groups(groups, size, workers, max_skip_fraction, progress=True):
    """Fills each group with `needed` decoded images, in rounds, on `workers` processes."""
    total = sum(g.needed for g in groups)
    started = time.perf_counter()
    done = 0
    # fork starts workers at once; after TensorFlow is loaded only spawn is safe. Workers open
    # their own LMDB handles either way (experiments.images.open_database keys them by pid).
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    close_databases()
    pool = multiprocessing.get_context(method).Pool(workers) if workers > 1 else None
    try:
        while True:
            tasks, owners = [], []
            for group in groups:
                missing = group.needed - len(group.images)
                batch = group.candidates[group.tried:group.tried + missing]
                if missing and not batch:
                    raise UserError(
                        f"{group.where}: only {len(group.images)} decodable images, asked for {group.needed}; "
                        f"lower train_per_class / val_per_class (skipped: {group.skipped or 'none'})")
                group.tried += len(batch)
                tasks += [(item, size) for item in batch]
                owners += [(group, item) for item in batch]
            if not tasks:
                break
            chunk = min(256, max(1, len(tasks) // (4 * workers)))  # few round trips, balanced ends
            results = pool.imap(load_item, tasks, chunksize=chunk) if pool else map(load_item, tasks)
            for (group, item), (image, reason, upsampled) in zip(owners, results):
                if image is None:
                    group.skipped[reason] = group.skipped.get(reason, 0) + 1
                else:
                    group.images.append(image)
                    group.used.append(item)
                    group.upsampled += upsampled
                    done += 1
                if progress and done % 64 == 0:
                    _progress(done, total, started)
            for group in groups:
                skipped = sum(group.skipped.values())
                if skipped > max_skip_fraction * group.tried:
                    raise UserError(
                        f"{group.where}: {skipped} of {group.tried} images could not be decoded "
                        f"({group.skipped}), more than max_skip_fraction = {max_skip_fraction}; "
                        "check the files or raise the fraction")
    finally:
        if pool:
            pool.terminate()
    if progress:
        _progress(done, total, started)
        sys.stderr.write("\n")
    return time.perf_counter() - started


def write_groups(out, groups, size, meta):
    """Writes the groups' images to a cache directory, atomically (meta.json last, then rename)."""
    with staged_cache(out) as staging:
        for split in ("train", "val"):
            members = [g for g in groups if g.split == split]
            count = sum(len(g.images) for g in members)
            images = open_memmap(staging / f"{split}_images.npy", mode="w+", dtype=np.uint8,
                                 shape=(count, size, size, 3))
            position = 0
            for group in members:
                images[position:position + len(group.images)] = np.stack(group.images)
                position += len(group.images)
            images.flush()
            del images
            labels = np.concatenate([np.full(len(g.images), g.label, np.int64) for g in members])
            np.save(staging / f"{split}_labels.npy", labels, allow_pickle=False)
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def _item_name(item):
    return item[2].decode("ascii") if item[0] == "lmdb" else str(item[1])


def source_params(source, root, categories=(), train_per_class=300, val_per_class=200, image_size=64,
                  seed=0, max_skip_fraction=0.05):
    """Everything that makes one prepared data set differ from another: stored in meta.json and
    compared before a cache is reused."""
    return {"source": source, "root": str(Path(root).expanduser().resolve()), "categories": list(categories),
            "train_per_class": train_per_class, "val_per_class": val_per_class, "image_size": image_size,
            "seed": seed, "max_skip_fraction": max_skip_fraction, "version": CACHE_VERSION}


def _reusable(out, params):
    """True where out already holds the data set of params; an error where out is anything else."""
    if (out / "meta.json").is_file():
        if json.loads((out / "meta.json").read_text()).get("params") == params:
            return True
        raise UserError(f"{out} holds a data set prepared with other settings; choose another --out or delete it")
    if out.exists():
        raise UserError(f"{out} exists and is not a prepared data set; choose another --out or delete it")
    return False


def prepare(out, params, class_names, groups, workers=0, max_skip_fraction=0.05, progress=True):
    """Decodes the groups and writes the cache at out (which must not exist). Returns out."""
    if not features.check("webp"):
        raise UserError("this Pillow was built without WebP support; install a Pillow wheel from PyPI")
    workers = workers or os.cpu_count() or 1
    seconds = decode_groups(groups, params["image_size"], workers, max_skip_fraction, progress)
    used = hashlib.sha256()
    for group in groups:
        for item in group.used:
            used.update(_item_name(item).encode() + b"\n")
    skipped = {}
    for group in groups:
        for reason, n in group.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    upsampled = sum(group.upsampled for group in groups)
    if upsampled:
        print(f"augcompare: warning: {upsampled} image(s) had a shorter side below {params['image_size']} px and "
              "were upsampled; a smaller image_size keeps them sharp", file=sys.stderr)
    meta = {"class_names": list(class_names), "source": params["source"], "params": params,
            "image_size": params["image_size"],
            "train_count": sum(len(g.images) for g in groups if g.split == "train"),
            "val_count": sum(len(g.images) for g in groups if g.split == "val"),
            "items_sha256": used.hexdigest(), "skipped": skipped, "upsampled": upsampled,
            "val_from": sorted({g.where for g in groups if g.split == "val"}),
            "decode_seconds": round(seconds, 2), "version": CACHE_VERSION}
    return write_groups(out, groups, params["image_size"], meta)


def _holdout(candidates, needed, keep, max_skip_fraction):
    """Splits a candidate list: the first part for the held-out split, with room for skipped
    images where the other split's `keep` images leave some."""
    reserve = max(needed, min(needed + math.ceil(needed * max_skip_fraction), len(candidates) - keep))
    return candidates[:reserve], candidates[reserve:]


def lsun_groups(root, categories, train_per_class, val_per_class, seed, max_skip_fraction):
    """Groups for LSUN categories: val from <category>_val_lmdb when it exists, else held out
    from the train database (the keys after the seed's start key go to val first)."""
    has_val = lsun.check_root(root, categories)
    groups = []
    spare = math.ceil(max(train_per_class, val_per_class) * max_skip_fraction) + 1
    for label, category in enumerate(categories):
        train_db = lsun.database_path(root, category, "train")
        available = lsun.count(train_db)
        needed = train_per_class + (0 if has_val[category] else val_per_class)
        if available < needed:
            raise UserError(f"{train_db} holds {available} images; asked for {needed} "
                              f"({train_per_class} train{'' if has_val[category] else f' + {val_per_class} val'})")
        keys = [("lmdb", str(train_db), k) for k in lsun.keys_from(train_db, seed, needed + 2 * spare)]
        if has_val[category]:
            val_db = lsun.database_path(root, category, "val")
            in_val = lsun.count(val_db)
            if in_val < val_per_class:
                raise UserError(f"{val_db} holds {in_val} images; asked for val_per_class = {val_per_class}")
            val = [("lmdb", str(val_db), k) for k in lsun.keys_from(val_db, seed, val_per_class + spare)]
            val_where, train = str(val_db), keys
        else:
            val, train = _holdout(keys, val_per_class, train_per_class, max_skip_fraction)
            val_where = f"{train_db} (held out)"
        groups.append(Group("train", label, train_per_class, train, str(train_db)))
        groups.append(Group("val", label, val_per_class, val, val_where))
    return groups


def _class_dirs(directory):
    return sorted(p for p in Path(directory).iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(directory):
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_groups(root, train_per_class, val_per_class, seed, max_skip_fraction):
    """Groups for root/<class>/* or root/train/<class>/* and root/val/<class>/*; without a
    train/val split, a seeded stratified one (the class's files, sorted by name, in a seeded
    random order: val first, then train)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; give a folder of <class>/ subfolders")
    split = (root / "train").is_dir() and (root / "val").is_dir()
    classes = [p.name for p in _class_dirs(root / "train" if split else root)]
    if len(classes) < 2:
        raise UserError(f"{root} has {len(classes)} class folder(s); give at least 2 <class>/ subfolders")
    groups = []
    for label, name in enumerate(classes):
        if split:
            train_dir, val_dir = root / "train" / name, root / "val" / name
            if not val_dir.is_dir():
                raise UserError(f"{val_dir} is missing: root/val/ must have the same classes as root/train/")
            train, val = map(_image_files, (train_dir, val_dir))
            train_where, val_where = str(train_dir), str(val_dir)
        else:
            files = _image_files(root / name)
            if files and len(files) < train_per_class + val_per_class:
                raise UserError(f"{root / name} has {len(files)} images; asked for {train_per_class} train "
                                  f"+ {val_per_class} val")
            files = [files[i] for i in np.random.default_rng([seed, label]).permutation(len(files))]
            val, train = _holdout(files, val_per_class, train_per_class, max_skip_fraction)
            train_where = val_where = str(root / name)
        for part, needed, where in ((train, train_per_class, train_where), (val, val_per_class, val_where)):
            if not part:
                raise UserError(f"{where} has no images (.jpg, .png, .webp); add some or remove the folder")
            if len(part) < needed:
                raise UserError(f"{where} has {len(part)} images; asked for {needed}")
        groups.append(Group("train", label, train_per_class, [("file", str(p)) for p in train], train_where))
        groups.append(Group("val", label, val_per_class, [("file", str(p)) for p in val], val_where))
    return classes, groups


def read_npy_labels(root):
    """{file name: label} from root/labels.json ({"a.npy": "cat"}) or root/labels.csv (file,label)."""
    if (root / "labels.json").is_file():
        try:
            labels = json.loads((root / "labels.json").read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"{root / 'labels.json'} is not valid JSON ({error})") from None
        if not isinstance(labels, dict):
            raise UserError(f"{root / 'labels.json'} must map file names to labels")
        return {str(k): str(v) for k, v in labels.items()}
    if (root / "labels.csv").is_file():
        rows = [line.split(",") for line in (root / "labels.csv").read_text().splitlines() if line.strip()]
        if any(len(row) != 2 for row in rows):
            raise UserError(f"{root / 'labels.csv'} must have two columns per line: file,label")
        return {name.strip(): label.strip() for name, label in rows if name.strip() != "file"}
    raise UserError(f"{root} has no labels.json or labels.csv mapping each .npy file to its label")


def npy_groups(root, train_per_class, val_per_class, seed, max_skip_fraction):
    """Groups for the original layout: one .npy array per sample and a labels file; a seeded
    stratified split as for folders."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"npy folder {root} does not exist")
    labels = read_npy_labels(root)
    files = {p.name for p in root.glob("*.npy")}
    missing = sorted(set(labels) - files)
    if missing:
        raise UserError(f"the labels file names {len(missing)} missing file(s), e.g. {missing[0]}; fix the labels file")
    unlabelled = sorted(files - set(labels))
    if unlabelled:
        raise UserError(f"{len(unlabelled)} .npy file(s) have no label, e.g. {unlabelled[0]}; add them to the labels file")
    classes = sorted(set(labels.values()))
    if len(classes) < 2:
        raise UserError(f"{root} has {len(classes)} label(s); a comparison needs at least 2")
    groups = []
    for label, name in enumerate(classes):
        members = sorted(f for f, value in labels.items() if value == name)
        members = [members[i] for i in np.random.default_rng([seed, label]).permutation(len(members))]
        if len(members) < train_per_class + val_per_class:
            raise UserError(f"class {name!r} in {root} has {len(members)} samples; asked for "
                              f"{train_per_class} train + {val_per_class} val")
        val, train = _holdout(members, val_per_class, train_per_class, max_skip_fraction)
        groups.append(Group("train", label, train_per_class, [("npy", str(root / f)) for f in train], f"{root} class {name}"))
        groups.append(Group("val", label, val_per_class, [("npy", str(root / f)) for f in val], f"{root} class {name}"))
    return classes, groups


def prepare_source(source, root, out, categories=(), train_per_class=300, val_per_class=200, image_size=64,
                   seed=0, workers=0, max_skip_fraction=0.05, progress=True):
    """Prepares (or reuses) the cache of an lsun, folder or npy source at out."""
    out = Path(out)
    params = source_params(source, root, categories, train_per_class, val_per_class, image_size, seed,
                           max_skip_fraction)
    if _reusable(out, params):
        return out
    root = Path(params["root"])
    if source == "lsun":
        if not categories:
            raise UserError(f"name the LSUN categories to use, e.g. bedroom,church_outdoor; known: {', '.join(lsun.CATEGORIES)}")
        class_names = list(categories)
        groups = lsun_groups(root, categories, train_per_class, val_per_class, seed, max_skip_fraction)
    elif source == "folder":
        class_names, groups = folder_groups(root, train_per_class, val_per_class, seed, max_skip_fraction)
    elif source == "npy":
        class_names, groups = npy_groups(root, train_per_class, val_per_class, seed, max_skip_fraction)
    else:
        raise UserError(f"cannot prepare source {source!r}; choose lsun, folder or npy")
    return prepare(out, params, class_names, groups, workers, max_skip_fraction, progress)
