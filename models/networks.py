"""The classifier a run compares its arms on, chosen by [model] (experiments.config.ModelConfig):
the small CNN, ResNet-20, a Keras application with random weights ("keras:MobileNetV3Small"), or
the user's own build(input_shape, num_classes, seed) -> keras.Model; optionally started from a
weights file. Each is checked once before anything trains (check_network), and its cost counted
from its layers (cost).

The driver plans its jobs from the cost and avoids loading TensorFlow (experiments.run): for the
default small CNN without a weights file the cost is computed without Keras
(models.cnn.training_flops); for any other network the driver loads Keras and builds the
network twice (check_network, seconds) as soon as the data's shape is known, before the data is
prepared.
"""

import inspect
import math
import warnings

import numpy as np

from augcompare.models.cnn import small_cnn, small_cnn_parameters, training_flops

# model.name: these, or KERAS_PREFIX + the name of one of keras.applications.
NETWORKS = ("small_cnn", "resnet20")
KERAS_PREFIX = "keras:"
# Per element of a normalization layer's output, forward: subtract the mean, divide, scale, shift.
NORMALIZATION_FLOPS = 4


def is_default_small_cnn(model):
    """True where the network is the small CNN from its seed (no Keras needed to plan it)."""
    return model.name == "small_cnn" and not model.build and not model.weights


def build_network(model, input_shape, num_classes, seed):
    """The network of a ModelConfig (model) for images [H, W, C] and num_classes, its initial
    weights from seed (or model.weights), mapping normalized images to class probabilities.
    Keras is seeded with seed first, so that a build that leaves its initializers unseeded is
    deterministic too. ValueError naming the problem and its fix."""
    from augcompare.augment.backend import keras
    input_shape = tuple(int(n) for n in input_shape)
    if model.build:
        network = _user_network(model, input_shape, num_classes, seed, keras)
    elif model.name == "small_cnn":
        network = small_cnn(input_shape, num_classes, filters=model.filters, dense_units=model.dense_units,
                            dropout=model.dropout, seed=seed)
    elif model.name == "resnet20":
        from augcompare.models.resnet import resnet20
        network = resnet20(input_shape, num_classes, seed=seed)
    else:
        network = _application(model.name[len(KERAS_PREFIX):], input_shape, num_classes, seed, keras)
    if model.weights:  # into the network as built, before anything is put after it
        try:
            with warnings.catch_warnings(record=True) as caught:  # Keras warns on its way to an error
                warnings.simplefilter("always")
                network.load_weights(model.weights)
        except Exception as error:  # Keras raises ValueError, KeyError, OSError... on a file that does not fit
            message = " ".join(str(error).split())[:200]
            raise ValueError(f"model.weights {model.weights} does not fit this network ({type(error).__name__}: "
                             f"{message}); give weights saved from the same network for {list(input_shape)} images "
                             f"and {num_classes} classes") from None
        for warning in caught:  # loaded: what Keras had to say is worth seeing
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    outputs = getattr(network, "outputs", None) or [None]
    if model.from_logits or getattr(outputs[0], "dtype", "float32") != "float32":
        # Probabilities from here on, float32 under a mixed precision too (the loss needs them).
        inputs = keras.Input(shape=input_shape)
        top = keras.layers.Activation("softmax" if model.from_logits else "linear", dtype="float32")
        network = keras.Model(inputs, top(network(inputs)), name=network.name)
    return network


def _user_network(model, input_shape, num_classes, seed, keras):
    from augcompare.augment.functions import load_function
    try:
        build = load_function(model.build)
    except ValueError as error:
        raise ValueError(f"model.build: {error}") from None
    keras.utils.set_random_seed(seed)
    try:
        network = build(input_shape, num_classes, seed)
    except Exception as error:
        message = " ".join(str(error).split())[:200]
        raise ValueError(f"model.build {model.build} failed for input_shape={input_shape}, "
                         f"num_classes={num_classes}: {type(error).__name__}: {message}") from None
    if not isinstance(network, keras.Model):
        raise ValueError(f"model.build {model.build} returned {type(network).__name__}, not a keras.Model; return "
                         "keras.Model(inputs, outputs) (uncompiled)")
    # Called at once: a subclassed model makes its weights on its first call, here from the
    # seeded state, as a build that makes them does.
    _outputs(network, f"model.build {model.build}", input_shape)
    return network


def _application(name, input_shape, num_classes, seed, keras):
    application = getattr(keras.applications, name, None)
    if not callable(application) or name[0].islower():
        known = [n for n in dir(keras.applications) if n[0].isupper()]
        raise ValueError(f"model.name = \"{KERAS_PREFIX}{name}\": keras.applications has no {name}; choose one of "
                         f"{', '.join(known)}")
    options = {}
    if "include_preprocessing" in inspect.signature(application).parameters:
        options["include_preprocessing"] = False  # the harness normalizes (train.normalize)
    keras.utils.set_random_seed(seed)
    try:
        return application(weights=None, input_shape=input_shape, classes=num_classes, include_top=True, **options)
    except ValueError as error:
        message = " ".join(str(error).split())[:200]
        raise ValueError(f"model.name = \"{KERAS_PREFIX}{name}\" does not take {input_shape[0]}x{input_shape[1]}x"
                         f"{input_shape[2]} images ({message}); raise data.image_size or choose a network for small "
                         "images (resnet20, small_cnn)") from None


def check_network(model, input_shape, num_classes, seed):
    """Builds the network twice from seed and checks it: it takes [H, W, C] images, returns
    [num_classes] probabilities, and two builds from one seed start from the same weights (so
    that every arm of a seed starts from them). Returns (parameters, forward FLOPs per image).
    ValueError naming the problem and its fix."""
    network = build_network(model, input_shape, num_classes, seed)
    what = f"model.build {model.build}" if model.build else f"model.name = {model.name!r}"
    outputs = _outputs(network, what, input_shape)
    if isinstance(outputs, (list, tuple, dict)) or tuple(outputs.shape) != (2, num_classes):
        shape = [list(o.shape) for o in outputs] if isinstance(outputs, (list, tuple)) else (
            "a dict" if isinstance(outputs, dict) else list(outputs.shape))
        raise ValueError(f"{what} returns {shape} for a batch of 2 images; it must return one output of shape "
                         f"[{num_classes}] per image (num_classes = {num_classes} here)")
    again = build_network(model, input_shape, num_classes, seed)
    first, second = network.get_weights(), again.get_weights()
    if len(first) != len(second) or any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, second)):
        raise ValueError(f"{what} builds different initial weights from the same seed; pairing needs a deterministic "
                         "build: pass seed to every initializer (and Dropout), or draw from Keras' seeded state")
    return network.count_params(), forward_flops(network)


def _outputs(network, what, input_shape):
    """The network's outputs for a batch of 2 zero images of input_shape; ValueError where it
    cannot take them."""
    try:
        return network(np.zeros((2, *input_shape), np.float32), training=False)
    except Exception as error:
        message = " ".join(str(error).split())[:200]
        raise ValueError(f"{what} does not take the data's images of shape {list(input_shape)}: "
                         f"{type(error).__name__}: {message}; build the model for input_shape") from None


def cost(model, input_shape, num_classes):
    """(parameters, training FLOPs per image: 3 x the forward pass) of the network, checked as
    check_network does. The default small CNN is counted without Keras."""
    if is_default_small_cnn(model):
        return (small_cnn_parameters(input_shape, num_classes, model.filters, model.dense_units),
                training_flops(input_shape, num_classes, model.filters, model.dense_units))
    parameters, forward = check_network(model, input_shape, num_classes, seed=0)
    return parameters, 3 * forward


def forward_flops(network):
    """Floating-point operations of the forward pass of one image through a Keras model, counted
    from its layers' weights and output shapes (a multiply-add is 2): convolutions of every kind
    (1D, 2D, 3D, depthwise, separable, transposed), dense layers, and normalization layers
    (NORMALIZATION_FLOPS per element); nested models are walked through. Layers without weights
    (activations, pooling, additions) are not counted, nor attention's products of activations;
    a layer whose output shape is unknown (inside a subclassed model) counts 2 per weight."""
    from augcompare.augment.backend import keras
    total = 0
    for layer, inputs, outputs in _calls(network, keras):
        total += _layer_flops(layer, inputs, outputs, keras)
    return int(total)


def _calls(network, keras):
    """(layer, input shapes, output shapes) of every call of a leaf layer in network; a layer
    whose calls are unknown has None shapes."""
    from keras.src.ops.function import make_node_key
    if isinstance(network, keras.Sequential) and getattr(network, "_functional", None) is not None:
        network = network._functional  # a built Sequential keeps its graph there
    if isinstance(network, keras.layers.InputLayer):
        return
    if not isinstance(network, keras.Model) or not hasattr(network, "_nodes"):  # a subclassed model or layer
        children = [sub for sub in network._flatten_layers(include_self=False, recursive=False)]
        if not children:
            yield network, None, None
        for child in children:
            yield from _calls(child, keras)
        return
    for layer in network.operations:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        nodes = [node for index, node in enumerate(layer._inbound_nodes)
                 if make_node_key(layer, index) in network._nodes]
        if isinstance(layer, keras.Model):
            for _ in nodes or [None]:
                yield from _calls(layer, keras)
            continue
        for node in nodes:
            yield (layer, [tuple(t.shape) for t in node.input_tensors], [tuple(t.shape) for t in node.outputs])


def _size(shape):
    """Elements per image of a batch shape (None, ...)."""
    return math.prod(int(n) for n in shape[1:])


def _layer_flops(layer, inputs, outputs, keras):
    weights = getattr(layer, "weights", None)  # a keras.ops operation in a functional graph has none
    if not weights:
        return 0
    layers = keras.layers
    if outputs is None:
        return 2 * sum(math.prod(w.shape) for w in weights if w.trainable)
    out = outputs[0]
    if isinstance(layer, (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization,
                          layers.UnitNormalization)):
        return NORMALIZATION_FLOPS * _size(out)
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)):
        return 2 * math.prod(inputs[0][1:-1]) * math.prod(layer.kernel.shape)  # each input pixel, whole kernel
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        return 2 * math.prod(out[1:-1]) * (math.prod(layer.depthwise_kernel.shape)
                                            + math.prod(layer.pointwise_kernel.shape))
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return 2 * math.prod(out[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        return 2 * math.prod(out[1:-1]) * math.prod(layer.kernel.shape)  # each output pixel, whole kernel
    if isinstance(layer, layers.Dense):
        return 2 * math.prod(out[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, layers.EinsumDense):  # each input element meets a kernel row per output unit
        return 2 * _size(inputs[0]) * math.prod(layer.kernel.shape) // max(1, int(inputs[0][-1]))
    # Another layer with weights (an embedding, a layer of the user's): 2 per weight and position.
    positions = math.prod(out[1:-1]) if len(out) > 2 else 1
    return 2 * positions * sum(math.prod(w.shape) for w in weights if w.trainable)
