"""The cores this process may run on and the TensorFlow thread count its user asked for, without
loading TensorFlow: a run plans its worker processes from them before it loads TensorFlow itself."""

import os


def available_cores():
    """The cores this process may run on (its affinity, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def users_threads():
    """The thread count the user set with TF_NUM_INTRAOP_THREADS, which a worker keeps (as
    TensorFlow does in any process); 0 where it is unset."""
    value = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    return int(value) if value.isdigit() else 0
