"""The npy source, the original layout: one .npy sample per file and a labels file
(labels.json or labels.csv).
"""

import csv

from augcompare.experiments.errors import UserError
from augcompare.experiments.files import read_json
from augcompare.experiments.images import npy_header, npy_sample_kind
from augcompare.experiments.sources.plan import Group, each_class, ordered, shuffled


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


def plan(data, root, scratch=None):
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
