"""A small convolutional classifier: Conv-Pool blocks and a dense head, and what training it
costs. Keras is imported where the model is built: a run plans its jobs from the cost before
it loads TensorFlow (experiments.run)."""

import numpy as np


def layer_seeds(seed, count):
    """count independent 31-bit seeds derived from one seed, one per layer that draws."""
    return [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(count) % (2**31 - 1)]


def small_cnn(input_shape, num_classes, filters=(32, 64, 128), dense_units=128, dropout=0.0, seed=0):
    """Returns an uncompiled keras.Model mapping normalized images [H, W, C] to class
    probabilities [num_classes].

    filters: channels of each block (3x3 convolution, ReLU, 2x2 max-pool); dense_units: width of
    the hidden dense layer; dropout: rate in [0, 1) before the output layer (0 switches it off).
    seed: the initial weights and the dropout masks come from it alone (no global random state).
    """
    from augcompare.augment.backend import keras
    layers = keras.layers
    seeds = iter(layer_seeds(seed, len(filters) + 3))
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for channels in filters:
        x = layers.Conv2D(channels, 3, padding="same", activation="relu",
                          kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu",
                     kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
    dropout_seed = next(seeds)
    if dropout:
        x = layers.Dropout(dropout, seed=dropout_seed)(x)
    # float32 probabilities under a mixed precision policy too (the loss needs them).
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def small_cnn_parameters(input_shape, num_classes, filters=(32, 64, 128), dense_units=128):
    """The number of weights of small_cnn (the same arguments), counted without Keras."""
    height, width, channels = input_shape
    count = 0
    for out in filters:
        count += 9 * channels * out + out
        height, width, channels = height // 2, width // 2, out
    flat = height * width * channels
    return count + flat * dense_units + dense_units + dense_units * num_classes + num_classes


def training_flops(input_shape, num_classes, filters=(32, 64, 128), dense_units=128, train_count=1, epochs=1):
    """Floating-point operations of training small_cnn (the same arguments) on train_count images
    for epochs: 3 x its forward pass per image (the backward pass costs about twice the forward),
    counting the convolutions and dense layers."""
    height, width, channels = input_shape
    forward = 0
    for out in filters:
        forward += 2 * height * width * 9 * channels * out  # 3x3, "same"
        height, width, channels = height // 2, width // 2, out  # 2x2 max-pool
    forward += 2 * height * width * channels * dense_units + 2 * dense_units * num_classes
    return 3 * forward * train_count * epochs
