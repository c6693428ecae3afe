"""Augmentation and normalization as the first layer of a training model.

Why inside the model: on a 2-core machine a separate input-pipeline thread competes with the
convolutions for the same cores, while inside the compiled training step the augmentation is one
more (XLA-fused) op of the graph, and runs on the accelerator where there is one. Inference
(training=False) only normalizes.
"""

import keras
import tensorflow as tf

from augcompare.augment import ops
from augcompare.augment.augmentation import Augmentation


@keras.saving.register_keras_serializable(package="augcompare")
class AugmentationLayer(keras.layers.Layer):
    """Takes [B, H, W, C] pixels in [0, 255]; in training, augments them with a per-batch seed
    derived from (seed, step); always normalizes. `step` counts training batches; set it to
    epoch * steps_per_epoch to repeat the augmentation of any epoch exactly."""

    def __init__(self, augmentation=None, normalize="rescale", seed=0, **kwargs):
        super().__init__(**kwargs)
        self.augmentation = augmentation or Augmentation()
        self.normalize = normalize
        self.seed = int(seed)
        self.step = self.add_weight(name="step", shape=(), dtype="int64", initializer="zeros",
                                    trainable=False)

    def call(self, images, training=None):
        images = tf.cast(images, tf.float32)
        if training and not self.augmentation.is_identity:
            seed = tf.stack([tf.constant(self.seed, tf.int64), tf.convert_to_tensor(self.step)])
            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:
                # Under tf.distribute each replica augments its own slice of the batch: give
                # each its own stream, or they would all draw the same transforms.
                seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
            self.step.assign_add(1)
            return self.augmentation.apply(images, seed, self.normalize)
        return ops.normalize(images, self.normalize)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "augmentation": self.augmentation.to_dict(),
                "normalize": self.normalize, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augmentation"] = Augmentation.from_dict(config["augmentation"])
        return cls(**config)
