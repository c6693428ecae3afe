"""Paired runs: for every seed, every arm starts from the same initial weights and sees the same
sample order, so the augmentation is the only difference between arms.

Run directory layout: config.toml, environment.json, history.csv, runs.json (the ended runs),
summary.json, summary.md, accuracy.png, loss.png, ablation.png, augmentations.png,
preview_samples.npy, weights/initial-seed<S>.weights.h5, checkpoints/<arm>-seed<S>.npz (while a
run is unfinished), best/<arm>-seed<S>.keras (train.save_best), tensorboard/<arm>-seed<S>/
(train.tensorboard).

Nothing trained is lost: each epoch's row reaches history.csv and its checkpoint is renamed
into place before the next epoch starts, so `augcompare run --resume RUN_DIR` continues a run
killed at any moment and ends with the history an uninterrupted run would have written.
"""

import contextlib
import functools
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from augcompare.augment import AugmentationLayer, DataGenerator, get_generator_cyclic
from augcompare.experiments import config as config_mod
from augcompare.experiments import plots, preview, stats
from augcompare.experiments.errors import UserError, RunStopped
from augcompare.experiments.data import load_dataset
from augcompare.experiments.history import HistoryWriter, read_history, write_atomically
from augcompare.models import small_cnn

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
        return parent / run_id
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        candidate = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()  # atomic: two runs in the same second get different directories
            return candidate
        except FileExistsError:
            continue
    raise UserError(f"too many runs named {stamp} in {parent}")


def environment(train):
    """Versions, devices, the distribution strategy and the project's git commit, recorded with
    every run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "git_commit": commit,
            "devices": [device.name for device in tf.config.list_logical_devices()],
            "strategy": train.strategy,
            "replicas": distribution(train.strategy, train.cpu_devices).num_replicas_in_sync}


def should_stop_early(rows, monitor, patience):
    """True when the last `patience` epochs of rows (one run's, in epoch order) brought no
    better value of monitor (val_loss: lower, val_accuracy: higher) than the best before them.
    Computed from the rows alone, so a resumed run decides exactly as an uninterrupted one."""
    if not patience or len(rows) <= patience:
        return False
    return len(rows) - 1 - _best_index(rows, monitor) >= patience


def _best_index(rows, monitor):
    values = [row[monitor] for row in rows]
    best = min(values) if monitor == "val_loss" else max(values)
    return values.index(best)  # the first epoch that reached it


class EpochRecorder(keras.callbacks.Callback):
    """Ends every epoch of one arm and seed: appends its row to history.csv, saves the best
    model (train.save_best) and the checkpoint a resumed run starts from, applies early stopping
    and prints a progress line. A loss that is not finite stops the run, which is then failed.

    epoch_seconds is the training part of the epoch (first batch to last), validation excluded,
    so that it compares the cost of augmentation and nothing else.
    """

    def __init__(self, experiment, arm, seed, rows, paths, writer, signals, log):
        super().__init__()
        self.train, self.arm, self.seed, self.rows = experiment.train, arm, seed, rows
        self.paths, self.writer, self.signals, self.log = paths, writer, signals, log
        self.failure = None
        self.stopped_early = False

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.finished = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.finished = time.perf_counter()
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.failure = f"loss became {loss} in epoch {len(self.rows) + 1}, batch {batch + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.failure:
            return
        row = {"arm": self.arm, "seed": self.seed, "epoch": epoch + 1,
               "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
               "val_loss": float(logs["val_loss"]), "val_accuracy": float(logs["val_accuracy"]),
               "epoch_seconds": round(self.finished - self.started, 4)}
        with self.signals.protected():  # a signal waits until the row and checkpoint are whole
            self.writer.append(row)
            self.rows.append(row)
            if self.train.save_best and _best_index(self.rows, self.train.monitor) == len(self.rows) - 1:
                write_atomically(self.paths["best"], self.model.save)
            save_checkpoint(self.model, epoch + 1, self.paths["checkpoint"])
        if should_stop_early(self.rows, self.train.monitor, self.train.early_stopping):
            self.stopped_early = True
            self.model.stop_training = True
        self.log(f"  {self.arm:>12s} seed {self.seed}  epoch {epoch + 1:>3d}/{self.train.epochs}  "
                 f"loss {row['loss']:.3f} acc {row['accuracy']:.3f}  "
                 f"val_loss {row['val_loss']:.3f} val_acc {row['val_accuracy']:.3f}  "
                 f"({row['epoch_seconds']:.1f} s)" + ("  early stop" if self.stopped_early else ""))

    def outcome(self):
        """The run's record for runs.json."""
        status = "failed" if self.failure else "stopped_early" if self.stopped_early else "finished"
        return {"arm": self.arm, "seed": self.seed, "status": status, "epochs": len(self.rows),
                "reason": self.failure or ""}


def save_checkpoint(model, epochs_done, path):
    """Everything training changes: the weights, the optimizer's slots and step count, the
    augmentation step and the dropout seed generators (model.variables holds the last two;
    save_weights would miss the generators)."""
    arrays = {f"v{i}": v.numpy() for i, v in enumerate(model.variables + model.optimizer.variables)}

    def write(staging):
        with open(staging, "wb") as handle:
            np.savez(handle, epochs_done=epochs_done, **arrays)
    write_atomically(path, write)


def checkpoint_epochs(path):
    """How many epochs a checkpoint holds; 0 when there is none."""
    if not Path(path).is_file():
        return 0
    with np.load(path, allow_pickle=False) as saved:
        return int(saved["epochs_done"])


def load_checkpoint(model, path, strategy):
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    variables = model.variables + model.optimizer.variables
    with np.load(path, allow_pickle=False) as saved:
        if len(saved.files) - 1 != len(variables):
            raise UserError(f"{path} does not match this experiment's model; delete it to restart that run")
        for i, variable in enumerate(variables):
            variable.assign(saved[f"v{i}"])

def build_cnn(experiment, image_shape, num_classes):
    m = experiment.model
    return small_cnn(image_shape, num_classes, filters=m.filters, dense_units=m.dense_units, dropout=m.dropout)


def initial_weights(experiment, image_shape, num_classes, seed, path):
    """Builds the network once for a seed and saves its weights, which every arm then loads."""
    keras.utils.set_random_seed(seed)
    build_cnn(experiment, image_shape, num_classes).save_weights(path)


@functools.lru_cache(maxsize=None)
def distribution(strategy, cpu_devices=0):
    """The tf.distribute strategy an arm trains under (one per process: TensorFlow allows a
    multi-worker strategy to be made once). cpu_devices > 0 first splits the CPU into that many
    logical devices, which must happen before TensorFlow runs its first op."""
    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
                raise UserError("train.cpu_devices can only be set before TensorFlow starts; run the experiment "
                                  "in a fresh process (augcompare run)") from None
    if strategy == "mirrored":
        # Every accelerator, else every (logical) CPU device: with one device it is a plain run.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if strategy == "multi_worker":
        workers = cluster_size()
        if workers > 1:
            # Tried here with two local workers: fit fails converting a PerReplica batch.
            raise UserError(f"train.strategy = \"multi_worker\" with {workers} workers in TF_CONFIG: Keras 3's fit "
                              "does not train under MultiWorkerMirroredStrategy across workers yet "
                              "(keras-team/keras#20585); use \"mirrored\" on one machine")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def training_model(experiment, augmentation, image_shape, num_classes, seed, weights_path):
    """The seed's initial network behind the arm's augmentation and the shared normalization,
    built and compiled under the experiment's distribution strategy."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # dropout then draws the same masks in every arm
    with distribution(experiment.train.strategy, experiment.train.cpu_devices).scope():
        cnn = build_cnn(experiment, image_shape, num_classes)
        cnn.load_weights(weights_path)
        model = keras.Sequential([
            keras.Input(shape=image_shape),
            AugmentationLayer(augmentation, experiment.train.normalize, seed=seed, name="augmentation"),
            cnn,
        ])
        model.compile(optimizer=keras.optimizers.Adam(experiment.train.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def run_paths(run_dir, arm, seed):
    name = f"{arm}-seed{seed}"
    return {"checkpoint": run_dir / "checkpoints" / f"{name}.npz", "best": run_dir / "best" / f"{name}.keras",
            "tensorboard": run_dir / "tensorboard" / name}


def train_arm(experiment, dataset, arm, seed, run_dir, rows, writer, signals, log):
    """Trains one arm and seed from its checkpoint (or from the seed's initial weights) to the
    last epoch, early stop or failure; returns its record for runs.json. rows: its history rows
    so far, matching the checkpoint."""
    train = experiment.train
    paths = run_paths(run_dir, arm, seed)
    image_shape = tuple(dataset.train_images.shape[1:])
    model = training_model(experiment, experiment.arms[arm], image_shape, len(dataset.class_names), seed,
                           run_dir / "weights" / f"initial-seed{seed}.weights.h5")
    done = checkpoint_epochs(paths["checkpoint"])
    if done != len(rows):
        raise UserError(f"{paths['checkpoint']} holds {done} epochs but history.csv {len(rows)} for {arm} "
                          f"seed {seed}; delete the checkpoint to restart that run")
    if done:
        load_checkpoint(model, paths["checkpoint"], distribution(train.strategy, train.cpu_devices))
        log(f"  {arm:>12s} seed {seed}  continues after epoch {done}")
    recorder = EpochRecorder(experiment, arm, seed, rows, paths, writer, signals, log)
    if done < train.epochs and not should_stop_early(rows, train.monitor, train.early_stopping):
        # The order depends on the seed alone, and augmentation happens inside the model from
        # its own stream, so every arm of a seed sees the same batches in the same order.
        batches = get_generator_cyclic(dataset.train_images, dataset.train_labels, train.batch_size,
                                       normalize=None, shuffle=True, seed=seed, start_pass=done)
        validation = DataGenerator(range(len(dataset.val_labels)), dataset.val_labels, source=dataset.val_images,
                                   batch_size=max(train.batch_size, 128), dim=image_shape, shuffle=False,
                                   norm=None)
        callbacks = [recorder]
        if train.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(paths["tensorboard"])))
        paths["checkpoint"].parent.mkdir(exist_ok=True)
        if train.save_best:
            paths["best"].parent.mkdir(exist_ok=True)
        steps = math.ceil(len(dataset.train_labels) / train.batch_size)
        model.fit(batches, steps_per_epoch=steps, epochs=train.epochs, initial_epoch=done,
                  validation_data=validation, callbacks=callbacks, verbose=0, shuffle=False)
    elif done < train.epochs:
        recorder.stopped_early = True
    return recorder.outcome()


def check_dataset(experiment, dataset):
    size = dataset.train_images.shape[1]
    if size != experiment.data.image_size:
        raise UserError(f"data.image_size = {experiment.data.image_size} but {dataset.path} holds "
                          f"{size} px images; set data.image_size = {size}")
    if len(dataset.class_names) < 2:
        raise UserError(f"{dataset.path} has {len(dataset.class_names)} class; a comparison needs at least 2")


def read_runs(run_dir):
    """runs.json: the ended runs, (arm, seed) -> {"status": finished | stopped_early | failed,
    "epochs", "reason"}. A run that is not there has not ended."""
    path = Path(run_dir) / "runs.json"
    if not path.is_file():
        return {}
    return {(record["arm"], record["seed"]): record for record in json.loads(path.read_text())["runs"]}


def write_runs(run_dir, runs):
    text = json.dumps({"runs": list(runs.values())}, indent=2) + "\n"
    write_atomically(Path(run_dir) / "runs.json", lambda staging: staging.write_text(text))


def write_outputs(run_dir, experiment, history, runs, per_seed=False):
    """summary.json, summary.md and the figures, from history rows and the run records."""
    summary = stats.summarize(history, experiment.arms, experiment.train.epochs, runs)
    summary = {"name": experiment.name, **summary}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = stats.to_markdown(summary, experiment.name)
    (run_dir / "summary.md").write_text(markdown)
    for metric in ("accuracy", "loss"):
        plots.curves_figure(history, experiment.arms, metric, run_dir / f"{metric}.png", per_seed)
    plots.differences_figure(summary, run_dir / "ablation.png")
    return markdown


class StopOnSignal:
    """While active (in the main thread), SIGINT and SIGTERM stop the run by raising RunStopped,
    except inside protected(), where the signal waits for the block to end."""

    CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.depth, self.pending, self.previous = 0, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handle) for number in self.CODES}
        return self

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.depth:
            self.pending = number
        else:
            raise self._stopped(number)

    def _stopped(self, number):
        name = signal.Signals(number).name
        return RunStopped(f"stopped by {name}; every finished epoch is saved. Continue with: "
                          f"augcompare run --resume {self.run_dir}", self.run_dir, self.CODES[number])

    @contextlib.contextmanager
    def protected(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                number, self.pending = self.pending, None
                raise self._stopped(number)


def _start(experiment):
    """The data set, checked against the experiment; op determinism on, the strategy made."""
    if experiment.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("train.tensorboard = true needs the tensorboard package; pip install -e \".[tensorboard]\"")
    distribution(experiment.train.strategy, experiment.train.cpu_devices)  # before TensorFlow's first op
    tf.config.experimental.enable_op_determinism()
    dataset = load_dataset(experiment.data)
    check_dataset(experiment, dataset)
    return dataset


def cluster_size():
    """How many tasks (chief and workers) the TF_CONFIG environment variable describes; 1 without it."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise UserError("TF_CONFIG is not a JSON object; see tf.distribute.MultiWorkerMirroredStrategy") from None
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def run(experiment, out_root="results", run_id=None, log=print, per_seed=False):
    """Trains every arm for every seed in a new run directory; returns its path."""
    # The output folder is checked first: a mistake there must not wait for data preparation.
    run_dir = new_run_dir(Path(out_root) / experiment.name, run_id)
    try:
        dataset = _start(experiment)
    except BaseException:
        run_dir.rmdir()  # still empty: nothing was written
        raise
    (run_dir / "config.toml").write_text(config_mod.dumps(config_mod.to_dict(experiment)))
    (run_dir / "environment.json").write_text(json.dumps(environment(experiment.train), indent=2) + "\n")
    samples = preview.pick_samples(dataset.train_images, dataset.train_labels)
    np.save(run_dir / "preview_samples.npy", samples, allow_pickle=False)
    preview.draw(samples, experiment.arms, run_dir / "augmentations.png")
    (run_dir / "weights").mkdir()
    log(f"{experiment.name}: {len(dataset.train_labels)} train / {len(dataset.val_labels)} val images of "
        f"{', '.join(dataset.class_names)}; arms {', '.join(experiment.arms)}; seeds "
        f"{list(experiment.train.seeds)}; {experiment.train.epochs} epochs -> {run_dir}")
    return train_all(run_dir, experiment, dataset, log, per_seed)


def resume(run_dir, log=print, per_seed=False):
    """Continues an interrupted run: ended (arm, seed) runs are kept, the others continue from
    their last checkpointed epoch. Returns the run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file() or not (run_dir / "weights").is_dir():
        raise UserError(f"{run_dir} is not a run directory (no config.toml or weights/); give the directory "
                          "that `augcompare run` printed")
    experiment = config_mod.build(config_mod.read_toml(run_dir / "config.toml"))
    dataset = _start(experiment)
    log(f"{experiment.name}: resuming {run_dir}")
    recorded_path = run_dir / "environment.json"
    if recorded_path.is_file():
        recorded, now = json.loads(recorded_path.read_text()), environment(experiment.train)
        changed = [key for key in ("python", "tensorflow", "keras", "numpy", "git_commit", "devices")
                   if recorded.get(key) != now[key]]
        if changed:
            log(f"warning: {', '.join(changed)} differ from when the run started; the epochs trained now may "
                "not match an uninterrupted run's to the last digit")
    return train_all(run_dir, experiment, dataset, log, per_seed)


def train_all(run_dir, experiment, dataset, log, per_seed):
    """Trains every (arm, seed) that has not ended, seeds in order and arms in file order, then
    writes the summary and figures."""
    writer = HistoryWriter(run_dir / "history.csv")
    runs = read_runs(run_dir)
    history = read_history(writer.path) if writer.path.is_file() else []
    # Keep the rows of ended runs and, of the others, those their checkpoint holds; a resumed
    # run repeats the rest, so the file ends as an uninterrupted run's would.
    held = {(arm, seed): checkpoint_epochs(run_paths(run_dir, arm, seed)["checkpoint"])
            for seed in experiment.train.seeds for arm in experiment.arms if (arm, seed) not in runs}
    history = [row for row in history
               if (row["arm"], row["seed"]) in runs or row["epoch"] <= held.get((row["arm"], row["seed"]), 0)]
    if writer.path.is_file():
        writer.rewrite(history)
    image_shape = tuple(dataset.train_images.shape[1:])
    try:
        with StopOnSignal(run_dir) as signals:
            for seed in experiment.train.seeds:
                weights_path = run_dir / "weights" / f"initial-seed{seed}.weights.h5"
                if not weights_path.is_file():
                    write_atomically(weights_path, lambda staging: initial_weights(
                        experiment, image_shape, len(dataset.class_names), seed, staging))
                for arm in experiment.arms:
                    if (arm, seed) in runs:
                        continue
                    rows = [row for row in history if row["arm"] == arm and row["seed"] == seed]
                    record = train_arm(experiment, dataset, arm, seed, run_dir, rows, writer, signals, log)
                    with signals.protected():
                        runs[arm, seed] = record
                        write_runs(run_dir, runs)
                        run_paths(run_dir, arm, seed)["checkpoint"].unlink(missing_ok=True)
                    if record["status"] == "failed":
                        log(f"  {arm:>12s} seed {seed}  FAILED: {record['reason']}; the other runs go on")
    except OSError as error:
        rows = len(read_history(writer.path)) if writer.path.is_file() else 0
        raise RunStopped(f"cannot write {error.filename or 'the results'} ({error.strerror}); the {rows} "
                         f"epochs in history.csv are intact. Free space or fix the folder, then: "
                         f"augcompare run --resume {run_dir}", run_dir) from None
    log("")
    log(write_outputs(run_dir, experiment, read_history(writer.path), runs, per_seed))
    return run_dir


def redraw(run_dir, per_seed=False):
    """Redraws every figure of a run directory from its saved history and samples."""
    run_dir = Path(run_dir)
    if not (run_dir / "history.csv").is_file() or not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no history.csv or config.toml)")
    experiment = config_mod.build(config_mod.read_toml(run_dir / "config.toml"))
    markdown = write_outputs(run_dir, experiment, read_history(run_dir / "history.csv"), read_runs(run_dir),
                             per_seed)
    samples_path = run_dir / "preview_samples.npy"
    if samples_path.is_file():
        preview.draw(np.load(samples_path, allow_pickle=False), experiment.arms, run_dir / "augmentations.png")
    return markdown
