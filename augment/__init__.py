"""Augmentation sets, batched operations and the generators that feed Keras."""

import os

# The operations are TensorFlow ops; Keras must run on the same backend.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

from augcompare.augment.augmentation import PARAMS, PRESETS, Augmentation  # noqa: E402
from augcompare.augment.generators import DataGenerator, get_generator, get_generator_cyclic  # noqa: E402
from augcompare.augment.layer import AugmentationLayer  # noqa: E402
from augcompare.augment.ops import NORMALIZATIONS, normalize  # noqa: E402

__all__ = ["Augmentation", "AugmentationLayer", "DataGenerator", "NORMALIZATIONS", "PARAMS", "PRESETS",
           "get_generator", "get_generator_cyclic", "normalize"]
