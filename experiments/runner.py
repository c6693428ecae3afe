"""Paired runs: for every seed, every arm starts from the same initial weights and sees the same
sample order, so the augmentation is the only difference between arms.

Run directory layout: config.toml, environment.json, history.csv, summary.json, summary.md,
accuracy.png, loss.png, augmentations.png, preview_samples.npy, weights/initial-seed<S>.weights.h5.
"""

import json
import math
import platform
import subprocess
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from augment import AugmentationLayer, DataGenerator, get_generator_cyclic
from experiments import config as config_mod
from experiments import plots, preview, stats
from experiments.errors import ConfigError
from experiments.data import load_dataset
from experiments.history import HistoryWriter, read_history
from models import small_cnn

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def new_run_dir(parent, run_id=None):
    """A fresh directory parent/<run_id or YYYYmmdd-HHMMSS>; never an existing one."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create {parent} ({error.strerror}); choose another --out") from None
    if run_id:
        try:
            (parent / run_id).mkdir()
        except FileExistsError:
            raise ConfigError(f"{parent / run_id} exists; remove it or choose another --run-id") from None
        return parent / run_id
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        candidate = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()  # atomic: two runs in the same second get different directories
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"too many runs named {stamp} in {parent}")


def environment():
    """Versions and the project's git commit, recorded with every run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "git_commit": commit,
            "devices": [device.name for device in tf.config.list_logical_devices()]}


class EpochRecorder(keras.callbacks.Callback):
    """Appends each epoch's row to history.csv and prints a progress line.

    epoch_seconds is the training part of the epoch (first batch to last), validation excluded,
    so that it compares the cost of augmentation and nothing else.
    """

    def __init__(self, arm, seed, epochs, writer, log):
        super().__init__()
        self.arm, self.seed, self.epochs, self.writer, self.log = arm, seed, epochs, writer, log

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.finished = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.finished = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"arm": self.arm, "seed": self.seed, "epoch": epoch + 1,
               "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
               "val_loss": float(logs["val_loss"]), "val_accuracy": float(logs["val_accuracy"]),
               "epoch_seconds": round(self.finished - self.started, 4)}
        self.writer.append(row)
        self.log(f"  {self.arm:>12s} seed {self.seed}  epoch {epoch + 1:>3d}/{self.epochs}  "
                 f"loss {row['loss']:.3f} acc {row['accuracy']:.3f}  "
                 f"val_loss {row['val_loss']:.3f} val_acc {row['val_accuracy']:.3f}  "
                 f"({row['epoch_seconds']:.1f} s)")


def build_cnn(experiment, image_shape, num_classes):
    m = experiment.model
    return small_cnn(image_shape, num_classes, filters=m.filters, dense_units=m.dense_units, dropout=m.dropout)


def initial_weights(experiment, image_shape, num_classes, seed, path):
    """Builds the network once for a seed and saves its weights, which every arm then loads."""
    keras.utils.set_random_seed(seed)
    build_cnn(experiment, image_shape, num_classes).save_weights(path)


def training_model(experiment, augmentation, image_shape, num_classes, seed, weights_path):
    """The seed's initial network behind the arm's augmentation and the shared normalization."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # dropout then draws the same masks in every arm
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


def train_arm(experiment, dataset, arm, seed, weights_path, writer, log):
    train = experiment.train
    image_shape = tuple(dataset.train_images.shape[1:])
    model = training_model(experiment, experiment.arms[arm], image_shape, len(dataset.class_names), seed,
                           weights_path)
    # The order depends on the seed alone, and augmentation happens inside the model from its
    # own stream, so every arm of a seed sees the same batches in the same order.
    batches = get_generator_cyclic(dataset.train_images, dataset.train_labels, train.batch_size,
                                   normalize=None, shuffle=True, seed=seed)
    validation = DataGenerator(range(len(dataset.val_labels)), dataset.val_labels, source=dataset.val_images,
                               batch_size=max(train.batch_size, 128), dim=image_shape, shuffle=False,
                               norm=None)
    steps = math.ceil(len(dataset.train_labels) / train.batch_size)
    model.fit(batches, steps_per_epoch=steps, epochs=train.epochs, validation_data=validation,
              callbacks=[EpochRecorder(arm, seed, train.epochs, writer, log)], verbose=0, shuffle=False)


def check_dataset(experiment, dataset):
    size = dataset.train_images.shape[1]
    if size != experiment.data.image_size:
        raise ConfigError(f"data.image_size = {experiment.data.image_size} but {dataset.path} holds "
                          f"{size} px images; set data.image_size = {size}")
    if len(dataset.class_names) < 2:
        raise ConfigError(f"{dataset.path} has {len(dataset.class_names)} class; a comparison needs at least 2")


def write_outputs(run_dir, experiment, history):
    """summary.json, summary.md, accuracy.png and loss.png from history rows."""
    summary = stats.summarize(history, experiment.arms, experiment.train.epochs)
    summary = {"name": experiment.name, **summary}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    markdown = stats.to_markdown(summary, experiment.name)
    (run_dir / "summary.md").write_text(markdown)
    for metric in ("accuracy", "loss"):
        plots.curves_figure(history, experiment.arms, metric, run_dir / f"{metric}.png")
    return markdown


def run(experiment, out_root="results", run_id=None, log=print):
    """Trains every arm for every seed and writes the run directory; returns its path."""
    tf.config.experimental.enable_op_determinism()
    dataset = load_dataset(experiment.data)
    check_dataset(experiment, dataset)
    run_dir = new_run_dir(Path(out_root) / experiment.name, run_id)
    (run_dir / "config.toml").write_text(config_mod.dumps(config_mod.to_dict(experiment)))
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2) + "\n")
    samples = preview.pick_samples(dataset.train_images, dataset.train_labels)
    np.save(run_dir / "preview_samples.npy", samples, allow_pickle=False)
    preview.draw(samples, experiment.arms, run_dir / "augmentations.png")

    image_shape = tuple(dataset.train_images.shape[1:])
    num_classes = len(dataset.class_names)
    writer = HistoryWriter(run_dir / "history.csv")
    (run_dir / "weights").mkdir()
    log(f"{experiment.name}: {len(dataset.train_labels)} train / {len(dataset.val_labels)} val images of "
        f"{', '.join(dataset.class_names)}; arms {', '.join(experiment.arms)}; seeds "
        f"{list(experiment.train.seeds)}; {experiment.train.epochs} epochs -> {run_dir}")
    for seed in experiment.train.seeds:
        weights_path = run_dir / "weights" / f"initial-seed{seed}.weights.h5"
        initial_weights(experiment, image_shape, num_classes, seed, weights_path)
        for arm in experiment.arms:
            train_arm(experiment, dataset, arm, seed, weights_path, writer, log)
    log("")
    log(write_outputs(run_dir, experiment, read_history(writer.path)))
    return run_dir


def redraw(run_dir):
    """Redraws every figure of a run directory from its saved history and samples."""
    run_dir = Path(run_dir)
    if not (run_dir / "history.csv").is_file() or not (run_dir / "config.toml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no history.csv or config.toml)")
    experiment = config_mod.build(config_mod.read_toml(run_dir / "config.toml"))
    markdown = write_outputs(run_dir, experiment, read_history(run_dir / "history.csv"))
    samples_path = run_dir / "preview_samples.npy"
    if samples_path.is_file():
        preview.draw(np.load(samples_path, allow_pickle=False), experiment.arms, run_dir / "augmentations.png")
    return markdown
