"""What every source's plan is made of: a Group (the images of one class in one split, as
candidates in order of preference) and a Plan (the groups, the classes, the kind and shape of the
images), and how a class's candidates are cut into train, val and test: a split the source gives
is used as given, a split it lacks is held out of train, seeded and stratified (test first, then
val, then train). experiments.prepare decodes a plan into the cache.
"""

import collections
import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from augcompare.experiments import cache
from augcompare.experiments.config import ALL
from augcompare.experiments.errors import UserError


@dataclasses.dataclass
class Group:
    """The images of one class in one split: the first `needed` candidates that decode, in order."""
    split: str
    label: int
    needed: int
    kind: str           # what a candidate is: "lmdb" or "encoded" (a key of the database `location`), "file"
    location: str       # or "npy" (a path relative to the folder `location`), "array" (an index into the image
    candidates: list    # array in the file `location`, its .npz member `member`), "cifar" or "idx" (a pair
                        # (file in the folder `location`, index of the sample in it)); in order of preference
    where: str          # where the images come from, for messages and meta.json's split_from
    offset: int = 0     # position of its first image in the split's array
    member: str = ""    # "array": the .npz member holding the images ("" for an .npy file)
    array_name: str = ""  # "array": x_train, x_val or x_test, for names in messages and meta.json
    channels: int = 3   # "encoded": the channels kept (1: grayscale, 3: RGB)

    def item(self, index):
        """What images.decode_chunk reads for candidate `index`."""
        candidate = self.candidates[index]
        if self.kind == "lmdb":
            return ("lmdb", self.location, candidate)
        if self.kind == "encoded":
            return ("encoded", self.location, candidate, self.channels)
        if self.kind == "array":
            return ("array", self.location, self.member, candidate)
        if self.kind in ("cifar", "idx"):
            return (self.kind, os.path.join(self.location, candidate[0]), candidate[1])
        return (self.kind, os.path.join(self.location, candidate))

    def name(self, index):
        """Candidate `index` in words: database/key, the path relative to the source's root, or
        array[index] (file[index] for "cifar" and "idx")."""
        candidate = self.candidates[index]
        if self.kind in ("lmdb", "encoded"):
            return f"{Path(self.location).name}/{candidate.decode('ascii')}"
        if self.kind == "array":
            return f"{self.array_name}[{candidate}]"
        if self.kind in ("cifar", "idx"):
            return f"{candidate[0]}[{candidate[1]}]"
        return candidate


@dataclasses.dataclass
class Plan:
    class_names: list
    groups: list        # ordered by split (cache.SPLITS) then label, offsets set
    kind: str           # "pixels" | "values" (cache.KINDS)
    image_shape: tuple  # [S, S, C]
    converted: dict = dataclasses.field(default_factory=dict)  # values: {source dtype: example file}


def allowance(needed, max_skip_fraction):
    """Extra candidates a held-out split keeps for images that fail to decode."""
    return math.ceil(needed * max_skip_fraction)


def consecutive(candidates, wanted, max_skip_fraction):
    """Cuts candidates, in order, into one part per (split, needed) of wanted, the last taking the
    rest: each earlier part holds its needed candidates, plus room for ones that fail to decode
    where the later parts' needs leave some."""
    parts, start = {}, 0
    for position, (split, needed) in enumerate(wanted):
        if position == len(wanted) - 1:
            parts[split] = candidates[start:]
            break
        later = least(wanted[position + 1:])
        room = len(candidates) - start - later
        end = start + max(needed, min(needed + allowance(needed, max_skip_fraction), room))
        parts[split], start = candidates[start:end], end
    return parts


def per_class(data, split):
    return getattr(data, f"{split}_per_class")


def least(wanted):
    """The fewest candidates that meet [(split, needed)]: train_per_class = "all" needs one."""
    return sum(1 if needed == ALL else needed for _, needed in wanted)


def asked(wanted):
    """'300 train + 200 val + 200 test' for [(split, needed)]."""
    needs = dict(wanted)
    return " + ".join(f"{needs[s]} {s}" for s in cache.SPLITS if s in needs)


def fitting(fewest, wanted, max_skip_fraction):
    """The settings that fit a class of `fewest` candidates (the smallest class), in words: the
    largest per-class counts in the proportions asked, and where val and test fit as they are,
    train_per_class = "all" with the train images that leaves."""
    if fewest < len(wanted):
        return f"each class needs at least {len(wanted)} images (one per split)"
    held = [(split, needed) for split, needed in wanted if split != "train"]
    held_total = sum(needed for _, needed in held)
    weights = {split: (max(held_total, 1) if needed == ALL else needed) for split, needed in wanted}
    fit = {split: max(1, weight * fewest // sum(weights.values())) for split, weight in weights.items()}
    while sum(fit.values()) > fewest:  # the floor of one per split can overshoot a tiny class
        largest = max(fit, key=fit.get)
        fit[largest] -= 1
    text = ("the largest counts that fit every class in these proportions: "
            + ", ".join(f"data.{split}_per_class = {fit[split]}" for split in cache.SPLITS if split in fit))
    if held_total < fewest:
        left = len(consecutive(list(range(fewest)), held + [("train", ALL)], max_skip_fraction)["train"])
        names = " and ".join(f"data.{split}_per_class" for split, _ in held)
        text += (f"; or keep {names} and set data.train_per_class = \"all\" (the smallest class then trains on "
                 f"{left})" if held else "")
    return text


def too_few(where, available, wanted, fewest, max_skip_fraction):
    """The error for a class whose candidates cannot fill the counts asked of it."""
    return UserError(f"{where} has {available} images; asked for {asked(wanted)}; "
                     f"{fitting(fewest, wanted, max_skip_fraction)}")


def class_splits(data, own, fewest):
    """{split: (candidates, where, needed)} of one class. own: {split: (candidates in seeded order,
    where)} for the splits the source gives (train always); a split it lacks is held out of train's
    candidates: test first, then val, then train, which takes the rest (train_per_class = "all":
    all of it). fewest: {split: the fewest candidates of any class}, for the errors' hints."""
    train, train_where = own["train"]
    held = [split for split in ("test", "val") if split not in own]
    wanted = [(split, per_class(data, split)) for split in held] + [("train", data.train_per_class)]
    if len(train) < least(wanted):
        raise too_few(train_where, len(train), wanted, fewest["train"], data.max_skip_fraction)
    parts = consecutive(train, wanted, data.max_skip_fraction)
    splits = {}
    for split in cache.SPLITS:
        needed = per_class(data, split)
        if split == "train":
            splits[split] = (parts[split], train_where, len(parts[split]) if needed == ALL else needed)
        elif split in held:
            splits[split] = (parts[split], f"{train_where} (held out, seeded)", needed)
        else:
            candidates, where = own[split]
            if len(candidates) < needed:
                raise UserError(f"{where} has {len(candidates)} images; asked for {needed} {split}; set "
                                f"data.{split}_per_class = {fewest[split]} (what every class's {split} holds) or less")
            splits[split] = (candidates, where, needed)
    return splits


def ordered(class_names, groups, kind, image_shape, converted=None):
    """The Plan of groups: ordered by split and label, each group's offset in its split's array."""
    groups = sorted(groups, key=lambda g: (cache.SPLITS.index(g.split), g.label))
    filled = collections.Counter()
    for group in groups:
        group.offset = filled[group.split]
        filled[group.split] += group.needed
    return Plan(list(class_names), groups, kind, tuple(image_shape), converted or {})


def shuffled(names, seed):
    """names (sorted) in a seeded random order."""
    names = sorted(names)
    return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]



def each_class(data, own):
    """class_splits of every class (own: one {split: (candidates, where)} per class), the hints
    taken from the smallest class of each split."""
    fewest = {split: min(len(parts[split][0]) for parts in own) for split in own[0]}
    return [class_splits(data, parts, fewest) for parts in own]

