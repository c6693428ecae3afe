"""The arrays source: x_train / y_train (and x_val / y_val, x_test / y_test) in an .npz file or a
folder of .npy files (experiments.array_files reads their headers and labels).
"""

import numpy as np

from augcompare.experiments import array_files as release
from augcompare.experiments import cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.sources.plan import Group, each_class, ordered, shuffled


def plan(data, path, scratch=None):
    """x_train / y_train (and x_val / y_val, x_test / y_test where given) in an .npz file or a
    folder of .npy files (experiments.array_files). A split not given is held out of train, seeded and
    stratified, as a folder's; a given split takes each class's first images in a seeded order.
    uint8 images are pixels (resized to image_size, channels kept); other real numbers are values,
    kept bit for bit (float32), whose size must be image_size."""
    found = release.find(path)
    images = {split: found[f"x_{split}"] for split in cache.SPLITS if f"x_{split}" in found}
    kinds = {split: release.sample_kind(image_file) for split, image_file in images.items()}
    kind, shape = kinds["train"]
    for split, (other_kind, other_shape) in kinds.items():
        if other_kind != kind or (kind == "values" and other_shape != shape) or other_shape[2] != shape[2]:
            raise UserError(f"{images[split].where} holds {images[split].dtype} {images[split].shape[1:]} samples but "
                            f"x_train {images['train'].dtype} {images['train'].shape[1:]}; give every split the same "
                            "dtype kind (uint8 or float) and channels (and values one shape)")
    if kind == "values" and (shape[0] != shape[1] or shape[0] != data.image_size):
        raise UserError(f"{images['train'].where} holds values of shape {shape}, kept exactly (never resized or "
                        f"cropped): give square [S, S, C] samples and set data.image_size = {shape[0]}")
    labels = {split: release.read_labels(found[f"y_{split}"], image_file.shape[0], image_file)
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
