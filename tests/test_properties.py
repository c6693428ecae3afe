"""Property tests: for arbitrary batch shapes, pixel values and augmentation settings every
operation keeps shape and dtype and gives finite values in range; every generator covers each
sample exactly once per pass, for any number of samples and batch size."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from augcompare.augment import PARAMS, Augmentation, DataGenerator, get_generator, get_generator_cyclic, normalize

OPERATIONS = [key for key, param in PARAMS.items() if param.kind is not str and key != "fill_value"]


@st.composite
def batches(draw):
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.sampled_from([1, 3])))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        return rng.integers(0, 256, shape, dtype=np.uint8)
    extreme = draw(st.sampled_from([0.0, 255.0, None]))  # constant images are the edge case of contrast and normalization
    return np.full(shape, extreme, np.float32) if extreme is not None else rng.uniform(0, 255, shape).astype(np.float32)


@st.composite
def augmentations(draw):
    settings_ = {}
    for key in draw(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=4, unique=True)):
        param = PARAMS[key]
        settings_[key] = True if param.kind is bool else draw(st.floats(param.low, param.high))
    settings_["fill_mode"] = draw(st.sampled_from(PARAMS["fill_mode"].choices))
    settings_["fill_value"] = draw(st.floats(0, 255))
    return Augmentation(**settings_)


@settings(max_examples=30, deadline=None)
@given(batches(), augmentations(), st.integers(0, 2**31 - 1))
def test_every_operation_keeps_shape_and_dtype_and_stays_in_range(images, augmentation, seed):
    out = augmentation(images, seed=seed).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3


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
