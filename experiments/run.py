"""A run: the whole experiment. It plans the jobs (every arm for every seed), has the arms checked
and the preview grid drawn where TensorFlow runs (experiments.job.set_up), hands the jobs to an
executor and is the only writer of history.csv and runs.json: as each job ends, its rows and
record are merged in a fixed order (seeds in order, arms in file order), so the files end the
same whatever the executor and the order jobs end in.

For every seed every arm starts from the same initial weights (the seed's first job writes them
to weights/) and sees the same sample order, so the augmentation is the only difference between
arms.

Run directory: config.toml, started.json (what the run started with, experiments.started),
environment.json, data.json (what the data set holds and what was
skipped preparing it), history.csv, runs.json (the ended jobs with their test results, and the
two-stage design), summary.json, summary.md, accuracy.png, loss.png, ablation.png, pairs.png (three
arms or more), strength.png (a sweep), augmentations.png, preview_samples.npy,
weights/initial-seed<S>.weights.h5, jobs/<arm>-seed<S>/ (while a job is unfinished),
best/<arm>-seed<S>.keras (train.save_best), tensorboard/ (train.tensorboard), mlflow.json
(track.mlflow: the MLflow ids, experiments.tracking), and .lock, which the running process holds.

Nothing trained is lost: a job's rows and checkpoint reach the disk after every epoch, so
`augcompare run --resume RUN_DIR` continues a run killed at any moment and ends with the files an
uninterrupted run would have written.
"""

import contextlib
import functools
import hashlib
import importlib.util
import platform
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from augcompare.augment.params import arm_title, augments, parse_function
from augcompare.experiments import config as config_mod
from augcompare.experiments import gpus as gpus_mod
from augcompare.experiments import plots, report, stats, timing, tracking
from augcompare.experiments import started as started_with
from augcompare.experiments.data import load_dataset
from augcompare.experiments.errors import Interrupted, RunStopped, UserError
from augcompare.experiments.executors import make_executor, memory_bytes, plan
from augcompare.experiments.files import DirectoryLock, read_json, write_json, write_text
from augcompare.experiments.history import HistoryWriter, read_history
from augcompare.experiments.jobfiles import (
    CHECKPOINT,
    ROWS,
    Job,
    Setup,
    check_record,
    checkpoint_epochs,
    job_folder,
    read_record,
)
from augcompare.experiments.processes import DeferredSignals
from augcompare.experiments.progress import RunProgress
from augcompare.models import networks

# TensorFlow (augment.backend, and the modules that build models: training, job, preview) is
# imported only where it is used: a run loads its data and starts its job workers first, and where
# they train its jobs it loads none itself (a TensorFlow load is about 5 s of a core), so the cores
# load the workers'.

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESTART = "start the run again with augcompare run RUN_DIR/config.toml"


def new_run_dir(parent, run_id=None):
    """A fresh directory parent/<run_id or YYYYmmdd-HHMMSS>; never an existing one."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {parent} ({error.strerror}); choose another --out") from None
    if run_id:
        try:
            (parent / run_id).mkdir()
        except FileExistsError:
            raise UserError(f"{parent / run_id} exists; remove it or choose another --run-id") from None
        except OSError as error:
            raise UserError(f"cannot create {parent / run_id} ({error.strerror}); choose another --out") from None
        return parent / run_id
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        candidate = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()  # atomic: two runs in the same second get different directories
            return candidate
        except FileExistsError:
            continue
        except OSError as error:
            raise UserError(f"cannot create {candidate} ({error.strerror}); choose another --out") from None
    raise UserError(f"too many runs named {stamp} in {parent}")


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


class Signalled(BaseException):
    """SIGINT or SIGTERM, raised at the first safe point after the signal (between training steps,
    after an epoch's writes, as the executor waits for its workers). A BaseException, as
    KeyboardInterrupt is, so that no `except Exception` on the way (Keras' callbacks, a user's
    function) takes the stop for an error of its own. StopOnSignal turns it into RunStopped as it
    leaves the run."""

    def __init__(self, number):
        super().__init__(number)
        self.number = number


class StopOnSignal(DeferredSignals):
    """While active (in the main thread), SIGINT and SIGTERM stop the run at the next safe point:
    RunStopped leaves the block. Inside protected() the signal waits for the inner block to end; one
    that no safe point saw stops the run as the block ends."""

    CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self, run_dir):
        super().__init__(self.CODES, Signalled)
        self.run_dir = run_dir

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.install()
        return self

    def __exit__(self, kind, error, traceback):
        self.restore()
        if isinstance(error, Signalled):
            raise self._stopped(error.number) from None
        if error is None and self.pending is not None:
            raise self._stopped(self.pending)

    def _stopped(self, number):
        name = signal.Signals(number).name
        return RunStopped(f"stopped by {name}; every finished epoch is saved. Continue with: "
                          f"augcompare run --resume {self.run_dir}", self.run_dir, self.CODES[number])


def read_runs(run_dir):
    """runs.json: (arm, seed) -> record of each ended job, and the two-stage design (or None).
    A job that is not there has not ended."""
    path = Path(run_dir) / "runs.json"
    if not path.is_file():
        return {}, None
    document = read_json(path, RESTART)
    try:
        records = {(record["arm"], record["seed"]): check_record(record) for record in document["jobs"]}
        design = document.get("design")
        if design is not None and not (isinstance(design.get("seeds"), list)
                                       and all(isinstance(seed, int) for seed in design["seeds"])
                                       and isinstance(design.get("pilot_seeds"), list)
                                       and isinstance(design.get("pilot_sd"), dict)
                                       and isinstance(design.get("planning_sd"), (int, float))):
            raise ValueError("the two-stage design lacks its seeds")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{path} lacks the fields of a run's job records ({error}); {RESTART}") from None
    return records, design


def ended_rows(run_dir, records):
    """(every row of history.csv, the rows of the jobs runs.json lists as ended: records), the
    latter checked against their records. Rows of a job runs.json does not list are a merge cut
    short (history.csv is written first): the job's own folder still holds them and its record.
    Anything else is damage, a UserError."""
    history_path = Path(run_dir) / "history.csv"
    rows = read_history(history_path, appended=False)
    orphans = sorted({(row["arm"], row["seed"]) for row in rows} - set(records))
    for arm, seed in orphans:
        if not (job_folder(run_dir, arm, seed) / "record.json").is_file():
            raise UserError(f"{history_path} holds rows of {arm} seed {seed}, which runs.json does not "
                            f"list{' (runs.json is missing)' if not records else ''}; restore runs.json "
                            f"from a copy or {RESTART}")
    kept = [row for row in rows if (row["arm"], row["seed"]) in records]
    epochs = {key: [] for key in records}
    for row in kept:
        epochs[row["arm"], row["seed"]].append(row["epoch"])
    for key, record in records.items():
        if len(epochs[key]) != record["epochs"]:
            raise UserError(f"{history_path} holds {len(epochs[key])} rows of {key[0]} seed {key[1]} "
                            f"but runs.json says {record['epochs']} epochs; restore both files from a copy "
                            f"or {RESTART}")
        if sorted(epochs[key]) != list(range(1, record["epochs"] + 1)):
            raise UserError(f"{history_path} holds epochs {sorted(epochs[key])} of {key[0]} seed "
                            f"{key[1]}, not 1 to {record['epochs']}; restore it from a copy or {RESTART}")
    return rows, kept


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


class Run:
    """Plans, hands out and merges the jobs of one run directory (held locked by this process)."""

    def __init__(self, run_dir, experiment, dataset, log, per_seed, threads=None, tracker=None, quiet=False):
        self.run_dir, self.experiment, self.dataset = Path(run_dir), experiment, dataset
        self.log, self.per_seed = log, per_seed
        self.quiet = quiet  # the plan, a progress bar and the answer: no line per epoch or job
        self.arms = list(experiment.arms)
        self.baseline = stats.baseline_arm(experiment.arms, augments, experiment.analysis.baseline)
        self.candidates = candidate_seeds(experiment)
        self.history_path = self.run_dir / "history.csv"
        self.records, self.design = read_runs(self.run_dir)
        self.history = []
        self.progress = None
        self.signals = None
        self.threads = threads  # the TensorFlow threads per job the run started with; None: choose now
        self.tracker = tracker  # experiments.tracking.Tracker, or None: untracked
        self.gpus = []  # this machine's GPUs (experiments.gpus.GPU), found by executor_plan

    # -- what is on disk ---------------------------------------------------------------------

    def order(self, row_or_key):
        arm, seed = (row_or_key["arm"], row_or_key["seed"]) if isinstance(row_or_key, dict) else row_or_key
        return (self.candidates.index(seed) if seed in self.candidates else len(self.candidates), seed,
                self.arms.index(arm) if arm in self.arms else len(self.arms))

    def load(self):
        """Reads history.csv back, keeping the rows of ended jobs (a job that had not ended is
        repeated from its own folder), and merges jobs that ended after the run last wrote."""
        if self.records and not self.history_path.is_file():
            raise UserError(f"{self.history_path} is missing but runs.json lists {len(self.records)} ended jobs; "
                            f"restore it from a copy or {RESTART}")
        if self.history_path.is_file():
            rows, kept = ended_rows(self.run_dir, self.records)
            self.history = sorted(kept, key=lambda row: (self.order(row), row["epoch"]))
            if len(kept) != len(rows):
                HistoryWriter(self.history_path).rewrite(self.history)
        for arm, seed in list(self.records):
            shutil.rmtree(job_folder(self.run_dir, arm, seed), ignore_errors=True)  # merged before a kill
        jobs_dir = self.run_dir / "jobs"
        if jobs_dir.is_dir():
            for folder in sorted(jobs_dir.iterdir()):
                record = read_record(folder) if folder.is_dir() else None
                if record is not None:
                    self.merge(self.job(record["arm"], record["seed"]), record)

    def rows_kept(self, arm, seed):
        """Epochs an unfinished job has already trained (its rows), so progress counts the rest."""
        path = job_folder(self.run_dir, arm, seed) / ROWS
        try:
            return len(read_history(path)) if path.is_file() else 0
        except UserError:
            return 0  # the job itself reports the damage when it starts

    def checkpointed_rows(self):
        """(arm, seed) -> the checkpointed rows of each unfinished job (what its folder keeps)."""
        kept = {}
        for path in sorted((self.run_dir / "jobs").glob(f"*/{ROWS}")):
            try:
                rows = read_history(path)[:checkpoint_epochs(path.parent / CHECKPOINT, "")]
            except UserError:
                continue  # the job itself reports the damage when it starts
            if rows:
                kept[rows[0]["arm"], rows[0]["seed"]] = rows
        return kept

    def begin_tracking(self):
        """The MLflow run begun or continued, with what earlier processes left unlogged."""
        recorded = self.run_dir / "environment.json"
        environment = read_json(recorded, "delete it") if recorded.is_file() else {}
        self.tracker.begin(config_mod.to_dict(self.experiment), environment if isinstance(environment, dict) else {},
                           self.experiment.arms, self.history, self.records, self.checkpointed_rows())

    def epochs_on_disk(self):
        """Epochs kept: the rows of ended jobs and those of unfinished jobs' folders."""
        folders = sorted((self.run_dir / "jobs").glob(f"*/{ROWS}"))
        return len(self.history) + sum(len(read_history(path)) for path in folders)

    def job(self, arm, seed):
        return Job(arm=arm, seed=seed, run_dir=str(self.run_dir), cache=str(self.dataset.path),
                   config=config_mod.to_dict(self.experiment))

    def merge(self, job, record):
        """Adds an ended job's rows and record to history.csv and runs.json, then removes its
        folder. The files are replaced atomically: a kill between them is repaired by load()."""
        recover = f"delete {job.folder} to train {job.arm} seed {job.seed} again"
        rows = read_history(job.folder / ROWS, recover) if (job.folder / ROWS).is_file() else []
        if len(rows) < record["epochs"]:
            raise UserError(f"{job.folder / ROWS} holds {len(rows)} rows but its record says {record['epochs']} "
                            f"epochs; {recover}")
        key = (job.arm, job.seed)
        with self._protected(), timing.span("run: merging job files"):
            self.records[key] = record
            self.history = sorted([row for row in self.history if (row["arm"], row["seed"]) != key]
                                  + rows[:record["epochs"]], key=lambda row: (self.order(row), row["epoch"]))
            HistoryWriter(self.history_path).rewrite(self.history)
            self.write_runs()
            shutil.rmtree(job.folder, ignore_errors=True)

    def write_runs(self):
        jobs = [self.records[key] for key in sorted(self.records, key=self.order)]
        write_json(self.run_dir / "runs.json", {"jobs": jobs, "design": self.design})

    def _protected(self):
        return self.signals.protected() if self.signals else contextlib.nullcontext()

    # -- planning and running ----------------------------------------------------------------

    def seeds(self):
        """The seeds to run now: the list, or the pilot and then the design's seeds."""
        analysis = self.experiment.analysis
        if not analysis.target_half_width:
            return self.candidates
        if self.design is None:
            return self.candidates[:analysis.pilot_seeds]
        return self.design["seeds"]

    def primary_values(self, arm, seeds):
        values = {}
        for seed in seeds:
            record = self.records.get((arm, seed))
            rows = [row for row in self.history if (row["arm"], row["seed"]) == (arm, seed)]
            if record and record["status"] != "failed" and rows:
                metrics = stats.job_metrics(rows, record)
                if self.experiment.analysis.primary in metrics:
                    values[seed] = metrics[self.experiment.analysis.primary]
        return values

    def plan_second_stage(self):
        """Stein's two-stage design: from the pilot's paired standard deviations (the largest over
        the comparisons analysis.comparisons names: each arm against the baseline, or every pair),
        the seeds that reach analysis.target_half_width, capped by max_seeds."""
        analysis = self.experiment.analysis
        pilot = self.candidates[:analysis.pilot_seeds]
        scale = 100.0  # the design's half-width is in points
        pilot_sd, pairs = {}, []
        against_baseline = self.baseline is not None and analysis.comparisons == "baseline"
        for arm, other in stats.compared_pairs(self.arms, self.baseline, analysis.comparisons):
            values, base = self.primary_values(arm, pilot), self.primary_values(other, pilot)
            shared = [seed for seed in pilot if seed in values and seed in base]
            # A failed pilot job leaves fewer pairs, and fewer degrees of freedom.
            if len(shared) >= 2:
                key = arm if against_baseline else f"{arm} - {other}"
                pilot_sd[key] = float(np.std([values[s] - base[s] for s in shared], ddof=1))
                pairs.append(len(shared))
        if not pilot_sd:
            paired_with = f"paired with {self.baseline}" if against_baseline else "paired with another arm"
            raise UserError(f"the two-stage design cannot plan the seeds: no arm has two pilot seeds {paired_with} "
                            f"(the failed jobs are in {self.run_dir / 'runs.json'}); fix what made "
                            "them fail, or list train.seeds and leave analysis.target_half_width at 0")
        planning_sd = max(pilot_sd.values())
        pilot_pairs = min(pairs)
        uncapped = stats.stein_seeds(planning_sd * scale, pilot_pairs, analysis.target_half_width, 10**9)
        needed = min(max(uncapped, len(pilot)), len(self.candidates))
        self.design = {"target_half_width": analysis.target_half_width, "pilot_seeds": pilot,
                       "pilot_pairs": pilot_pairs, "pilot_sd": pilot_sd, "planning_sd": planning_sd,
                       "seeds_needed": uncapped, "capped": needed < uncapped, "seeds": self.candidates[:needed]}
        if analysis.eliminate:
            # Racing: the seed count above comes from every pair's spread, whichever arms stop here.
            eliminated = stats.pilot_eliminations({arm: self.primary_values(arm, pilot) for arm in self.arms},
                                                  analysis.primary, analysis.eliminate_alpha)
            self.design.update(eliminate_alpha=analysis.eliminate_alpha, eliminated=eliminated)
        with self._protected():
            self.write_runs()
        self.log(f"two-stage design: the pilot's paired sd is {planning_sd * scale:.2f} points; "
                 f"{needed} seeds reach a half-width of {analysis.target_half_width:g} points"
                 + (f" (capped by analysis.max_seeds = {analysis.max_seeds})" if self.design["capped"] else ""))
        for arm, stop in self.design.get("eliminated", {}).items():
            self.log(f"eliminated: {arm} stops after {stop['seeds']} pilot seeds, worse than {stop['worse_than']} "
                     f"(paired t, Holm across every pair: p = {stop['p_holm']:.2g} < {analysis.eliminate_alpha:g})")
        if self.design.get("eliminated") and len(self.arms) - len(self.design["eliminated"]) < 2:
            self.log("eliminated: every arm but one; the run ends with the pilot (one arm alone compares with nothing)")

    def pending(self, seeds):
        """The jobs of these seeds not yet ended, but none of an arm the pilot eliminated, and none
        at all after the pilot where a single arm goes on (it would be compared with nothing)."""
        stopped = (self.design or {}).get("eliminated", {})
        if stopped and len(self.arms) - len(stopped) < 2:
            stopped = self.arms
        return [(arm, seed) for seed in seeds for arm in self.arms
                if (arm, seed) not in self.records and arm not in stopped]

    def run_stage(self, executor, seeds):
        pending = self.pending(seeds)
        if not pending:
            return
        epochs = self.experiment.train.epochs
        self.progress.add_jobs(len(pending), sum(epochs - self.rows_kept(arm, seed) for arm, seed in pending))
        jobs = [self.job(arm, seed) for arm, seed in pending]

        def on_epoch(job, row, stopped_early):
            if self.tracker is not None:
                self.tracker.epoch(job.arm, job.seed, row)
            self.progress.epoch(row, epochs, stopped_early)

        def on_done(job, record):
            self.merge(job, record)
            if self.tracker is not None:
                self.tracker.job_ended(job.arm, job.seed, record)
            rows = [row for row in self.history if (row["arm"], row["seed"]) == (job.arm, job.seed)]
            self.progress.job_done(record, skipped_epochs=epochs - len(rows))
        executor.run(jobs, on_epoch, on_done, self.signals.protected)

    def format_primary(self, record):
        primary = self.experiment.analysis.primary
        rows = [row for row in self.history if (row["arm"], row["seed"]) == (record["arm"], record["seed"])]
        value = stats.job_metrics(rows, record).get(primary) if rows else None
        if value is None:
            return f"{primary} n/a"
        return f"{primary} {value * 100:.1f}%" if stats.is_fraction(primary) else f"{primary} {value:.4f}"

    def model(self):
        """model_record of the run's network (checked by _data before the data was prepared)."""
        return model_record(self.experiment, *_network(self.experiment.model, tuple(self.dataset.image_shape),
                                                        len(self.dataset.class_names), _hashes(self.experiment)))

    def executor_plan(self):
        """(jobs at once, threads per job) for the jobs of the current stage (experiments.executors)."""
        pending = self.pending(self.seeds())
        per_image = self.model()["training_flops_per_image"]
        flops = per_image * len(self.dataset.train_labels) * self.experiment.train.epochs * len(pending)
        step_flops = per_image * self.experiment.train.batch_size
        self.gpus = gpus_mod.detect() if self.experiment.run.executor != "ray" else []
        return plan(self.experiment.run, len(pending), flops, self.threads, self.gpus, step_flops)

    def train(self, executor):
        """Trains every job that has not ended, then writes the summary and the figures.
        executor: the run's, started and set up (make_executor, set_up), which train closes."""
        try:
            self.load()
            if self.experiment.analysis.target_half_width and len(self.arms) < 2:
                raise UserError("analysis.target_half_width needs two arms or more, to plan the seeds from their "
                                "paired differences; add an arm (a baseline, without augmentation) or list "
                                "train.seeds")
            if self.tracker is not None:
                self.begin_tracking()
        except BaseException as error:
            executor.close()
            self.stop_tracking(type(error))
            raise
        threads = f"{executor.threads} TensorFlow thread{'s' if executor.threads > 1 else ''}"
        if executor.jobs_at_once > 1:
            self.log(f"{executor.jobs_at_once} jobs at once, each in its own process on {threads} (run.jobs_at_once)")
        else:
            self.log(f"{'each job a Ray task' if self.experiment.run.executor == 'ray' else 'one job at a time'} on "
                     f"{threads} (run.threads_per_job)")
        self.progress = RunProgress(0, 0, 0, self.format_primary, quiet=self.quiet)
        try:
            with StopOnSignal(self.run_dir) as self.signals:
                self.run_stage(executor, self.seeds())
                if self.experiment.analysis.target_half_width and self.design is None:
                    self.plan_second_stage()
                    self.run_stage(executor, self.seeds())
        except OSError as error:
            self.stop_tracking(RunStopped)
            raise RunStopped(f"cannot write {error.filename or 'the results'} ({error.strerror}); the "
                             f"{self.epochs_on_disk()} finished epochs are intact. Free space or fix the folder, then: "
                             f"augcompare run --resume {self.run_dir}", self.run_dir) from None
        except BaseException as error:
            self.stop_tracking(type(error))
            raise
        finally:
            self.progress.close()
            executor.close()
            self.signals = None
        jobs_dir = self.run_dir / "jobs"
        if jobs_dir.is_dir() and not any(jobs_dir.iterdir()):
            jobs_dir.rmdir()
        for staged in (self.run_dir / "weights").glob(".partial-*"):  # of a job killed as it wrote its seed's weights
            staged.unlink(missing_ok=True)
        self.log("")
        with timing.span("run: summary and figures"):
            self.log(write_outputs(self.run_dir, self.experiment, self.history, self.records, self.design,
                                   self.per_seed))
        if self.tracker is not None:
            self.tracker.finish(read_json(self.run_dir / "summary.json", "run augcompare plot RUN_DIR"))
        return self.run_dir

    def stop_tracking(self, kind):
        """The MLflow runs of a run stopped before its end: KILLED where it resumes as it is (a
        stop, a kill, a full disk), FAILED otherwise."""
        if self.tracker is not None:
            resumable = issubclass(kind, (RunStopped, KeyboardInterrupt))
            self.tracker.stop("KILLED" if resumable else "FAILED")


@functools.lru_cache(maxsize=8)
def _network(model, image_shape, num_classes, files):
    """(parameters, training FLOPs per image) of the network, checked (models.networks.cost: for
    any network but the default small CNN this process loads Keras and builds it), once per
    network, data shape and content of its file (files: _hashes')."""
    try:
        return networks.cost(model, image_shape, num_classes)
    except ValueError as error:
        raise UserError(str(error)) from None


def _hashes(experiment):
    return tuple(sorted(function_files(experiment).items()))


def _data(experiment):
    """The data set, checked against the experiment (without TensorFlow), and the network against
    the data's shape before the data is prepared."""
    if experiment.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("train.tensorboard = true needs the tensorboard package; pip install -e \".[tensorboard]\"")
    with timing.span("run: data"):
        dataset = load_dataset(experiment.data, check=lambda image_shape, num_classes: _network(
            experiment.model, image_shape, num_classes, _hashes(experiment)))
    check_dataset(experiment, dataset)
    return dataset


def interrupted(run_dir):
    """The RunStopped of a KeyboardInterrupt that reached the run outside StopOnSignal's handler
    (a notebook's interrupt in a thread that cannot install one, or before training starts):
    every file is written whole or renamed into place, so the run is resumable as after a kill."""
    return RunStopped(f"interrupted; every finished epoch is saved. Continue with: augcompare run --resume {run_dir}",
                      run_dir, 130)


def _data_lines(meta):
    """What preparing the data skipped or changed, for the run's output."""
    lines = []
    for reason, count in (meta.get("skipped") or {}).items():
        examples = (meta.get("skipped_examples") or {}).get(reason, [])
        lines.append(f"data: {count} item(s) skipped while preparing ({reason})"
                     + (f", e.g. {', '.join(examples[:3])}" if examples else ""))
    if meta.get("upsampled"):
        lines.append(f"data: {meta['upsampled']} image(s) were smaller than image_size and upsampled")
    return lines


def start(experiment, out_root="results", run_id=None, log=print, per_seed=False, quiet=False):
    """Trains every arm for every seed in a new run directory; returns its path. quiet: the plan,
    a progress bar and the answer, without a line per epoch or job."""
    experiment = config_mod.with_file_hashes(experiment, log)
    # The output folder is checked first: a mistake there must not wait for data preparation.
    run_dir = new_run_dir(Path(out_root) / experiment.name, run_id)
    lock = DirectoryLock(run_dir / ".lock", "augcompare run").acquire()
    executor = None
    try:
        tracker = tracking.connect(experiment, run_dir, log)  # an unreachable tracker stops the run before the data
        dataset = _data(experiment)
        run = Run(run_dir, experiment, dataset, log, per_seed, tracker=tracker, quiet=quiet)
        jobs_at_once, run.threads = run.executor_plan()
        # Started at once, so that the workers load TensorFlow while this process plans; where
        # jobs train side by side, this process loads none (a worker checks the arms and draws
        # the preview grid).
        executor = make_executor(experiment.run, jobs_at_once, run.threads, run.gpus)
        tensorflow = executor.set_up(Setup(str(dataset.path), config_mod.to_dict(experiment), str(run_dir)))
    except BaseException:
        try:
            if executor is not None:
                executor.close()
        finally:  # a second Ctrl-C while the workers stop still leaves no run directory
            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing but the lock and the preview grid is there
        raise
    try:
        started_with.write(run_dir, experiment)
        write_text(run_dir / "config.toml", config_mod.dumps(config_mod.to_dict(experiment)))
        write_json(run_dir / "environment.json", environment(experiment, jobs_at_once, run.threads, tensorflow,
                                                             run.model(), run.gpus))
        write_json(run_dir / "data.json", {**dataset.meta, "path": str(dataset.path)})
        seeds = candidate_seeds(experiment)
        seeds_text = (f"seeds {list(experiment.train.seeds)}" if not experiment.analysis.target_half_width else
                      f"{experiment.analysis.pilot_seeds} pilot seeds, then as many as a "
                      f"{experiment.analysis.target_half_width:g}-point half-width needs (at most {len(seeds)})")
        counts = {split: len(dataset.split(split)[1]) for split in ("train", "val", "test")}
        log(f"{experiment.name}: {counts['train']} train / {counts['val']} val / {counts['test']} test "
            f"{dataset.kind} of {', '.join(dataset.class_names)}; arms {', '.join(experiment.arms)}; {seeds_text}; "
            f"{experiment.train.epochs} epochs; primary metric {experiment.analysis.primary} -> {run_dir}")
        for line in plan_lines(experiment, counts["test"]) + [model_line(run.model())] + _data_lines(dataset.meta):
            log(line)
        if line := gpus_mod.plan_line(run.gpus, jobs_at_once, experiment.train.precision):
            log(line)
        if warning := precision_warning(experiment.train.precision, tensorflow):
            log(warning)
        executor, started = None, executor
        return run.train(started)
    except KeyboardInterrupt:
        raise interrupted(run_dir) from None
    finally:
        try:
            if executor is not None:  # stopped before training: train() closes the executor it is given
                executor.close()
        finally:
            lock.release()


def resume(run_dir, log=print, per_seed=False, overrides=(), quiet=False):
    """Continues an interrupted run: ended jobs are kept, the others continue from their last
    checkpointed epoch. overrides (--set's KEY=VALUE strings) may only add seeds (train.seeds
    grown, the run's seeds first): their jobs train, and the summary covers every seed. Any other
    change, in overrides or in config.toml since the run started, is a UserError naming it.
    quiet: as for start. Returns the run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.toml); give the directory that "
                        "`augcompare run` printed")
    lock = DirectoryLock(run_dir / ".lock", "augcompare run --resume").acquire()
    executor = None
    try:
        experiment = started_with.check(run_dir, overrides)
        tracker = tracking.connect(experiment, run_dir, log)
        dataset = _data(experiment)
        recorded_path = run_dir / "environment.json"
        recorded = read_json(recorded_path, "delete it: it is only compared with the environment now, to warn") \
            if recorded_path.is_file() else None
        threads = recorded_threads(recorded)  # a job's numbers may depend on it: kept
        run = Run(run_dir, experiment, dataset, log, per_seed, threads, tracker, quiet=quiet)
        jobs_at_once, run.threads = run.executor_plan()
        executor = make_executor(experiment.run, jobs_at_once, run.threads, run.gpus)
        tensorflow = executor.set_up(Setup(str(dataset.path), config_mod.to_dict(experiment)))
        log(f"{experiment.name}: resuming {run_dir}")
        if not (run_dir / started_with.STARTED).is_file():
            log(f"warning: {run_dir} has no {started_with.STARTED} (a run started before it was recorded, or it was "
                "deleted): config.toml is taken as what the run started with, unchecked")
        added = started_with.keep(run_dir, experiment)  # seeds added become the run's
        if added:
            log(f"seeds added: {', '.join(map(str, added))}; their {len(added) * len(experiment.arms)} jobs train now, "
                "and the summary covers every seed")
        if recorded_path.is_file():
            now = environment(experiment, None, run.threads, tensorflow, run.model(), run.gpus)
            now_kernels = {key: now["kernels"][key] for key in ("onednn", "ONEDNN_MAX_CPU_ISA", "cpu")}
            keys = ("python", "tensorflow", "keras", "numpy", "git_commit", "devices", "function_files", "model")
            changed = [key for key in keys if not isinstance(recorded, dict) or recorded.get(key) != now[key]]
            if isinstance(recorded, dict) and isinstance(recorded.get("kernels"), dict) and now_kernels != {
                    key: recorded["kernels"].get(key) for key in now_kernels}:
                changed.append("kernels")
            if changed:
                log(f"warning: {', '.join(changed)} differ from when the run started; the epochs trained now may "
                    "not match an uninterrupted run's to the last digit")
        if warning := precision_warning(experiment.train.precision, tensorflow):
            log(warning)
        executor, started = None, executor
        return run.train(started)
    except KeyboardInterrupt as error:
        if isinstance(error, Interrupted):  # while the data was prepared: it says what continues it
            raise
        raise interrupted(run_dir) from None
    finally:
        try:
            if executor is not None:  # stopped before training: train() closes the executor it is given
                executor.close()
        finally:
            lock.release()


def summary_of(run_dir, experiment, history, records, design):
    """(summary.json's content, summary.md's text) of a run, from its history rows and job records."""
    run_dir = Path(run_dir)
    data = read_json(run_dir / "data.json", "delete it to leave the noise floor out") if (
        run_dir / "data.json").is_file() else {}
    test_count = (data.get("counts") or {}).get("test") if isinstance(data, dict) else None
    analysis = experiment.analysis
    summary = stats.summarize(history, list(experiment.arms), experiment.train.epochs, records,
                              primary=analysis.primary, min_effect=analysis.min_effect,
                              baseline=stats.baseline_arm(experiment.arms, augments, analysis.baseline),
                              test_count=test_count, design=design, comparisons=analysis.comparisons,
                              sweeps=experiment.sweeps)
    summary = {"name": experiment.name, **summary}
    markdown = report.to_markdown(summary, experiment.name)
    environment_json = run_dir / "environment.json"
    recorded = read_json(environment_json, "delete it to leave the model out") if environment_json.is_file() else {}
    if isinstance(recorded, dict) and isinstance(recorded.get("model"), dict):
        summary["model"] = recorded["model"]
        title, _, rest = markdown.partition("\n\n")  # the network below the title
        markdown = f"{title}\n\n{model_line(recorded['model'])}\n\n{rest}"
    return summary, markdown


def write_outputs(run_dir, experiment, history, records, design, per_seed=False, out_dir=None):
    """summary.json, summary.md and the figures, from history rows and the job records, in
    out_dir (default: the run directory)."""
    summary, markdown = summary_of(run_dir, experiment, history, records, design)
    run_dir = Path(out_dir or run_dir)
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "summary.md", markdown)
    titles = {arm: arm_title(settings) for arm, settings in experiment.arms.items()}
    for metric in ("accuracy", "loss"):
        plots.curves_figure(history, titles, metric, run_dir / f"{metric}.png", per_seed)
    plots.differences_figure(summary, run_dir / "ablation.png")
    if "pairs" in summary:
        plots.pairs_figure(summary, run_dir / "pairs.png")
    if summary.get("sweeps"):
        plots.strength_figure(summary, run_dir / "strength.png")
    return markdown


def redraw(run_dir, per_seed=False):
    """Redraws every figure of a run directory from its saved history and samples."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.toml)")
    if not (run_dir / "history.csv").is_file():
        raise UserError(f"{run_dir} never trained an epoch (no history.csv), so there is nothing to plot; continue it "
                        f"with augcompare run --resume {run_dir}, or delete it")
    lock = DirectoryLock(run_dir / ".lock", "augcompare plot").acquire()  # a running run writes these files too
    try:
        return _redraw(run_dir, per_seed)
    finally:
        lock.release()


def _redraw(run_dir, per_seed):
    from augcompare.experiments import preview
    experiment = started_with.check(run_dir, command="augcompare plot")
    records, design = read_runs(run_dir)
    markdown = write_outputs(run_dir, experiment, read_history(run_dir / "history.csv"), records, design, per_seed)
    samples_path, labels_path = run_dir / "preview_samples.npy", run_dir / "preview_labels.npy"
    if samples_path.is_file() and labels_path.is_file():
        data = read_json(run_dir / "data.json", "delete it and redraw") if (run_dir / "data.json").is_file() else {}
        try:
            samples = np.load(samples_path, allow_pickle=False)
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UserError(f"{samples_path} or {labels_path} cannot be read ({error}); delete them to skip "
                            "the grid") from None
        preview.draw(samples, labels, tuple(data.get("class_names", ())), experiment.arms,
                     tuple(data.get("value_range", (0.0, 255.0))), run_dir / "augmentations.png")
    return markdown

