"""The grid of original and augmented samples (augmentations.png)."""

import numpy as np

from augcompare.experiments import plots


def pick_samples(images, labels, count=4, seed=0):
    """count training images, taking the classes in turn, chosen by seed."""
    rng = np.random.default_rng([seed, 7])
    classes = np.unique(labels)
    picks = []
    for k in range(count):
        members = np.flatnonzero(labels == classes[k % len(classes)])
        picks.append(int(rng.choice(members)))
    return np.asarray(images[np.array(picks)])


def draw(samples, arms, path, variants=4, seed=0):
    """Draws each augmenting arm's variants of samples (uint8 [R, H, W, C]) to path."""
    variants_by_arm = {
        arm: [augmentation(samples, seed=[seed, v]).numpy() for v in range(variants)]
        for arm, augmentation in arms.items() if not augmentation.is_identity}
    plots.augmentation_grid(samples, variants_by_arm, path)
