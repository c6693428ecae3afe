"""A small convolutional classifier: Conv-Conv-Pool blocks and a dense head."""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
from keras import layers  # noqa: E402


def small_cnn(input_shape, num_classes, filters=(32, 64, 128), dense_units=128, dropout=0.0):
    """Returns an uncompiled keras.Model mapping normalized images [H, W, C] to class
    probabilities [num_classes].

    filters: channels of each block (3x3 convolution, ReLU, 2x2 max-pool); dense_units: width of
    the hidden dense layer; dropout: rate in [0, 1) before the output layer (0 switches it off).
    Its weights come from Keras' global seed: call keras.utils.set_random_seed first.
    """
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for channels in filters:
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")
