"""Our batched RandAugment and AugMix (augment/policies.py): every operation at fixed magnitudes
against Pillow's ImageOps and ImageEnhance, which the papers' reference code used; the per-image
choices by their distribution (scipy.stats on fixed seeds, so the tests are deterministic); and
AugMix's mixing of its chains.

Tolerances against Pillow, in levels of 255, and why they are not 0:
- exact: identity, translate (whole pixels), solarize, posterize;
- 1: rotate and shear, where the sampled point lies at least 1 pixel inside the image (Pillow
  rounds its bilinear result to a whole level; at the border it reads the fill where ours blends
  the fill in bilinearly), autocontrast (Pillow truncates its lookup table to whole levels);
- 1.5: brightness, contrast, colour, sharpness (Pillow rounds its grey or smoothed copy to whole
  levels, then truncates the blend).
Ours rotates by a where Pillow rotates by -a, shears about the image centre (as torchvision) where
the reference code's Pillow transform shears about the top-left corner, and moves each channel's
contrast about its own mean where Pillow moves all about the mean of the luma: the Pillow side
below is written accordingly, and contrast is compared on grey images.
"""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from augcompare.augment import ops, policies
from augcompare.augment.params import AUG_MIX, AUG_MIX_CHAINS, AUG_MIX_DEPTH, RAND_AUGMENT, TRIVIAL_AUGMENT

NAMES = tuple(TRIVIAL_AUGMENT)
SIZE = 32


def fixed_images():
    """Three 32 x 32 RGB uint8 images: smooth colour waves with seeded noise on them."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    images = []
    for k in range(3):
        waves = np.stack([128 + 100 * np.sin(cols / (3 + k) + c) * np.cos(rows / (4 + k) - c) for c in range(3)], -1)
        images.append(np.clip(waves + rng.normal(0, 10, waves.shape), 0, 255).round().astype(np.uint8))
    return np.stack(images)


def ours(name, strength, images):
    """Our step with every image choosing operation `name` at `strength` (TRIVIAL_AUGMENT's
    units), black fill as Pillow's; and the mask of output pixels read from at least 1 pixel
    inside the image."""
    batch, height, width = images.shape[:3]
    choice = tf.fill([batch], NAMES.index(name))
    strengths = {key: tf.fill([batch], float(strength)) for key in NAMES}
    transforms = policies.step_transforms(choice, strengths, NAMES, height, width)
    out = ops.warp(tf.constant(images, tf.float32), transforms, "constant", 0.0)
    out = policies.photometric(out, choice, strengths, NAMES, 0.0, 255.0).numpy()
    t = transforms.numpy()[0]
    rows, cols = np.mgrid[0:height, 0:width]
    x, y = t[0] * cols + t[1] * rows + t[2], t[3] * cols + t[4] * rows + t[5]
    inside = (x >= 1) & (x <= width - 2) & (y >= 1) & (y <= height - 2)
    return out, inside


def affine(*data):
    return lambda image: image.transform(image.size, Image.AFFINE, data, resample=Image.BILINEAR)


def enhance(kind, factor):
    return lambda image: kind(image).enhance(factor)


# name -> rows of (our strength, Pillow's operation, tolerance in levels, compare inside only,
# grey images). Every operation of the list has rows: a new one must add its own.
HALF = SIZE / 2
PILLOW = {
    "identity": [(0.0, lambda image: image, 0, False, False)],
    "rotate": [(20.0, lambda image: image.rotate(-20.0, resample=Image.BILINEAR), 1, True, False),
               (-135.0, lambda image: image.rotate(135.0, resample=Image.BILINEAR), 1, True, False)],
    "shear_x": [(0.3, affine(1, -0.3, 0.3 * HALF, 0, 1, 0), 1, True, False),
                (-0.99, affine(1, 0.99, -0.99 * HALF, 0, 1, 0), 1, True, False)],
    "shear_y": [(0.3, affine(1, 0, 0, -0.3, 1, 0.3 * HALF), 1, True, False),
                (-0.99, affine(1, 0, 0, 0.99, 1, -0.99 * HALF), 1, True, False)],
    "translate_x": [(5 / SIZE, affine(1, 0, -5, 0, 1, 0), 0, False, False),
                    (-12 / SIZE, affine(1, 0, 12, 0, 1, 0), 0, False, False)],
    "translate_y": [(-7 / SIZE, affine(1, 0, 0, 0, 1, 7), 0, False, False)],
    "brightness": [(-0.7, enhance(ImageEnhance.Brightness, 0.3), 1.5, False, False),
                   (0.7, enhance(ImageEnhance.Brightness, 1.7), 1.5, False, False)],
    "contrast": [(-0.7, enhance(ImageEnhance.Contrast, 0.3), 1.5, False, True),
                 (0.9, enhance(ImageEnhance.Contrast, 1.9), 1.5, False, True)],
    "colour": [(-0.7, enhance(ImageEnhance.Color, 0.3), 1.5, False, False),
               (0.9, enhance(ImageEnhance.Color, 1.9), 1.5, False, False)],
    "sharpness": [(-0.7, enhance(ImageEnhance.Sharpness, 0.3), 1.5, False, False),
                  (0.9, enhance(ImageEnhance.Sharpness, 1.9), 1.5, False, False)],
    # Pillow inverts the levels >= its threshold t; ours those > high - s x (high - low).
    "solarize": [((255.5 - t) / 255, lambda image, t=t: ImageOps.solarize(image, t), 0, False, False)
                 for t in (0, 100, 180, 256)],
    "posterize": [(8 - bits, lambda image, bits=bits: ImageOps.posterize(image, bits), 0, False, False)
                  for bits in (1, 3, 4, 8)],
    "autocontrast": [(0.0, ImageOps.autocontrast, 1, False, False)],
}
ROWS = [pytest.param(name, *row, id=f"{name}-{row[0]:g}") for name, rows in PILLOW.items() for row in rows]


def test_every_operation_has_a_pillow_row():
    assert set(PILLOW) == set(NAMES) >= set(RAND_AUGMENT) | set(AUG_MIX)


@pytest.mark.parametrize("name, strength, pillow, tolerance, inside_only, grey", ROWS)
def test_each_operation_at_a_fixed_magnitude_matches_pillow(name, strength, pillow, tolerance, inside_only, grey):
    images = fixed_images()
    if grey:
        images = images[..., :1]
    out, inside = ours(name, strength, images)
    expected = np.stack([np.asarray(pillow(Image.fromarray(image.squeeze(-1) if grey else image))).reshape(image.shape)
                         for image in images]).astype(np.float32)
    difference = np.abs(out - expected)
    if inside_only:
        assert inside.mean() > 0.6  # most of the image is compared
        difference = difference[:, inside]
    assert difference.max() <= tolerance + 1e-3, f"{name} at {strength}: {difference.max()} levels from Pillow's"
    assert np.array_equal(out, images) == np.array_equal(expected, images)  # it changes what Pillow's changes


def uniform_fit(values, categories):
    """The p-value of a chi-square test that values are uniform over range(categories)."""
    counts = np.bincount(np.ravel(values), minlength=categories)
    assert len(counts) == categories
    return scipy.stats.chisquare(counts).pvalue


def test_rand_augment_draws_its_operations_per_image_uniformly_at_magnitude_m():
    batch, count, magnitude = 3000, 2, 7.0
    random = policies.rand_augment_draws(tf.constant([0, 5], tf.int64), batch, count)
    draws = policies.rand_augment_steps(random, count, magnitude, SIZE, SIZE)
    choice = draws["choice"].numpy()
    assert choice.shape == (count, batch)
    assert uniform_fit(choice, len(RAND_AUGMENT)) > 0.01
    # Per image, not per batch (as Keras' layer draws them): the first 32 images of a step alone
    # choose many operations, and an image's two operations are drawn independently.
    assert len(set(choice[0, :32])) >= 8
    table = np.zeros((len(RAND_AUGMENT), len(RAND_AUGMENT)))
    np.add.at(table, (choice[0], choice[1]), 1)
    assert scipy.stats.chi2_contingency(table).pvalue > 0.01
    # Every operation at M / 10 of its largest strength, a random sign where signed.
    transforms = draws["transforms"].numpy()
    rotate = choice == list(RAND_AUGMENT).index("rotate")
    angles = np.degrees(np.arctan2(transforms[..., 1], transforms[..., 0]))[rotate]
    np.testing.assert_allclose(np.abs(angles), 0.7 * RAND_AUGMENT["rotate"], atol=1e-3)
    assert (angles > 0).any() and (angles < 0).any()
    brightness = draws["strengths"]["brightness"].numpy()[choice == list(RAND_AUGMENT).index("brightness")]
    np.testing.assert_allclose(np.abs(brightness), 0.7 * RAND_AUGMENT["brightness"], rtol=1e-6)
    np.testing.assert_allclose(draws["strengths"]["posterize"].numpy(), 0.7 * RAND_AUGMENT["posterize"], rtol=1e-6)


def test_aug_mix_draws_chains_weights_and_mix_as_its_paper():
    batch = 2000
    draws = policies.aug_mix_steps(policies.aug_mix_draws(tf.constant([0, 6], tf.int64), batch), SIZE, SIZE)
    choice, depth = draws["choice"].numpy(), draws["depth"].numpy()
    assert choice.shape == (AUG_MIX_DEPTH, AUG_MIX_CHAINS * batch) and depth.shape == (AUG_MIX_CHAINS * batch,)
    assert uniform_fit(choice, len(AUG_MIX)) > 0.01
    assert depth.min() == 1 and depth.max() == AUG_MIX_DEPTH and uniform_fit(depth - 1, AUG_MIX_DEPTH) > 0.01
    weights, mix = draws["weights"].numpy(), draws["mix"].numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    # Dirichlet(1, 1, 1): each weight's marginal is Beta(1, 2); the mix is Beta(1, 1), uniform.
    for chain in range(AUG_MIX_CHAINS):
        assert scipy.stats.kstest(weights[:, chain], scipy.stats.beta(1, 2).cdf).pvalue > 0.01
    assert scipy.stats.kstest(mix, scipy.stats.uniform().cdf).pvalue > 0.01
    # The reference code's levels at severity 3: whole degrees up to 8, whole pixels up to 3 of 32.
    transforms = draws["transforms"].numpy()
    rotate = choice == AUG_MIX.index("rotate")
    angles = np.degrees(np.arctan2(transforms[..., 1], transforms[..., 0]))[rotate]
    np.testing.assert_allclose(angles, np.round(angles), atol=1e-3)
    assert np.abs(angles).max() == pytest.approx(8, abs=1e-3)
    shifts = -transforms[..., 2][choice == AUG_MIX.index("translate_x")]
    assert set(np.round(shifts).astype(int)) == set(range(-3, 4)) and np.array_equal(shifts, np.round(shifts))
    kept = 8 - draws["strengths"]["posterize"].numpy()[choice == AUG_MIX.index("posterize")]
    assert set(kept) == {3.0, 4.0}


def test_aug_mix_mixes_each_images_chains_to_their_own_depth():
    """Each image's output is (1 - m) x image + m x the weighted sum of its own chains, each run
    step by step to its own depth: chain c of image b is row c x B + b of the draws."""
    images = fixed_images().astype(np.float32)
    batch = len(images)
    random = policies.aug_mix_draws(tf.constant([0, 7], tf.int64), batch)
    out = policies.aug_mix(tf.constant(images), random, "reflect", 0.0, 0.0, 255.0).numpy()
    draws = policies.aug_mix_steps(random, SIZE, SIZE)
    depth, weights, mix = draws["depth"].numpy(), draws["weights"].numpy(), draws["mix"].numpy()
    assert len(set(depth)) > 1
    for b in range(batch):
        chains = []
        for c in range(AUG_MIX_CHAINS):
            row = c * batch + b
            chain = images[b:b + 1]
            for step in range(depth[row]):
                one = {"choice": draws["choice"][step:step + 1, row:row + 1],
                       "transforms": draws["transforms"][step:step + 1, row:row + 1],
                       "strengths": {k: v[step:step + 1, row:row + 1] for k, v in draws["strengths"].items()}}
                chain = policies.apply_steps(tf.constant(chain), one, AUG_MIX, "reflect", 0.0, 0.0, 255.0).numpy()
            chains.append(chain[0])
        expected = (1 - mix[b]) * images[b] + mix[b] * sum(w * chain for w, chain in zip(weights[b], chains))
        np.testing.assert_allclose(out[b], expected, atol=1e-3)
    assert out.min() >= 0 and out.max() <= 255 and not np.array_equal(out, images)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["randaugment", "augmix"])
def test_the_policies_compile_whole_under_xla_as_a_gpu_training_step_does(preset):
    """Where Keras compiles the whole training step with XLA (a GPU), the draws are compiled too:
    every op in them must have an XLA kernel (stateless_gamma has none)."""
    from augcompare.augment import PRESETS, Augmentation
    augmentation = Augmentation(**PRESETS[preset])
    compiled = tf.function(lambda images, seed: augmentation.apply(images, seed), jit_compile=True)
    images = fixed_images().astype(np.float32)
    out = compiled(images, tf.constant([0, 1], tf.int64)).numpy()
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255 and not np.array_equal(out, images)
