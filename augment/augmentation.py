"""An augmentation set: which random operations to apply to a training batch, and how strongly."""

import dataclasses

import numpy as np
import tensorflow as tf

from augcompare.augment import ops


@dataclasses.dataclass(frozen=True)
class Param:
    kind: type
    low: float
    high: float
    doc: str
    choices: tuple = ()

    def describe(self):
        if self.choices:
            return " | ".join(self.choices)
        if self.kind is bool:
            return "true | false"
        return f"{self.low:g} to {self.high:g}"


# The operations, their units and valid ranges. A value of 0 (or false) switches an operation off.
PARAMS = {
    "rotation": Param(float, 0, 180, "angle uniform in [-D, D] degrees per image, bilinear"),
    "width_shift": Param(float, 0, 1, "shift uniform in [-s, s] x width pixels per image"),
    "height_shift": Param(float, 0, 1, "shift uniform in [-s, s] x height pixels per image"),
    "zoom": Param(float, 0, 0.9, "scale uniform in [1-z, 1+z] per image (> 1 enlarges)"),
    "horizontal_flip": Param(bool, 0, 1, "mirror left-right with p = 0.5"),
    "vertical_flip": Param(bool, 0, 1, "mirror top-bottom with p = 0.5"),
    "brightness": Param(float, 0, 1, "multiply pixels by a factor uniform in [1-f, 1+f], clip to [0, 255]"),
    "contrast": Param(float, 0, 1, "scale distance from the per-channel mean by [1-c, 1+c], clip"),
    "cutout": Param(float, 0, 1, "fill one square of side c x min(H, W) with the image's mean colour"),
    "fill_mode": Param(str, 0, 0, "how warps fill pixels from outside the image", ops.FILL_MODES),
    "fill_value": Param(float, 0, 255, "pixel value for fill_mode = constant"),
}
DEFAULTS = {"fill_mode": "reflect", "fill_value": 0.0}

# Named sets an arm can use with `preset = "<name>"`. "standard" is the mission's set: rotation,
# brightness and horizontal flip (rescale is the shared normalization, train.normalize).
PRESETS = {
    "standard": {"rotation": 20.0, "brightness": 0.2, "horizontal_flip": True},
    "geometric": {"rotation": 20.0, "width_shift": 0.1, "height_shift": 0.1, "zoom": 0.1,
                  "horizontal_flip": True},
    "photometric": {"brightness": 0.2, "contrast": 0.2},
    "strong": {"rotation": 30.0, "width_shift": 0.15, "height_shift": 0.15, "zoom": 0.2,
               "horizontal_flip": True, "brightness": 0.3, "contrast": 0.3, "cutout": 0.25},
}
_GEOMETRIC = ("rotation", "width_shift", "height_shift", "zoom", "horizontal_flip", "vertical_flip")


def _check(key, value):
    if key not in PARAMS:
        raise ValueError(f"unknown augmentation key {key!r}; valid keys: {', '.join(PARAMS)}")
    param = PARAMS[key]
    if param.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"augmentation {key} must be true or false, got {value!r}")
        return value
    if param.kind is str:
        if value not in param.choices:
            raise ValueError(f"augmentation {key} must be one of {', '.join(param.choices)}, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"augmentation {key} must be a number, got {value!r}")
    if not param.low <= value <= param.high:
        raise ValueError(f"augmentation {key} = {value} is out of range; valid: {param.describe()}")
    return float(value)


class Augmentation:
    """A set of random operations applied per image to a batch of [0, 255] float32 pixels.

    Build it from keywords or a dict (a TOML table): `Augmentation(rotation=20, brightness=0.2,
    horizontal_flip=True)` or `Augmentation.from_dict(table)`. `Augmentation()` is the identity.
    The order is fixed: one bilinear warp for all geometric operations (mirror, zoom, rotation,
    shift, composed into one affine matrix per image), then brightness, contrast and cutout.

    Brightness multiplies, as the legacy Keras ImageDataGenerator did (Keras 3's RandomBrightness
    adds a delta instead): a factor keeps black black and scales the contrast with the light,
    which is what a change of exposure does to a photograph.
    """

    def __init__(self, **params):
        self.params = {key: _check(key, value) for key, value in params.items()}
        self._settings = {**DEFAULTS, **self.params}
        # The random draws are a handful of small ops; the per-pixel work (warp, brightness,
        # contrast, cutout, normalization) is compiled by XLA into one fused loop.
        self._pixels_compiled = tf.function(self._pixels, jit_compile=True, reduce_retracing=True)
        self._compiled = tf.function(self.apply, reduce_retracing=True)

    @classmethod
    def from_dict(cls, table):
        return cls(**dict(table))

    def to_dict(self):
        """The parameters as given, so that from_dict(to_dict()) is the same set."""
        return dict(self.params)

    @property
    def is_identity(self):
        return not any(self._settings.get(key) for key in PARAMS if key not in DEFAULTS)

    def __eq__(self, other):
        return isinstance(other, Augmentation) and self._settings == other._settings

    def __hash__(self):
        return hash(tuple(sorted(self._settings.items())))

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"Augmentation({args})"

    def __call__(self, images, seed):
        """Augments a batch [B, H, W, C] (uint8 or float32, pixels in [0, 255]).

        seed: an int or a pair of ints; the same seed gives the same output. Returns a float32
        tf.Tensor in [0, 255]. Compiled once per input shape.
        """
        images = tf.cast(images, tf.float32)
        if self.is_identity:
            return images
        return self._compiled(images, tf.cast(_seed_pair(seed), tf.int64))

    def apply(self, images, seed, normalize=None):
        """The operations for use inside a graph (a Keras layer, tf.data): float32 [B, H, W, C]
        pixels in [0, 255] and a shape-[2] int64 seed -> augmented pixels, then normalized with
        ops.normalize(normalize) unless it is None."""
        if self.is_identity:
            return images if normalize is None else ops.normalize(images, normalize)
        shape = tf.shape(images)
        draws = self.draw(seed, shape[0], shape[1], shape[2])
        return self._pixels_compiled(images, draws, normalize)

    def transforms(self, seed, batch, height, width):
        """The [B, 8] warp of each image (see ops.affine_transforms) for a seed, or None when no
        geometric operation is on."""
        s = self._settings
        if not any(s.get(key) for key in _GEOMETRIC):
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
        return ops.affine_transforms(height, width, angle, scale, shift_x, shift_y, mirror_x, mirror_y)

    def draw(self, seed, batch, height, width):
        """Every random number one batch needs, by operation: the warps [B, 8], brightness and
        contrast factors [B] and cutout centres [B] (rows, columns); only the operations that
        are on."""
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
        if s.get("cutout"):
            draws["cutout_rows"], draws["cutout_cols"] = ops.cutout_centres(seeds["cutout"], batch, height, width)
        return draws

    def _pixels(self, images, draws, normalize):
        s = self._settings
        if "transforms" in draws:
            images = ops.warp(images, draws["transforms"], s["fill_mode"], s["fill_value"])
        if "brightness" in draws:
            images = ops.scale_pixels(images, draws["brightness"])
        if "contrast" in draws:
            images = ops.adjust_contrast(images, draws["contrast"])
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


def describe(presets=None):
    """Lines listing each operation, its valid range and meaning, then the presets (name ->
    settings; the built-in PRESETS by default)."""
    presets = PRESETS if presets is None else presets
    lines = [f"{key:16s} {param.describe():28s} {param.doc}" for key, param in PARAMS.items()]
    lines += ["", "presets (in an arm: preset = \"<name>\"; other keys of the arm override the preset's):"]
    for name, settings in presets.items():
        text = ", ".join(f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
                         for key, value in settings.items())
        lines.append(f"  {name:14s} {text}")
    return lines
