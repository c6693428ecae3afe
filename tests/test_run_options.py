"""Per-experiment options of a run (early stopping, the val-selected epoch, best models,
TensorBoard), a job whose loss becomes NaN, and the rule that the test split decides nothing."""

import json
import re
import shutil
import warnings

import keras
import numpy as np
import pytest
from conftest import SMALL, fail_with_nan, overrides, run_small

from augcompare.experiments import cache, config, jobfiles
from augcompare.experiments.data import load_dataset
from augcompare.experiments.history import read_history


def rows(monitor_values, monitor="val_loss"):
    return [{"epoch": e + 1, monitor: v} for e, v in enumerate(monitor_values)]


def test_early_stopping_rule():
    assert not jobfiles.should_stop_early(rows([1.0, 0.9, 0.95]), "val_loss", 2)
    assert jobfiles.should_stop_early(rows([1.0, 0.9, 0.95, 0.91]), "val_loss", 2)
    assert not jobfiles.should_stop_early(rows([1.0, 0.9, 0.95, 0.91]), "val_loss", 0)  # 0 = off
    assert jobfiles.should_stop_early(rows([0.5, 0.7, 0.7], "val_accuracy"), "val_accuracy", 1)  # ties are no better
    assert not jobfiles.should_stop_early(rows([0.5, 0.6, 0.7], "val_accuracy"), "val_accuracy", 1)


def jobs_of(run_dir):
    return {(j["arm"], j["seed"]): j for j in json.loads((run_dir / "runs.json").read_text())["jobs"]}


def decisions(run_dir):
    """What val decided for each job: its rows (without timings), status and selected epoch."""
    history = [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in read_history(run_dir / "history.csv")]
    return history, {key: (j["status"], j["epochs"], j["selected_epoch"]) for key, j in jobs_of(run_dir).items()}


@pytest.fixture(scope="module")
def early_stopped(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("early")
    run_dir = run_small(tmp_path, "train.epochs=8", "train.seeds=[0, 1]", "train.early_stopping=1",
                        "train.learning_rate=0.01", "train.lr_schedule=constant")
    return tmp_path, run_dir


@pytest.mark.slow
def test_early_stopping_ends_jobs_and_the_summary_says_so(early_stopped):
    _, run_dir = early_stopped
    records = jobs_of(run_dir)
    history = read_history(run_dir / "history.csv")
    stopped = [r for r in records.values() if r["status"] == "stopped_early"]
    assert stopped, "no job stopped early with patience 1 over 8 epochs at a high learning rate"
    for record in records.values():
        mine = [row for row in history if (row["arm"], row["seed"]) == (record["arm"], record["seed"])]
        assert len(mine) == record["epochs"]
        assert jobfiles.should_stop_early(mine, "val_loss", 1) == (record["status"] == "stopped_early")
        # the selected epoch is the one val chose, and test was measured for both weights
        assert record["selected_epoch"] == jobfiles.best_index(mine, "val_loss") + 1
        assert 0 <= record["test_accuracy"] <= 1 and 0 <= record["selected_test_accuracy"] <= 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert stopped[0]["seed"] in summary["arms"][stopped[0]["arm"]]["stopped_early"]
    assert "stopped early" in (run_dir / "summary.md").read_text()


@pytest.mark.slow
def test_test_labels_change_no_decision(early_stopped):
    """Other test labels change the test results and nothing val decided."""
    tmp_path, run_dir = early_stopped
    experiment = config.build(config.read_toml(run_dir / "config.toml"))
    original = load_dataset(experiment.data)
    copy = tmp_path / "shuffled"
    shutil.copytree(original.path, copy)
    labels = np.load(copy / "test_labels.npy")
    np.save(copy / "test_labels.npy", np.zeros_like(labels))  # every test image now says "room"
    again = run_small(tmp_path, "train.epochs=8", "train.seeds=[0, 1]", "train.early_stopping=1",
                      "train.learning_rate=0.01", "train.lr_schedule=constant", "data.source=cache",
                      f"data.path={copy}", run_id="shuffled")
    assert decisions(again) == decisions(run_dir)
    before, after = jobs_of(run_dir), jobs_of(again)
    assert [before[k]["test_accuracy"] for k in before] != [after[k]["test_accuracy"] for k in before]
    assert cache.open_cache(copy).meta["counts"]["test"] == len(labels)


@pytest.mark.slow
def test_best_models_and_tensorboard_logs(tmp_path):
    run_dir = run_small(tmp_path, "train.epochs=3", "train.save_best=true", "train.tensorboard=true",
                        "train.monitor=val_accuracy")
    history = read_history(run_dir / "history.csv")
    experiment = config.build(config.read_toml(run_dir / "config.toml"))
    dataset = load_dataset(experiment.data)
    for arm in ("baseline", "augmented"):
        mine = [row for row in history if row["arm"] == arm]
        selected = mine[jobfiles.best_index(mine, "val_accuracy")]
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # nothing skipped while loading
            model = keras.saving.load_model(run_dir / "best" / f"{arm}-seed0.keras")
        _, accuracy = model.evaluate(np.asarray(dataset.val_images), dataset.val_labels, verbose=0)
        assert accuracy == pytest.approx(selected["val_accuracy"], abs=1e-6)
        _, test_accuracy = model.evaluate(np.asarray(dataset.test_images), dataset.test_labels, verbose=0)
        assert test_accuracy == pytest.approx(jobs_of(run_dir)[arm, 0]["selected_test_accuracy"], abs=1e-6)
        assert list((run_dir / "tensorboard" / f"{arm}-seed0").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_a_nan_loss_fails_that_job_and_the_others_go_on(tmp_path, monkeypatch):
    fail_with_nan(monkeypatch, "broken")
    run_dir = run_small(tmp_path, "train.seeds=[0, 1]", "train.lr_schedule=constant", "arms.broken={contrast = 0.5}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["arms"]["broken"]["seeds"] == []
    assert [f["seed"] for f in summary["arms"]["broken"]["failed"]] == [0, 1]
    assert "loss became nan in epoch 1" in summary["arms"]["broken"]["failed"][0]["reason"]
    assert summary["arms"]["augmented"]["seeds"] == [0, 1] and "broken" not in summary["vs_baseline"]
    assert "broken seed 0 failed: loss became nan" in (run_dir / "summary.md").read_text()
    assert {row["arm"] for row in read_history(run_dir / "history.csv")} == {"baseline", "augmented"}


@pytest.mark.parametrize("face", ["command line", "python"])
def test_quiet_prints_the_plan_a_progress_line_and_the_answer_not_a_line_per_epoch_or_job(tmp_path, face, capsys):
    """augcompare run --quiet and run_experiment(quiet=True): the plan and the answer on stdout,
    the progress on the one status line of stderr (no terminal here, so no live bar), and no
    line per epoch or per job."""
    from augcompare.experiments import cli, run_experiment
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}"]
    if face == "command line":
        args = ["run", "--quiet", "--out", str(tmp_path / "results"), "--run-id", "q"] + overrides(*sets)
        assert cli.main(args) == 0
    else:
        result = run_experiment("demo", overrides=sets, out=tmp_path / "results", run_id="q", quiet=True)
        assert result.verdicts["augmented"] in ("better", "worse", "equivalent", "inconclusive")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("demo: 48 train / 16 val / 16 test")
    assert "plan: 2 arms x 1 seeds = 2 jobs of 2 epochs" in lines  # the plan
    assert any(line.startswith("**augmented: ") for line in lines)  # the answer, as summary.md says it
    assert not [line for line in lines if re.search(r"seed \d+ +epoch +\d+/\d+|^job .* done: ", line)]
    assert "2/2 jobs, 4/4 epochs" in err and err.endswith("\n")  # the status line, ended

