"""Property tests: for arbitrary batch shapes, values, value ranges and augmentation settings
every operation keeps shape and dtype and gives finite values within the value range (or, for a
colour operation on images that are not RGB, refuses them); every generator covers each sample
exactly once per pass, for any number of samples and batch size."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augcompare.augment import PARAMS, Augmentation, DataGenerator, get_generator, get_generator_cyclic, normalize
from augcompare.augment.params import COLOUR, DEFAULTS, REQUIRES

OPERATIONS = [key for key in PARAMS if key not in DEFAULTS]
VALUE_RANGES = [(0.0, 255.0), (-1.0, 1.0), (0.0, 1.0)]


@st.composite
def batches(draw):
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.sampled_from([1, 3])))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        return rng.integers(0, 256, shape, dtype=np.uint8)
    extreme = draw(st.sampled_from([0.0, 255.0, None]))  # constant images are the edge case of contrast and normalization
    return np.full(shape, extreme, np.float32) if extreme is not None else rng.uniform(0, 255, shape).astype(np.float32)


def setting(draw, key):
    param = PARAMS[key]
    if param.kind is bool:
        return True
    if param.kind is int:
        return draw(st.integers(int(param.low), int(param.high)))
    return draw(st.floats(param.low, param.high))


@st.composite
def augmentations(draw):
    settings_ = {}
    for key in draw(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=4, unique=True)):
        settings_[key] = setting(draw, key)
        if key in REQUIRES and not settings_.get(REQUIRES[key]):
            settings_[REQUIRES[key]] = setting(draw, REQUIRES[key]) or PARAMS[REQUIRES[key]].high
    settings_["fill_mode"] = draw(st.sampled_from(PARAMS["fill_mode"].choices))
    low, high = draw(st.sampled_from(VALUE_RANGES))
    settings_["fill_value"] = draw(st.floats(low, high))
    return Augmentation(value_range=(low, high), **settings_)


# Each example is a new set of operations, compiled anew (about 2 s): 12 combinations of up to
# four, beside test_augmentation's every operation alone on both value ranges.
@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(batches(), augmentations(), st.integers(0, 2**31 - 1))
def test_every_operation_keeps_shape_and_dtype_and_stays_in_range(images, augmentation, seed):
    low, high = augmentation.value_range
    values = images.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    values = np.clip(values, low, high)  # float rounding of the rescale must not leave the range
    colour = [key for key in COLOUR if augmentation.params.get(key)]
    if colour and images.shape[-1] != 3:
        with pytest.raises(ValueError, match=f"{colour[0]} needs RGB images"):
            augmentation(values, seed=seed)
        return
    out = augmentation(values, seed=seed).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    tolerance = 1e-4 * (high - low)  # bilinear sums may round past the edge, as Augmentation.check_range allows
    assert out.min() >= low - tolerance and out.max() <= high + tolerance


@settings(max_examples=30, deadline=None)
@given(batches())
def test_every_normalization_is_finite_and_bounded(images):
    pixels = images.astype(np.float32)
    rescaled = np.asarray(normalize(pixels, "rescale"))
    assert rescaled.min() >= 0 and rescaled.max() <= 1
    divided = np.asarray(normalize(pixels, "divmax"))
    assert np.abs(divided).max() <= 1 + 1e-6
    standardized = np.asarray(normalize(pixels, "standardize"))
    assert np.isfinite(standardized).all() and standardized.shape == images.shape


def numbered(n):
    """n one-pixel images whose value is their index (as float32 [0, 255] pixels), labels 0..n-1."""
    return np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) % 256, np.arange(n)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 70), st.booleans(), st.integers(0, 1000))
def test_every_generator_covers_each_sample_once_per_pass(n, batch_size, shuffle, seed):
    images, labels = numbered(n)
    per_pass = math.ceil(n / batch_size)

    def labels_of(batches_):
        return np.concatenate([y for _, y in batches_])
    seen = labels_of(get_generator(images, labels, batch_size, normalize=None, shuffle=shuffle, seed=seed))
    assert sorted(seen) == list(range(n))
    cyclic = get_generator_cyclic(images, labels, batch_size, normalize=None, shuffle=shuffle, seed=seed)
    for _ in range(2):  # each pass, reshuffled, covers every sample once
        assert sorted(labels_of(next(cyclic) for _ in range(per_pass))) == list(range(n))
    sequence = DataGenerator(range(n), labels, source=images, batch_size=batch_size, dim=(1, 1, 1),
                             shuffle=shuffle, norm=None, seed=seed)
    for _ in range(2):
        assert len(sequence) == per_pass
        assert sorted(labels_of(sequence[i] for i in range(len(sequence)))) == list(range(n))
        sequence.on_epoch_end()
    dropped = get_generator(images, labels, batch_size, normalize=None, shuffle=shuffle, seed=seed,
                            drop_remainder=True)
    kept = [y for _, y in dropped]
    assert all(len(y) == batch_size for y in kept)
    assert len(set(np.concatenate(kept).tolist()) if kept else set()) == (n // batch_size) * batch_size
