"""The lsun source: the official LSUN release, <category>_train_lmdb/ and <category>_val_lmdb/
(experiments.lsun_release reads them).
"""

from augcompare.experiments import cache
from augcompare.experiments import lsun_release as release
from augcompare.experiments.config import ALL
from augcompare.experiments.errors import UserError
from augcompare.experiments.sources.plan import Group, allowance, asked, consecutive, fitting, least, ordered, per_class


def plan(data, root, scratch=None):
    """Test comes from <category>_val_lmdb, the official val set (its first test_per_class keys from
    the seed's start key); val is held out from the train database (the first keys after the
    start key), then train. Without a val database, test and val are both held out: test first,
    then val, then train."""
    if not data.categories:
        raise UserError(f"name the LSUN categories to use, e.g. bedroom,church_outdoor; known: "
                        f"{', '.join(release.CATEGORIES)}")
    has_val = release.check_root(root, data.categories)
    groups, f = [], data.max_skip_fraction
    counts = {category: release.count(release.database_path(root, category, "train")) for category in data.categories}
    for label, category in enumerate(data.categories):
        train_db = release.database_path(root, category, "train")
        held = ["val"] if has_val[category] else ["test", "val"]
        wanted = [(split, per_class(data, split)) for split in held] + [("train", data.train_per_class)]
        total, available = least(wanted), counts[category]
        if available < total:
            raise UserError(f"{train_db} holds {available} images; asked for {total} ({asked(wanted)}); "
                            f"{fitting(min(counts.values()), wanted, f)}")
        taken = available if data.train_per_class == ALL else sum(n + allowance(n, f) for _, n in wanted)
        keys = release.keys_from(train_db, data.seed, taken)
        parts = consecutive(keys, wanted, f)
        location = {split: train_db for split in cache.SPLITS}
        where = {split: f"{train_db} (held out)" for split in held} | {"train": str(train_db)}
        if has_val[category]:
            val_db = release.database_path(root, category, "val")
            in_val = release.count(val_db)
            if in_val < data.test_per_class:
                raise UserError(f"{val_db} holds {in_val} images; asked for test_per_class = {data.test_per_class} "
                                "(test comes from the official val set); lower it")
            taken_test = data.test_per_class + allowance(data.test_per_class, f)
            parts["test"] = release.keys_from(val_db, data.seed, taken_test)
            location["test"], where["test"] = val_db, f"{val_db} (the official val set)"
        needed = {split: per_class(data, split) for split in cache.SPLITS}
        if needed["train"] == ALL:
            needed["train"] = len(parts["train"])
        groups += [Group(split, label, needed[split], "lmdb", str(location[split]), parts[split],
                         where[split]) for split in cache.SPLITS]
    size = data.image_size
    return ordered(data.categories, groups, "pixels", (size, size, 3))
