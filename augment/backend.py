"""TensorFlow and Keras, imported quietly: every module of augcompare takes them from here.

TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()", oneDNN,
CUDA, CPU features) are written straight to file descriptor 2 while the libraries load, before
any log level applies, so the first import runs with that descriptor pointed at /dev/null. What
the process itself writes to stderr afterwards is untouched. tf.function's retracing warnings,
which normal use of the API (batches of another size, a new model per job) triggers, are dropped.

Nothing else of the process is changed here: the harness's own process settings (oneDNN, threads)
are experiments.machine's.
"""

import contextlib
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"


@contextlib.contextmanager
def stderr_silenced():
    """Points file descriptor 2 at /dev/null for the block (C and C++ code included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _NoRetracingWarnings(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


# Where they are installed, Keras imports the packages of integrations that training never uses:
# scikit-learn (its wrappers), pandas (DataFrames given to fit), IPython (its notebook file editor)
# and matplotlib.pyplot (image galleries), about a third of the cost of loading TensorFlow and
# Keras. A process of the harness's own (the command line, a job worker, a Ray job) sets
# AUGCOMPARE_LEAN_KERAS=1 (experiments.machine.lean_keras) and Keras loads without them; each still
# imports as usual afterwards. A user's process loads Keras as it always does.
KERAS_EXTRAS = ("sklearn", "pandas", "IPython", "matplotlib.pyplot")


@contextlib.contextmanager
def extras_hidden():
    """Makes `import` of each of KERAS_EXTRAS not yet imported fail (ImportError) for the block."""
    hidden = [name for name in KERAS_EXTRAS if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


if "tensorflow" not in sys.modules:
    lean = os.environ.get("AUGCOMPARE_LEAN_KERAS") == "1" and "keras" not in sys.modules
    with stderr_silenced(), (extras_hidden() if lean else contextlib.nullcontext()):
        import keras
        import tensorflow
        tensorflow.config.list_physical_devices()  # device discovery writes its own lines
import keras  # noqa: E402,F811
import tensorflow as tf  # noqa: E402

tf.get_logger().addFilter(_NoRetracingWarnings())

__all__ = ["keras", "tf", "stderr_silenced"]
