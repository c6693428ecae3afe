"""Keras 3 preprocessing layers as part of an arm: `keras = [{layer = "RandAugment", num_ops = 2}]`.

The harness builds each layer by its class name with the arm's keyword arguments, sets
`value_range` where the layer takes one (the data's range: pixels are in [0, 255] before
normalization) and seeds every random state the layer keeps from the job's seed (reseed), so
that the same seed gives the same augmented batches and a resumed job continues exactly: the
layers' seed-generator states are model variables, saved in every checkpoint.
"""

import hashlib
import inspect
import random

import numpy as np

from augcompare.augment.backend import keras  # first: loads TensorFlow quietly

# isort: split
from keras.src.layers.preprocessing.image_preprocessing.base_image_preprocessing_layer import (
    BaseImagePreprocessingLayer,  # the class every Keras image augmentation layer derives from
)

# Image preprocessing layers that cannot be an arm's augmentation, and what to use instead.
EXCLUDED = {
    "MixUp": "it mixes labels too: use mixup = alpha in the arm",
    "CutMix": "it mixes labels too: use cutmix = alpha in the arm",
    "Resizing": "it changes the image size: use crop_scale for random resized crops",
    "CenterCrop": "it changes the image size: use crop_scale for random resized crops",
    "RandomCrop": "it changes the image size: use crop_scale for random resized crops",
    "MaxNumBoundingBoxes": "it works on bounding boxes, not images",
}
# Keyword arguments the harness sets itself.
HARNESS_ARGUMENTS = ("value_range", "seed", "data_format", "name", "dtype")


def usable_layers():
    """name -> class of every Keras image preprocessing layer an arm can use."""
    found = {}
    for name in dir(keras.layers):
        cls = getattr(keras.layers, name)
        if inspect.isclass(cls) and issubclass(cls, BaseImagePreprocessingLayer) and name not in EXCLUDED:
            found[name] = cls
    return dict(sorted(found.items()))


def arguments(cls):
    """The keyword arguments a user may give a layer class (those the harness sets excluded)."""
    parameters = inspect.signature(cls.__init__).parameters
    return [name for name, p in parameters.items()
            if name not in ("self", *HARNESS_ARGUMENTS) and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def _layer_class(spec):
    name = spec["layer"]
    if name in EXCLUDED:
        raise ValueError(f"keras layer {name} cannot be an arm's augmentation: {EXCLUDED[name]}")
    layers = usable_layers()
    if name not in layers:
        raise ValueError(f"unknown keras layer {name!r}; usable layers: {', '.join(layers)}")
    return layers[name]


def _checked(spec):
    """The layer class and the user's keyword arguments of spec; ValueError where the class or an
    argument name is unknown."""
    cls = _layer_class(spec)
    valid = arguments(cls)
    kwargs = {key: value for key, value in spec.items() if key != "layer"}
    for key in kwargs:
        if key not in valid:
            reserved = " (the harness sets it)" if key in HARNESS_ARGUMENTS else ""
            raise ValueError(f"keras layer {spec['layer']} has no argument {key!r}{reserved}; its arguments: "
                             f"{', '.join(valid) or 'none'}")
    return cls, kwargs


def build_layer(spec, value_range=(0.0, 255.0)):
    """A layer from {layer = "<class>", <keyword> = <value>, ...}; ValueError naming the layer and
    what is valid where the class or an argument is unknown or a value is refused."""
    cls, kwargs = _checked(spec)
    kwargs = {key: tuple(value) if isinstance(value, list) else value for key, value in kwargs.items()}
    parameters = inspect.signature(cls.__init__).parameters
    if "value_range" in parameters:
        kwargs["value_range"] = tuple(float(v) for v in value_range)
    if "seed" in parameters:
        kwargs["seed"] = 0  # replaced by reseed() with the job's own seeds
    # float32 whatever Keras' global policy: under train.precision = "mixed_bfloat16" a layer built
    # in the model's scope would otherwise augment in bfloat16, while the built-in operations do not.
    kwargs["dtype"] = "float32"
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        message = " ".join(str(error).split())
        raise ValueError(f"keras layer {spec['layer']}: {message}") from None


def check_layers(specs):
    """Checks each layer's name and argument names (ValueError, one line) without building it:
    a built layer starts TensorFlow's devices, which a run must still be able to configure
    (train.cpu_devices). The values are checked where the layers are built on the data
    (experiments.training.check_arms)."""
    for spec in specs:
        _checked(spec)


def seed_python_random(*key):
    """Seeds Python's global random module from key. Keras' AugMix draws its chains of operations
    with it (random.choice) when the training step is traced, so in a compiled step they are fixed
    at that moment; seeding it from the arm alone (not the job's seed) right before tracing makes
    them the same in every run, and in a model reused for another seed or built afresh."""
    random.seed(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big"))


def seed_states(model):
    """Every seed-generator state variable in a model (dropout, Keras preprocessing layers), in
    the model's own fixed order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def reseed(model, seed):
    """Sets every seed-generator state of a model to a value derived from seed alone: a model
    reused for another seed, or built afresh, then draws exactly the same numbers."""
    states = seed_states(model)
    if not states:
        return
    derived = np.random.SeedSequence([seed, 2]).generate_state(len(states)) % (2**31 - 1)
    for state, value in zip(states, derived):
        state.assign(np.array([int(value), 0], dtype=state.dtype))


def jit_incompatible(specs):
    """The names of the layers in specs (or sublayers of them) that turn off XLA for the model
    they are in (supports_jit = False)."""
    names = []
    for spec in specs:
        layer = build_layer(spec)
        if not all(sub.supports_jit for sub in layer._flatten_layers(include_self=True)):
            names.append(spec["layer"])
    return names


def _example_spec(name, cls):
    """A spec with the required arguments filled in, to build a layer only to inspect it."""
    parameters = inspect.signature(cls.__init__).parameters
    required = [p for p in arguments(cls) if parameters[p].default is inspect.Parameter.empty]
    return {"layer": name, **{p: (4 if name == "RandomPosterization" else 0.1) for p in required}}


def describe():
    """Lines listing the usable layers with their arguments, marking those without XLA."""
    lines = []
    for name, cls in usable_layers().items():
        mark = "  (no XLA: supports_jit = False)" if jit_incompatible([_example_spec(name, cls)]) else ""
        lines.append(f"  {name:44s} {', '.join(arguments(cls)) or '-'}{mark}")
    return lines
