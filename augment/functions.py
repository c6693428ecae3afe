"""A user's own augmentation as part of an arm: `function = "my_augs.py:jitter"` (a file) or
`"package.module:jitter"`. Loading it runs that code, as any Python plugin does.

The function is called inside the compiled training step as name(images, seed): images float32
[B, H, W, C] in the data's range (pixels: [0, 255]), seed a shape-[2] int64 stateless seed (the
same seed must give the same output: use tf.random.stateless_* ops); it returns a tensor of the
same shape. TensorFlow ops only.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

from augcompare.augment.backend import tf
from augcompare.augment.params import parse_function


def load_function(text):
    """The callable named by "file.py:name" (an absolute or current-folder path) or
    "package.module:name"; ValueError naming what is missing."""
    module_name, attr = parse_function(text)
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"function file {path} does not exist")
        name = f"augcompare_user_{path.stem}_{abs(hash(str(path))):x}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as error:
                del sys.modules[name]
                raise ValueError(f"function file {path} failed to load: {type(error).__name__}: {error}") from None
        where = str(path)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"function module {module_name!r} cannot be imported ({error})") from None
        where = module_name
    function = getattr(module, attr, None)
    if not callable(function):
        found = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ValueError(f"{where} has no function {attr!r}; it defines: {', '.join(found) or 'no functions'}")
    return function


def check_function(function, text, image_shape, value_range=(0.0, 255.0)):
    """Calls the function once on a small batch of the data's shape, in a graph as training
    does; ValueError if it fails or returns another shape or dtype."""
    low, high = value_range
    images = tf.random.stateless_uniform([2, *image_shape], seed=[0, 0], minval=low, maxval=high)
    try:
        out = tf.function(function)(images, tf.constant([0, 0], tf.int64))
    except Exception as error:
        message = " ".join(str(error).split())[:300]
        raise ValueError(f"function {text} failed on a batch of shape {list(images.shape)}: "
                         f"{type(error).__name__}: {message}") from None
    if tuple(out.shape) != tuple(images.shape):
        raise ValueError(f"function {text} returned shape {list(out.shape)} for images of shape "
                         f"{list(images.shape)}; it must return the same shape")
    if out.dtype != tf.float32:
        raise ValueError(f"function {text} returned {out.dtype.name} images; it must return float32 (tf.cast the "
                         "result)")
