"""End to end: `augcompare run`, `plot` and `preview` on a small demo data set."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from augcompare.experiments import cli, config, runner
from augcompare.experiments.data import load_dataset

SMALL = ["data.image_size=32", "data.train_per_class=24", "data.val_per_class=8", "train.epochs=2",
         "train.seeds=[0, 1]", "train.batch_size=16", "model.filters=[8, 16]", "model.dense_units=16"]
OUTPUTS = ["config.toml", "environment.json", "history.csv", "runs.json", "summary.json", "summary.md",
           "accuracy.png", "loss.png", "ablation.png", "augmentations.png", "preview_samples.npy"]


def settings(tmp_path, *extra):
    return [arg for item in SMALL + [f"data.cache_dir={tmp_path / 'cache'}", *extra] for arg in ("--set", item)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One run of three arms, two of them identical, for two seeds and two epochs."""
    tmp_path = tmp_path_factory.mktemp("run")
    args = ["run", "--out", str(tmp_path / "results")] + settings(
        tmp_path, "arms.twin={}", "model.dropout=0.5")
    assert cli.main(args) == 0
    (run_dir,) = (tmp_path / "results" / "demo").iterdir()
    return run_dir


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_every_output_file(finished_run):
    for name in OUTPUTS:
        assert (finished_run / name).is_file() and (finished_run / name).stat().st_size > 0, name
    assert len(finished_run.name) == len("YYYYmmdd-HHMMSS")


def test_history_has_a_row_per_arm_seed_and_epoch(finished_run):
    rows = read_rows(finished_run / "history.csv")
    assert list(rows[0]) == ["arm", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                             "epoch_seconds"]
    assert len(rows) == 3 * 2 * 2
    assert {(r["arm"], r["seed"], r["epoch"]) for r in rows} == {
        (arm, str(seed), str(epoch)) for arm in ("baseline", "augmented", "twin") for seed in (0, 1)
        for epoch in (1, 2)}
    assert all(float(r["epoch_seconds"]) > 0 for r in rows)


def test_identical_arms_train_identically(finished_run):
    """Same initial weights, same order, same dropout masks: two arms without augmentation
    must produce the same numbers, so any difference between arms is the augmentation's."""
    rows = read_rows(finished_run / "history.csv")
    for seed in ("0", "1"):
        base = [r for r in rows if r["arm"] == "baseline" and r["seed"] == seed]
        twin = [r for r in rows if r["arm"] == "twin" and r["seed"] == seed]
        columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
        assert [[r[c] for c in columns] for r in base] == [[r[c] for c in columns] for r in twin]
    augmented = [r["loss"] for r in rows if r["arm"] == "augmented"]
    assert augmented != [r["loss"] for r in rows if r["arm"] == "baseline"]


def test_every_arm_starts_from_the_saved_initial_weights(finished_run):
    experiment = config.build(config.read_toml(finished_run / "config.toml"))
    weights = finished_run / "weights" / "initial-seed1.weights.h5"
    reference = runner.build_cnn(experiment, (32, 32, 3), 2)
    reference.load_weights(weights)
    for arm, augmentation in experiment.arms.items():
        model = runner.training_model(experiment, augmentation, (32, 32, 3), 2, 1, weights)
        cnn = model.layers[-1]
        assert all(np.array_equal(a, b) for a, b in zip(cnn.get_weights(), reference.get_weights())), arm


def test_summary_and_resolved_config(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["baseline"] == "baseline"
    assert set(summary["arms"]) == {"baseline", "augmented", "twin"}
    assert summary["arms"]["augmented"]["seeds"] == [0, 1]
    assert set(summary["vs_baseline"]) == {"augmented", "twin"}
    assert summary["vs_baseline"]["twin"]["final_val_accuracy"]["mean"] == 0
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


def test_preview_writes_a_grid(tmp_path):
    output = tmp_path / "grid.png"
    args = ["preview", "--arm", "augmented", "--output", str(output), "--count", "2"] + settings(tmp_path)
    assert cli.main(args) == 0
    assert output.stat().st_size > 1000


def test_demo_data_is_deterministic_and_cached(tmp_path):
    experiment = config.load(overrides=SMALL + [f"data.cache_dir={tmp_path}"])
    first = load_dataset(experiment.data)
    again = load_dataset(experiment.data)
    assert first.path == again.path and len(list(tmp_path.iterdir())) == 1
    other = config.load(overrides=SMALL + [f"data.cache_dir={tmp_path / 'b'}"])
    fresh = load_dataset(other.data)
    assert np.array_equal(first.train_images, fresh.train_images)
    assert first.train_images.shape == (48, 32, 32, 3) and first.class_names == ("room", "tower")
    assert np.bincount(first.val_labels).tolist() == [8, 8]


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
    first, second = runner.new_run_dir(tmp_path), runner.new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
