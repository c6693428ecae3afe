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
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np

from augcompare.augment.params import augments
from augcompare.experiments import config as config_mod
from augcompare.experiments import gpus as gpus_mod
from augcompare.experiments import outputs, planning, stats, timing, tracking
from augcompare.experiments import started as started_with
from augcompare.experiments.errors import Interrupted, RunStopped, Signalled, Stop, UserError
from augcompare.experiments.executors import make_executor, plan
from augcompare.experiments.files import DirectoryLock, read_json, write_json, write_text
from augcompare.experiments.history import HistoryWriter, read_history
from augcompare.experiments.jobfiles import (
    CHECKPOINT,
    ROWS,
    Job,
    Setup,
    checkpoint_epochs,
    job_folder,
    read_record,
)
from augcompare.experiments.processes import DeferredSignals
from augcompare.experiments.progress import RunProgress

# TensorFlow (augment.backend, and the modules that build models: training, job, preview) is
# imported only where it is used: a run loads its data and starts its job workers first, and where
# they train its jobs it loads none itself (a TensorFlow load is about 5 s of a core), so the cores
# load the workers'.



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


class StopOnSignal(DeferredSignals):
    """While active (in the main thread), SIGINT and SIGTERM stop the run at the next safe point:
    RunStopped leaves the block. Inside protected() the signal waits for the inner block to end; one
    that no safe point saw stops the run as the block ends."""

    CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self, run_dir):
        super().__init__(self.CODES)
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


class Run:
    """Plans, hands out and merges the jobs of one run directory (held locked by this process)."""

    def __init__(self, run_dir, experiment, dataset, log, per_seed, threads=None, tracker=None, quiet=False):
        self.run_dir, self.experiment, self.dataset = Path(run_dir), experiment, dataset
        self.log, self.per_seed = log, per_seed
        self.quiet = quiet  # the plan, a progress bar and the answer: no line per epoch or job
        self.arms = list(experiment.arms)
        self.baseline = stats.baseline_arm(experiment.arms, augments, experiment.analysis.baseline)
        self.candidates = planning.candidate_seeds(experiment)
        self.history_path = self.run_dir / "history.csv"
        self.records, self.design = outputs.read_runs(self.run_dir)
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
                            f"restore it from a copy or {outputs.RESTART}")
        if self.history_path.is_file():
            rows, kept = outputs.ended_rows(self.run_dir, self.records)
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
        """model_record of the run's network (checked by planning.checked_data before the data was prepared)."""
        return planning.model_record(self.experiment, *planning.network_cost(self.experiment.model, tuple(self.dataset.image_shape),
                                                        len(self.dataset.class_names), planning.file_hashes(self.experiment)))

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
            self.log(outputs.write_outputs(self.run_dir, self.experiment, self.history, self.records, self.design,
                                   self.per_seed))
        if self.tracker is not None:
            self.tracker.finish(read_json(self.run_dir / "summary.json", "run augcompare plot RUN_DIR"))
        return self.run_dir

    def stop_tracking(self, kind):
        """The MLflow runs of a run stopped before its end: KILLED where it resumes as it is (a
        stop, a kill, a full disk), FAILED otherwise."""
        if self.tracker is not None:
            resumable = issubclass(kind, (Stop, KeyboardInterrupt))
            self.tracker.stop("KILLED" if resumable else "FAILED")


def interrupted(run_dir):
    """The RunStopped of a KeyboardInterrupt that reached the run outside StopOnSignal's handler
    (a notebook's interrupt in a thread that cannot install one, or before training starts):
    every file is written whole or renamed into place, so the run is resumable as after a kill."""
    return RunStopped(f"interrupted; every finished epoch is saved. Continue with: augcompare run --resume {run_dir}",
                      run_dir, 130)


class Hold:
    """What a start or a resume holds while it prepares a run: the run directory's lock, and the
    executor it started (executor) until train() hands it to the Run, which closes it. Leaving the
    block closes an executor not handed over and releases the lock. A new run's directory
    (new=True) is removed while nothing of the run is in it (kept() not yet called), and a stop
    there leaves as it came; once the run is kept, a Ctrl-C becomes the RunStopped that names the
    resume command (Interrupted, from preparing the data, says what continues it itself)."""

    def __init__(self, run_dir, command, new):
        self.run_dir, self.is_kept = Path(run_dir), not new
        self.lock = DirectoryLock(self.run_dir / ".lock", command).acquire()
        self.executor = None

    def kept(self):
        self.is_kept = True

    def train(self, run):
        executor, self.executor = self.executor, None
        return run.train(executor)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        try:
            if self.executor is not None:  # stopped before training: train() closes the executor it is given
                self.executor.close()
        finally:  # a second Ctrl-C while the workers stop still releases the lock and leaves no new directory
            try:
                self.lock.release()
            finally:
                if kind is not None and not self.is_kept:
                    shutil.rmtree(self.run_dir, ignore_errors=True)  # nothing but the lock and the preview grid
        if self.is_kept and kind is not None and issubclass(kind, KeyboardInterrupt) and \
                not issubclass(kind, Interrupted):
            raise interrupted(self.run_dir) from None
        return False


def start(experiment, out_root="results", run_id=None, log=print, per_seed=False, quiet=False):
    """Trains every arm for every seed in a new run directory; returns its path. quiet: the plan,
    a progress bar and the answer, without a line per epoch or job."""
    experiment = config_mod.with_file_hashes(experiment, log)
    # The output folder is checked first: a mistake there must not wait for data preparation.
    run_dir = new_run_dir(Path(out_root) / experiment.name, run_id)
    with Hold(run_dir, "augcompare run", new=True) as hold:
        tracker = tracking.connect(experiment, run_dir, log)  # an unreachable tracker stops the run before the data
        dataset = planning.checked_data(experiment)
        run = Run(run_dir, experiment, dataset, log, per_seed, tracker=tracker, quiet=quiet)
        jobs_at_once, run.threads = run.executor_plan()
        # Started at once, so that the workers load TensorFlow while this process plans; where
        # jobs train side by side, this process loads none (a worker checks the arms and draws
        # the preview grid).
        hold.executor = make_executor(experiment.run, jobs_at_once, run.threads, run.gpus)
        tensorflow = hold.executor.set_up(Setup(str(dataset.path), config_mod.to_dict(experiment), str(run_dir)))
        hold.kept()
        started_with.write(run_dir, experiment)
        write_text(run_dir / "config.toml", config_mod.dumps(config_mod.to_dict(experiment)))
        write_json(run_dir / "environment.json", planning.environment(experiment, jobs_at_once, run.threads,
                                                                      tensorflow, run.model(), run.gpus))
        write_json(run_dir / "data.json", {**dataset.meta, "path": str(dataset.path)})
        seeds = planning.candidate_seeds(experiment)
        seeds_text = (f"seeds {list(experiment.train.seeds)}" if not experiment.analysis.target_half_width else
                      f"{experiment.analysis.pilot_seeds} pilot seeds, then as many as a "
                      f"{experiment.analysis.target_half_width:g}-point half-width needs (at most {len(seeds)})")
        counts = {split: len(dataset.split(split)[1]) for split in ("train", "val", "test")}
        log(f"{experiment.name}: {counts['train']} train / {counts['val']} val / {counts['test']} test "
            f"{dataset.kind} of {', '.join(dataset.class_names)}; arms {', '.join(experiment.arms)}; {seeds_text}; "
            f"{experiment.train.epochs} epochs; primary metric {experiment.analysis.primary} -> {run_dir}")
        for line in (planning.plan_lines(experiment, counts["test"]) + [planning.model_line(run.model())]
                     + planning.data_lines(dataset.meta)):
            log(line)
        if line := gpus_mod.plan_line(run.gpus, jobs_at_once, experiment.train.precision):
            log(line)
        if warning := planning.precision_warning(experiment.train.precision, tensorflow):
            log(warning)
        return hold.train(run)


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
    with Hold(run_dir, "augcompare run --resume", new=False) as hold:
        experiment = started_with.check(run_dir, overrides)
        tracker = tracking.connect(experiment, run_dir, log)
        dataset = planning.checked_data(experiment)
        recorded_path = run_dir / "environment.json"
        recorded = read_json(recorded_path, "delete it: it is only compared with the environment now, to warn") \
            if recorded_path.is_file() else None
        threads = planning.recorded_threads(recorded)  # a job's numbers may depend on it: kept
        run = Run(run_dir, experiment, dataset, log, per_seed, threads, tracker, quiet=quiet)
        jobs_at_once, run.threads = run.executor_plan()
        hold.executor = make_executor(experiment.run, jobs_at_once, run.threads, run.gpus)
        tensorflow = hold.executor.set_up(Setup(str(dataset.path), config_mod.to_dict(experiment)))
        log(f"{experiment.name}: resuming {run_dir}")
        if not (run_dir / started_with.STARTED).is_file():
            log(f"warning: {run_dir} has no {started_with.STARTED} (a run started before it was recorded, or it was "
                "deleted): config.toml is taken as what the run started with, unchecked")
        added = started_with.keep(run_dir, experiment)  # seeds added become the run's
        if added:
            log(f"seeds added: {', '.join(map(str, added))}; their {len(added) * len(experiment.arms)} jobs train now, "
                "and the summary covers every seed")
        if recorded_path.is_file():
            now = planning.environment(experiment, None, run.threads, tensorflow, run.model(), run.gpus)
            now_kernels = {key: now["kernels"][key] for key in ("onednn", "ONEDNN_MAX_CPU_ISA", "cpu")}
            keys = ("python", "tensorflow", "keras", "numpy", "git_commit", "devices", "function_files", "model")
            changed = [key for key in keys if not isinstance(recorded, dict) or recorded.get(key) != now[key]]
            if isinstance(recorded, dict) and isinstance(recorded.get("kernels"), dict) and now_kernels != {
                    key: recorded["kernels"].get(key) for key in now_kernels}:
                changed.append("kernels")
            if changed:
                log(f"warning: {', '.join(changed)} differ from when the run started; the epochs trained now may "
                    "not match an uninterrupted run's to the last digit")
        if warning := planning.precision_warning(experiment.train.precision, tensorflow):
            log(warning)
        return hold.train(run)
