"""A small convolutional classifier: Conv-Pool blocks and a dense head."""

import numpy as np

from augcompare.augment.backend import keras

layers = keras.layers


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
