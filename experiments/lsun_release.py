"""The official LSUN scene release: <category>_train_lmdb/ and <category>_val_lmdb/ directories
(data.mdb and lock.mdb), keys 40-character hex strings, values encoded images (WebP now, JPEG in
older copies).

Which images a subset takes: keys are hashes, so key order is a random order. From a start key
derived from the seed, a subset takes the next keys in key order, wrapping around at the end: a
uniform sample that needs no listing of millions of keys.
"""

import hashlib
from pathlib import Path

import lmdb

from augcompare.experiments.errors import UserError
from augcompare.experiments.images import open_database

CATEGORIES = ("bedroom", "bridge", "church_outdoor", "classroom", "conference_room", "dining_room",
              "kitchen", "living_room", "restaurant", "tower")


def database_path(root, category, split):
    return Path(root) / f"{category}_{split}_lmdb"


def check_root(root, categories):
    """Checks that root holds a train database for each category; returns {category: has_val}."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"LSUN root {root} does not exist; give the folder holding <category>_train_lmdb/")
    found = sorted(p.name[:-len("_train_lmdb")] for p in root.glob("*_train_lmdb") if p.is_dir())
    has_val = {}
    for category in categories:
        train = database_path(root, category, "train")
        if not train.is_dir():
            listing = ", ".join(found) if found else "none"
            raise UserError(f"category {category!r} not found: no {train}; categories found in {root}: {listing}")
        if not (train / "data.mdb").is_file():
            raise UserError(f"{train}/data.mdb is missing; unzip {category}_train_lmdb.zip again")
        check_size(train)
        val = database_path(root, category, "val")
        has_val[category] = (val / "data.mdb").is_file()
        if has_val[category]:
            check_size(val)
    return has_val


def check_size(path):
    """Checks that data.mdb is as long as its meta page says, before any value is read: reading
    a page past the end of a truncated file (an interrupted unzip) kills the process with
    SIGBUS. Environment.info() and stat() read only the two meta pages (tried on a file cut to
    two pages: both answer, and only reading a value then faults)."""
    try:
        env = open_database(path)
        needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    except lmdb.Error as error:
        raise UserError(f"{path}/data.mdb cannot be read as LMDB ({error}); unzip {path.name}.zip again") from None
    found = (path / "data.mdb").stat().st_size
    if found < needed:
        raise UserError(f"{path}/data.mdb is cut short ({found:,} of {needed:,} bytes, an interrupted unzip?); "
                        f"unzip {path.name}.zip again")


def count(path):
    """Number of images in a database, from its statistics (no values are read)."""
    try:
        return open_database(path).stat()["entries"]
    except lmdb.Error as error:
        raise UserError(f"{path}/data.mdb cannot be read as LMDB ({error}); unzip it again") from None


def start_key(seed):
    return hashlib.sha1(f"augcompare-lsun-{seed}".encode()).hexdigest().encode("ascii")


def keys_from(path, seed, limit):
    """Up to limit keys of a database, starting at the seed's start key, wrapping around; values
    are not read."""
    keys, start = [], start_key(seed)
    try:
        with open_database(path).begin() as txn:
            cursor = txn.cursor()
            positioned = cursor.set_range(start)
            for wrapped in (False, True):
                if wrapped:
                    positioned = cursor.first()
                if not positioned:
                    continue
                for key in cursor.iternext(keys=True, values=False):
                    if wrapped and key >= start:
                        return keys
                    keys.append(bytes(key))
                    if len(keys) == limit:
                        return keys
    except lmdb.Error as error:
        raise UserError(f"{path}/data.mdb cannot be read as LMDB ({error}); unzip it again") from None
    return keys


def write_database(path, items):
    """Writes an LSUN-shaped database: items maps 40-hex-character str keys to encoded bytes.
    For tests and benchmarks, which build their own."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    size = sum(len(v) + 256 for v in items.values()) * 2 + (1 << 20)
    with lmdb.open(str(path), map_size=size) as env, env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key.encode("ascii"), value)
