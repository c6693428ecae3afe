import math

import numpy as np
import pytest
import tensorflow as tf

from augcompare.augment import Augmentation, normalize, ops
from augcompare.augment.augmentation import PARAMS

STANDARD = dict(rotation=20, brightness=0.2, horizontal_flip=True)
# One row per operation: adding an operation adds its row here.
EACH_OPERATION = [dict(rotation=30), dict(width_shift=0.2), dict(height_shift=0.2), dict(zoom=0.3),
                  dict(horizontal_flip=True), dict(vertical_flip=True), dict(brightness=0.4),
                  dict(contrast=0.5), dict(cutout=0.3), dict(rotation=20, fill_mode="constant", fill_value=9),
                  STANDARD]


def angles(augmentation, batch, seed):
    """The rotation angle (degrees) of each image's warp, for warps with no mirror or zoom."""
    t = augmentation.transforms(tf.constant([0, seed], tf.int64), batch, 32, 32).numpy()
    return np.degrees(np.arctan2(t[:, 1], t[:, 0]))


def test_identity_returns_input_unchanged(images):
    x, _ = images
    assert Augmentation().is_identity
    out = Augmentation()(x, seed=1).numpy()
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize("params", EACH_OPERATION, ids=lambda p: "+".join(p))
def test_every_operation_keeps_shape_dtype_range_and_is_seeded(images, params):
    x, _ = images
    augmentation = Augmentation(**params)
    out = augmentation(x, seed=3).numpy()
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, augmentation(x, seed=3).numpy())
    assert not np.array_equal(out, augmentation(x, seed=4).numpy())
    assert not np.array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize("params,message", [
    (dict(rotaton=20), "unknown augmentation key 'rotaton'"),
    (dict(rotation=-5), "rotation = -5 is out of range"),
    (dict(brightness=1.5), "brightness = 1.5 is out of range"),
    (dict(horizontal_flip=1), "horizontal_flip must be true or false"),
    (dict(rotation="20"), "rotation must be a number"),
    (dict(fill_mode="mirror"), "fill_mode must be one of"),
])
def test_bad_settings_raise_value_error_naming_the_key(params, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**params)


def test_unknown_key_error_lists_the_valid_keys():
    with pytest.raises(ValueError) as error:
        Augmentation(shear=0.1)
    assert all(key in str(error.value) for key in PARAMS)


def test_from_dict_round_trips():
    augmentation = Augmentation.from_dict({"rotation": 20, "horizontal_flip": True})
    assert Augmentation.from_dict(augmentation.to_dict()) == augmentation
    assert augmentation == Augmentation(rotation=20.0, horizontal_flip=True)


def test_rotation_angles_stay_within_bounds_and_use_the_range():
    drawn = angles(Augmentation(rotation=20), 2000, seed=5)
    assert drawn.min() >= -20 - 1e-4 and drawn.max() <= 20 + 1e-4
    assert drawn.min() < -19 and drawn.max() > 19  # uniform over the whole range
    assert abs(drawn.mean()) < 1.0


def test_a_quarter_turn_rotates_the_pixel_grid_exactly():
    image = np.random.default_rng(1).integers(0, 256, (1, 9, 9, 1)).astype(np.float32)
    one = tf.ones([1])
    transform = ops.affine_transforms(9, 9, tf.constant([math.pi / 2]), one, 0 * one, 0 * one, one, one)
    turned = ops.warp(tf.constant(image), transform).numpy()[0, :, :, 0]
    # Rotation about the centre by 90 degrees is np.rot90 in one direction or the other.
    assert np.allclose(turned, np.rot90(image[0, :, :, 0], 1), atol=1e-3) or \
        np.allclose(turned, np.rot90(image[0, :, :, 0], -1), atol=1e-3)


def test_horizontal_flip_is_an_exact_mirror_about_half_the_time(images):
    x = np.concatenate([images[0]] * 8)  # 128 images
    out = Augmentation(horizontal_flip=True)(x, seed=0).numpy()
    mirrored = [np.array_equal(o, i[:, ::-1].astype(np.float32)) for o, i in zip(out, x)]
    unchanged = [np.array_equal(o, i.astype(np.float32)) for o, i in zip(out, x)]
    assert all(m != u for m, u in zip(mirrored, unchanged))  # each image exactly one of the two
    assert 40 <= sum(mirrored) <= 88


def test_vertical_flip_is_an_exact_mirror(images):
    x, _ = images
    out = Augmentation(vertical_flip=True)(x, seed=2).numpy()
    assert all(np.array_equal(o, i[::-1].astype(np.float32)) or np.array_equal(o, i.astype(np.float32))
               for o, i in zip(out, x))


def test_brightness_multiplies_within_range_and_clips():
    grey = np.full((500, 4, 4, 3), 100, np.uint8)
    out = Augmentation(brightness=0.2)(grey, seed=0).numpy()
    factors = out[:, 0, 0, 0] / 100
    assert np.allclose(out, out[:, :1, :1, :1])  # one factor per image
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.2 + 1e-6
    assert factors.min() < 0.82 and factors.max() > 1.18
    bright = Augmentation(brightness=0.5)(np.full((200, 4, 4, 3), 250, np.uint8), seed=0).numpy()
    assert bright.max() == 255 and bright.min() >= 125 - 1e-3


def test_cutout_fills_one_square_with_the_mean_colour():
    x = np.zeros((8, 20, 20, 3), np.float32)
    x[:, :, :10] = 200  # mean 100
    out = Augmentation(cutout=0.25)(x, seed=1).numpy()
    changed = (out != x).any(axis=-1)
    assert changed.any()
    assert np.allclose(out[(out != x)], 100)
    assert changed.sum(axis=(1, 2)).max() <= 25


def test_normalize_ranges():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(0, 256, (6, 8, 8, 3)).astype(np.float32))
    rescaled = normalize(x, "rescale").numpy()
    assert rescaled.min() >= 0 and rescaled.max() <= 1
    standard = normalize(x, "standardize").numpy()
    assert np.allclose(standard.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert np.allclose(standard.std(axis=(1, 2, 3)), 1, atol=1e-4)
    divmax = normalize(x, "divmax").numpy()
    assert np.allclose(np.abs(divmax).max(axis=(1, 2, 3)), 1)
    assert np.allclose(divmax.mean(axis=(1, 2, 3)), 0, atol=1e-5)


@pytest.mark.parametrize("mode", ["rescale", "standardize", "divmax"])
@pytest.mark.parametrize("value", [0, 37, 255])
def test_constant_images_normalize_to_finite_values(mode, value):
    out = normalize(tf.fill([2, 8, 8, 3], float(value)), mode).numpy()
    assert np.isfinite(out).all()
    if mode != "rescale":
        assert np.array_equal(out, np.zeros_like(out))


def test_unknown_normalization_is_an_error():
    with pytest.raises(ValueError, match="unknown normalize 'zscore'"):
        normalize(tf.zeros([1, 2, 2, 3]), "zscore")


def test_enabling_one_operation_does_not_change_another_ones_draws():
    alone = angles(Augmentation(rotation=20), 64, seed=9)
    t = Augmentation(rotation=20, brightness=0.3).transforms(tf.constant([0, 9], tf.int64), 64, 32, 32).numpy()
    assert np.allclose(alone, np.degrees(np.arctan2(t[:, 1], t[:, 0])))


@pytest.mark.parametrize("fill_mode", ops.FILL_MODES)
def test_warp_samples_as_tensorflows_projective_transform(fill_mode):
    """The gather-based warp (fused by XLA) must read the same pixels as TensorFlow's own op,
    in every fill mode, for transforms that reach far outside the image."""
    images = tf.constant(np.random.default_rng(1).integers(0, 256, (8, 20, 28, 3)), tf.float32)
    strong = Augmentation(rotation=180, zoom=0.9, width_shift=1.0, height_shift=1.0, horizontal_flip=True,
                          vertical_flip=True)
    transforms = strong.transforms(tf.constant([0, 3], tf.int64), 8, 20, 28)
    expected = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[20, 28], fill_value=tf.constant(7.0),
        interpolation="BILINEAR", fill_mode=fill_mode.upper())
    np.testing.assert_allclose(ops.warp(images, transforms, fill_mode, 7.0).numpy(), expected.numpy(), atol=1e-3)
    fused = tf.function(lambda x: ops.warp(x, transforms, fill_mode, 7.0), jit_compile=True)(images)
    np.testing.assert_allclose(fused.numpy(), expected.numpy(), atol=0.02)  # XLA may reorder float sums
