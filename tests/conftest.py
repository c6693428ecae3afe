import numpy as np
import pytest

import augcompare.augment  # noqa: F401  (sets the Keras backend before any test imports keras)


@pytest.fixture
def images():
    """16 random uint8 images [16, 24, 24, 3] and alternating labels."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8), np.arange(16, dtype=np.int64) % 2

from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run: a failure in CI reproduces here.
settings.register_profile("augcompare", derandomize=True, deadline=None)
settings.load_profile("augcompare")
