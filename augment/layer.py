"""Augmentation and normalization as the first layer of a model.

Why inside the model: on a 2-core machine a separate input-pipeline thread competes with the
convolutions for the same cores, while inside the compiled training step the augmentation is one
more (XLA-fused) op of the graph, and runs on the accelerator where there is one. Inference
(training=False) only normalizes.
"""


from augcompare.augment import ops
from augcompare.augment.augmentation import Augmentation
from augcompare.augment.backend import keras, tf
from augcompare.augment.functions import load_function
from augcompare.augment.keras_layers import build_layer

# Sub-streams of a batch's seed besides the built-in operations' own (which use the seed as is,
# so that an arm of built-in operations draws what it always drew).
FUNCTION_STREAM, MIXING_STREAM = 1, 2


def converted(function):
    """A user's function with AutoGraph's conversion (Python `if` and `for` on tensors become
    graph control flow), as tf.function would give it: the training step that calls it is not
    converted itself (TrainingModel.train_step)."""
    if function is None:
        return None
    try:
        return tf.autograph.to_graph(function)
    except Exception:  # not a Python function AutoGraph can read (a built-in, a C extension): as it is
        return function


@keras.saving.register_keras_serializable(package="augcompare")
class AugmentationLayer(keras.layers.Layer):
    """Takes [B, H, W, C] values (pixels in [0, 255]); in training, augments them with a per-batch
    seed derived from (seed, step); always normalizes.

    In order: the built-in operations of `augmentation` (an Augmentation, whose value_range is the
    data's), then `keras_layers` (specs {layer = "<class>", ...} or built Keras preprocessing
    layers, see augment.keras_layers), then `function` ("file.py:name", "package.module:name" or
    a callable f(images, seed), see augment.functions). `step` counts training batches; set it to
    epoch * steps_per_epoch to repeat the augmentation of any epoch exactly.
    """

    def __init__(self, augmentation=None, normalize="rescale", seed=0, keras_layers=(), function=None, **kwargs):
        super().__init__(**kwargs)
        self.augmentation = augmentation or Augmentation()
        self.normalize = normalize
        self.keras_specs = [dict(spec) for spec in keras_layers if isinstance(spec, dict)]
        self.keras_layers = [
            build_layer(spec, self.augmentation.value_range) if isinstance(spec, dict) else spec
            for spec in keras_layers]
        self.function_name = function if isinstance(function, str) else None
        self.function = load_function(function) if isinstance(function, str) else function
        self._converted_function = converted(self.function)
        self.seed = self.add_weight(name="seed", shape=(), dtype="int64", trainable=False,
                                    initializer=keras.initializers.Constant(int(seed)))
        self.step = self.add_weight(name="step", shape=(), dtype="int64", initializer="zeros",
                                    trainable=False)

    @property
    def augments(self):
        return not self.augmentation.is_identity or bool(self.keras_layers) or self.function is not None

    def build(self, input_shape):
        for layer in self.keras_layers:
            layer.build(input_shape)

    def next_seed(self):
        """The stateless seed of this training batch, (seed, step); advances step. Under
        tf.distribute each replica augments its own slice of the batch with its own stream."""
        seed = tf.stack([tf.convert_to_tensor(self.seed), tf.convert_to_tensor(self.step)])
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
        self.step.assign_add(1)
        return seed

    def augment(self, images, seed):
        """float32 values -> augmented values (not normalized), for a batch seed."""
        if not self.augmentation.is_identity:
            images = self.augmentation.apply(images, seed)
        for layer in self.keras_layers:
            images = tf.cast(layer(images, training=True), tf.float32)
        if self.function is not None:
            images = self._converted_function(images, tf.random.experimental.stateless_fold_in(seed, FUNCTION_STREAM))
        return images

    def call(self, images, training=None):
        images = tf.cast(images, tf.float32)
        if training and self.augments:
            images = self.augment(images, self.next_seed())
        return ops.normalize(images, self.normalize)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        if self.function is not None and self.function_name is None:
            raise TypeError("an AugmentationLayer with a function object cannot be saved; give it as \"file.py:name\"")
        return {**super().get_config(), "augmentation": self.augmentation.to_dict(),
                "value_range": list(self.augmentation.value_range), "normalize": self.normalize,
                "seed": int(self.seed.numpy()), "keras_layers": self.keras_specs, "function": self.function_name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augmentation"] = Augmentation.from_dict(config["augmentation"],
                                                        value_range=config.pop("value_range", (0.0, 255.0)))
        return cls(**config)


@keras.saving.register_keras_serializable(package="augcompare")
class Normalization(keras.layers.Layer):
    """The shared normalization alone (rescale, standardize or divmax): the first layer of a
    saved model, which then takes the data as the cache holds it."""

    def __init__(self, normalize="rescale", **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize

    def call(self, images):
        return ops.normalize(tf.cast(images, tf.float32), self.normalize)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "normalize": self.normalize}
