"""An augmentation set: which random operations to apply to a training batch, and how strongly."""

import numpy as np

from augcompare.augment import ops, policies
from augcompare.augment.backend import tf
from augcompare.augment.params import (
    COLOUR,
    DEFAULTS,
    GEOMETRIC,
    PARAMS,
    RAND_MAGNITUDE,
    TRIVIAL_AUGMENT,
    check_operations,
)

# TrivialAugment's operations, in the order its draws number them.
_TRIVIAL = tuple(TRIVIAL_AUGMENT)


class Augmentation:
    """A set of random operations applied per image to a float32 batch [B, H, W, C].

    Build it from keywords or a dict (a TOML table): `Augmentation(rotation=20, brightness=0.2,
    horizontal_flip=True)` or `Augmentation.from_dict(table)`. `Augmentation()` is the identity.
    value_range: the (low, high) the data lives in, (0, 255) for pixels; every operation and the
    fill value are clipped to it, so value data (for example in [-1, 1]) keeps its range.
    The order is fixed: one bilinear warp for all geometric operations (crop, mirror, zoom,
    rotation, shift, translate and TrivialAugment's geometric choices, composed into one affine
    matrix per image), then brightness, contrast, one 3 x 3 colour matrix per image (hue,
    saturation, grayscale), TrivialAugment's photometric choice, RandAugment's steps (each its own
    warp, then its photometric choice), AugMix (its chains from the image so far, mixed with it;
    see augment.policies) and cutout.

    Brightness multiplies, as the legacy Keras ImageDataGenerator did (Keras 3's RandomBrightness
    adds a delta instead): a factor keeps black black and scales the contrast with the light,
    which is what a change of exposure does to a photograph.
    """

    def __init__(self, value_range=(0.0, 255.0), **params):
        self.params = check_operations(params)
        low, high = (float(v) for v in value_range)
        if not low < high:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")
        self.value_range = (low, high)
        self._settings = {**DEFAULTS, **self.params}
        # The random draws are a handful of small ops; the per-pixel work (warp, brightness,
        # contrast, cutout, normalization) is compiled by XLA into one fused loop. The code has
        # no Python control flow on tensors, so AutoGraph has nothing to convert (converting it
        # cost each process about 2 s when it first traced an arm).
        self._pixels_compiled = tf.function(self._pixels, jit_compile=True, reduce_retracing=True, autograph=False)
        self._compiled = tf.function(self.apply, reduce_retracing=True, autograph=False)

    @classmethod
    def from_dict(cls, table, value_range=(0.0, 255.0)):
        return cls(value_range=value_range, **dict(table))

    def to_dict(self):
        """The parameters as given, so that from_dict(to_dict()) is the same set."""
        return dict(self.params)

    @property
    def is_identity(self):
        return not any(self._settings.get(key) for key in PARAMS if key not in DEFAULTS)

    def __eq__(self, other):
        return (isinstance(other, Augmentation) and self._settings == other._settings
                and self.value_range == other.value_range)

    def __hash__(self):
        return hash((tuple(sorted(self._settings.items())), self.value_range))

    def __repr__(self):
        args = [f"{key}={value!r}" for key, value in self.params.items()]
        if self.value_range != (0.0, 255.0):
            args.append(f"value_range={self.value_range!r}")
        return f"Augmentation({', '.join(args)})"

    def __call__(self, images, seed):
        """Augments a batch [B, H, W, C] (uint8 pixels, or float32 within value_range).

        seed: an int or a pair of ints; the same seed gives the same output. Returns a float32
        tf.Tensor within value_range. Compiled once per input shape. Values outside value_range
        are an error: clipping them would change the data silently.
        """
        images = tf.cast(images, tf.float32)
        if self.is_identity:
            return images
        self.check_range(images)
        return self._compiled(images, tf.cast(_seed_pair(seed), tf.int64))

    def check_range(self, images):
        """ValueError where a batch (eager) holds values outside value_range."""
        low, high = float(np.min(images)), float(np.max(images))
        tolerance = 1e-4 * (self.value_range[1] - self.value_range[0])
        if low < self.value_range[0] - tolerance or high > self.value_range[1] + tolerance:
            raise ValueError(f"the images hold values in [{low:g}, {high:g}], outside value_range "
                             f"{self.value_range}; pass Augmentation(..., value_range=(low, high)) with the "
                             "range of your data")

    def apply(self, images, seed, normalize=None):
        """The operations for use inside a graph (a Keras layer, tf.data): float32 [B, H, W, C]
        values within value_range and a shape-[2] int64 seed -> augmented values, then normalized
        with ops.normalize(normalize) unless it is None."""
        if self.is_identity:
            return images if normalize is None else ops.normalize(images, normalize)
        self.check_channels(images.shape[-1])
        shape = tf.shape(images)
        draws = self.draw(seed, shape[0], shape[1], shape[2])
        # Called eagerly (a one-off batch, as the preview draws), op by op: compiling the fused
        # loop for it costs several times more than running it. In a graph (the training step,
        # __call__, the generators) the loop is XLA-compiled.
        pixels = self._pixels if tf.executing_eagerly() else self._pixels_compiled
        return pixels(images, draws, normalize)

    def check_channels(self, channels):
        """ValueError where a colour operation is on and the images are not RGB (channels is
        the static channel count, None where unknown)."""
        for key in COLOUR:
            if self._settings.get(key) and channels is not None and channels != 3:
                raise ValueError(f"augmentation {key} needs RGB images (3 channels), got {channels} channels; "
                                 f"switch {key} off for this data")

    def transforms(self, seed, batch, height, width):
        """The [B, 8] warp of each image (see ops.affine_transforms) for a seed, or None when no
        geometric operation is on."""
        s = self._settings
        trivial = s.get("trivial_augment")
        if not any(s.get(key) for key in GEOMETRIC) and not trivial:
            return None
        seeds = ops.split_seed(seed)
        ones, zeros = tf.ones([batch]), tf.zeros([batch])
        angle = ops.degrees_to_radians(uniform_or(seeds["rotation"], batch, s.get("rotation", 0.0), zeros))
        scale = ones + uniform_or(seeds["zoom"], batch, s.get("zoom", 0.0), zeros)
        shift_seeds = tf.random.experimental.stateless_split(seeds["shift"], num=2)
        shift_x = uniform_or(shift_seeds[0], batch, s.get("width_shift", 0.0), zeros) * tf.cast(width, tf.float32)
        shift_y = uniform_or(shift_seeds[1], batch, s.get("height_shift", 0.0), zeros) * tf.cast(height, tf.float32)
        mirror_x = ops.coin(seeds["horizontal_flip"], batch) if s.get("horizontal_flip") else ones
        mirror_y = ops.coin(seeds["vertical_flip"], batch) if s.get("vertical_flip") else ones
        # Each addition below happens only where its operation is on, so that the warps of the
        # other operations stay exactly what they were before it existed.
        if s.get("translate"):
            translate_x, translate_y = ops.translations(seeds["translate"], batch, s["translate"])
            shift_x, shift_y = shift_x + translate_x, shift_y + translate_y
        crop = None
        if s.get("crop_scale"):
            crop = ops.crop_boxes(seeds["crop"], batch, height, width, s["crop_scale"], s.get("crop_ratio") or 1.0)
        shear_x = shear_y = trivial_angle = None
        if trivial:
            choice, strength = self.trivial_draws(seeds["trivial_augment"], batch, s.get("trivial_strength", 1.0))
            # Whole pixels, as TrivialAugment translates: exact copies where nothing else warps.
            trivial_angle, shear_x, shear_y, trivial_x, trivial_y = policies.geometry(
                choice, {name: strength(name) for name in policies.GEOMETRIC}, _TRIVIAL, height, width)
            shift_x, shift_y = shift_x + trivial_x, shift_y + trivial_y
        return ops.affine_transforms(height, width, angle, scale, shift_x, shift_y, mirror_x, mirror_y,
                                     shear_x, shear_y, crop, trivial_angle)

    @staticmethod
    def trivial_draws(seed, batch, magnitude=1.0):
        """TrivialAugment's draws: the operation number [B] (int32, index into TRIVIAL_AUGMENT)
        and strength(name) -> [B], that operation's signed strength for every image (uniform in
        [0, magnitude x max] x a random sign where the operation is signed; magnitude in [0, 1])."""
        choice_seed, strength_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
        choice = tf.random.stateless_uniform([batch], seed=choice_seed, maxval=len(TRIVIAL_AUGMENT), dtype=tf.int32)
        unit = ops.uniform(strength_seed, batch, 0.0, magnitude)
        sign = ops.coin(sign_seed, batch)

        def strength(name):
            largest, _, signed = TRIVIAL_AUGMENT[name]
            return largest * unit * sign if signed else largest * unit
        return choice, strength

    def draw(self, seed, batch, height, width):
        """Every random number one batch needs, by operation: the warps [B, 8], brightness and
        contrast factors [B], colour matrices [B, 3, 3], cutout centres [B] (rows, columns),
        TrivialAugment's photometric choice and strengths [B], and RandAugment's and AugMix's
        draws (see augment.policies); only the operations that are on."""
        s = self._settings
        seeds = ops.split_seed(seed)
        draws = {}
        transforms = self.transforms(seed, batch, height, width)
        if transforms is not None:
            draws["transforms"] = transforms
        if s.get("brightness"):
            draws["brightness"] = ops.uniform(seeds["brightness"], batch, 1 - s["brightness"], 1 + s["brightness"])
        if s.get("contrast"):
            draws["contrast"] = ops.uniform(seeds["contrast"], batch, 1 - s["contrast"], 1 + s["contrast"])
        if any(s.get(key) for key in COLOUR):
            draws["colour"] = self.colour_matrices(seeds, batch)
        if s.get("cutout"):
            draws["cutout_rows"], draws["cutout_cols"] = ops.cutout_centres(seeds["cutout"], batch, height, width)
        if s.get("trivial_augment"):
            choice, strength = self.trivial_draws(seeds["trivial_augment"], batch, s.get("trivial_strength", 1.0))
            draws["trivial_choice"] = choice
            draws["trivial_strengths"] = {name: strength(name) for name in policies.PHOTOMETRIC
                                          if TRIVIAL_AUGMENT[name][0]}
        if s.get("rand_augment"):
            draws["rand_augment"] = policies.rand_augment_draws(seeds["rand_augment"], batch, s["rand_augment"])
        if s.get("aug_mix"):
            draws["aug_mix"] = policies.aug_mix_draws(seeds["aug_mix"], batch)
        return draws

    def colour_matrices(self, seeds, batch):
        """[B, 3, 3]: hue rotation, then saturation, then grayscale (last, so that a grey image
        stays grey), each the identity where its operation is off."""
        s = self._settings
        matrices = tf.eye(3, batch_shape=[batch])
        if s.get("hue"):
            matrices = ops.hue_matrices(ops.uniform(seeds["hue"], batch, -s["hue"], s["hue"]))
        if s.get("saturation"):
            factors = ops.uniform(seeds["saturation"], batch, 1 - s["saturation"], 1 + s["saturation"])
            matrices = ops.saturation_matrices(factors) @ matrices
        if s.get("grayscale"):
            grey = ops.uniform(seeds["grayscale"], batch, 0.0, 1.0) < s["grayscale"]
            matrices = ops.grayscale_matrices(grey) @ matrices
        return matrices

    def _pixels(self, images, draws, normalize):
        s = self._settings
        low, high = self.value_range
        fill_value = min(max(s["fill_value"], low), high)
        if "transforms" in draws:
            images = ops.warp(images, draws["transforms"], s["fill_mode"], fill_value)
        if "brightness" in draws:
            images = ops.scale_pixels(images, draws["brightness"], low, high)
        if "contrast" in draws:
            images = ops.adjust_contrast(images, draws["contrast"], low, high)
        if "colour" in draws:
            images = ops.apply_colour_matrices(images, draws["colour"], low, high)
        if "trivial_choice" in draws:
            images = policies.photometric(images, draws["trivial_choice"], draws["trivial_strengths"], _TRIVIAL, low,
                                          high)
        if "rand_augment" in draws:
            magnitude = s.get("rand_magnitude", RAND_MAGNITUDE)
            images = policies.rand_augment(images, draws["rand_augment"], s["rand_augment"], magnitude,
                                           s["fill_mode"], fill_value, low, high)
        if "aug_mix" in draws:
            images = policies.aug_mix(images, draws["aug_mix"], s["fill_mode"], fill_value, low, high)
        if "cutout_rows" in draws:
            size = max(1, round(s["cutout"] * min(images.shape[1:3])))
            images = ops.cut_out(images, draws["cutout_rows"], draws["cutout_cols"], size)
        return images if normalize is None else ops.normalize(images, normalize)


def uniform_or(seed, batch, half_width, zeros):
    """Uniform in [-half_width, half_width] per image, or zeros when the operation is off."""
    if not half_width:
        return zeros
    return ops.uniform(seed, batch, -half_width, half_width)


def _seed_pair(seed):
    if np.ndim(seed) == 0:
        return [0, int(seed)]
    return seed
