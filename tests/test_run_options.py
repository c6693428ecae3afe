"""Per-experiment options of a run (early stopping, best models, TensorBoard) and a run whose
loss becomes NaN."""

import json

import keras
import numpy as np
import pytest

from augcompare.augment import Augmentation
from augcompare.experiments import cli, runner
from augcompare.experiments.data import load_dataset
from augcompare.experiments import config
from augcompare.experiments.history import read_history

SMALL = ["data.image_size=32", "data.train_per_class=24", "data.val_per_class=8", "train.batch_size=16",
         "model.filters=[8, 16]", "model.dense_units=16"]


def run(tmp_path, *extra):
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", *extra]
    args = ["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + [a for s in sets for a in ("--set", s)]
    assert cli.main(args) == 0
    return tmp_path / "results" / "demo" / "r"


def rows(monitor_values, monitor="val_loss"):
    return [{"epoch": e + 1, monitor: v} for e, v in enumerate(monitor_values)]


def test_early_stopping_rule():
    assert not runner.should_stop_early(rows([1.0, 0.9, 0.95]), "val_loss", 2)
    assert runner.should_stop_early(rows([1.0, 0.9, 0.95, 0.91]), "val_loss", 2)
    assert not runner.should_stop_early(rows([1.0, 0.9, 0.95, 0.91]), "val_loss", 0)  # 0 = off
    assert runner.should_stop_early(rows([0.5, 0.7, 0.7], "val_accuracy"), "val_accuracy", 1)  # ties are no better
    assert not runner.should_stop_early(rows([0.5, 0.6, 0.7], "val_accuracy"), "val_accuracy", 1)


def test_early_stopping_ends_runs_and_the_summary_says_so(tmp_path):
    run_dir = run(tmp_path, "train.epochs=8", "train.seeds=[0, 1]", "train.early_stopping=1",
                  "train.learning_rate=0.01")
    records = json.loads((run_dir / "runs.json").read_text())["runs"]
    history = read_history(run_dir / "history.csv")
    stopped = [r for r in records if r["status"] == "stopped_early"]
    assert stopped, "no run stopped early with patience 1 over 8 epochs at a high learning rate"
    for record in records:
        mine = [row for row in history if (row["arm"], row["seed"]) == (record["arm"], record["seed"])]
        assert len(mine) == record["epochs"]
        assert runner.should_stop_early(mine, "val_loss", 1) == (record["status"] == "stopped_early")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert stopped[0]["seed"] in summary["arms"][stopped[0]["arm"]]["stopped_early"]
    assert "stopped early" in (run_dir / "summary.md").read_text()


def test_best_models_and_tensorboard_logs(tmp_path):
    run_dir = run(tmp_path, "train.epochs=3", "train.seeds=[0]", "train.save_best=true",
                  "train.tensorboard=true", "train.monitor=val_accuracy")
    history = read_history(run_dir / "history.csv")
    experiment = config.build(config.read_toml(run_dir / "config.toml"))
    dataset = load_dataset(experiment.data)
    for arm in ("baseline", "augmented"):
        best = max(row["val_accuracy"] for row in history if row["arm"] == arm)
        model = keras.saving.load_model(run_dir / "best" / f"{arm}-seed0.keras")
        _, accuracy = model.evaluate(np.asarray(dataset.val_images), dataset.val_labels, verbose=0)
        assert accuracy == pytest.approx(best, abs=1e-6)
        assert list((run_dir / "tensorboard" / f"{arm}-seed0").rglob("events.out.tfevents.*"))


def test_a_nan_loss_fails_that_run_and_the_others_go_on(tmp_path, monkeypatch):
    broken = Augmentation(contrast=0.5)
    make_model = runner.training_model

    def training_model(experiment, augmentation, *args):
        model = make_model(experiment, augmentation, *args)
        if augmentation == broken:
            model.optimizer.learning_rate.assign(float("nan"))  # the first update makes every weight NaN
        return model
    monkeypatch.setattr(runner, "training_model", training_model)
    run_dir = run(tmp_path, "train.epochs=2", "train.seeds=[0, 1]", "arms.broken={contrast = 0.5}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["arms"]["broken"]["seeds"] == []
    assert [f["seed"] for f in summary["arms"]["broken"]["failed"]] == [0, 1]
    assert "loss became nan in epoch 1" in summary["arms"]["broken"]["failed"][0]["reason"]
    assert summary["arms"]["augmented"]["seeds"] == [0, 1] and "broken" not in summary["vs_baseline"]
    assert "broken seed 0 failed: loss became nan" in (run_dir / "summary.md").read_text()
    assert {row["arm"] for row in read_history(run_dir / "history.csv")} == {"baseline", "augmented"}
