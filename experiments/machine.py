"""This process's machine and the settings the harness gives it: the cores it may run on, the
TensorFlow thread count (the user's TF_NUM_INTRAOP_THREADS, or set before TensorFlow's first op),
the CPU and its instruction sets, and oneDNN.

oneDNN's kernels are switched on (TF_ENABLE_ONEDNN_OPTS=1) as the harness is imported
(experiments/__init__.py), before it loads TensorFlow, unless the user has set that variable:
TensorFlow 2.21 enables them by default only on CPUs with AVX-512 VNNI/BF16 or AMX and otherwise
falls back to its Eigen kernels, about 2x slower on the small CNN on an AVX-512 machine. The
user's value always wins (0 gives Eigen). It is read once, when TensorFlow loads: a process that
loaded TensorFlow before the harness keeps what it had, and kernels() says what that was.
Importing augcompare.augment alone (DataGenerator, Augmentation) changes none of this.

Only kernels() and set_threads() load TensorFlow: a run plans its worker processes from the cores
before it loads TensorFlow itself.
"""

import os

ONEDNN_DEFAULT = "1"


def use_onednn():
    """TF_ENABLE_ONEDNN_OPTS=1 unless the user has set it (read when TensorFlow loads)."""
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", ONEDNN_DEFAULT)


def lean_keras():
    """In a process of the harness's own, before TensorFlow loads: Keras loads without the
    integrations no job uses (augment.backend's KERAS_EXTRAS): a third less of the start of each
    process that trains (docs: Speed). Inherited by its subprocesses."""
    os.environ["AUGCOMPARE_LEAN_KERAS"] = "1"


def available_cores():
    """The cores this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def users_threads():
    """The thread count the user set with TF_NUM_INTRAOP_THREADS, which a worker keeps (as
    TensorFlow does in any process); 0 where it is unset."""
    value = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    return int(value) if value.isdigit() else 0


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
    from augcompare.augment.backend import tf
    return {"onednn": onednn_enabled(), "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
            "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"), "cpu": cpu(), "cores": available_cores(),
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            **{name: os.environ.get(name) for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}}


def set_threads(threads):
    """TensorFlow's intra- and inter-op thread counts, before its first op (a worker's share of
    the cores). False when TensorFlow has already started and keeps its own."""
    from augcompare.augment.backend import tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return True
