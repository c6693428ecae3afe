"""TensorFlow and Keras, imported quietly: every module of augcompare takes them from here.

TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()", oneDNN,
CUDA, CPU features) are written straight to file descriptor 2 while the libraries load, before
any log level applies, so the first import runs with that descriptor pointed at /dev/null. What
the process itself writes to stderr afterwards is untouched. tf.function's retracing warnings,
which normal use of the API (batches of another size, a new model per job) triggers, are dropped.

oneDNN's kernels are switched on (TF_ENABLE_ONEDNN_OPTS=1) before TensorFlow loads, unless the
user has set that variable: TensorFlow 2.21 enables them by default only on CPUs with AVX-512
VNNI/BF16 or AMX and otherwise falls back to its Eigen kernels, about 2x slower on the small CNN
on an AVX-512 machine. The user's value always wins (0 gives Eigen). It is read once, when
TensorFlow loads: a process that imported TensorFlow before augcompare keeps what it had, and
kernels() says what that was.
"""

import contextlib
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
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


if "tensorflow" not in sys.modules:
    with stderr_silenced():
        import keras
        import tensorflow
        tensorflow.config.list_physical_devices()  # device discovery writes its own lines
import keras  # noqa: E402,F811
import tensorflow as tf  # noqa: E402

from augcompare.augment.cores import available_cores  # noqa: E402

tf.get_logger().addFilter(_NoRetracingWarnings())

# The CPU features that decide which kernels TensorFlow and oneDNN run (and so the numbers).
CPU_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                "amx_bf16", "amx_fp16")


def cpu():
    """The CPU's model name and which of CPU_FEATURES it has (from /proc/cpuinfo; empty elsewhere)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model or None, "features": [name for name in CPU_FEATURES if name in flags]}


def onednn_enabled():
    """Whether this process's TensorFlow runs oneDNN's kernels (decided when it loaded); None
    where TensorFlow does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def kernels():
    """What decides this process's numbers besides the code: oneDNN on or off (and the variable
    that asked for it), the instruction sets oneDNN may use (ONEDNN_MAX_CPU_ISA, e.g. AVX2: unset,
    all the CPU has), the CPU and TensorFlow's thread counts (0: TensorFlow's default, every core,
    unless the TF_NUM_*_THREADS variables, also recorded, set them)."""
    return {"onednn": onednn_enabled(), "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"), "cpu": cpu(), "cores": available_cores(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            **{name: os.environ.get(name) for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}}


def set_threads(threads):
    """TensorFlow's intra- and inter-op thread counts, before its first op (a worker's share of
    the cores). False when TensorFlow has already started and keeps its own."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True


__all__ = ["keras", "tf", "stderr_silenced", "kernels", "set_threads"]
