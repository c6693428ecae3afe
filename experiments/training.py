"""The Keras side of a job: the classifier behind an arm's augmentation, trained by one compiled
step, and the state (Trainer.state) that a job's checkpoint holds (experiments.jobfiles).

Every arm trains on one-hot labels with categorical cross-entropy, so the loss means the same in
every arm, mixing ones included; accuracy is always against the original label. Validation and
test only normalize.

A Trainer is built and compiled once per arm and process, then reset for each seed (initial
weights, optimizer state, every random state): the compiled step is traced once, and a reset
trainer draws exactly what a freshly built one would (a test holds them together).
"""

import contextlib
import math

import numpy as np

from augcompare.augment.backend import keras, tf  # first: loads TensorFlow quietly

# isort: split
from keras.src.losses import loss as loss_module  # the scaling Keras' own train_step applies

from augcompare.augment import Augmentation, AugmentationLayer, keras_layers, mixing, ops
from augcompare.augment.layer import MIXING_STREAM, Normalization
from augcompare.augment.params import MIXING, operations
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import write_atomically
from augcompare.models.networks import build_network


class TrainingModel(keras.Model):
    """classifier(normalize(mix(augment(images)))) in training; classifier(normalize(images))
    otherwise. Labels come one-hot (one_hot_batches), so that Keras' own evaluation, its
    symbolic build under a distribution strategy and the mixing all see the same targets."""

    def __init__(self, classifier, augmentation, mixing_settings, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.augmentation = augmentation  # an AugmentationLayer, which also normalizes
        self.mixing_settings = {key: value for key, value in mixing_settings.items() if value}

    def call(self, images, training=False):
        return self.classifier(self.augmentation(images, training=False), training=training)

    @tf.autograph.experimental.do_not_convert  # no control flow on tensors here: nothing to convert
    def train_step(self, data):
        images, targets = data
        images = tf.cast(images, tf.float32)
        targets = mixed_targets = tf.cast(targets, tf.float32)
        layer = self.augmentation
        if layer.augments or self.mixing_settings:
            seed = layer.next_seed()
            if layer.augments:
                images = layer.augment(images, seed)
            images, mixed_targets = mixing.mix(images, targets, tf.random.experimental.stateless_fold_in(
                seed, MIXING_STREAM), self.mixing_settings)
        inputs = ops.normalize(images, layer.normalize)
        # As Keras' own train_step, with the mixed targets for the loss and the original ones
        # for the metrics.
        with tf.GradientTape() as tape:
            predictions = self.classifier(inputs, training=True)
            loss = self._compute_loss(x=inputs, y=mixed_targets, y_pred=predictions, sample_weight=None,
                                      training=True)
            self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                            sample_weight=tf.shape(inputs)[0])
            loss = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return self.compute_metrics(inputs, targets, predictions, sample_weight=None)


def one_hot(labels, num_classes):
    """float32 [N, K] rows of class indices labels [N]."""
    return np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]


def one_hot_batches(batches, num_classes):
    """(images, one-hot labels) of a stream of (images, class indices) batches."""
    return ((images, one_hot(labels, num_classes)) for images, labels in batches)


def build_classifier(experiment, image_shape, num_classes, seed):
    """The network of [model] with its initial weights from seed (or model.weights)."""
    try:
        return build_network(experiment.model, image_shape, num_classes, seed)
    except ValueError as error:
        raise UserError(str(error)) from None


def write_initial_weights(experiment, image_shape, num_classes, seed, path):
    """The seed's initial classifier weights, which every arm of the seed starts from. Two jobs
    of the seed may write them at once, the same weights: either file is the one they read."""
    write_atomically(path, lambda staging: build_classifier(experiment, image_shape, num_classes, seed)
                     .save_weights(staging), shared=True)


def learning_rate(train, steps_per_epoch):
    """The learning rate: constant, or cosine from train.learning_rate down to 0 at the end of
    the last epoch (the final weights are then measured where they have settled)."""
    if train.lr_schedule == "constant":
        return train.learning_rate
    return keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=train.epochs * steps_per_epoch,
                                                  alpha=0.0)


def arm_augmentation(settings, value_range):
    """The built-in operations of an arm's settings as an Augmentation over the data's range."""
    return Augmentation(value_range=value_range, **operations(settings))


def check_arms(experiment, dataset):
    """Each arm against the data before anything trains, so that an operation the data cannot take
    (a colour operation on one channel), a Keras layer that fails on it, or a function that fails
    or changes the shape is a one-line error. Keras layers and the function run once on two
    training images; nothing is compiled."""
    from augcompare.augment.functions import check_function, load_function
    images = tf.cast(np.asarray(dataset.train_images[:2]), tf.float32)
    for arm, settings in experiment.arms.items():
        try:
            arm_augmentation(settings, dataset.value_range).check_channels(dataset.image_shape[-1])
            for spec in settings.get("keras", ()):
                try:
                    keras_layers.build_layer(spec, dataset.value_range)(images, training=True)
                except ValueError:
                    raise
                except Exception as error:  # Keras and TensorFlow raise many kinds on unsuitable data
                    message = " ".join(str(error).split())[:200]
                    raise ValueError(f"keras layer {spec['layer']} fails on this data ({dataset.image_shape}): "
                                     f"{type(error).__name__}: {message}") from None
            if settings.get("function"):
                check_function(load_function(settings["function"]), settings["function"], dataset.image_shape,
                               dataset.value_range)
        except ValueError as error:
            raise UserError(f"arms.{arm}: {error}") from None


@contextlib.contextmanager
def precision(policy):
    """Keras' dtype policy for the layers made in the block (train.precision: float32,
    mixed_bfloat16, mixed_float16); the global policy is put back after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class Trainer:
    """One arm's compiled TrainingModel, reset for each job (arm and seed) it trains.

    Under a mixed precision (train.precision) the classifier computes in bfloat16 or float16
    and keeps float32 weights; augmentation, normalization, the output probabilities and the loss
    stay float32; mixed_float16 scales the loss (Keras wraps the optimizer). Every arm of a run
    trains at the same precision, so the pairing stays fair.
    """

    def __init__(self, experiment, arm, image_shape, num_classes, value_range, steps_per_epoch, strategy):
        settings = experiment.arms[arm]
        self.arm, self.image_shape, self.num_classes = arm, tuple(image_shape), num_classes
        with strategy.scope(), precision(experiment.train.precision):
            layer = AugmentationLayer(arm_augmentation(settings, value_range), experiment.train.normalize,
                                      keras_layers=settings.get("keras", ()), function=settings.get("function"),
                                      name="augmentation", dtype="float32")
            self.classifier = build_classifier(experiment, image_shape, num_classes, seed=0)
            self.model = TrainingModel(self.classifier, layer, {k: settings.get(k) for k in MIXING})
            self.model(np.zeros((1, *self.image_shape), np.float32))
            layer.build((None, *self.image_shape))
            self.model.compile(optimizer=keras.optimizers.Adam(learning_rate(experiment.train, steps_per_epoch)),
                               loss=keras.losses.CategoricalCrossentropy(),
                               metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
            self.model.optimizer.build(self.model.trainable_variables)
        self.initial_optimizer = [v.numpy() for v in self.model.optimizer.variables]

    @property
    def augmentation_layer(self):
        return self.model.augmentation

    def reset(self, seed, weights_path):
        """Puts the trainer where a fresh one for this seed starts: the seed's initial weights,
        a new optimizer state, augmentation and dropout streams at the seed's first batch."""
        try:
            self.classifier.load_weights(weights_path)
        except (OSError, ValueError) as error:
            raise UserError(f"{weights_path} is damaged ({' '.join(str(error).split())[:160]}); delete it and "
                            "resume: it is made again from the seed, identically") from None
        for variable, value in zip(self.model.optimizer.variables, self.initial_optimizer):
            variable.assign(value)
        layer = self.augmentation_layer
        layer.seed.assign(seed)
        layer.step.assign(0)
        keras_layers.reseed(self.model, seed)

    def state(self):
        """Everything training changes, as arrays: the model's variables (weights, augmentation
        step, seed-generator states) and the optimizer's (slots, step count)."""
        return [v.numpy() for v in self.model.variables + self.model.optimizer.variables]

    def restore(self, arrays, path):
        variables = self.model.variables + self.model.optimizer.variables
        if len(arrays) != len(variables) or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
            raise UserError(f"{path} does not match this experiment's model; delete it to retrain that job from its "
                            "first epoch")
        for variable, value in zip(variables, arrays):
            variable.assign(value)

    def inference_model(self):
        """The classifier behind the shared normalization, compiled for class-index labels: what
        save_best writes (keras.saving.load_model reads it)."""
        model = keras.Sequential([keras.Input(shape=self.image_shape),
                                  Normalization(self.augmentation_layer.normalize), self.classifier])
        model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        # Built, so that the file holds every variable load_model's compiled model has (an unbuilt
        # optimizer makes load_model warn that it skipped the optimizer's variables).
        model.optimizer.build(model.trainable_variables)
        return model


def steps_per_epoch(train_count, batch_size):
    return math.ceil(train_count / batch_size)
