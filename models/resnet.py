"""ResNet-20 for small images (He et al. 2016, section 4.2, the CIFAR-10 network): a 3x3
convolution of 16 channels, three stages of three basic blocks (16, 32 and 64 channels; the
second and third stages start with stride 2), global average pooling and a dense softmax layer.

Shortcuts are the paper's option A, which adds no parameters: where a stage halves the size and
doubles the channels, the shortcut takes every second pixel and pads the new channels with zeros
(half before, half after). With 10 classes it has 269,722 trainable parameters (the paper's
0.27 M) and 1,376 BatchNormalization moving statistics.
"""

from augcompare.models.cnn import layer_seeds

STAGES = (16, 32, 64)
BLOCKS_PER_STAGE = 3


def resnet20(input_shape, num_classes, seed=0):
    """Returns an uncompiled keras.Model mapping normalized images [H, W, C] to class
    probabilities [num_classes]. seed: the initial weights come from it alone (He-normal
    convolutions, Glorot-uniform output)."""
    from augcompare.augment.backend import keras
    layers = keras.layers
    seeds = iter(layer_seeds(seed, 2 + 2 * BLOCKS_PER_STAGE * len(STAGES)))

    def conv(x, channels, strides=1):
        return layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False,
                             kernel_initializer=keras.initializers.HeNormal(seed=next(seeds)))(x)

    def normalized(x):
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.ReLU()(normalized(conv(inputs, STAGES[0])))
    for stage, channels in enumerate(STAGES):
        for block in range(BLOCKS_PER_STAGE):
            strides = 2 if stage > 0 and block == 0 else 1
            y = layers.ReLU()(normalized(conv(x, channels, strides)))
            y = normalized(conv(y, channels))
            shortcut = x if strides == 1 else _option_a(x, channels, layers)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    # float32 probabilities under a mixed precision policy too (the loss needs them).
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32",
                           kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)))(x)
    return keras.Model(inputs, outputs, name="resnet20")


def _option_a(x, channels, layers):
    """The parameter-free shortcut of a block that halves the size: every second pixel, the
    channels zero-padded to channels. Built-in layers only (a 1-wide stride-2 pooling, a padding
    along the channel axis), so that a saved model loads without this module."""
    height, width, before = x.shape[1:]
    x = layers.MaxPooling2D(pool_size=1, strides=2, padding="same")(x)
    height, width = -(-height // 2), -(-width // 2)
    pad = channels - before
    x = layers.Reshape((height, width, before, 1))(x)
    x = layers.ZeroPadding3D(((0, 0), (0, 0), (pad // 2, pad - pad // 2)))(x)
    return layers.Reshape((height, width, channels))(x)
