"""Batch generators that stream uint8 images through augmentation and normalization.

All three share one convention, so they agree with each other and with AugmentationLayer:
- the sample order of pass p is np.random.default_rng([seed, p]).permutation(n) (or 0..n-1);
- the augmentation of the k-th batch since the first pass uses the stateless seed (seed, k).
Order and augmentation come from separate streams: switching augmentation on cannot change the
order. Sources are only indexed, never copied whole, permuted or written to.
"""

import collections.abc
import functools
import itertools
import math
from pathlib import Path

import numpy as np

from augcompare.augment import ops
from augcompare.augment.backend import keras, tf


def pass_order(n, seed, pass_index, shuffle):
    """Sample indices for one pass over n samples."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, pass_index]).permutation(n)


@functools.lru_cache(maxsize=32)
def _pipeline(augment, normalize):
    def run(images, seed):
        return augment.apply(tf.cast(images, tf.float32), seed, normalize)
    return tf.function(run, reduce_retracing=True, autograph=False)


def normalize_numpy(images, mode):
    """ops.normalize in NumPy (float32, the same formulas), for batches made without TensorFlow:
    worker processes forked from a process that runs TensorFlow must not run it themselves."""
    images = np.asarray(images, dtype=np.float32)
    if mode is None:
        return images
    if mode == "rescale":
        return images * np.float32(1.0 / 255.0)
    if mode not in ops.NORMALIZATIONS:
        raise ValueError(f"unknown normalize {mode!r}; valid: {', '.join(ops.NORMALIZATIONS)}")
    axes = tuple(range(1, images.ndim))
    centred = images - images.mean(axis=axes, keepdims=True)
    if mode == "standardize":
        std = np.sqrt(np.mean(np.square(centred), axis=axes, keepdims=True))
        return centred / np.maximum(std, np.float32(1.0 / math.sqrt(np.prod(images.shape[1:]))))
    peak = np.max(np.abs(centred), axis=axes, keepdims=True)
    return centred / np.maximum(peak, np.float32(1e-6))


def prepare_batch(images, augment, normalize, seed, step):
    """[B, H, W, C] values (pixels in [0, 255]) -> float32 numpy batch, augmented with seed
    (seed, step). Without augmentation no TensorFlow runs (NumPy normalization).

    normalize: "rescale" | "standardize" | "divmax", or None for float32 values as they are.
    """
    if augment is not None and augment.is_identity:
        augment = None
    if augment is None:
        return normalize_numpy(images, normalize)
    if normalize is not None and normalize not in ops.NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; valid: {', '.join(ops.NORMALIZATIONS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or augment.value_range != (0.0, 255.0):  # uint8 pixels are in range
        augment.check_range(images)
    seed_pair = tf.constant([seed, step], tf.int64)
    return _pipeline(augment, normalize)(images, seed_pair).numpy()


def _check_arrays(features, labels, batch_size):
    if getattr(features, "ndim", None) != 4:
        raise ValueError(f"features must be an array [N, H, W, C], got shape {getattr(features, 'shape', None)}")
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} images but {len(labels)} labels; give one label per image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(features) == 0:
        raise ValueError("no images: the source is empty")
    return np.asarray(labels)


def _batches(features, labels, batch_size, order, drop_remainder):
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        if drop_remainder and len(index) < batch_size:
            return
        yield features[index], labels[index]


def get_generator(features, labels, batch_size, augment=None, normalize="rescale", shuffle=False,
                  seed=0, drop_remainder=False):
    """One finite pass over (features, labels), yielding (x float32 [B, H, W, C], y) batches.

    features: uint8 or float array [N, H, W, C] of pixels in [0, 255] (a memory-mapped .npy
    works and is read one batch at a time). The last batch is partial unless drop_remainder.
    """
    labels = _check_arrays(features, labels, batch_size)
    order = pass_order(len(features), seed, 0, shuffle)

    def generate():
        for step, (x, y) in enumerate(_batches(features, labels, batch_size, order, drop_remainder)):
            yield prepare_batch(x, augment, normalize, seed, step), y
    return generate()


def get_generator_cyclic(features, labels, batch_size, augment=None, normalize="rescale", shuffle=True,
                         seed=0, drop_remainder=False, start_pass=0):
    """Endless passes over (features, labels); each pass is a fresh seeded order of the indices.

    A pass yields ceil(N / batch_size) batches (floor with drop_remainder), so with
    steps_per_epoch set to that number every Keras epoch is exactly one pass. start_pass resumes
    the stream at the beginning of that pass, with the order and augmentation it would have had.
    """
    labels = _check_arrays(features, labels, batch_size)
    n = len(features)
    per_pass = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    if per_pass == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} samples with drop_remainder")

    def generate():
        step = start_pass * per_pass
        for pass_index in itertools.count(start_pass):
            order = pass_order(n, seed, pass_index, shuffle)
            for x, y in _batches(features, labels, batch_size, order, drop_remainder):
                yield prepare_batch(x, augment, normalize, seed, step), y
                step += 1
    return generate()


class DataGenerator(keras.utils.PyDataset):
    """A Keras PyDataset that streams samples one batch at a time.

    list_IDs: the samples to use. With directory=DIR each ID names a file DIR/<ID>.npy holding one
    image [H, W, C] of pixels in [0, 255]; with source=ARRAY (for example np.load(path,
    mmap_mode="r")) each ID is an integer index into it.
    labels: a mapping {ID: label}; or a sequence (list, array; one-hot rows too): with source=,
    parallel to the source (labels[i] is the label of source[i], one per sample of the source);
    with directory=, parallel to list_IDs (labels[k] is the label of list_IDs[k]). Anything else,
    an ID without a label or a length that does not match is a ValueError saying which. With
    train=False labels may be None.
    dim: the shape of one sample; by default the source's (source.shape[1:]) or the first file's.
    A sample of another shape is an error naming it.
    train=False yields x alone. Each epoch reshuffles (when shuffle) with a seeded order.
    Remaining keyword arguments (workers, use_multiprocessing, max_queue_size) go to PyDataset.

    Worker processes (use_multiprocessing=True) are forked from a process that runs TensorFlow,
    and TensorFlow hangs in such children: their batches are made with NumPy alone, so that
    combination takes no augmentation (put AugmentationLayer(augment) first in the model instead,
    where it runs inside the training step) and is refused with augment at construction.
    """

    def __init__(self, list_IDs, labels, directory=None, batch_size=32, dim=None, shuffle=True,
                 train=True, norm="rescale", augment=None, seed=0, source=None, drop_remainder=False,
                 **kwargs):
        super().__init__(**kwargs)
        if self.use_multiprocessing and augment is not None and not augment.is_identity:
            raise ValueError("augment runs TensorFlow ops, which hang in worker processes (use_multiprocessing=True); "
                             "give DataGenerator augment=None and make AugmentationLayer(augment) the first layer of "
                             "the model, or keep augment and use threads (use_multiprocessing=False)")
        if (directory is None) == (source is None):
            raise ValueError("give exactly one of directory= (a folder of .npy files) or source= (an array)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.list_IDs = list(list_IDs)
        if not self.list_IDs:
            raise ValueError("list_IDs is empty: give at least one sample")
        self.labels = labels
        self.directory = Path(directory) if directory is not None else None
        self.source = source
        self.batch_size = batch_size
        if source is not None:
            self._check_indices()
        self._label_table, self._label_keys = self._label_lookup(labels, train)
        self.dim = self._first_shape() if dim is None else tuple(dim)
        self.shuffle = shuffle
        self.train = train
        self.norm = norm
        self.augment = augment
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.epoch = 0
        self._order = self._epoch_order()

    def _check_indices(self):
        """With source=, list_IDs are integer indices into it."""
        ids = np.asarray(self.list_IDs)
        if ids.dtype.kind not in "iu":
            raise ValueError(f"with source=, list_IDs are integer indices into the source; got {self.list_IDs[0]!r} "
                             "(for files, give directory= instead)")
        if ids.min() < -len(self.source) or ids.max() >= len(self.source):
            raise ValueError(f"list_IDs holds index {ids.max() if ids.max() >= len(self.source) else ids.min()} but "
                             f"the source has {len(self.source)} samples")

    def _label_lookup(self, labels, train):
        """(table, keys): the label of list_IDs[k] is table[keys[k]]; checked here, so that a
        mistake is one ValueError at construction, not an error deep inside a batch."""
        if labels is None:
            if train:
                raise ValueError("labels is None but train=True; give the labels, or train=False to yield images alone")
            return None, None
        positions = np.arange(len(self.list_IDs))
        if isinstance(labels, collections.abc.Mapping):
            missing = [sample_id for sample_id in self.list_IDs if sample_id not in labels]
            if missing:
                raise ValueError(f"labels has no entry for ID {missing[0]!r} ({len(missing)} of {len(self.list_IDs)} "
                                 "IDs lack one); a mapping's keys are the IDs in list_IDs")
            return np.asarray([labels[sample_id] for sample_id in self.list_IDs]), positions
        if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__") or not hasattr(labels, "__getitem__"):
            raise ValueError(f"labels must be a mapping {{ID: label}} or a sequence of labels, got "
                             f"{type(labels).__name__}")
        if not isinstance(labels, np.ndarray):  # a list or tuple: indexed a batch at a time below
            labels = np.asarray(labels)
        if self.source is not None:
            if len(labels) != len(self.source):
                raise ValueError(f"labels has {len(labels)} entries but the source has {len(self.source)} samples; "
                                 "with source=, labels[i] is the label of source[i] (give one per sample of the "
                                 "source), or give a mapping {ID: label}")
            return labels, np.asarray(self.list_IDs)
        if len(labels) != len(self.list_IDs):
            raise ValueError(f"labels has {len(labels)} entries for {len(self.list_IDs)} list_IDs; with directory=, a "
                             "sequence of labels is taken in list_IDs' order (labels[k] for list_IDs[k]), or give a "
                             "mapping {ID: label}")
        return labels, positions

    def _first_shape(self):
        """dim's default: the source's sample shape, or the first file's."""
        if self.source is not None:
            if getattr(self.source, "ndim", None) != 4:
                shape = getattr(self.source, "shape", None)
                raise ValueError(f"source must be an array [N, H, W, C], got shape {shape}")
            return tuple(self.source.shape[1:])
        return tuple(self._load(self.list_IDs[0], check=False).shape)

    def _epoch_order(self):
        return pass_order(len(self.list_IDs), self.seed, self.epoch, self.shuffle)

    def __len__(self):
        n = len(self.list_IDs)
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._epoch_order()

    def _load(self, sample_id, check=True):
        if self.source is not None:
            sample = self.source[sample_id]
            where = f"source[{sample_id}]"
        else:
            name = str(sample_id)
            path = self.directory / (name if name.endswith(".npy") else name + ".npy")
            try:
                sample = np.load(path, mmap_mode=None if check else "r", allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ValueError(f"{path} cannot be read as a sample ({error})") from None
            where = str(path)
        if check and sample.shape != self.dim:
            raise ValueError(f"{where} has shape {sample.shape}, expected dim={self.dim}")
        return sample

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range for {len(self)} batches")
        positions = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        ids = [self.list_IDs[i] for i in positions]
        x = np.stack([self._load(i) for i in ids])
        x = prepare_batch(x, self.augment, self.norm, self.seed, self.epoch * len(self) + index)
        if not self.train:
            return x
        return x, np.asarray(self._label_table[self._label_keys[positions]])
