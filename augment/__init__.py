"""Augmentation sets, batched operations and the generators that feed Keras.

The names below are loaded on first use: `augcompare.augment.params` (what an arm may ask for)
needs no TensorFlow, so the command line can list and check settings without loading it; the
modules that need TensorFlow take it from `augcompare.augment.backend`, which loads it quietly.
"""

import importlib

_EXPORTS = {
    "Augmentation": "augmentation", "AugmentationLayer": "layer", "DataGenerator": "generators",
    "get_generator": "generators", "get_generator_cyclic": "generators", "normalize": "ops",
    "NORMALIZATIONS": "params", "PARAMS": "params", "PRESETS": "params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
