"""What an arm may ask for, checked without TensorFlow: the built-in operations with their units
and valid ranges, the other arm keys (Keras layers, a function of the user's, mixing) and the
named presets. The command line lists these and experiment files are checked against them
before anything heavy is imported.
"""

import dataclasses
import math
import re

FILL_MODES = ("reflect", "nearest", "constant", "wrap")
NORMALIZATIONS = ("rescale", "standardize", "divmax")


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
        if self.low == -math.inf:
            return "any number"
        return f"{self.low:g} to {self.high:g}"


# TrivialAugment's operations (Mueller & Hutter 2021, the "wide" space) in the order the draws
# number them: name -> (largest strength, unit, signed). Equalize is left out: it needs a
# 256-bin histogram per image and channel, which the fused per-pixel loop cannot make cheaply.
TRIVIAL_AUGMENT = {
    "identity": (0.0, "", False),
    "rotate": (135.0, "degrees", True),
    "shear_x": (0.99, "x += s * y about the centre", True),
    "shear_y": (0.99, "y += s * x about the centre", True),
    "translate_x": (1.0, "x width, whole pixels (32 px on 32 px CIFAR, as TA wide)", True),
    "translate_y": (1.0, "x height, whole pixels", True),
    "brightness": (0.99, "factor 1 +- s", True),
    "contrast": (0.99, "factor 1 +- s about the per-channel mean", True),
    "colour": (0.99, "saturation factor 1 +- s (identity without 3 channels)", True),
    "sharpness": (0.99, "factor 1 +- s from a 3 x 3 smoothed copy", True),
    "solarize": (1.0, "invert values above high - s x (high - low)", False),
    "posterize": (6.0, "bits dropped of 8, rounded (8 to 2 bits kept)", False),
    "autocontrast": (0.0, "stretch each channel to the data's range", False),
}

# RandAugment (Cubuk et al. 2020): per image N operations, each chosen uniformly (with replacement)
# from its list, all at one magnitude M on AutoAugment's scale (10: the largest AutoAugment
# searched). Its list is TrivialAugment's above (the paper's 14 less equalize, for the same reason):
# name -> strength at M = 10 in TRIVIAL_AUGMENT's units, signed where TRIVIAL_AUGMENT signs it.
# The enhance factors are 1 +- 0.9 M / 10 with a random sign, as torchvision's RandAugment (the
# reference TPU code's 0.1 + 1.8 M / 10 makes M = 5 the identity); solarize and posterize grow
# stronger with M, as torchvision's (the TPU code's thresholds move the other way).
RAND_AUGMENT = {
    "identity": 0.0, "rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3,
    "translate_x": 0.45, "translate_y": 0.45,  # of the size: AutoAugment's 150 px of 331
    "brightness": 0.9, "contrast": 0.9, "colour": 0.9, "sharpness": 0.9,
    "solarize": 1.0, "posterize": 4.0, "autocontrast": 0.0,
}
RAND_MAGNITUDE = 9.0  # M where rand_magnitude is unset: the paper's ImageNet setting (N = 2, M = 9)

# AugMix (Hendrycks et al. 2020) as its reference code augments CIFAR (without --all-ops, whose
# brightness, contrast, colour and sharpness overlap the corruptions it is tested on; equalize
# left out as above): AUG_MIX_CHAINS chains, each of 1 to AUG_MIX_DEPTH operations chosen uniformly
# from AUG_MIX, at a level uniform in [0.1, AUG_MIX_SEVERITY] per operation (see augment.policies),
# mixed with Dirichlet(1) weights, then with the image by a Beta(1, 1) weight. Its JSD consistency
# loss is not part of this: every arm trains with the same cross-entropy.
AUG_MIX = ("autocontrast", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y")
AUG_MIX_CHAINS, AUG_MIX_DEPTH, AUG_MIX_SEVERITY = 3, 3, 3.0

# The built-in operations, their units and valid ranges. A value of 0 (or false) switches an
# operation off.
PARAMS = {
    "rotation": Param(float, 0, 180, "angle uniform in [-D, D] degrees per image, bilinear"),
    "width_shift": Param(float, 0, 1, "shift uniform in [-s, s] x width pixels per image"),
    "height_shift": Param(float, 0, 1, "shift uniform in [-s, s] x height pixels per image"),
    "zoom": Param(float, 0, 0.9, "scale uniform in [1-z, 1+z] per image (> 1 enlarges)"),
    "horizontal_flip": Param(bool, 0, 1, "mirror left-right with p = 0.5"),
    "vertical_flip": Param(bool, 0, 1, "mirror top-bottom with p = 0.5"),
    "brightness": Param(float, 0, 1, "multiply values by a factor uniform in [1-f, 1+f], clip to the data's range"),
    "contrast": Param(float, 0, 1, "scale distance from the per-channel mean by [1-c, 1+c], clip to the data's range"),
    "cutout": Param(float, 0, 1, "fill one square of side c x min(H, W) with the image's mean colour"),
    "fill_mode": Param(str, 0, 0, "how warps fill pixels from outside the image", FILL_MODES),
    "fill_value": Param(float, -math.inf, math.inf, "value for fill_mode = constant (clipped to the data's range)"),
    "crop_scale": Param(float, 0, 1, "random resized crop: area fraction uniform in [s, 1], a random place, "
                                     "resized back to the full image (bilinear)"),
    "crop_ratio": Param(float, 0, 1, "with crop_scale: the crop's aspect ratio (relative to the image's) "
                                     "log-uniform in [r, 1/r]; a side longer than the image is cut to it"),
    "translate": Param(int, 0, 64, "shift uniform in {-t, ..., t} whole pixels per axis, exact copies, the "
                                   "uncovered border per fill_mode (pad-and-crop)"),
    "hue": Param(float, 0, 0.5, "rotate colours about the grey axis by [-h, h] x 360 degrees (3 channels)"),
    "saturation": Param(float, 0, 1, "scale each pixel's distance from its grey (luma) by [1-s, 1+s] (3 channels)"),
    "grayscale": Param(float, 0, 1, "probability of replacing an image by its luma in all 3 channels"),
    "trivial_augment": Param(bool, 0, 1, f"TrivialAugment: per image one of {', '.join(TRIVIAL_AUGMENT)}, "
                                         "chosen uniformly, strength uniform in [0, max], a random sign where signed"),
    "trivial_strength": Param(float, 0, 1, "with trivial_augment: its strengths uniform in [0, t x max] instead "
                                           "(1, the default, is the paper's wide space)"),
    "rand_augment": Param(int, 0, 10, "RandAugment: per image N operations of TrivialAugment's list, each chosen "
                                      "uniformly, at magnitude rand_magnitude (a random sign where signed)"),
    "rand_magnitude": Param(float, 0, 10, f"with rand_augment: its magnitude M on AutoAugment's scale (10: "
                                          f"rotate 30 degrees; {RAND_MAGNITUDE:g}, the default, is the paper's)"),
    "aug_mix": Param(bool, 0, 1, f"AugMix: {AUG_MIX_CHAINS} chains of 1 to {AUG_MIX_DEPTH} operations of "
                                 f"{', '.join(AUG_MIX)} (severity {AUG_MIX_SEVERITY:g}), Dirichlet(1) chain weights, "
                                 "a Beta(1, 1) mix with the image (no JSD loss)"),
}
DEFAULTS = {"fill_mode": "reflect", "fill_value": 0.0}
# Keys that only shape another operation: on their own they would change nothing.
REQUIRES = {"crop_ratio": "crop_scale", "trivial_strength": "trivial_augment", "rand_magnitude": "rand_augment"}
# Composed into one affine matrix per image (one warp); trivial_augment adds to it as well.
GEOMETRIC = ("rotation", "width_shift", "height_shift", "zoom", "horizontal_flip", "vertical_flip", "crop_scale",
             "translate")
# Composed into one 3 x 3 colour matrix per image; they need RGB (3-channel) images.
COLOUR = ("hue", "saturation", "grayscale")

# The arm keys besides the built-in operations, applied after them in this order.
ARM_KEYS = {
    "keras": "Keras 3 preprocessing layers in order: [{layer = \"RandAugment\", num_ops = 2}, ...]",
    "function": "your own augmentation, \"file.py:name\" (beside the experiment) or \"package.module:name\": "
                "name(images, seed) on float32 [B, H, W, C] in the data's range, TensorFlow ops only",
    "mixup": "alpha > 0: mix each image and its label with a partner from the batch, weight ~ Beta(alpha, alpha)",
    "cutmix": "alpha > 0: paste a box of a partner from the batch, area ~ Beta(alpha, alpha); labels by area",
}
MIXING = ("mixup", "cutmix")

# Named sets an arm can use with `preset = "<name>"`. "standard" is the mission's set: rotation,
# brightness and horizontal flip (rescale is the shared normalization, train.normalize).
PRESETS = {
    "standard": {"rotation": 20.0, "brightness": 0.2, "horizontal_flip": True},
    "geometric": {"rotation": 20.0, "width_shift": 0.1, "height_shift": 0.1, "zoom": 0.1,
                  "horizontal_flip": True},
    "photometric": {"brightness": 0.2, "contrast": 0.2},
    "strong": {"rotation": 30.0, "width_shift": 0.15, "height_shift": 0.15, "zoom": 0.2,
               "horizontal_flip": True, "brightness": 0.3, "contrast": 0.3, "cutout": 0.25},
    "trivialaugment": {"trivial_augment": True},
    # Common policies, our own batched RandAugment and AugMix (Keras' layers, which choose their
    # operations per batch or once when traced, stay available as keras = [...] arms). N = 2 and a
    # middle magnitude, as the paper's small-data settings (CIFAR-10: N = 3, M = 4 or 5).
    "randaugment": {"rand_augment": 2, "rand_magnitude": 5.0},
    "augmix": {"aug_mix": True},
    # MixUp's paper used alpha = 0.2 on ImageNet (1.0 on CIFAR); CutMix's used alpha = 1.
    "mixup": {"mixup": 0.2},
    "cutmix": {"cutmix": 1.0},
}

_FUNCTION = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_]*)$")


def check_operation(key, value):
    """The value of a built-in operation as stored; ValueError naming the key and what is valid."""
    if key not in PARAMS:
        raise ValueError(f"unknown augmentation key {key!r}; valid keys: {', '.join([*PARAMS, *ARM_KEYS])}")
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
    if param.kind is int and not float(value).is_integer():
        raise ValueError(f"augmentation {key} must be a whole number, got {value!r}")
    if not math.isfinite(value) or not param.low <= value <= param.high:
        raise ValueError(f"augmentation {key} = {value} is out of range; valid: {param.describe()}")
    return param.kind(value)


def check_operations(table):
    operations_ = {key: check_operation(key, value) for key, value in table.items()}
    _check_combination(operations_)
    return operations_


def _check_combination(settings):
    for key, needed in REQUIRES.items():
        if settings.get(key) and not settings.get(needed):
            raise ValueError(f"augmentation {key} needs {needed} ({PARAMS[needed].describe()}); set {needed} or "
                             f"remove {key}")


def parse_function(text):
    """(module or file, attribute) of a function key: "file.py:name" or "package.module:name"."""
    match = _FUNCTION.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"function must be \"file.py:name\" or \"package.module:name\", got {text!r}")
    return match["module"], match["attr"]


def check_arm(table):
    """An arm's settings checked in form (Keras layer names and arguments are checked against
    Keras where the experiment is built): built-in operations, keras, function, mixup, cutmix."""
    arm = {}
    for key, value in table.items():
        if key == "keras":
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise ValueError("keras must be a list of tables, e.g. [{layer = \"RandAugment\", num_ops = 2}]")
            for item in value:
                if not isinstance(item.get("layer"), str):
                    raise ValueError(f"each keras entry needs layer = \"<class name>\", got {item!r}")
            arm[key] = [dict(item) for item in value]
        elif key == "function":
            parse_function(value)
            arm[key] = value
        elif key in MIXING:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise ValueError(f"{key} is the Beta(alpha, alpha) parameter, a number from 0 (off) to 100, "
                                 f"got {value!r}")
            arm[key] = float(value)
        else:
            arm[key] = check_operation(key, value)
    _check_combination(arm)
    if arm.get("mixup") and arm.get("cutmix"):
        raise ValueError("mixup and cutmix are exclusive in one arm; make two arms to compare them")
    return arm


def operations(arm):
    """The built-in operations of an arm's settings."""
    return {key: value for key, value in arm.items() if key in PARAMS}


def augments(arm):
    """Whether an arm's settings change the training data at all."""
    settings = {**DEFAULTS, **operations(arm)}
    return (any(settings.get(key) for key in PARAMS if key not in DEFAULTS)
            or bool(arm.get("keras")) or bool(arm.get("function")) or any(arm.get(key) for key in MIXING))


# What a preset's `strength` multiplies (see scale_preset): the magnitudes of the operations. Not
# the switches, the fill, nor crop_scale and crop_ratio, where a larger number means a milder crop,
# nor RandAugment's count of operations.
MAGNITUDES = tuple(key for key, param in PARAMS.items() if param.kind in (int, float)
                   and key not in ("fill_value", "crop_scale", "crop_ratio", "trivial_strength", "rand_augment"))


def scale_preset(name, settings, strength):
    """A preset's settings at `strength` x its own (1: as defined; 0.5: half; 2: twice): every
    operation magnitude (MAGNITUDES; whole-pixel ones rounded), MixUp's and CutMix's alpha, the
    factor (its magnitude, in [0, 1]) of a Keras RandAugment layer, TrivialAugment's strength
    (trivial_strength, 1 when unset) and RandAugment's magnitude (rand_magnitude, RAND_MAGNITUDE
    when unset; not its count of operations). The result is checked like any arm's settings by the caller;
    ValueError where the preset holds nothing to scale."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 100:
        raise ValueError(f"strength multiplies preset {name!r}'s magnitudes; give a number from 0 to 100, "
                         f"got {strength!r}")
    scaled, changed = dict(settings), False
    for key, value in settings.items():
        if key in MAGNITUDES or key in MIXING:
            value = value * strength
            scaled[key] = round(value) if key in PARAMS and PARAMS[key].kind is int else float(value)
            changed = True
    if settings.get("trivial_augment"):
        scaled["trivial_strength"] = float(settings.get("trivial_strength", 1.0) * strength)
        changed = True
    if settings.get("rand_augment") and "rand_magnitude" not in settings:
        scaled["rand_magnitude"] = float(RAND_MAGNITUDE * strength)
        changed = True
    if settings.get("keras"):
        scaled["keras"] = [dict(layer) for layer in settings["keras"]]
        for layer in scaled["keras"]:
            if layer.get("layer") == "RandAugment" and isinstance(layer.get("factor"), (int, float)):
                layer["factor"] = float(layer["factor"] * strength)
                changed = True
    if not changed:
        raise ValueError(f"preset {name!r} has no magnitude for strength to scale (only switches or layers "
                         "without one); sweep one of its settings instead")
    return scaled


def describe(presets=None):
    """Lines listing each operation, its valid range and meaning, the other arm keys, then the
    presets (name -> settings; the built-in PRESETS by default)."""
    presets = PRESETS if presets is None else presets
    # columns as wide as their longest entry, so that no value runs into the next column
    keys = max(len(key) for key in (*PARAMS, *ARM_KEYS))
    ranges = max(len(param.describe()) for param in PARAMS.values())
    lines = [f"{key:{keys}s}  {param.describe():{ranges}s}  {param.doc}" for key, param in PARAMS.items()]
    lines += [f"{key:{keys}s}  {'':{ranges}s}  {doc}" for key, doc in ARM_KEYS.items()]
    lines += ["", "presets (in an arm: preset = \"<name>\"; other keys of the arm override the preset's; "
                  "strength = k multiplies its magnitudes, strength = [0.5, 1, 2] sweeps them):"]
    names = max(len(name) for name in presets)
    for name, settings in presets.items():
        lines.append(f"  {name:{names}s}  {_settings_text(settings)}")
    return lines


def _settings_text(settings):
    def text(value):
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return "[" + ", ".join(text(item) for item in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k} = {text(v)}" for k, v in value.items()) + "}"
        if isinstance(value, str):
            return f'"{value}"'
        return str(value)
    return ", ".join(f"{key} = {text(value)}" for key, value in settings.items())


def arm_title(settings):
    """A short description of an arm's settings, for figure panels."""
    if not augments(settings):
        return "no augmentation"
    parts = []
    for key, value in operations(settings).items():
        if key in ("fill_mode", "fill_value") or not value:
            continue
        parts.append(key.replace("_", " ") if PARAMS[key].kind is bool else f"{key.replace('_', ' ')} {value:g}")
    parts += [spec["layer"] for spec in settings.get("keras", ())]
    if settings.get("function"):
        parts.append(settings["function"].rsplit(":", 1)[-1] + "()")
    parts += [f"{key} {settings[key]:g}" for key in MIXING if settings.get(key)]
    return ", ".join(parts)
