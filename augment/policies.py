"""TrivialAugment's, RandAugment's and AugMix's steps, batched, from the operations of ops.py.

In a step each image applies one operation of a list (names from params.TRIVIAL_AUGMENT): a
geometric choice becomes that image's warp (the identity for the others); every photometric
operation of the list is computed for the whole batch and each image keeps the one it chose.
Under XLA each is a few operations per pixel inside the fused loop, cheaper than splitting the
batch. The random draws (choices, levels, signs, mixing weights) come from explicit stateless seeds
and are made outside that loop (XLA would draw other numbers); what follows from them (strengths,
warps) is computed inside it with the pixels: outside, as about a hundred small graph ops per
batch, it measured about half of what RandAugment and AugMix cost beyond TrivialAugment.

RandAugment (Cubuk et al. 2020) is N such steps over params.RAND_AUGMENT at one magnitude M;
AugMix (Hendrycks et al. 2020) is params.AUG_MIX_CHAINS chains of 1 to params.AUG_MIX_DEPTH steps
over params.AUG_MIX, mixed as its paper mixes them (its JSD loss is not part of this). Both draw
per image, as the papers define them; Keras' layers of the same names draw RandAugment's choices
per batch and AugMix's chains once, when the training step is traced.
"""

from augcompare.augment import ops
from augcompare.augment.backend import tf
from augcompare.augment.params import (
    AUG_MIX,
    AUG_MIX_CHAINS,
    AUG_MIX_DEPTH,
    AUG_MIX_SEVERITY,
    RAND_AUGMENT,
    TRIVIAL_AUGMENT,
)

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
PHOTOMETRIC = ("brightness", "contrast", "sharpness", "solarize", "posterize", "autocontrast", "colour")


def choose(seed, count, names):
    """[count] operation numbers (int32, indices into names), each uniform over names."""
    return tf.random.stateless_uniform([count], seed=seed, maxval=len(names), dtype=tf.int32)


def geometry(choice, strengths, names, height, width):
    """The warp of the geometric operation each image chose, zero where it chose another: (angle
    in radians, shear_x, shear_y, shift_x, shift_y in whole pixels), [B] each. choice: [B]
    indices into names; strengths: name -> [B] signed strengths in TRIVIAL_AUGMENT's units
    (translate as a fraction of the size, rounded here to whole pixels, as TrivialAugment and
    RandAugment translate)."""
    zeros = tf.zeros(tf.shape(choice))
    size_x, size_y = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    values = {"rotate": lambda: ops.degrees_to_radians(strengths["rotate"]),
              "shear_x": lambda: strengths["shear_x"], "shear_y": lambda: strengths["shear_y"],
              "translate_x": lambda: tf.round(strengths["translate_x"] * size_x),
              "translate_y": lambda: tf.round(strengths["translate_y"] * size_y)}

    def chosen(name):
        if name not in names:
            return zeros
        return tf.where(tf.equal(choice, names.index(name)), values[name](), zeros)
    angle, shear_x, shear_y = chosen("rotate"), chosen("shear_x"), chosen("shear_y")
    shift_x, shift_y = chosen("translate_x"), chosen("translate_y")
    return angle, shear_x, shear_y, shift_x, shift_y


def step_transforms(choice, strengths, names, height, width):
    """[B, 8] warps of one step (see ops.affine_transforms): the geometric operation each image
    chose, the identity where it chose a photometric one."""
    angle, shear_x, shear_y, shift_x, shift_y = geometry(choice, strengths, names, height, width)
    zeros = tf.zeros_like(angle)
    return ops.affine_transforms(height, width, zeros, zeros + 1.0, shift_x, shift_y, zeros + 1.0, zeros + 1.0,
                                 shear_x, shear_y, None, angle)


def photometric(images, choice, strengths, names, low, high):
    """Each image [B, H, W, C] with the photometric operation of names it chose (choice [B],
    indices into names) at its strength (strengths: name -> [B]); images that chose a geometric
    operation or the identity pass. Colour has no meaning for a grey (or other non-RGB) image:
    there it is the identity."""
    candidates = {
        "brightness": lambda: ops.scale_pixels(images, 1.0 + strengths["brightness"], low, high),
        "contrast": lambda: ops.adjust_contrast(images, 1.0 + strengths["contrast"], low, high),
        "sharpness": lambda: ops.sharpen(images, 1.0 + strengths["sharpness"], low, high),
        "solarize": lambda: ops.solarize(images, high - strengths["solarize"] * (high - low), low, high),
        "posterize": lambda: ops.posterize(images, tf.round(strengths["posterize"]), low, high),
        "autocontrast": lambda: ops.autocontrast(images, low, high),
    }
    if images.shape[-1] == 3:
        candidates["colour"] = lambda: ops.apply_colour_matrices(
            images, ops.saturation_matrices(1.0 + strengths["colour"]), low, high)
    out = images
    for name, make in candidates.items():
        if name in names:
            out = tf.where(tf.equal(choice, names.index(name))[:, None, None, None], make(), out)
    return out


def _steps(choice, strengths, names, steps, height, width):
    """The draws of `steps` steps from flat [steps * B] choices and strengths (step-major)."""
    transforms = step_transforms(choice, strengths, names, height, width)
    return {"choice": tf.reshape(choice, [steps, -1]), "transforms": tf.reshape(transforms, [steps, -1, 8]),
            "strengths": {name: tf.reshape(strengths[name], [steps, -1]) for name in PHOTOMETRIC
                          if name in names and name in strengths}}


def apply_steps(images, steps, names, fill_mode, fill_value, low, high):
    """Every step of steps (from _steps) in order: its warp, then its photometric operations."""
    for step in range(steps["choice"].shape[0]):
        images = ops.warp(images, steps["transforms"][step], fill_mode, fill_value)
        strengths = {name: values[step] for name, values in steps["strengths"].items()}
        images = photometric(images, steps["choice"][step], strengths, names, low, high)
    return images


RAND_AUGMENT_NAMES = tuple(RAND_AUGMENT)


def rand_augment_draws(seed, batch, count):
    """RandAugment's random draws for a batch: per image `count` operations (with replacement)
    uniform over RAND_AUGMENT, {choice, sign} [count x B] each (step-major). Only the random ops
    run here, outside the fused loop; rand_augment_steps derives the rest inside it."""
    choice_seed, sign_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    draws = count * batch
    return {"choice": choose(choice_seed, draws, RAND_AUGMENT_NAMES), "sign": ops.coin(sign_seed, draws)}


def rand_augment_steps(draws, count, magnitude, height, width):
    """The steps (for apply_steps) of RandAugment's draws: each operation at magnitude / 10 x
    its largest strength (RAND_AUGMENT), with the drawn sign where TrivialAugment signs it.
    {choice [count, B], transforms [count, B, 8], strengths: name -> [count, B]}."""
    strengths = {}
    for name, largest in RAND_AUGMENT.items():
        value = tf.fill(tf.shape(draws["sign"]), largest * magnitude / 10.0)
        strengths[name] = value * draws["sign"] if TRIVIAL_AUGMENT[name][2] else value
    return _steps(draws["choice"], strengths, RAND_AUGMENT_NAMES, count, height, width)


def rand_augment(images, draws, count, magnitude, fill_mode, fill_value, low, high):
    shape = tf.shape(images)
    steps = rand_augment_steps(draws, count, magnitude, shape[1], shape[2])
    return apply_steps(images, steps, RAND_AUGMENT_NAMES, fill_mode, fill_value, low, high)


def aug_mix_strengths(level, sign, height, width):
    """AugMix's strengths at levels [n] (uniform in [0.1, severity]) as its reference code
    (augmentations.py) computes them, in TRIVIAL_AUGMENT's units: rotate int(3 level) degrees,
    shear 0.03 level, translate int(level x size / 30) pixels (signed), solarize above
    256 - int(25.6 level) of 256 levels, posterize to 4 - int(0.4 level) bits."""
    def whole_pixels(size):
        size = tf.cast(size, tf.float32)
        return tf.floor(level * size / 30.0) / size * sign
    return {"rotate": tf.floor(level * 3.0) * sign, "shear_x": level * 0.03 * sign, "shear_y": level * 0.03 * sign,
            "translate_x": whole_pixels(width), "translate_y": whole_pixels(height),
            "solarize": tf.floor(level * 25.6) / 256.0, "posterize": 4.0 + tf.floor(level * 0.4)}


def aug_mix_draws(seed, batch):
    """AugMix's random draws for a batch: AUG_MIX_CHAINS chains per image (chain c of image b at
    c x B + b), each of a depth uniform in 1 to AUG_MIX_DEPTH [chains x B]; per step of a chain an
    operation uniform over AUG_MIX, its level uniform in [0.1, AUG_MIX_SEVERITY] and a sign
    [depth x chains x B] (step-major); Gamma(1) = Exp(1) draws [B, chains], which normalized are
    the chain weights ~ Dirichlet(1); the weight of the mix against the image ~ Beta(1, 1) = uniform [B].
    Only the random ops run here, outside the fused loop; aug_mix_steps derives the rest in it."""
    choice_seed, level_seed, sign_seed, depth_seed, weight_seed, mix_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=6))
    chains = AUG_MIX_CHAINS * batch
    draws = AUG_MIX_DEPTH * chains
    return {"choice": choose(choice_seed, draws, AUG_MIX),
            "level": ops.uniform(level_seed, draws, 0.1, AUG_MIX_SEVERITY), "sign": ops.coin(sign_seed, draws),
            "depth": tf.random.stateless_uniform([chains], seed=depth_seed, minval=1, maxval=AUG_MIX_DEPTH + 1,
                                                 dtype=tf.int32),
            # Gamma(1) is Exp(1), -log(1 - U): unlike stateless_gamma it also compiles under XLA
            # (where Keras compiles the whole training step, as on a GPU).
            "gammas": -tf.math.log(1.0 - tf.random.stateless_uniform([batch, AUG_MIX_CHAINS], seed=weight_seed)),
            "mix": ops.uniform(mix_seed, batch, 0.0, 1.0)}


def aug_mix_steps(draws, height, width):
    """The steps (for apply_steps) and weights of AugMix's draws: {choice [depth, chains x B],
    transforms [depth, chains x B, 8], strengths, depth [chains x B], weights [B, chains] (the
    Dirichlet draws), mix [B]}."""
    strengths = aug_mix_strengths(draws["level"], draws["sign"], height, width)
    steps = _steps(draws["choice"], strengths, AUG_MIX, AUG_MIX_DEPTH, height, width)
    steps["weights"] = draws["gammas"] / tf.reduce_sum(draws["gammas"], axis=1, keepdims=True)
    steps["depth"], steps["mix"] = draws["depth"], draws["mix"]
    return steps


def aug_mix(images, draws, fill_mode, fill_value, low, high):
    """AugMix on a batch [B, H, W, C]: all chains of all images as one batch [chains x B, ...],
    step by step (a chain past its depth keeps its image), then (1 - m) x image + m x the
    chains' weighted sum; within [low, high], as a convex sum of values within it."""
    shape = tf.shape(images)
    draws = aug_mix_steps(draws, shape[1], shape[2])
    chains = tf.tile(images, [AUG_MIX_CHAINS, 1, 1, 1])
    for step in range(AUG_MIX_DEPTH):
        one = {"choice": draws["choice"][step:step + 1], "transforms": draws["transforms"][step:step + 1],
               "strengths": {name: values[step:step + 1] for name, values in draws["strengths"].items()}}
        stepped = apply_steps(chains, one, AUG_MIX, fill_mode, fill_value, low, high)
        chains = stepped if step == 0 else tf.where((draws["depth"] > step)[:, None, None, None], stepped, chains)
    chains = tf.reshape(chains, [AUG_MIX_CHAINS, shape[0], shape[1], shape[2], shape[3]])
    mixed = tf.einsum("cbhwk,bc->bhwk", chains, draws["weights"])
    weight = draws["mix"][:, None, None, None]
    return tf.clip_by_value((1.0 - weight) * images + weight * mixed, low, high)
