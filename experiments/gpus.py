"""This machine's NVIDIA GPUs, found without loading TensorFlow (the driver plans its workers
before any TensorFlow loads: experiments.executors), and how many jobs each one takes.

Found with `nvidia-smi`, narrowed by CUDA_VISIBLE_DEVICES as CUDA narrows it; none where there is
no nvidia-smi, it fails, or CUDA_VISIBLE_DEVICES hides every GPU. Each job worker then sees its
one GPU only (CUDA_VISIBLE_DEVICES=<its GPU>, set before its TensorFlow loads) and takes its
memory as it grows (TF_FORCE_GPU_ALLOW_GROWTH=true), so that several workers can share a GPU.
"""

import dataclasses
import os
import subprocess

QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,driver_version,compute_cap",
         "--format=csv,noheader,nounits"]

# Jobs side by side on one GPU. A small CNN's training step is a few hundred kernel launches and a
# Keras step's Python dispatch, about GPU_STEP_OVERHEAD seconds whatever the model does, beside its
# arithmetic at about GPU_FLOPS: a step of fewer than GPU_STEP_OVERHEAD * GPU_FLOPS floating-point
# operations leaves the GPU idle most of the time, and another job's steps fill the gaps. Argued
# from those two figures, not measured (no GPU was at hand): the demo's step (2e9) is far below
# the crossover (6e10), so it takes MAX_JOBS_PER_GPU; a step above it takes 1.
GPU_STEP_OVERHEAD = 3e-3      # seconds of a step that are not arithmetic
GPU_FLOPS = 2e13              # floating-point operations per second a small CNN reaches
MAX_JOBS_PER_GPU = 4          # more rarely pays: the jobs then wait on each other's launches
GPU_JOB_MEMORY = 2 * 2**30    # GPU memory a job takes (CUDA context, TensorFlow's pool, the model)
FAST_FLOAT16 = (7, 0)         # compute capability with tensor cores: mixed_float16 pays from here


@dataclasses.dataclass(frozen=True)
class GPU:
    index: str                 # what CUDA_VISIBLE_DEVICES names it by (nvidia-smi's index)
    name: str                  # the model, e.g. "NVIDIA H100 80GB HBM3"
    memory_bytes: int          # its memory, total
    driver: str = ""           # the NVIDIA driver's version
    compute_capability: tuple = ()  # (major, minor); () where nvidia-smi does not say
    uuid: str = ""

    def record(self):
        """What environment.json records of it."""
        return {"name": self.name, "memory_bytes": self.memory_bytes, "driver": self.driver,
                "compute_capability": ".".join(map(str, self.compute_capability)) or None}


def parse(listing, visible=None):
    """The GPUs of nvidia-smi's QUERY output (one CSV line per GPU), those CUDA_VISIBLE_DEVICES
    (visible: its value, or None where unset) lets CUDA see, in its order."""
    gpus = []
    for line in listing.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 6 or not fields[0].isdigit():
            continue
        index, uuid, name, memory, driver, capability = fields
        major, _, minor = capability.partition(".")
        gpus.append(GPU(index=index, name=name, uuid=uuid, driver=driver,
                        memory_bytes=int(float(memory) * 2**20) if memory.replace(".", "").isdigit() else 0,
                        compute_capability=(int(major), int(minor)) if major.isdigit() and minor.isdigit() else ()))
    if visible is None:
        return gpus
    chosen = []
    for wanted in (item.strip() for item in visible.split(",")):
        match = [gpu for gpu in gpus if wanted in (gpu.index, gpu.uuid) or (wanted.startswith("GPU-") and
                                                                           gpu.uuid.startswith(wanted))]
        if not match:
            break  # CUDA stops at the first entry it cannot use ("", -1, a GPU that is not there)
        chosen.extend(gpu for gpu in match if gpu not in chosen)
    return chosen


def detect(environ=None):
    """This machine's GPUs as CUDA_VISIBLE_DEVICES shows them; [] where there are none (or no
    nvidia-smi to say)."""
    environ = os.environ if environ is None else environ
    try:
        result = subprocess.run(QUERY, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if result.returncode != 0:
        return []
    return parse(result.stdout, environ.get("CUDA_VISIBLE_DEVICES"))


def jobs_per_gpu(step_flops, gpu):
    """How many jobs train side by side on `gpu`, each taking steps of step_flops floating-point
    operations: as many as fill the GPU's idle time (GPU_STEP_OVERHEAD), up to MAX_JOBS_PER_GPU,
    as many as its memory holds."""
    fill = int(GPU_STEP_OVERHEAD * GPU_FLOPS // max(step_flops, 1.0))
    memory = int(gpu.memory_bytes // GPU_JOB_MEMORY) if gpu.memory_bytes else MAX_JOBS_PER_GPU
    return max(1, min(MAX_JOBS_PER_GPU, fill, memory))


def assign(count, gpus):
    """The GPU of each of `count` workers: round robin, so that the jobs spread evenly."""
    return [gpus[i % len(gpus)] for i in range(count)] if gpus else [None] * count


def worker_environment(gpu, environ=None):
    """The environment of a job worker on `gpu` (None: as this process's): it sees that GPU
    alone, and TensorFlow takes its memory as it grows instead of all of it at once."""
    environment = dict(os.environ if environ is None else environ)
    if gpu is not None:
        environment["CUDA_VISIBLE_DEVICES"] = gpu.uuid or gpu.index
        environment["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return environment


def plan_line(gpus, jobs_at_once, precision):
    """The plan's line about the GPUs; None without any."""
    if not gpus:
        return None
    names = sorted({gpu.name for gpu in gpus})
    each = -(-jobs_at_once // len(gpus))
    line = (f"GPUs: {len(gpus)} x {', '.join(names)}, up to {each} job{'s' if each > 1 else ''} on each "
            "(run.jobs_at_once)")
    if precision == "float32" and all(gpu.compute_capability >= FAST_FLOAT16 for gpu in gpus):
        line += "; they compute float16 fast: train.precision = \"mixed_float16\" would train faster (every arm alike)"
    return line
