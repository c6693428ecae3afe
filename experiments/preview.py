"""The grid of original and augmented samples (augmentations.png)."""

import numpy as np

from augcompare.experiments import plots


def pick_samples(images, labels, count=4, seed=0):
    """count training images, taking the classes in turn, chosen by seed; returns the images
    and their labels (to name each row of the grid)."""
    rng = np.random.default_rng([seed, 7])
    classes = np.unique(labels)
    picks = []
    for k in range(count):
        members = np.flatnonzero(labels == classes[k % len(classes)])
        picks.append(int(rng.choice(members)))
    picks = np.array(picks)
    return np.asarray(images[picks]), np.asarray(labels[picks])


def draw(samples, arms, path, variants=4, seed=0, *, sample_titles, value_range=(0, 255)):
    """Draws each augmenting arm's variants of samples ([R, H, W, C] within value_range) to path,
    each row named by sample_titles (R strings, e.g. the class names)."""
    variants_by_arm = {
        arm: [(augmentation(samples, seed=[seed, v]).numpy(), None) for v in range(variants)]
        for arm, augmentation in arms.items() if not augmentation.is_identity}
    plots.augmentation_grid(samples, sample_titles, variants_by_arm, path, value_range)
