"""End to end: `augcompare run`, `plot` and `preview` on a small demo data set."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SMALL, overrides, run_small

from augcompare.experiments import cli, config, run
from augcompare.experiments.data import load_dataset
from augcompare.experiments.jobfiles import initial_weights_path
from augcompare.experiments.training import Trainer, build_classifier

OUTPUTS = ["config.toml", "environment.json", "data.json", "history.csv", "runs.json", "summary.json", "summary.md",
           "accuracy.png", "loss.png", "ablation.png", "augmentations.png", "preview_samples.npy",
           "preview_labels.npy"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One run of three arms, two of them identical, for two seeds and two epochs, with dropout."""
    tmp_path = tmp_path_factory.mktemp("run")
    return run_small(tmp_path, "arms.twin={}", "model.dropout=0.5", "train.seeds=[0, 1]", run_id="20260101-000000")


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_every_output_file_and_leaves_no_job_folders(finished_run):
    for name in OUTPUTS:
        assert (finished_run / name).is_file() and (finished_run / name).stat().st_size > 0, name
    assert not (finished_run / "jobs").exists()  # merged and removed as each job ended


def test_history_has_a_row_per_arm_seed_and_epoch_in_a_fixed_order(finished_run):
    rows = read_rows(finished_run / "history.csv")
    assert list(rows[0]) == ["arm", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                             "epoch_seconds"]
    assert [(r["arm"], r["seed"], r["epoch"]) for r in rows] == [
        (arm, str(seed), str(epoch)) for seed in (0, 1) for arm in ("baseline", "augmented", "twin")
        for epoch in (1, 2)]
    assert all(float(r["epoch_seconds"]) > 0 for r in rows)


def test_identical_arms_train_identically(finished_run):
    """Same initial weights, same order, same dropout masks: two arms without augmentation
    produce the same numbers, test results included, so any difference between arms is the
    augmentation's."""
    rows = read_rows(finished_run / "history.csv")
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    for seed in ("0", "1"):
        base = [[r[c] for c in columns] for r in rows if r["arm"] == "baseline" and r["seed"] == seed]
        twin = [[r[c] for c in columns] for r in rows if r["arm"] == "twin" and r["seed"] == seed]
        assert base == twin
    augmented = [r["loss"] for r in rows if r["arm"] == "augmented"]
    assert augmented != [r["loss"] for r in rows if r["arm"] == "baseline"]
    jobs = {(j["arm"], j["seed"]): j for j in json.loads((finished_run / "runs.json").read_text())["jobs"]}
    for seed in (0, 1):
        assert jobs["baseline", seed]["test_accuracy"] == jobs["twin", seed]["test_accuracy"]


def test_every_arm_starts_from_the_saved_initial_weights(finished_run):
    experiment = config.build(config.read_toml(finished_run / "config.toml"))
    dataset = load_dataset(experiment.data)
    weights = initial_weights_path(finished_run, 1)
    reference = build_classifier(experiment, (32, 32, 3), 2, seed=1)
    fresh = [w.copy() for w in reference.get_weights()]
    reference.load_weights(weights)
    assert all(np.array_equal(a, b) for a, b in zip(fresh, reference.get_weights()))  # the seed alone decides them
    import tensorflow as tf
    for arm in experiment.arms:
        trainer = Trainer(experiment, arm, (32, 32, 3), 2, dataset.value_range, 3, tf.distribute.get_strategy())
        trainer.reset(1, weights)
        assert all(np.array_equal(a, b) for a, b in zip(trainer.classifier.get_weights(), reference.get_weights()))


def test_summary_declares_the_primary_metric_and_reports_test_results(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["baseline"] == "baseline" and summary["primary"]["metric"] == "test_accuracy"
    assert set(summary["arms"]) == {"baseline", "augmented", "twin"}
    augmented = summary["arms"]["augmented"]
    assert augmented["seeds"] == [0, 1]
    assert all(0 <= v <= 1 for v in augmented["test_accuracy"]["values"]) and len(augmented["test_loss"]["values"]) == 2
    primary = summary["vs_baseline"]["augmented"]["primary"]
    assert set(primary) >= {"metric", "mean", "ci95", "p_holm", "verdict", "seeds"}
    assert primary["verdict"] in ("better", "worse", "equivalent", "inconclusive") and primary["seeds"] == 2
    twin = summary["vs_baseline"]["twin"]["primary"]
    # The twin is the baseline's settings again: the same numbers on every seed are no spread, not equivalence.
    assert twin["mean"] == 0 and twin["verdict"] == "inconclusive" and twin["reason"] == "no spread across 2 seeds"
    markdown = (finished_run / "summary.md").read_text()
    assert markdown.index("## Primary metric: test accuracy") < markdown.index("## Arms (secondary)")
    resolved = config.read_toml(finished_run / "config.toml")
    assert resolved["train"]["epochs"] == 2 and resolved["model"]["dropout"] == 0.5


def test_plot_redraws_every_figure_from_the_saved_history(finished_run, capsys):
    figures = ["accuracy.png", "loss.png", "ablation.png", "augmentations.png", "summary.md"]
    for name in figures:
        (finished_run / name).unlink()
    assert cli.main(["plot", str(finished_run)]) == 0
    assert all((finished_run / name).is_file() for name in figures)
    assert "| augmented | 2 |" in capsys.readouterr().out


def test_plot_can_draw_each_seed_as_a_thin_line(finished_run):
    plain = (finished_run / "accuracy.png").read_bytes()
    assert cli.main(["plot", "--per-seed", str(finished_run)]) == 0
    assert (finished_run / "accuracy.png").read_bytes() != plain


def test_preview_writes_a_grid_and_refuses_an_arm_without_augmentation(tmp_path, capsys):
    output = tmp_path / "grid.png"
    sets = overrides(*SMALL, f"data.cache_dir={tmp_path / 'cache'}")
    assert cli.main(["preview", "--arm", "augmented", "--output", str(output), "--count", "2"] + sets) == 0
    assert output.stat().st_size > 1000
    assert cli.main(["preview", "--arm", "baseline", "--output", str(output)] + sets) == 2
    assert "arm 'baseline' has no augmentation" in capsys.readouterr().err


def test_demo_data_has_three_disjoint_splits_and_is_cached(tmp_path):
    experiment = config.load(overrides=SMALL + [f"data.cache_dir={tmp_path}"])
    first = load_dataset(experiment.data)
    again = load_dataset(experiment.data)
    assert first.path == again.path and len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 1
    other = config.load(overrides=SMALL + [f"data.cache_dir={tmp_path / 'b'}"])
    assert np.array_equal(first.train_images, load_dataset(other.data).train_images)
    assert first.train_images.shape == (48, 32, 32, 3) and first.class_names == ("room", "tower")
    assert np.bincount(first.val_labels).tolist() == [8, 8] and np.bincount(first.test_labels).tolist() == [8, 8]
    splits = [{image.tobytes() for image in first.split(name)[0]} for name in ("train", "val", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and not (splits[1] & splits[2])


def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys):
    assert cli.main(["run", "--set", "train.epoch=3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("augcompare: error: unknown key train.epoch") and error.count("\n") == 1
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_console_script_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "augcompare.experiments.cli", "run", str(tmp_path / "missing.toml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "missing.toml does not exist" in result.stderr and "Traceback" not in result.stderr


def test_two_runs_never_share_a_directory(tmp_path):
    first, second = run.new_run_dir(tmp_path), run.new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_an_error_after_a_progress_line_starts_on_its_own_line(capsys):
    from augcompare.experiments import console
    console.status("  prepared 64/300 images  1,000 images/s")
    assert cli.main(["run", "--set", "train.epoch=3"]) == 2
    error = capsys.readouterr().err
    status, message, _ = error.split("\n")
    assert status.strip().endswith("images/s") and message.startswith("augcompare: error: unknown key train.epoch")


@pytest.mark.slow
def test_start_up_is_quiet_and_listing_commands_and_a_runs_planning_load_no_tensorflow():
    scripts = {
        # A run's driver plans and starts its job workers before it loads TensorFlow (experiments.run).
        "listing": "import sys; from augcompare.experiments import cli, executors, run; cli.main(['augmentations']); "
                   "cli.main(['experiments']); print('tensorflow loaded:', 'tensorflow' in sys.modules); "
                   "import os; print('oneDNN:', os.environ.get('TF_ENABLE_ONEDNN_OPTS'))",
        # The augmentation alone leaves the process's settings as they were (oneDNN: the harness's),
        # and Keras with the integrations it loads where they are installed.
        "api": "import os; import numpy as np; from augcompare.augment import Augmentation; "
               "Augmentation(rotation=10)(np.zeros((2, 8, 8, 3), np.uint8), seed=0); "
               "print('oneDNN set:', 'TF_ENABLE_ONEDNN_OPTS' in os.environ); "
               "from keras.src.wrappers import sklearn_wrapper; print('scikit-learn:', bool(sklearn_wrapper.sklearn))",
        # A process of the harness's own loads Keras without them; they import as usual afterwards.
        "harness": "import sys; from augcompare.experiments.machine import lean_keras; lean_keras(); "
                   "from augcompare.augment.backend import KERAS_EXTRAS, keras; "
                   "print('loaded:', [name for name in KERAS_EXTRAS if sys.modules.get(name)]); "
                   "import pandas, sklearn; print('importable: True')",
        # Modules that import keras.src, each imported first.
        **{module: f"import {module}"
           for module in ("augcompare.augment.keras_layers", "augcompare.experiments.training")},
    }
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TF_ENABLE_ONEDNN_OPTS", "AUGCOMPARE_LEAN_KERAS")}
    processes = {name: subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=environment)
                 for name, script in scripts.items()}  # side by side: each mostly waits on imports
    results = {name: (*process.communicate(timeout=120), process.returncode) for name, process in processes.items()}
    for name, (_, stderr, code) in results.items():
        assert code == 0 and stderr == "", (name, stderr)  # no absl, oneDNN, CUDA or retracing lines
    assert results["listing"][0].strip().endswith("tensorflow loaded: False\noneDNN: 1")
    assert results["api"][0].strip() == "oneDNN set: False\nscikit-learn: True"  # the test extra installs it
    assert results["harness"][0].strip() == "loaded: []\nimportable: True"


@pytest.mark.slow
def test_skipped_images_are_named_in_the_runs_output_and_directory(tmp_path, capsys):
    from test_prepare import write_folder
    write_folder(tmp_path / "images", {"cat": (60, 0, 0), "dog": (0, 60, 0)}, 9)
    (tmp_path / "images" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    run_dir = run_small(tmp_path, "data.source=folder", f"data.root={tmp_path / 'images'}", "data.image_size=16",
                        "data.train_per_class=3", "data.val_per_class=2", "data.test_per_class=2",
                        "data.max_skip_fraction=0.5", "data.workers=1", "arms.augmented={horizontal_flip = true}")
    out = capsys.readouterr().out
    assert "data: 1 item(s) skipped while preparing" in out and "broken.png" in out
    data = json.loads((run_dir / "data.json").read_text())
    assert sum(data["skipped"].values()) == 1
    assert any("broken.png" in name for names in data["skipped_examples"].values() for name in names)
