"""Batched image operations in TensorFlow.

Every function takes a float32 batch [B, H, W, C] of pixel values in [0, 255] and draws its
randomness from an explicit stateless seed (a shape-[2] integer tensor), so the same seed gives
the same output, in eager code, inside tf.data and inside a compiled training step alike.
"""

import math

import tensorflow as tf

FILL_MODES = ("reflect", "nearest", "constant", "wrap")
NORMALIZATIONS = ("rescale", "standardize", "divmax")

# Each operation draws from its own sub-stream of the batch seed, so switching one operation on
# or off never changes what another one draws.
_STREAMS = ("rotation", "zoom", "shift", "horizontal_flip", "vertical_flip", "brightness",
            "contrast", "cutout")


def split_seed(seed):
    """One stateless seed per operation, keyed by operation name."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=len(_STREAMS))
    return {name: seeds[i] for i, name in enumerate(_STREAMS)}


def uniform(seed, batch, low, high):
    return tf.random.stateless_uniform([batch], seed=seed, minval=low, maxval=high)


def coin(seed, batch):
    """+1 or -1 per image, each with probability 0.5."""
    return tf.where(uniform(seed, batch, 0.0, 1.0) < 0.5, -1.0, 1.0)


def affine_transforms(height, width, angle, scale, shift_x, shift_y, mirror_x, mirror_y):
    """Projective-transform rows mapping each output pixel to the input pixel it samples.

    The content is mirrored (mirror_* = -1), scaled by `scale` (> 1 enlarges it), rotated by
    `angle` radians about the image centre and shifted by (shift_x, shift_y) pixels, in that order.
    All arguments are [B] float32 tensors; the result is [B, 8] as ImageProjectiveTransformV3
    expects. The inverse map is p_in = c + A (p_out - c - t) with A = M S^-1 R^-1.
    """
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a00, a01 = mirror_x * cos, mirror_x * sin
    a10, a11 = -mirror_y * sin, mirror_y * cos
    px, py = cx + shift_x, cy + shift_y
    b0 = cx - a00 * px - a01 * py
    b1 = cy - a10 * px - a11 * py
    zeros = tf.zeros_like(angle)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def warp(images, transforms, fill_mode="reflect", fill_value=0.0):
    """Bilinear resampling of every image of the batch through its own transform, in one op."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation="BILINEAR",
        fill_mode=fill_mode.upper(),
    )


def scale_pixels(images, factors):
    """Multiplies each image by its factor [B] and clips to the pixel range [0, 255]."""
    return tf.clip_by_value(images * factors[:, None, None, None], 0.0, 255.0)


def adjust_contrast(images, factors):
    """Moves each pixel away from (factor > 1) or towards its image's per-channel mean."""
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * factors[:, None, None, None] + mean, 0.0, 255.0)


def cut_out(images, seed, size):
    """Fills one size x size square per image, at a uniform random centre (it may overhang the
    border), with that image's mean colour: after normalization the patch carries no signal."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    centre_seed, row_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    cy = tf.random.stateless_uniform([batch], seed=centre_seed, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([batch], seed=row_seed, maxval=width, dtype=tf.int32)
    top, left = cy - size // 2, cx - size // 2
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(mask, mean, images)


def normalize(images, mode):
    """Maps a batch of [0, 255] pixels to the network's input range.

    rescale: x / 255, in [0, 1].
    standardize: per image, (x - mean) / std, with std floored at 1 / sqrt(pixels) as
        tf.image.per_image_standardization does, so a constant image gives zeros.
    divmax: per image, (x - mean) / max|x - mean|, in [-1, 1]; a constant image gives zeros.
    """
    if mode == "rescale":
        return images * (1.0 / 255.0)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    centred = images - mean
    if mode == "standardize":
        count = tf.cast(tf.reduce_prod(tf.shape(images)[1:]), tf.float32)
        std = tf.sqrt(tf.reduce_mean(tf.square(centred), axis=[1, 2, 3], keepdims=True))
        return centred / tf.maximum(std, tf.math.rsqrt(count))
    if mode == "divmax":
        peak = tf.reduce_max(tf.abs(centred), axis=[1, 2, 3], keepdims=True)
        # Where the image is constant, centred is zero and any positive floor gives zeros.
        return centred / tf.maximum(peak, 1e-6)
    raise ValueError(f"unknown normalize {mode!r}; valid: {', '.join(NORMALIZATIONS)}")


def degrees_to_radians(degrees):
    return degrees * (math.pi / 180.0)
