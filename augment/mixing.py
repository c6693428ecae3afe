"""MixUp and CutMix: each image is mixed with a partner from the same batch, and its label with
the partner's label in the same proportion. Per image, the weight is drawn from Beta(alpha, alpha)
(from two stateless Gamma draws); the partner is a seeded permutation of the batch.

Both take float32 images [B, H, W, C], one-hot (or already soft) labels [B, K] and a shape-[2]
int64 stateless seed, and return (images, labels) of the same shapes; each label row still sums
to one.
"""

from augcompare.augment.backend import tf


def beta(seed, batch, alpha):
    """[B] draws from Beta(alpha, alpha)."""
    first, second = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    x = tf.random.stateless_gamma([batch], seed=first, alpha=alpha)
    y = tf.random.stateless_gamma([batch], seed=second, alpha=alpha)
    return x / tf.maximum(x + y, 1e-12)


def partners(seed, batch):
    """A seeded permutation of the batch: image i is mixed with image partners[i]."""
    return tf.argsort(tf.random.stateless_uniform([batch], seed=seed))


def mixup(images, labels, seed, alpha):
    """Each image becomes w * image + (1 - w) * partner, w ~ Beta(alpha, alpha); labels alike."""
    weight_seed, partner_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    batch = tf.shape(images)[0]
    weights = beta(weight_seed, batch, alpha)
    order = partners(partner_seed, batch)
    mixed = (weights[:, None, None, None] * images
             + (1.0 - weights[:, None, None, None]) * tf.gather(images, order))
    mixed_labels = weights[:, None] * labels + (1.0 - weights[:, None]) * tf.gather(labels, order)
    return mixed, mixed_labels


def cutmix(images, labels, seed, alpha):
    """Each image gets a box of its partner pasted in: the box has (1 - w) of the image's area,
    w ~ Beta(alpha, alpha), and a uniform random centre (clipped at the border); the label weight
    is the share of the image each one covers after clipping."""
    weight_seed, partner_seed, centre_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=3))
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    weights = beta(weight_seed, batch, alpha)
    order = partners(partner_seed, batch)
    side = tf.sqrt(1.0 - weights)
    box_h = side * tf.cast(height, tf.float32)
    box_w = side * tf.cast(width, tf.float32)
    centres = tf.random.stateless_uniform([2, batch], seed=centre_seed)
    centre_y = centres[0] * tf.cast(height, tf.float32)
    centre_x = centres[1] * tf.cast(width, tf.float32)
    top = tf.clip_by_value(tf.round(centre_y - box_h / 2), 0.0, tf.cast(height, tf.float32))
    bottom = tf.clip_by_value(tf.round(centre_y + box_h / 2), 0.0, tf.cast(height, tf.float32))
    left = tf.clip_by_value(tf.round(centre_x - box_w / 2), 0.0, tf.cast(width, tf.float32))
    right = tf.clip_by_value(tf.round(centre_x + box_w / 2), 0.0, tf.cast(width, tf.float32))
    rows = tf.cast(tf.range(height), tf.float32)[None, :]
    cols = tf.cast(tf.range(width), tf.float32)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    box = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    mixed = tf.where(box, tf.gather(images, order), images)
    pasted = (bottom - top) * (right - left) / tf.cast(height * width, tf.float32)
    kept = 1.0 - pasted
    mixed_labels = kept[:, None] * labels + pasted[:, None] * tf.gather(labels, order)
    return mixed, mixed_labels


MIXERS = {"mixup": mixup, "cutmix": cutmix}


def mix(images, labels, seed, settings):
    """Applies the arm's mixing (mixup = alpha or cutmix = alpha in settings), or returns the
    inputs unchanged when it has none."""
    for name, mixer in MIXERS.items():
        if settings.get(name):
            return mixer(images, labels, seed, float(settings[name]))
    return images, labels
