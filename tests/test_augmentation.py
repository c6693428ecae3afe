import math

import numpy as np
import pytest
import tensorflow as tf

from augcompare.augment import Augmentation, normalize, ops
from augcompare.augment.params import DEFAULTS, GEOMETRIC, PARAMS, PRESETS, REQUIRES, TRIVIAL_AUGMENT

STANDARD = dict(rotation=20, brightness=0.2, horizontal_flip=True)


def operation_row(key):
    """One operation at half its largest setting (on for a switch), with the key it needs."""
    param = PARAMS[key]
    row = {key: True if param.kind is bool else param.kind(param.high / 2)}
    if key in REQUIRES:
        row.update(operation_row(REQUIRES[key]))
    return row


# One row per operation and per preset of built-in operations, derived from PARAMS and PRESETS:
# adding either adds its row (presets of Keras layers or mixing are tested in test_arms.py).
# fill_mode and fill_value shape the warp of another operation, so they get a row of their own.
OPERATIONS = {key: operation_row(key) for key in PARAMS if key not in DEFAULTS}
BUILT_IN_PRESETS = {name: settings for name, settings in PRESETS.items() if set(settings) <= set(PARAMS)}
ROWS = {**OPERATIONS, **{f"preset {name}": settings for name, settings in BUILT_IN_PRESETS.items()},
        "fill constant": dict(rotation=20, fill_mode="constant", fill_value=9)}
# Every row on pixels; every operation also on values in [-1, 1] (the presets only combine them).
PIXELS, VALUES = (0.0, 255.0), (-1.0, 1.0)
# The policies compile several operations each (RandAugment's list, AugMix's chains): slow.
POLICIES = {"rand_augment", "rand_magnitude", "aug_mix", "preset randaugment", "preset augmix"}
CASES = [pytest.param(row, PIXELS, id=f"{name}-pixels", marks=[pytest.mark.slow] * (name in POLICIES))
         for name, row in ROWS.items()] + \
    [pytest.param(row, VALUES, id=f"{name}-values", marks=[pytest.mark.slow] * (name in POLICIES))
     for name, row in OPERATIONS.items()]


def angles(augmentation, batch, seed):
    """The rotation angle (degrees) of each image's warp, for warps with no mirror or zoom."""
    t = augmentation.transforms(tf.constant([0, seed], tf.int64), batch, 32, 32).numpy()
    return np.degrees(np.arctan2(t[:, 1], t[:, 0]))


def test_identity_returns_input_unchanged(images):
    x, _ = images
    assert Augmentation().is_identity
    out = Augmentation()(x, seed=1).numpy()
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))


@pytest.mark.parametrize("params,value_range", CASES)
def test_every_operation_keeps_shape_dtype_range_and_is_seeded(images, params, value_range):
    x, _ = images
    low, high = value_range
    x = x.astype(np.float32) * ((high - low) / 255.0) + low
    augmentation = Augmentation(value_range=value_range, **params)
    out = augmentation(x, seed=3).numpy()
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= low and out.max() <= high
    assert out.min() < (low + high) / 2  # the lower half is kept: nothing clipped to [0, 255] on values
    assert np.array_equal(out, augmentation(x, seed=3).numpy())
    assert not np.array_equal(out, augmentation(x, seed=4).numpy())
    assert not np.array_equal(out, x)


@pytest.mark.parametrize("params,message", [
    (dict(rotaton=20), "unknown augmentation key 'rotaton'"),
    (dict(rotation=-5), "rotation = -5 is out of range"),
    (dict(brightness=1.5), "brightness = 1.5 is out of range"),
    (dict(horizontal_flip=1), "horizontal_flip must be true or false"),
    (dict(rotation="20"), "rotation must be a number"),
    (dict(fill_mode="mirror"), "fill_mode must be one of"),
    (dict(translate=2.5), "translate must be a whole number"),
    (dict(translate=True), "translate must be a number"),
    (dict(hue=0.6), "hue = 0.6 is out of range"),
    (dict(crop_ratio=0.75), "crop_ratio needs crop_scale"),
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


@pytest.mark.parametrize("params", OPERATIONS.values(), ids=OPERATIONS.keys())
def test_enabling_one_operation_does_not_change_another_ones_draws(params):
    seed = tf.constant([0, 9], tf.int64)
    alone = Augmentation(**STANDARD).draw(seed, 64, 32, 32)
    both = Augmentation(**{**STANDARD, **params}).draw(seed, 64, 32, 32)
    if "brightness" not in params:
        assert np.array_equal(alone["brightness"].numpy(), both["brightness"].numpy())
    if not any(key in GEOMETRIC or key == "trivial_augment" for key in params):  # else composed into the warp
        assert np.array_equal(alone["transforms"].numpy(), both["transforms"].numpy())


def test_the_standard_sets_draws_are_those_of_the_streams_it_always_had(images):
    """New operations take new sub-streams at the end: the standard set draws exactly what it
    drew before they existed (the first eight of the split), so results stay comparable."""
    x = images[0].astype(np.float32)
    batch, height, width = x.shape[:3]
    seed = tf.constant([0, 11], tf.int64)
    # The code path before crop, translate, hue, saturation, grayscale and trivial_augment.
    rotation, _, _, flip, _, brightness, _, _ = tf.unstack(tf.random.experimental.stateless_split(seed, num=8))
    ones, zeros = tf.ones([batch]), tf.zeros([batch])
    angle = ops.degrees_to_radians(ops.uniform(rotation, batch, -20.0, 20.0))
    transforms = ops.affine_transforms(height, width, angle, ones, zeros, zeros, ops.coin(flip, batch), ones)
    factors = ops.uniform(brightness, batch, 0.8, 1.2)
    expected = ops.scale_pixels(ops.warp(tf.constant(x), transforms), factors).numpy()
    standard = Augmentation(**PRESETS["standard"])
    draws = standard.draw(seed, batch, height, width)
    assert sorted(draws) == ["brightness", "transforms"]
    assert np.array_equal(draws["transforms"].numpy(), transforms.numpy())
    assert np.array_equal(draws["brightness"].numpy(), factors.numpy())
    np.testing.assert_allclose(standard(x, seed=[0, 11]).numpy(), expected, atol=0.02)  # XLA may reorder sums


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


def test_a_crop_of_the_whole_image_at_its_own_aspect_is_the_identity(images):
    x = images[0].astype(np.float32)
    assert np.array_equal(Augmentation(crop_scale=1.0, crop_ratio=1.0)(x, seed=5).numpy(), x)


def test_crops_lie_inside_the_image_with_area_and_aspect_in_range():
    t = Augmentation(crop_scale=0.25, crop_ratio=0.5).transforms(tf.constant([0, 2], tf.int64), 2000, 30, 40)
    t = t.numpy()
    assert np.allclose(t[:, [1, 3]], 0)  # a crop is an axis-aligned scale and offset
    width, height = t[:, 0], t[:, 4]  # of the crop, as fractions of the image
    area, aspect = width * height, width / height
    assert area.min() >= 0.25 - 1e-6 and area.max() <= 1 + 1e-6 and area.min() < 0.27
    assert aspect.min() >= 0.5 - 1e-6 and aspect.max() <= 2 + 1e-6 and aspect.min() < 0.55 and aspect.max() > 1.8
    # The output's outer pixel edges (-0.5 and size - 0.5) read from inside the input's.
    for scale, offset, size in ((t[:, 0], t[:, 2], 40), (t[:, 4], t[:, 5], 30)):
        edges = np.stack([scale * -0.5 + offset, scale * (size - 0.5) + offset])
        assert edges.min() >= -0.5 - 1e-3 and edges.max() <= size - 0.5 + 1e-3


@pytest.mark.parametrize("fill_mode", ["reflect", "constant"])
def test_translate_moves_content_by_whole_pixels_exactly(fill_mode):
    x = np.random.default_rng(3).integers(0, 256, (256, 12, 14, 3)).astype(np.float32)
    augmentation = Augmentation(translate=3, fill_mode=fill_mode, fill_value=0)
    seed = tf.constant([0, 6], tf.int64)
    out = augmentation(x, seed=seed).numpy()
    t = augmentation.transforms(seed, 256, 12, 14).numpy()
    dx, dy = -t[:, 2], -t[:, 5]  # the warp reads pixel (x - dx, y - dy)
    assert np.array_equal(dx, np.round(dx)) and np.array_equal(dy, np.round(dy))
    assert set(dx.astype(int)) == set(dy.astype(int)) == set(range(-3, 4))
    for o, i, sx, sy in zip(out, x, dx.astype(int), dy.astype(int)):
        moved = np.roll(i, (sy, sx), axis=(0, 1))
        inside = np.zeros(i.shape[:2], bool)
        inside[max(sy, 0):12 + min(sy, 0), max(sx, 0):14 + min(sx, 0)] = True
        assert np.array_equal(o[inside], moved[inside])
        if fill_mode == "constant":  # zero padding, as RandomCrop(32, padding=4) does
            assert (o[~inside] == 0).all()


def test_grayscale_gives_equal_channels_that_keep_the_luminance(images):
    x = images[0].astype(np.float32)
    out = Augmentation(grayscale=1.0)(x, seed=0).numpy()
    luma = x @ np.array(ops.LUMA, np.float32)
    np.testing.assert_allclose(out, np.repeat(luma[..., None], 3, axis=-1), atol=1e-3)
    some = Augmentation(grayscale=0.5)(np.concatenate([x] * 8), seed=0).numpy()
    grey = [np.allclose(o, o[..., :1]) for o in some]
    assert 30 <= sum(grey) <= 98


@pytest.mark.parametrize("key", ["hue", "saturation"])
def test_hue_and_saturation_at_zero_are_the_identity(images, key):
    x = images[0].astype(np.float32)
    assert Augmentation(**{key: 0.0}).is_identity
    matrices = ops.hue_matrices(tf.zeros([1])) if key == "hue" else ops.saturation_matrices(tf.ones([1]))
    np.testing.assert_allclose(matrices.numpy()[0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(ops.apply_colour_matrices(tf.constant(x), tf.tile(matrices, [16, 1, 1])).numpy(), x,
                               atol=1e-3)


def test_hue_rotates_about_grey_and_saturation_keeps_luma():
    # Colours near mid-grey, so that no value is clipped.
    x = np.random.default_rng(4).uniform(100, 155, (64, 6, 6, 3)).astype(np.float32)
    hue = Augmentation(hue=0.5)(x, seed=1).numpy()
    np.testing.assert_allclose(hue.mean(axis=-1), x.mean(axis=-1), atol=1e-3)
    distance = np.linalg.norm(x - x.mean(axis=-1, keepdims=True), axis=-1)
    np.testing.assert_allclose(np.linalg.norm(hue - hue.mean(axis=-1, keepdims=True), axis=-1), distance, atol=1e-3)
    assert np.abs(hue - x).max() > 40  # colours did turn
    saturated = Augmentation(saturation=1.0)(x, seed=1).numpy()
    luma = np.array(ops.LUMA, np.float32)
    np.testing.assert_allclose(saturated @ luma, x @ luma, atol=1e-3)
    assert np.abs(saturated - x).max() > 10


@pytest.mark.parametrize("key", ["hue", "saturation", "grayscale"])
def test_a_colour_operation_on_images_without_three_channels_is_an_error(key):
    with pytest.raises(ValueError, match=f"augmentation {key} needs RGB images \\(3 channels\\), got 1 channels"):
        Augmentation(**{key: 0.2})(np.zeros((2, 8, 8, 1), np.uint8), seed=0)


def trivial_expected(name, images, strength, low=0.0, high=255.0):
    """What TrivialAugment's photometric operation `name` at signed strength s does, written
    from its definition rather than from augmentation.py."""
    s = np.float32(strength)
    if name == "brightness":
        return np.clip(images * (1 + s), low, high)
    if name == "contrast":
        mean = images.mean(axis=(0, 1))
        return np.clip((images - mean) * (1 + s) + mean, low, high)
    if name == "colour":
        grey = images @ np.array(ops.LUMA, np.float32)
        return np.clip(grey[..., None] + (1 + s) * (images - grey[..., None]), low, high)
    if name == "solarize":
        return np.where(images > high - s * (high - low), low + high - images, images)
    if name == "posterize":  # on the 256 levels of the range
        step = 2.0 ** np.round(s)
        return np.floor((images - low) * (255 / (high - low)) / step) * step * ((high - low) / 255) + low
    if name == "autocontrast":
        darkest, brightest = images.min(axis=(0, 1)), images.max(axis=(0, 1))
        return (images - darkest) * (high - low) / (brightest - darkest) + low
    if name == "sharpness":
        padded = np.pad(images, [(1, 1), (1, 1), (0, 0)])
        smoothed = sum(padded[i:i + images.shape[0], j:j + images.shape[1]] for i in range(3) for j in range(3))
        smoothed = (smoothed + 4 * images) / 13
        out = images.copy()
        out[1:-1, 1:-1] = np.clip(smoothed + (1 + s) * (images - smoothed), low, high)[1:-1, 1:-1]
        return out
    raise AssertionError(name)


@pytest.mark.parametrize("value_range", [PIXELS, VALUES], ids=["pixels", "values"])
def test_trivial_augment_applies_exactly_the_one_operation_it_drew_per_image(value_range):
    low, high = value_range
    x = np.random.default_rng(5).integers(0, 256, (256, 10, 12, 3)).astype(np.float32)
    x = x * np.float32((high - low) / 255) + np.float32(low)
    augmentation = Augmentation(trivial_augment=True, value_range=value_range)
    seed = tf.constant([0, 8], tf.int64)
    out = augmentation(x, seed=seed).numpy()
    choice, strength = Augmentation.trivial_draws(ops.split_seed(seed)["trivial_augment"], 256)
    choice = choice.numpy()
    names = list(TRIVIAL_AUGMENT)
    assert set(choice) == set(range(len(names)))  # every operation drawn in 256 images
    t = augmentation.transforms(seed, 256, 10, 12).numpy()
    identity = np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)
    centre = np.array([5.5, 4.5])  # (x, y) of a 12 x 10 image
    warped = ops.warp(tf.constant(x), tf.constant(t)).numpy()
    for i, name in enumerate(names[k] for k in choice):
        strengths = {key: float(strength(key)[i]) for key in TRIVIAL_AUGMENT}
        linear, offset = t[i, [0, 1, 3, 4]].reshape(2, 2), t[i, [2, 5]]
        if name == "identity":
            assert np.array_equal(out[i], x[i]) and np.array_equal(t[i], identity)
        elif name in ("translate_x", "translate_y"):
            # The warp is a whole-pixel shift along one axis only, so the copy is exact.
            axis = 0 if name == "translate_x" else 1
            assert np.array_equal(linear, np.eye(2)) and offset[1 - axis] == 0
            assert offset[axis] == np.round(offset[axis]) == -np.round(strengths[name] * (12, 10)[axis])
            assert np.array_equal(out[i], warped[i])
        elif name in ("rotate", "shear_x", "shear_y"):
            # The inverse of a rotation by the drawn angle, or of x += s * y (y += s * x), about the centre.
            s_ = strengths[name]
            radians = math.radians(s_)
            expected = {"rotate": [[math.cos(radians), math.sin(radians)], [-math.sin(radians), math.cos(radians)]],
                        "shear_x": [[1, -s_], [0, 1]], "shear_y": [[1, 0], [-s_, 1]]}[name]
            np.testing.assert_allclose(linear, expected, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(linear @ centre + offset, centre, atol=1e-4)
            np.testing.assert_allclose(out[i], warped[i], atol=0.02)
        else:
            assert np.array_equal(t[i], identity)
            expected = trivial_expected(name, x[i], strengths[name], low, high)
            np.testing.assert_allclose(out[i], expected, atol=2e-4 * (high - low), err_msg=name)


def test_trivial_augment_choices_are_seeded_and_uniform():
    count = len(TRIVIAL_AUGMENT)
    x = np.random.default_rng(6).integers(0, 256, (8, 10, 10, 3)).astype(np.float32)
    augmentation = Augmentation(trivial_augment=True)
    assert np.array_equal(augmentation(x, seed=1).numpy(), augmentation(x, seed=1).numpy())
    assert not np.array_equal(augmentation(x, seed=1).numpy(), augmentation(x, seed=2).numpy())
    choice, strength = Augmentation.trivial_draws(tf.constant([0, 1], tf.int64), 13000)
    counts = np.bincount(choice.numpy(), minlength=count)
    assert len(counts) == count and counts.min() > 850 and counts.max() < 1150  # 1000 each expected
    rotate = strength("rotate").numpy()
    assert rotate.min() >= -135 and rotate.max() <= 135 and rotate.min() < -130 and rotate.max() > 130
    assert strength("solarize").numpy().min() >= 0  # unsigned


def test_trivial_augment_takes_grey_images_its_colour_operation_leaves_alone():
    x = np.random.default_rng(7).integers(0, 256, (64, 8, 8, 1)).astype(np.float32)
    augmentation = Augmentation(trivial_augment=True)
    seed = tf.constant([0, 4], tf.int64)
    out = augmentation(x, seed=seed).numpy()
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    choice, _ = Augmentation.trivial_draws(ops.split_seed(seed)["trivial_augment"], 64)
    colour = choice.numpy() == list(TRIVIAL_AUGMENT).index("colour")
    assert colour.any() and np.array_equal(out[colour], x[colour])
