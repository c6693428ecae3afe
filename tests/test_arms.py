"""Every kind of arm (built-in operations, Keras 3 layers, a function of the user's, MixUp,
CutMix) trains, repeats exactly, resumes exactly and is drawn; mistakes in them are one-line
errors before anything trains."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf
from conftest import SMALL, overrides, run_small

from augcompare.augment import mixing
from augcompare.experiments import cli, config, job, jobfiles
from augcompare.experiments.data import load_dataset
from augcompare.experiments.history import read_history
from augcompare.experiments.training import write_initial_weights

FUNCTIONS = '''import tensorflow as tf


def jitter(images, seed):
    """Seeded Gaussian noise of 8 levels, on batches that are not all black (an `if` on a tensor,
    which AutoGraph makes a tf.cond in training as in tf.function)."""
    if tf.reduce_max(images) > 0.0:
        images = images + tf.random.stateless_normal(tf.shape(images), seed=seed, stddev=8.0)
    return tf.clip_by_value(images, 0.0, 255.0)


def crop_a_row(images, seed):
    return images[:, 1:]


def as_double(images, seed):
    return tf.cast(images, tf.float64)


def explode(images, seed):
    raise RuntimeError("a bug in my function")
'''
RAISES = FUNCTIONS.splitlines().index('    raise RuntimeError("a bug in my function")') + 1  # its line in the file
KINDS = {
    "builtin": '{preset = "standard"}',
    "keras": '{keras = [{layer = "RandomErasing", factor = 0.5}, {layer = "RandomContrast", factor = 0.3}]}',
    "keras_augmix": '{keras = [{layer = "AugMix"}]}',  # draws with Python's random module when traced
    "randaugment": '{preset = "randaugment"}',  # our own, per image from stateless seeds
    "augmix": '{preset = "augmix"}',
    "function": '{function = "my_augs.py:jitter"}',
    "mixup": '{mixup = 0.4}',
    "cutmix": '{cutmix = 1.0}',
}


def write_experiment(folder, arms):
    (folder / "my_augs.py").write_text(FUNCTIONS)
    lines = ['name = "arms"', "[arms]", "baseline = {}"] + [f"{arm} = {table}" for arm, table in arms.items()]
    (folder / "arms.toml").write_text("\n".join(lines) + "\n")
    return folder / "arms.toml"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):  # slow: the tests that take it are marked so
    """The same experiment with one arm of each kind, run twice."""
    folder = tmp_path_factory.mktemp("arms")
    experiment = write_experiment(folder, KINDS)
    return [run_small(folder, experiment=experiment, run_id=run_id, cache=folder / "cache") for run_id in ("a", "b")]


def without_timings(run_dir, arm):
    rows = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")
            if row["arm"] == arm]
    jobs = [{k: v for k, v in j.items() if k != "seconds"}
            for j in json.loads((run_dir / "runs.json").read_text())["jobs"] if j["arm"] == arm]
    return rows, jobs


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_arm_trains_and_repeats_exactly(two_runs, kind):
    first, second = (without_timings(run_dir, kind) for run_dir in two_runs)
    assert len(first[0]) == 2 and first[1][0]["status"] == "finished"
    assert first == second  # same seed: the same augmented batches, the same history and test results
    baseline = without_timings(two_runs[0], "baseline")[0]
    assert [r["loss"] for r in first[0]] != [r["loss"] for r in baseline]  # and it did augment


@pytest.mark.slow
def test_the_function_file_is_found_beside_the_experiment_and_the_snapshot_repeats_the_run(two_runs, tmp_path):
    snapshot = config.read_toml(two_runs[0] / "config.toml")
    assert snapshot["arms"]["function"]["function"].endswith("my_augs.py:jitter")
    assert snapshot["arms"]["function"]["function"].startswith("/")  # absolute: runs from any folder
    assert config.build(snapshot).arms == config.load(two_runs[0].parent.parent.parent / "arms.toml").arms


@pytest.mark.slow
def test_every_kind_of_arm_is_drawn_with_label_weights_for_mixing(two_runs):
    from augcompare.experiments import preview
    experiment = config.build(config.read_toml(two_runs[0] / "config.toml"))
    dataset = load_dataset(experiment.data)
    samples, labels = preview.pick_samples(dataset.train_images, dataset.train_labels, 3)
    for arm, settings in experiment.arms.items():
        if arm == "baseline":
            continue
        drawn = preview.variants(settings, samples, labels, dataset.class_names, dataset.value_range, 2)
        assert len(drawn) == 2 and drawn[0][0].shape == samples.shape
        assert not np.array_equal(drawn[0][0], drawn[1][0])  # variants differ
        again = preview.variants(settings, samples, labels, dataset.class_names, dataset.value_range, 2)
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(drawn, again))  # and are seeded
        if arm in ("mixup", "cutmix"):
            assert all(caption and ("room" in caption or "tower" in caption) for caption in drawn[0][1])
        else:
            assert drawn[0][1] is None
    assert (two_runs[0] / "augmentations.png").stat().st_size > 5000


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keras", "mixup"])
def test_a_job_stopped_after_an_epoch_resumes_exactly(tmp_path, kind):
    """Keras layers keep seed-generator states: the checkpoint holds them, so a job continued
    from it trains exactly as one that never stopped."""
    experiment = config.load(write_experiment(tmp_path, {kind: KINDS[kind]}),
                             SMALL + ["train.epochs=3", f"data.cache_dir={tmp_path / 'cache'}"])
    dataset = load_dataset(experiment.data)

    def run_job(run_dir, stop_after=None):
        (run_dir / "weights").mkdir(parents=True)
        write_initial_weights(experiment, dataset.image_shape, 2, 0, job.initial_weights_path(run_dir, 0))
        this = jobfiles.Job(kind, 0, str(run_dir), str(dataset.path), config.to_dict(experiment))

        def on_epoch(row, stopped):
            if row["epoch"] == stop_after:
                raise KeyboardInterrupt
        if stop_after:
            with pytest.raises(KeyboardInterrupt):
                job.run_job(this, on_epoch=on_epoch)
        return job.run_job(this), read_history(this.folder / job.ROWS)

    whole = run_job(tmp_path / "whole")
    resumed = run_job(tmp_path / "resumed", stop_after=1)
    strip = lambda result: ([{k: v for k, v in r.items() if k != "epoch_seconds"} for r in result[1]],  # noqa: E731
                            {k: v for k, v in result[0].items() if k != "seconds"})
    assert strip(whole) == strip(resumed)


@pytest.mark.parametrize("mixer", ["mixup", "cutmix"])
def test_label_mixing_sums_to_one_and_follows_the_images(mixer):
    """Each image is constant at its own index value, so a mixed image reveals which partners
    it holds and in what share; its label weights must say the same."""
    batch, size = 8, 16
    images = tf.constant(np.arange(batch, dtype=np.float32)[:, None, None, None] * np.ones((1, size, size, 1),
                                                                                          np.float32))
    labels = tf.one_hot(np.arange(batch), batch)
    mixed, weights = mixing.mix(images, labels, tf.constant([3, 4], tf.int64), {mixer: 1.0})
    mixed, weights = mixed.numpy(), weights.numpy()
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    for i in range(batch):
        if mixer == "mixup":
            expected = (weights[i] * np.arange(batch)).sum()  # w * i + (1 - w) * partner
            assert np.allclose(mixed[i], expected, atol=1e-3)
        else:
            shares = {value: np.mean(mixed[i] == value) for value in np.unique(mixed[i])}
            for value, share in shares.items():
                assert weights[i][int(value)] == pytest.approx(share, abs=1e-6)
    assert not np.allclose(weights, np.eye(batch))  # something was mixed


@pytest.mark.parametrize("arm, message", [
    ('{keras = [{layer = "RandAugmnt"}]}', "unknown keras layer 'RandAugmnt'; usable layers: AugMix"),
    ('{keras = [{layer = "RandAugment", num_op = 2}]}', "keras layer RandAugment has no argument 'num_op'; its "
                                                        "arguments: num_ops, factor, interpolation"),
    ('{keras = [{layer = "RandAugment", value_range = [0, 1]}]}', "'value_range' \\(the harness sets it\\)"),
    ('{keras = [{layer = "MixUp"}]}', "use mixup = alpha in the arm"),
    ('{keras = [{layer = "RandomErasing", factor = "much"}]}', "keras layer RandomErasing"),
    ('{function = "missing.py:jitter"}', "function file .*missing.py does not exist"),
])
def test_mistakes_in_arms_are_one_line_errors(tmp_path, capsys, arm, message):
    experiment = write_experiment(tmp_path, {"bad": arm})
    assert cli.main(["run", str(experiment), "--out", str(tmp_path / "out")] + overrides(*SMALL)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "arms.bad" in error
    assert re.search(message, error), error
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("history.csv"))


@pytest.mark.parametrize("function, message, jobs_at_once", [
    ("my_augs.py:nothing", "has no function 'nothing'; it defines: jitter, crop_a_row, as_double, explode", 1),
    ("my_augs.py:crop_a_row", "returned shape \\[2, 31, 32, 3\\] for images of shape \\[2, 32, 32, 3\\]", 1),
    ("my_augs.py:as_double", "returned float64 images; it must return float32", 1),
    ("my_augs.py:explode", f"failed on a batch of shape \\[2, 32, 32, 3\\]: RuntimeError: .*line {RAISES}, in explode"
                           ".*a bug in my function", 1),
    # Side by side, a worker checks the arms (the driver loads no TensorFlow): the same line.
    pytest.param("my_augs.py:explode", f"failed on a batch of shape \\[2, 32, 32, 3\\]: RuntimeError: .*line {RAISES}, "
                 "in explode.*a bug in my function", 2, id="side-by-side", marks=pytest.mark.slow),
])
def test_a_function_that_is_missing_or_changes_the_shape_is_refused_before_training(tmp_path, capsys, function,
                                                                                    message, jobs_at_once):
    experiment = write_experiment(tmp_path, {"bad": f'{{function = "{function}"}}'})
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", f"run.jobs_at_once={jobs_at_once}"]
    assert cli.main(["run", str(experiment), "--out", str(tmp_path / "out")] + overrides(*sets)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    assert not list((tmp_path / "out").glob("*/*"))  # no run directory is left


@pytest.mark.slow
def test_a_trainer_reset_for_another_seed_trains_as_a_fresh_one(tmp_path):
    """The local executor compiles an arm once and resets it for every seed; a Ray worker builds
    it afresh. Both must give the same numbers, dropout, Keras layers and mixing included."""
    experiment = config.load(write_experiment(tmp_path, {"keras": KINDS["keras"], "mixup": KINDS["mixup"]}),
                             SMALL + ["model.dropout=0.5", f"data.cache_dir={tmp_path / 'cache'}"])
    dataset = load_dataset(experiment.data)

    def jobs(run_dir, trainers, seeds):
        (run_dir / "weights").mkdir(parents=True)
        results = []
        for seed in seeds:
            write_initial_weights(experiment, dataset.image_shape, 2, seed, job.initial_weights_path(run_dir, seed))
            for arm in ("keras", "mixup"):
                this = jobfiles.Job(arm, seed, str(run_dir), str(dataset.path), config.to_dict(experiment))
                record = job.run_job(this, trainers)
                rows = read_history(this.folder / job.ROWS)
                results.append(([{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows],
                                {k: v for k, v in record.items() if k != "seconds"}))
        return results

    reused = jobs(tmp_path / "reused", {}, (0, 1))[2:]  # seed 1 on trainers that trained seed 0 first
    fresh = jobs(tmp_path / "fresh", None, (1,))
    assert reused == fresh
