"""The grid of original and augmented samples (augmentations.png), for every kind of arm: built-in
operations, Keras layers, a function, and mixing (with each mixed image's label weights)."""

from pathlib import Path

import numpy as np

from augcompare.augment import AugmentationLayer, keras_layers, mixing
from augcompare.augment.backend import tf
from augcompare.augment.layer import MIXING_STREAM
from augcompare.augment.params import MIXING, augments
from augcompare.experiments import plots


def pick_samples(images, labels, count=4, seed=0):
    """count training images, taking the classes in turn, chosen by seed; (images, labels)."""
    rng = np.random.default_rng([seed, 7])
    labels = np.asarray(labels)
    classes = np.unique(labels)
    picks = []
    for k in range(count):
        members = np.flatnonzero(labels == classes[k % len(classes)])
        picks.append(int(rng.choice(members)))
    picks = np.array(picks)
    return np.asarray(images[picks]), labels[picks]


def _label_weights(weights, class_names):
    """'room 0.70 / tower 0.30' for a row of label weights (the classes that carry weight)."""
    shares = [(class_names[k] if k < len(class_names) else str(k), w) for k, w in enumerate(weights) if w > 0.005]
    return " / ".join(f"{name} {w:.2f}" for name, w in sorted(shares, key=lambda item: -item[1]))


def variants(settings, samples, labels, class_names, value_range, count, seed=0):
    """count augmented versions of samples as one arm trains them: [(images, captions)], captions
    being the label weights of mixing arms (None otherwise)."""
    from augcompare.experiments.training import arm_augmentation
    layer = AugmentationLayer(arm_augmentation(settings, value_range), normalize=None,
                              keras_layers=settings.get("keras", ()), function=settings.get("function"))
    images = tf.cast(samples, tf.float32)
    layer.build(images.shape)
    targets = tf.one_hot(np.asarray(labels, np.int32), max(len(class_names), int(np.max(labels)) + 1))
    drawn = []
    for v in range(count):
        batch_seed = tf.constant([seed, v], tf.int64)
        keras_layers.reseed(layer, seed * 1000 + v)
        keras_layers.seed_python_random("preview", seed, v)  # Keras' AugMix draws with Python's random
        out = layer.augment(images, batch_seed) if layer.augments else images
        captions = None
        if any(settings.get(key) for key in MIXING):
            out, weights = mixing.mix(out, targets, tf.random.experimental.stateless_fold_in(batch_seed, MIXING_STREAM),
                                      settings)
            captions = [_label_weights(row, class_names) for row in weights.numpy()]
        drawn.append((np.asarray(out), captions))
    return drawn


def draw(samples, labels, class_names, arms, value_range, path, count=4, seed=0):
    """Draws each augmenting arm's variants of samples (with their labels) to path."""
    by_arm = {arm: variants(settings, samples, labels, class_names, value_range, count, seed)
              for arm, settings in arms.items() if augments(settings)}
    titles = [class_names[int(label)] if int(label) < len(class_names) else str(label) for label in labels]
    plots.augmentation_grid(samples, titles, by_arm, path, value_range=value_range)


def write_run_grid(dataset, arms, folder):
    """A run's grid: augmentations.png, and the samples and labels it shows
    (preview_samples.npy, preview_labels.npy), from which `augcompare plot` redraws it."""
    folder = Path(folder)
    samples, labels = pick_samples(dataset.train_images, dataset.train_labels)
    np.save(folder / "preview_samples.npy", samples, allow_pickle=False)
    np.save(folder / "preview_labels.npy", labels, allow_pickle=False)
    draw(samples, labels, dataset.class_names, arms, dataset.value_range, folder / "augmentations.png")
