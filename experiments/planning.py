"""What a run is to do, known before anything trains: its data checked against the experiment
and the network against the data (checked_data), the seeds it may use, the plan it prints
(plan_lines, model_line, data_lines), and the record of what can change its numbers
(environment.json: environment, model_record, function_files), which a resumption reads back
(recorded_threads)."""

import functools
import hashlib
import importlib.util
import platform
import subprocess
from pathlib import Path

import numpy as np

from augcompare.augment.params import augments, parse_function
from augcompare.experiments import stats, timing
from augcompare.experiments.data import load_dataset
from augcompare.experiments.errors import UserError
from augcompare.experiments.executors import memory_bytes
from augcompare.models import networks

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def function_files(experiment):
    """sha256 of each function file the arms run, so that a resumed run can tell it changed."""
    files = {}
    for text in [settings.get("function") for settings in experiment.arms.values()] + [experiment.model.build]:
        if text:
            module, _ = parse_function(text)
            if module.endswith(".py") and Path(module).is_file():
                files[module] = hashlib.sha256(Path(module).read_bytes()).hexdigest()
    return files


def model_record(experiment, parameters, flops_per_image):
    """The network as environment.json and the summary record it: where it comes from (a name, or
    build's file or module, and the weights file with its sha256), parameters and training FLOPs
    per image (3 x the forward pass)."""
    model = experiment.model
    record = {"network": model.build or model.name, "parameters": parameters,
              "training_flops_per_image": flops_per_image}
    if model.weights:
        record["weights"] = model.weights
        record["weights_sha256"] = (hashlib.sha256(Path(model.weights).read_bytes()).hexdigest()
                                    if Path(model.weights).is_file() else None)
    return record


def model_line(record):
    """The plan's line about the network."""
    flops = record["training_flops_per_image"]
    cost = f"{flops / 1e6:,.1f} MFLOPs" if flops >= 1e5 else f"{flops:,} FLOPs"
    name = record["network"].rsplit("/", 1)[-1]
    return f"model: {name}, {record['parameters']:,} parameters, {cost} to train on an image"


def environment(experiment, jobs_at_once, threads, tensorflow, model=None, gpus=()):
    """Versions, devices, the kernels (oneDNN or Eigen, the CPU's instruction sets, thread counts),
    the precision, the distribution strategy, how many jobs trained side by side on how many
    threads each (and the machine's memory that plan used), the project's git commit and the
    function files' hashes, recorded with every run: all of them can change the numbers.
    tensorflow: what experiments.job.set_up answered, in the process where the jobs' TensorFlow
    runs. model: model_record's. gpus: the machine's (experiments.gpus.GPU): each one's model,
    memory, driver and compute capability."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    train = experiment.train
    return {"python": platform.python_version(), "tensorflow": tensorflow["tensorflow"], "keras": tensorflow["keras"],
            "numpy": np.__version__, "platform": platform.platform(), "git_commit": commit,
            "devices": tensorflow["devices"], "strategy": train.strategy, "replicas": tensorflow["replicas"],
            "kernels": tensorflow["kernels"], "precision": train.precision,
            "executor": experiment.run.executor, "jobs_at_once": jobs_at_once, "threads_per_job": threads,
            "memory_bytes": memory_bytes(), "function_files": function_files(experiment), "model": model,
            "gpus": [gpu.record() for gpu in gpus]}


def recorded_threads(recorded):
    """The TensorFlow threads per job a run started with (environment.json's content), which its
    resumption keeps on any executor; None where it is not recorded. 0, written before the count
    was resolved, meant TensorFlow's default in the run's process: its TF_NUM_INTRAOP_THREADS,
    else its cores, as its kernels recorded them."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("threads_per_job"), int) \
            or recorded["threads_per_job"] < 0:
        return None
    if recorded["threads_per_job"] > 0:
        return recorded["threads_per_job"]
    kernels = recorded.get("kernels") if isinstance(recorded.get("kernels"), dict) else {}
    for value in (kernels.get("intra_op_threads"), kernels.get("TF_NUM_INTRAOP_THREADS"), kernels.get("cores")):
        if isinstance(value, int) and value > 0 or isinstance(value, str) and value.isdigit() and int(value) > 0:
            return int(value)
    return None


def precision_warning(precision, tensorflow):
    """Why a mixed precision may be slower here than float32, or None. tensorflow: what
    experiments.job.set_up answered."""
    if precision == "float32" or any(":GPU:" in device for device in tensorflow["devices"]):
        return None
    features = tensorflow["kernels"]["cpu"]["features"]
    if precision == "mixed_bfloat16" and not {"avx512_bf16", "amx_bf16"} & set(features):
        return ("warning: train.precision = \"mixed_bfloat16\" on a CPU without AVX512_BF16 or AMX: bfloat16 is "
                "emulated and likely slower than float32 here (README, Speed)")
    if precision == "mixed_float16":
        return ("warning: train.precision = \"mixed_float16\" is for GPUs; on a CPU float16 is emulated and slower "
                "than float32")
    return None


def check_dataset(experiment, dataset):
    """The data set against the experiment, before anything trains."""
    size = dataset.image_shape[0]
    if size != experiment.data.image_size:
        raise UserError(f"data.image_size = {experiment.data.image_size} but {dataset.path} holds {size} px images; "
                        f"set data.image_size = {size}")
    if len(dataset.class_names) < 2:
        raise UserError(f"{dataset.path} has {len(dataset.class_names)} class; a comparison needs at least 2")
    if dataset.kind == "values" and experiment.train.normalize == "rescale":
        low, high = dataset.value_range
        raise UserError(f"train.normalize = \"rescale\" divides by 255, for pixels; {dataset.path} holds values in "
                        f"[{low:g}, {high:g}]: use train.normalize = \"standardize\" or \"divmax\"")


def candidate_seeds(experiment):
    """The seeds a run may use, in order: train.seeds, and with the two-stage design the next
    integers after them, up to analysis.max_seeds."""
    seeds = list(experiment.train.seeds)
    if not experiment.analysis.target_half_width:
        return seeds
    candidate = max(seeds) + 1
    while len(seeds) < experiment.analysis.max_seeds:
        seeds.append(candidate)
        candidate += 1
    return seeds[:experiment.analysis.max_seeds]


def plan_lines(experiment, test_count=None):
    """What a run will train and compare, printed at its start: jobs (arms x seeds, sweeps
    included: a sweep of k values is k arms, so k jobs per seed), the sweeps and the comparisons,
    and a warning where the seeds or the test split (test_count images) cannot support a verdict."""
    analysis, arms = experiment.analysis, list(experiment.arms)
    epochs = experiment.train.epochs
    if analysis.target_half_width:
        most = len(candidate_seeds(experiment))
        jobs = (f"{len(arms)} arms x {analysis.pilot_seeds} pilot seeds = {len(arms) * analysis.pilot_seeds} jobs, "
                f"then {len(arms)} per further seed, at most {len(arms) * most} jobs ({most} seeds)")
    else:
        seeds = len(experiment.train.seeds)
        jobs = f"{len(arms)} arms x {seeds} seeds = {len(arms) * seeds} jobs"
    lines = [f"plan: {jobs} of {epochs} epochs"]
    if analysis.target_half_width and analysis.eliminate:
        every = len(arms) * (len(arms) - 1) // 2
        lines.append(f"eliminate: after the pilot, an arm shown worse than another (paired t-test, Holm across all "
                     f"{every} pairs, p < {analysis.eliminate_alpha:g}) trains no more seeds; the final verdicts run "
                     f"at {stats.final_alpha({'eliminate_alpha': analysis.eliminate_alpha}):g} (Bonferroni across the "
                     f"two looks: any false finding in the run stays under {stats.ALPHA:g})"
                     + (f"; the t-test, as the exact sign-flip test could never reach {analysis.eliminate_alpha:g} at "
                        f"{analysis.pilot_seeds} pilot seeds (its smallest p is "
                        f"{stats.smallest_sign_flip_p(analysis.pilot_seeds):.3g})"
                        if stats.smallest_sign_flip_p(analysis.pilot_seeds) >= analysis.eliminate_alpha else ""))
    for name, sweep in experiment.sweeps.items():
        values = ", ".join(f"{value:g}" for value in sweep["values"])
        lines.append(f"sweep {name}: {sweep['setting']} = {values} ({len(sweep['arms'])} arms: "
                     f"{', '.join(sweep['arms'])})")
    baseline = stats.baseline_arm(experiment.arms, augments, analysis.baseline)
    pairs = stats.compared_pairs(arms, baseline, analysis.comparisons)
    if len(arms) >= 2:
        every = len(arms) * (len(arms) - 1) // 2
        lines.append("compared: " + (f"each arm against {baseline} ({len(pairs)} comparisons, Holm across them)"
                                     if baseline is not None and analysis.comparisons == "baseline" else
                                     f"every pair ({len(pairs)} comparisons, Holm across them)"
                                     + ("" if baseline is not None else "; no baseline arm"))
                     + (f"; the ranking from all {every} pairs" if len(arms) >= 3 else ""))
    seeds, most = ((analysis.pilot_seeds, len(candidate_seeds(experiment))) if analysis.target_half_width
                   else (len(experiment.train.seeds), None))
    return lines + stats.design_warnings(seeds, analysis.primary, analysis.min_effect, test_count, experiment.arms,
                                         most)


@functools.lru_cache(maxsize=8)
def network_cost(model, image_shape, num_classes, files):
    """(parameters, training FLOPs per image) of the network, checked (models.networks.cost: for
    any network but the default small CNN this process loads Keras and builds it), once per
    network, data shape and content of its file (files: file_hashes')."""
    try:
        return networks.cost(model, image_shape, num_classes)
    except ValueError as error:
        raise UserError(str(error)) from None


def file_hashes(experiment):
    return tuple(sorted(function_files(experiment).items()))


def checked_data(experiment):
    """The data set, checked against the experiment (without TensorFlow), and the network against
    the data's shape before the data is prepared."""
    if experiment.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("train.tensorboard = true needs the tensorboard package; pip install -e \".[tensorboard]\"")
    with timing.span("run: data"):
        dataset = load_dataset(experiment.data, check=lambda image_shape, num_classes: network_cost(
            experiment.model, image_shape, num_classes, file_hashes(experiment)))
    check_dataset(experiment, dataset)
    return dataset


def data_lines(meta):
    """What preparing the data skipped or changed, for the run's output."""
    lines = []
    for reason, count in (meta.get("skipped") or {}).items():
        examples = (meta.get("skipped_examples") or {}).get(reason, [])
        lines.append(f"data: {count} item(s) skipped while preparing ({reason})"
                     + (f", e.g. {', '.join(examples[:3])}" if examples else ""))
    if meta.get("upsampled"):
        lines.append(f"data: {meta['upsampled']} image(s) were smaller than image_size and upsampled")
    return lines

