"""The folder source: root/<class>/ images, or root/train/<class>/ with root/val/ and root/test/
where the user has them.
"""

from pathlib import Path

from augcompare.experiments import cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.images import IMAGE_SUFFIXES
from augcompare.experiments.sources.plan import Group, each_class, ordered, shuffled


def _class_dirs(directory):
    return sorted(p for p in Path(directory).iterdir() if p.is_dir() and not p.name.startswith("."))


def plan(data, root, scratch=None):
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
