"""Batched image operations in TensorFlow.

Every function takes a float32 batch [B, H, W, C] (pixels in [0, 255], or values in the data's
own range) and draws its randomness from an explicit stateless seed (a shape-[2] integer tensor),
so the same seed gives the same output, in eager code, inside tf.data and inside a compiled
training step alike.
"""

import math

from augcompare.augment.backend import tf
from augcompare.augment.params import FILL_MODES, NORMALIZATIONS  # noqa: F401  (re-exported)

# Each operation draws from its own sub-stream of the batch seed, so switching one operation on
# or off never changes what another one draws. New streams go at the end: the first ones of a
# longer split are the same seeds, so the operations already here keep their draws.
_STREAMS = ("rotation", "zoom", "shift", "horizontal_flip", "vertical_flip", "brightness",
            "contrast", "cutout", "crop", "translate", "hue", "saturation", "grayscale",
            "trivial_augment", "rand_augment", "aug_mix")

# ITU-R BT.601 luma weights, the grey of PIL's and torchvision's grayscale conversions.
LUMA = (0.299, 0.587, 0.114)


def split_seed(seed):
    """One stateless seed per operation, keyed by operation name."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=len(_STREAMS))
    return {name: seeds[i] for i, name in enumerate(_STREAMS)}


def uniform(seed, batch, low, high):
    return tf.random.stateless_uniform([batch], seed=seed, minval=low, maxval=high)


def coin(seed, batch):
    """+1 or -1 per image, each with probability 0.5."""
    return tf.where(uniform(seed, batch, 0.0, 1.0) < 0.5, -1.0, 1.0)


def affine_transforms(height, width, angle, scale, shift_x, shift_y, mirror_x, mirror_y, shear_x=None,
                      shear_y=None, crop=None, extra_angle=None):
    """Projective-transform rows mapping each output pixel to the input pixel it samples.

    The content is cropped (crop: the random resized crop of crop_boxes), mirrored
    (mirror_* = -1), sheared (x += shear_x * y, then y += shear_y * x, about the image centre),
    scaled by `scale` (> 1 enlarges it), rotated by `angle` + `extra_angle` radians about the
    image centre and shifted by (shift_x, shift_y) pixels, in that order. All arguments are [B]
    float32 tensors (None: that operation is off); the result is [B, 8] as
    ImageProjectiveTransformV3 expects. The inverse map is p_in = c + o + A (p_out - c - t) with
    A = D M H^-1 S^-1 R^-1, where D and o are the crop's size (as a fraction of the image) and
    centre offset.

    extra_angle is a second rotation kept apart from the first so that where it is 0 the warp
    stays exact: in a traced graph TensorFlow rewrites x / scale with a constant scale of ones
    as x * reciprocal(1), and its reciprocal of 1 is 1 - 2^-24 on some CPUs.
    """
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    k00, k01, k10, k11 = cos, sin, -sin, cos  # S^-1 R^-1
    if extra_angle is not None:  # times the second R^-1
        cos, sin = tf.cos(extra_angle), tf.sin(extra_angle)
        k00, k01, k10, k11 = k00 * cos - k01 * sin, k00 * sin + k01 * cos, k10 * cos - k11 * sin, k10 * sin + k11 * cos
    if shear_x is not None or shear_y is not None:
        sx = tf.zeros_like(angle) if shear_x is None else shear_x
        sy = tf.zeros_like(angle) if shear_y is None else shear_y
        # H = Hy Hx, so H^-1 = Hx^-1 Hy^-1 = [[1 + sx sy, -sx], [-sy, 1]].
        k00, k01, k10, k11 = ((1.0 + sx * sy) * k00 - sx * k10, (1.0 + sx * sy) * k01 - sx * k11,
                              k10 - sy * k00, k11 - sy * k01)
    a00, a01 = mirror_x * k00, mirror_x * k01
    a10, a11 = mirror_y * k10, mirror_y * k11
    px, py = cx + shift_x, cy + shift_y
    if crop is not None:
        crop_width, crop_height, offset_x, offset_y = crop
        a00, a01, a10, a11 = crop_width * a00, crop_width * a01, crop_height * a10, crop_height * a11
        b0 = cx + offset_x - a00 * px - a01 * py
        b1 = cy + offset_y - a10 * px - a11 * py
    else:
        b0 = cx - a00 * px - a01 * py
        b1 = cy - a10 * px - a11 * py
    zeros = tf.zeros_like(angle)
    return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def crop_boxes(seed, batch, height, width, scale, ratio):
    """The random resized crop of each image: (width fraction, height fraction, centre offset x,
    centre offset y in pixels from the image centre), [B] each, for affine_transforms.

    Area fraction uniform in [scale, 1], aspect ratio (relative to the image's) log-uniform in
    [ratio, 1/ratio]; a side that would be longer than the image is cut to the image's, so the
    crop always lies inside it and is placed uniformly there. Computed in logarithms so that
    extreme settings give a degenerate crop, never NaN.
    """
    area_seed, ratio_seed, x_seed, y_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=4))
    log_area = tf.math.log(uniform(area_seed, batch, scale, 1.0))
    log_ratio = uniform(ratio_seed, batch, math.log(ratio), -math.log(ratio))
    crop_width = tf.exp(tf.minimum(0.5 * (log_area + log_ratio), 0.0))
    crop_height = tf.exp(tf.minimum(0.5 * (log_area - log_ratio), 0.0))
    offset_x = uniform(x_seed, batch, -0.5, 0.5) * (1.0 - crop_width) * tf.cast(width, tf.float32)
    offset_y = uniform(y_seed, batch, -0.5, 0.5) * (1.0 - crop_height) * tf.cast(height, tf.float32)
    return crop_width, crop_height, offset_x, offset_y


def translations(seed, batch, pixels):
    """Whole-pixel shifts (x, y), float32 [B] each, uniform in {-pixels, ..., pixels}."""
    x_seed, y_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    return tuple(tf.cast(tf.random.stateless_uniform([batch], seed=s, minval=-pixels, maxval=pixels + 1,
                                                     dtype=tf.int32), tf.float32) for s in (x_seed, y_seed))


def _map_coordinates(coords, size, fill_mode):
    """Where a sampling coordinate outside [0, size - 1] reads from, as ImageProjectiveTransformV3
    maps it: reflect (dcba|abcd|dcba), wrap (abcd|abcd|abcd) and nearest (clamp) land inside;
    constant leaves it, and whatever falls outside reads the fill value."""
    size = tf.cast(size, tf.float32)
    if fill_mode == "constant":
        return coords
    if fill_mode == "nearest":
        return tf.clip_by_value(coords, 0.0, size - 1.0)
    if fill_mode == "reflect":
        period = 2.0 * size
        below = coords + period * tf.floor(-coords / period)  # into (-period, 0]
        below = tf.where(below < -size, below + period, -below - 1.0)
        above = coords - period * tf.floor(coords / period)
        above = tf.where(above >= size, period - above - 1.0, above)
        mapped = tf.where(coords < 0, below, tf.where(coords > size - 1.0, above, coords))
    elif fill_mode == "wrap":
        span = size - 1.0
        below = coords + size * (tf.floor(-coords / span) + 1.0)
        above = coords - size * tf.floor(coords / span)
        mapped = tf.where(coords < 0, below, tf.where(coords > span, above, coords))
    else:
        raise ValueError(f"unknown fill_mode {fill_mode!r}; valid: {', '.join(FILL_MODES)}")
    return tf.clip_by_value(mapped, 0.0, size - 1.0)


def warp(images, transforms, fill_mode="reflect", fill_value=0.0):
    """Bilinear resampling of every image [B, H, W, C] through its own transform [B, 8].

    The same sampling as ImageProjectiveTransformV3 (the tests hold them together), written as
    coordinates and four gathers: under XLA (jit_compile) the whole warp, with the pixel
    operations around it, becomes one loop over the output, about four times faster on a CPU
    than that op. Only affine transforms (the last two entries 0) are supported.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    t = transforms[:, :, None, None]
    x = _map_coordinates(t[:, 0] * cols + t[:, 1] * rows + t[:, 2], width, fill_mode)
    y = _map_coordinates(t[:, 3] * cols + t[:, 4] * rows + t[:, 5], height, fill_mode)
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    # A one-pixel border of fill_value, and corners clamped into it: a corner outside the image
    # reads the fill value (and inside [0, size - 1] the far corner has weight 0 at the edge).
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=fill_value)
    x0, y0 = tf.cast(x0, tf.int32) + 1, tf.cast(y0, tf.int32) + 1  # indices into padded
    x0, x1 = tf.clip_by_value(x0, 0, width + 1), tf.clip_by_value(x0 + 1, 0, width + 1)
    y0, y1 = tf.clip_by_value(y0, 0, height + 1), tf.clip_by_value(y0 + 1, 0, height + 1)
    flat = tf.reshape(padded, [-1, channels])
    row_length = width + 2
    first = tf.range(batch)[:, None, None] * ((height + 2) * row_length)

    def read(yi, xi):
        return tf.cast(tf.gather(flat, first + yi * row_length + xi), tf.float32)
    top = read(y0, x0) * (1.0 - fx) + read(y0, x1) * fx
    bottom = read(y1, x0) * (1.0 - fx) + read(y1, x1) * fx
    return top * (1.0 - fy) + bottom * fy


def scale_pixels(images, factors, low=0.0, high=255.0):
    """Multiplies each image by its factor [B] and clips to the data's range [low, high]."""
    return tf.clip_by_value(images * factors[:, None, None, None], low, high)


def adjust_contrast(images, factors, low=0.0, high=255.0):
    """Moves each value away from (factor > 1) or towards its image's per-channel mean, clipped
    to the data's range [low, high]."""
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.clip_by_value((images - mean) * factors[:, None, None, None] + mean, low, high)


def cutout_centres(seed, batch, height, width):
    """Uniform random centres (rows, columns), int32 [B] each, of the cutout squares."""
    centre_seed, row_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    rows = tf.random.stateless_uniform([batch], seed=centre_seed, maxval=height, dtype=tf.int32)
    cols = tf.random.stateless_uniform([batch], seed=row_seed, maxval=width, dtype=tf.int32)
    return rows, cols


def cut_out(images, centre_rows, centre_cols, size):
    """Fills one size x size square per image, centred at (centre_rows, centre_cols) [B] (it may
    overhang the border), with that image's mean colour: after normalization the patch carries
    no signal."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    top, left = centre_rows - size // 2, centre_cols - size // 2
    rows = tf.range(height)[None, :]
    cols = tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return tf.where(mask, mean, images)


def hue_matrices(turns):
    """[B, 3, 3] rotations of RGB space about the grey axis (1, 1, 1) by turns [B] of a full
    circle: the colour-matrix form of a hue shift. It keeps each pixel's channel mean and its
    distance from grey; it is close to, not equal to, a shift of the hue in HSV."""
    angle = 2.0 * math.pi * turns
    cos, sin = tf.cos(angle)[:, None, None], tf.sin(angle)[:, None, None]
    # Rodrigues' formula about n = (1, 1, 1) / sqrt(3): cos I + sin [n]x + (1 - cos) n n^T.
    cross = tf.constant([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)
    return cos * tf.eye(3) + sin * cross + (1.0 - cos) * tf.fill([3, 3], 1.0 / 3.0)


def luma_matrix():
    """The 3 x 3 matrix that replaces each channel by the pixel's luma (LUMA)."""
    return tf.tile(tf.constant([LUMA]), [3, 1])


def saturation_matrices(factors):
    """[B, 3, 3]: each pixel's distance from its luma scaled by factors [B] (0 gives grey)."""
    factors = factors[:, None, None]
    return (1.0 - factors) * luma_matrix() + factors * tf.eye(3)


def grayscale_matrices(grey):
    """[B, 3, 3]: the luma matrix where grey [B] (bool) is true, else the identity."""
    return tf.where(grey[:, None, None], luma_matrix(), tf.eye(3))


def apply_colour_matrices(images, matrices, low=0.0, high=255.0):
    """Each RGB pixel of image b multiplied by matrices[b] [3, 3], clipped to [low, high].

    Every matrix here has rows that sum to 1, so it maps grey to the same grey: the result does
    not depend on where the data's range starts (pixels or values in [-1, 1] alike). A batched
    dot (einsum): under XLA on a 2-core CPU it measured about twice as fast as a broadcast
    product summed over the 3 channels, which XLA fuses but computes slowly.
    """
    return tf.clip_by_value(tf.einsum("bhwj,bij->bhwi", images, matrices), low, high)


def sharpen(images, factors, low=0.0, high=255.0):
    """Blends each image with its smoothed copy (3 x 3 kernel, 5 in the centre, 1 around, over
    13) by factors [B]: 1 is the identity, > 1 sharpens, < 1 blurs; the one-pixel border keeps
    its values, as PIL's sharpness does. Clipped to [low, high]."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    around = tf.add_n([padded[:, i:i + height, j:j + width] for i in range(3) for j in range(3)])
    smoothed = (around + 4.0 * images) / 13.0
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = ((rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1))[None, :, :, None]
    smoothed = tf.where(inside, smoothed, images)
    return tf.clip_by_value(smoothed + factors[:, None, None, None] * (images - smoothed), low, high)


def solarize(images, thresholds, low=0.0, high=255.0):
    """Values above each image's threshold [B] inverted within [low, high] (x -> low + high - x);
    a threshold of high is the identity."""
    return tf.where(images > thresholds[:, None, None, None], low + high - images, images)


def posterize(images, dropped_bits, low=0.0, high=255.0):
    """Keeps 8 - dropped_bits [B] bits of each value read as an 8-bit level of [low, high], as
    PIL's posterize does to pixels (values between levels are floored to one first)."""
    step = tf.pow(2.0, dropped_bits)[:, None, None, None]
    levels = (images - low) * (255.0 / (high - low))
    return tf.floor(levels / step) * step * ((high - low) / 255.0) + low


def autocontrast(images, low=0.0, high=255.0):
    """Each channel of each image stretched so that its darkest value is low and its brightest
    high; a constant channel is kept."""
    darkest = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    brightest = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    spread = brightest - darkest
    stretched = (images - darkest) * ((high - low) / tf.maximum(spread, 1e-6)) + low
    return tf.clip_by_value(tf.where(spread > 0, stretched, images), low, high)


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
