"""Trains a job (one arm and one seed of a run; experiments.jobfiles says what it is and what it
writes): from its checkpoint, or from the seed's initial weights, to its last epoch, an early stop
or a failure; then it evaluates the test split once, on the final weights and on the weights of
the epoch that val selected; and it writes only to its own folder, jobs/<arm>-seed<S>/, and, as
the seed's first job, the seed's initial weights.

The run (experiments.run) merges rows and record into history.csv and runs.json. The val split
decides everything (the selected epoch, early stopping, save_best); test decides nothing.
"""

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from augcompare.augment import get_generator_cyclic
from augcompare.augment.backend import keras, tf
from augcompare.augment.keras_layers import seed_python_random
from augcompare.experiments import cache as cache_format
from augcompare.experiments import config as config_mod
from augcompare.experiments import timing
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import (
    DirectoryLock,
    write_atomically,
    write_json,
)
from augcompare.experiments.history import HistoryWriter, read_history
from augcompare.experiments.jobfiles import (
    CHECKPOINT,
    RECORD,
    ROWS,
    Measure,
    Setup,
    best_index,
    best_model_path,
    check_visible,
    checkpoint_epochs,
    initial_weights_path,
    read_checkpoint,
    save_checkpoint,
    should_stop_early,
)
from augcompare.experiments.machine import kernels
from augcompare.experiments.processes import safe_point
from augcompare.experiments.training import (
    Trainer,
    one_hot,
    one_hot_batches,
    steps_per_epoch,
    write_initial_weights,
)


@functools.lru_cache(maxsize=None)
def distribution(strategy, cpu_devices=0):
    """The tf.distribute strategy a job trains under (one per process: TensorFlow allows a
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
                            "(keras-team/keras#20585); use \"mirrored\" on one machine, or run.executor = \"ray\" "
                            "to spread jobs over machines")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def set_up(setup: Setup):
    """What a run needs TensorFlow for before its jobs train, done in this process (a job worker,
    or the driver where it trains the jobs itself or hands them to Ray): op determinism on, the
    strategy made (before TensorFlow's first op), the arms checked on the data (a UserError for
    one it cannot take) and the preview grid drawn. Returns which TensorFlow, devices and kernels
    the jobs train with, for environment.json."""
    from augcompare.experiments import preview
    from augcompare.experiments.training import check_arms
    experiment = config_mod.build(setup.config)
    dataset = cache_format.open_cache(setup.cache)
    tf.config.experimental.enable_op_determinism()
    strategy = distribution(experiment.train.strategy, experiment.train.cpu_devices)
    with timing.span("run: checks"):
        check_arms(experiment, dataset)
    if setup.preview_dir is not None:
        with timing.span("run: preview grid"):
            preview.write_run_grid(dataset, experiment.arms, setup.preview_dir)
    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "devices": [device.name for device in tf.config.list_logical_devices()],
            "replicas": strategy.num_replicas_in_sync, "kernels": kernels()}


def cluster_size():
    """How many tasks (chief and workers) the TF_CONFIG environment variable describes; 1 without it."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    except (json.JSONDecodeError, AttributeError):
        raise UserError("TF_CONFIG is not a JSON object; see tf.distribute.MultiWorkerMirroredStrategy") from None
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


class EpochRecorder(keras.callbacks.Callback):
    """Ends every epoch of a job: appends its row to rows.csv, keeps the val-selected weights,
    saves the checkpoint, applies early stopping and reports the row. A loss that is not finite
    stops the job, which then fails.

    epoch_seconds is the training part of the epoch (first batch to last), validation excluded,
    so that it compares the cost of augmentation and nothing else. For `augcompare bench run` it
    also times validation, the checkpoint writes and the first batch's excess over the epoch's
    median batch (tracing, the iterator's start), which it takes out of the training steps.
    """

    def __init__(self, job, train, trainer, rows, selected, protect, on_epoch):
        super().__init__()
        self.job, self.train, self.trainer, self.rows = job, train, trainer, rows
        self.selected_epoch, self.selected_weights = selected
        self.protect, self.on_epoch = protect, on_epoch
        self.writer = HistoryWriter(job.folder / ROWS)
        self.failure = None
        self.stopped_early = False
        self.fit_started = None
        self.batch_seconds = []

    def on_test_begin(self, logs=None):
        self.validation_started = time.perf_counter()

    def on_test_batch_end(self, batch, logs=None):
        # Keras calls a batch hook a callback overrides in the thread that trains (one it does not
        # override, it may dispatch to a thread pool), so the safe point is in the right thread.
        safe_point(self.protect)

    def on_test_end(self, logs=None):
        timing.add("job: validation", time.perf_counter() - self.validation_started)

    def _time_epoch(self):
        seconds = self.finished - self.started
        first = 0.0
        if len(self.batch_seconds) > 1:
            first = max(0.0, self.batch_seconds[0] - statistics.median(self.batch_seconds[1:]))
        timing.add("job: tracing and first batches", first)
        timing.add("job: training steps", seconds - first)

    def on_train_begin(self, logs=None):
        self.fit_started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.finished = time.perf_counter()
        if self.fit_started is not None:  # fit's own start-up: adapters, callbacks
            timing.add("job: tracing and first batches", self.started - self.fit_started)
            self.fit_started = None
        self.batch_seconds = []

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.batch_seconds.append(now - self.finished)
        self.finished = now
        safe_point(self.protect)  # a stop signal ends the job between steps (the epoch is trained again on resume)
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            self.failure = f"loss became {loss} in epoch {len(self.rows) + 1}, batch {batch + 1}"
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self._time_epoch()
        if self.failure:
            return
        row = {"arm": self.job.arm, "seed": self.job.seed, "epoch": epoch + 1,
               "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
               "val_loss": float(logs["val_loss"]), "val_accuracy": float(logs["val_accuracy"]),
               "epoch_seconds": round(self.finished - self.started, 4)}
        broken = [key for key in ("loss", "accuracy", "val_loss", "val_accuracy") if not math.isfinite(row[key])]
        if broken:  # the last update of the epoch left weights that are not finite
            self.failure = f"{broken[0]} became {row[broken[0]]} in epoch {epoch + 1}"
            self.model.stop_training = True
            return
        with self.protect(), timing.span("job: checkpoints and rows"):  # a signal waits until both are whole
            self.writer.append(row)
            self.rows.append(row)
            if best_index(self.rows, self.train.monitor) == len(self.rows) - 1:
                self.selected_epoch = len(self.rows)
                self.selected_weights = self.trainer.classifier.get_weights()
            save_checkpoint(self.job.folder / CHECKPOINT, self.trainer, len(self.rows), self.selected_epoch,
                            self.selected_weights)
        if should_stop_early(self.rows, self.train.monitor, self.train.early_stopping):
            self.stopped_early = True
            self.model.stop_training = True
        if self.on_epoch:
            self.on_epoch(row, self.stopped_early)


def _training_batches(dataset, train, trainer, seed, start_pass, count):
    """The next `count` training batches of a seed's stream from pass start_pass, as fit takes them."""
    stream = get_generator_cyclic(dataset.train_images, dataset.train_labels, train.batch_size, normalize=None,
                                  shuffle=True, seed=seed, start_pass=start_pass)
    batches = one_hot_batches(itertools.islice(stream, count), trainer.num_classes)
    if train.strategy != "default":
        return batches
    # As a tf.data source without autotuning: Keras' own wrapping of a generator (prefetch
    # with autotune) took a further 5 s to shut down after one fit in four here. (A
    # distributed dataset asks for a new iterator every epoch: there Keras' wrapping,
    # which keeps reading the same generator, is the one that continues the stream.)
    signature = (tf.TensorSpec([None, *dataset.image_shape], tf.float32),
                 tf.TensorSpec([None, trainer.num_classes], tf.float32))
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_generator(lambda: batches, output_signature=signature).with_options(options)


def _evaluation_batches(images, labels, num_classes, batch_size):
    """Val or test batches: the images as stored (float32), one-hot labels, in order, read from
    the (memory-mapped) arrays one batch at a time. Through tf.data rather than a PyDataset:
    Keras' adapter for the latter took about 3x as long to evaluate the demo's val split."""
    size = max(batch_size, 128)
    targets = one_hot(labels, num_classes)

    def batches():
        for start in range(0, len(targets), size):
            yield np.asarray(images[start:start + size], dtype=np.float32), targets[start:start + size]
    signature = (tf.TensorSpec([None, *images.shape[1:]], tf.float32), tf.TensorSpec([None, num_classes], tf.float32))
    options = tf.data.Options()
    options.autotune.enabled = False
    return (tf.data.Dataset.from_generator(batches, output_signature=signature)
            .apply(tf.data.experimental.assert_cardinality(math.ceil(len(targets) / size))).with_options(options))


def _evaluate(trainer, images, labels, batch_size):
    data = _evaluation_batches(images, labels, trainer.num_classes, batch_size)
    result = trainer.model.evaluate(data, verbose=0, return_dict=True)
    return {"loss": float(result["loss"]), "accuracy": float(result["accuracy"])}


def _test_results(trainer, dataset, recorder, epochs, batch_size):
    """Test loss and accuracy of the final weights and of the val-selected epoch's (which the
    classifier holds afterwards)."""
    final = _evaluate(trainer, dataset.test_images, dataset.test_labels, batch_size)
    chosen = final
    if recorder.selected_epoch != epochs:
        trainer.classifier.set_weights(recorder.selected_weights)
        chosen = _evaluate(trainer, dataset.test_images, dataset.test_labels, batch_size)
    return {"selected_epoch": recorder.selected_epoch, "test_loss": final["loss"], "test_accuracy": final["accuracy"],
            "selected_test_loss": chosen["loss"], "selected_test_accuracy": chosen["accuracy"]}


# Compiled trainers a process keeps (the least recently used go first): tracing an arm's training
# step takes longer than a small job's epochs.
KEPT_TRAINERS = 16
# This process's compiled trainers, trainer_key -> Trainer, kept from job to job and from run to
# run: the one cache the local executor and a job worker both pass to run_job.
TRAINERS = {}


def trainer_key(job, experiment, dataset, steps):
    """What an arm's compiled trainer depends on: a trainer with the same key, reset for a job's
    seed, trains it as a fresh one would (tests/test_arms.py). So jobs of the same arm share one,
    and so do runs in one process (the Python API, a notebook) with the same settings, except
    where a run's own files or objects are compiled in: a function of the user's (its file may
    have changed: an arm's function, model.build, model.weights) and a distribution strategy, made
    for each run."""
    train = {k: v for k, v in dataclasses.asdict(experiment.train).items() if k != "seeds"}
    settings = experiment.arms[job.arm]
    own = job.run_dir if ("function" in settings or experiment.train.strategy != "default"
                          or experiment.model.build or experiment.model.weights) else ""
    return json.dumps([job.arm, settings, train, dataclasses.asdict(experiment.model), list(dataset.image_shape),
                       len(dataset.class_names), list(dataset.value_range), steps, own], sort_keys=True, default=str)


def run_job(job, trainers=None, on_epoch=None, protect=contextlib.nullcontext):
    """Trains and evaluates one job; returns its record (also written to its record.json).

    trainers: a dict trainer_key -> Trainer to reuse compiled models across the jobs of one
    process (TRAINERS, which the executors pass), or None to build one. on_epoch(row,
    stopped_early): called after each epoch.
    protect(): a context in which the row and checkpoint writes of an epoch are not interrupted;
    leaving it (after each step, each epoch's writes and the record) is where a recorded stop signal
    ends the job (processes.safe_point).
    """
    check_visible(job)
    started = time.perf_counter()
    job.folder.mkdir(parents=True, exist_ok=True)
    # One process per job folder: on a cluster a worker the scheduler gave up on (a node cut off,
    # a driver stopped) may still be training when the job runs again elsewhere; the new one waits
    # for it to end (the kernel releases the lock of a dead process), then continues from the
    # checkpoint it left.
    lock = DirectoryLock(job.folder / ".lock", f"job {job.name}").acquire(wait=True)
    parts = sum(timing.spans[part] for part in timing.JOB_PARTS)
    try:
        return _train_and_evaluate(job, trainers, on_epoch, protect, started)
    finally:
        lock.release()
        timed = sum(timing.spans[part] for part in timing.JOB_PARTS) - parts
        timing.add("job: other", max(0.0, time.perf_counter() - started - timed))


def _train_and_evaluate(job, trainers, on_epoch, protect, started):
    experiment = config_mod.build(job.config)
    train = experiment.train
    dataset = cache_format.open_cache(job.cache)
    folder = job.folder
    recover = f"delete {folder} to train {job.arm} seed {job.seed} again from its first epoch"
    rows = read_history(folder / ROWS, recover) if (folder / ROWS).is_file() else []
    done = checkpoint_epochs(folder / CHECKPOINT, recover)
    if len(rows) < done or any(row["epoch"] != i + 1 or (row["arm"], row["seed"]) != (job.arm, job.seed)
                               for i, row in enumerate(rows)):
        raise UserError(f"{folder / ROWS} does not match its checkpoint ({len(rows)} rows, {done} epochs); {recover}")
    if (folder / ROWS).is_file():  # written afresh: epochs after the last checkpoint are trained
        rows = rows[:done]          # again, and a row cut short by a kill is no row
        HistoryWriter(folder / ROWS).rewrite(rows)

    steps = steps_per_epoch(len(dataset.train_labels), train.batch_size)
    strategy = distribution(train.strategy, train.cpu_devices)
    with timing.span("job: build and compile"):
        key = trainer_key(job, experiment, dataset, steps)
        trainer = trainers.pop(key, None) if trainers is not None else None
        if trainer is None:
            trainer = Trainer(experiment, job.arm, dataset.image_shape, len(dataset.class_names),
                              dataset.value_range, steps, strategy)
        if trainers is not None:
            trainers[key] = trainer  # the most recently used last
            while len(trainers) > KEPT_TRAINERS:
                trainers.pop(next(iter(trainers)))
        weights = initial_weights_path(job.run_dir, job.seed)
        if not weights.is_file():
            # Made by the seed's first job (identically by any process: built from the seed), so
            # that every arm of the seed starts from the same file.
            weights.parent.mkdir(exist_ok=True)
            write_initial_weights(experiment, dataset.image_shape, len(dataset.class_names), job.seed, weights)
        trainer.reset(job.seed, weights)
    selected = (0, None)
    if done:
        _, selected_epoch, state, selected_weights = read_checkpoint(folder / CHECKPOINT, recover)
        trainer.restore(state, folder / CHECKPOINT)
        selected = (selected_epoch, selected_weights)
    recorder = EpochRecorder(job, train, trainer, rows, selected, protect, on_epoch)
    if done < train.epochs and not should_stop_early(rows, train.monitor, train.early_stopping):
        # The order depends on the seed alone and augmentation happens inside the model from its
        # own stream, so every arm of a seed sees the same batches in the same order.
        # Exactly the batches the remaining epochs take.
        batches = _training_batches(dataset, train, trainer, job.seed, done, (train.epochs - done) * steps)
        validation = _evaluation_batches(dataset.val_images, dataset.val_labels, trainer.num_classes, train.batch_size)
        callbacks = [recorder]
        if train.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(Path(job.run_dir) / "tensorboard" / job.name)))
        seed_python_random("trace", job.arm)  # where Keras reads it (AugMix), before the step is traced
        trainer.model.fit(batches, steps_per_epoch=steps, epochs=train.epochs, initial_epoch=done,
                          validation_data=validation, callbacks=callbacks, verbose=0, shuffle=False)
    elif done < train.epochs:
        recorder.stopped_early = True

    record = {"arm": job.arm, "seed": job.seed, "epochs": len(rows), "reason": recorder.failure or "",
              "status": "failed" if recorder.failure else "stopped_early" if recorder.stopped_early else "finished"}
    if not recorder.failure:
        with timing.span("job: test evaluation"):
            record.update(_test_results(trainer, dataset, recorder, len(rows), train.batch_size))
            if train.save_best:
                path = best_model_path(job.run_dir, job.arm, job.seed)
                path.parent.mkdir(exist_ok=True)
                write_atomically(path, trainer.inference_model().save)  # the classifier holds the selected weights
    record["seconds"] = round(time.perf_counter() - started, 2)
    with protect():
        write_json(folder / RECORD, record)
    return record


class _BatchClock(keras.callbacks.Callback):
    """The perf_counter time each training batch ended."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def measure(task: Measure):
    """What each arm's parts cost in this process, on its threads, beside whatever else runs (the
    other workers measuring the same): seconds to build and compile the arm ("build"), to trace
    its step beyond the warm-up steps' own time ("trace"), per training step after the warm-up
    ("step"), of fit's start-up beyond its first step ("fit_start"), of one val evaluation and
    one test evaluation once traced ("validation", "test") and of one epoch's checkpoint
    ("checkpoint"). Trains no job and writes nothing but a scratch checkpoint. Returns
    {"arms": {arm: {part: seconds}}, "began": time.time() as it began}."""
    began = time.time()
    experiment = config_mod.build(task.config)
    train = experiment.train
    dataset = cache_format.open_cache(task.cache)
    steps = steps_per_epoch(len(dataset.train_labels), train.batch_size)
    strategy = distribution(train.strategy, train.cpu_devices)
    arms = {}
    with tempfile.TemporaryDirectory(prefix="augcompare-estimate-") as scratch:
        for arm in experiment.arms:
            started = time.perf_counter()
            trainer = Trainer(experiment, arm, dataset.image_shape, len(dataset.class_names), dataset.value_range,
                              steps, strategy)
            build = time.perf_counter() - started
            seed_python_random("trace", arm)
            started = time.perf_counter()
            trainer.model.fit(_training_batches(dataset, train, trainer, 0, 0, task.warm_up_steps),
                              steps_per_epoch=task.warm_up_steps, epochs=1, verbose=0, shuffle=False)
            warm_up = time.perf_counter() - started
            clock = _BatchClock()
            started = time.perf_counter()
            trainer.model.fit(_training_batches(dataset, train, trainer, 0, 0, task.steps), steps_per_epoch=task.steps,
                              epochs=1, verbose=0, shuffle=False, callbacks=[clock])
            step = (clock.ends[-1] - clock.ends[0]) / max(1, len(clock.ends) - 1)
            fit_start = max(0.0, clock.ends[0] - started - step)
            _evaluate(trainer, dataset.val_images, dataset.val_labels, train.batch_size)  # traces evaluation
            timed = {}
            for split, images, labels in (("validation", dataset.val_images, dataset.val_labels),
                                          ("test", dataset.test_images, dataset.test_labels)):
                started = time.perf_counter()
                _evaluate(trainer, images, labels, train.batch_size)
                timed[split] = time.perf_counter() - started
            started = time.perf_counter()
            save_checkpoint(Path(scratch) / CHECKPOINT, trainer, 1, 1, trainer.classifier.get_weights())
            checkpoint = time.perf_counter() - started
            arms[arm] = {"build": build, "trace": max(0.0, warm_up - task.warm_up_steps * step), "step": step,
                         "fit_start": fit_start, **timed, "checkpoint": checkpoint}
    return {"arms": arms, "began": began}
