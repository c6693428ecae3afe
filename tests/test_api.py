"""The Python API: run_experiment runs what `augcompare run` runs and answers with objects;
load_run reads a run back; Ctrl-C in a notebook (the kernel's SIGINT in the main thread, or a
KeyboardInterrupt in a thread that cannot install signal handlers) stops a run resumably."""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import rows_in

from augcompare.experiments import cli, config, load_run, resume_run, run_experiment, stats
from augcompare.experiments.errors import RunStopped, UserError
from augcompare.experiments.files import write_json
from augcompare.experiments.history import read_history

EXPERIMENT = {
    "name": "mine",
    "data": {"source": "arrays", "image_size": 16, "train_per_class": "all", "val_per_class": 6,
             "test_per_class": 6},
    "train": {"epochs": 2, "batch_size": 16, "seeds": [0]},
    "model": {"filters": [8], "dense_units": 8},
    "arms": {"baseline": {}, "flipped": {"horizontal_flip": True}},
}


def numbers(rows):
    return [{key: value for key, value in row.items() if key != "epoch_seconds"} for row in rows]


@pytest.fixture(scope="module")
def arrays_experiment(tmp_path_factory):
    """The experiment dict on an .npz of two classes of 30 images each (Keras' names, no val or test)."""
    folder = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    y = np.arange(60) % 2
    x[y == 1, :8] //= 3  # a class darker in its top half: something to learn
    np.savez(folder / "data.npz", x_train=x, y_train=y)
    experiment = {**EXPERIMENT, "data": {**EXPERIMENT["data"], "path": str(folder / "data.npz"),
                                         "cache_dir": str(folder / "cache")}}
    return folder, experiment


@pytest.fixture(scope="module")
def uninterrupted(arrays_experiment):
    folder, experiment = arrays_experiment
    return run_experiment(experiment, out=folder / "results", run_id="whole")


@pytest.mark.slow
def test_run_experiment_answers_with_objects_and_writes_what_the_command_line_writes(arrays_experiment,
                                                                                     uninterrupted, capsys):
    folder, experiment = arrays_experiment
    result = uninterrupted
    assert result.run_dir == folder / "results" / "mine" / "whole"
    assert result.summary == load_run(result.run_dir).summary
    assert set(result.summary["arms"]) == {"baseline", "flipped"}
    assert len(result.history) == 2 * 1 * 2 and {row["arm"] for row in result.history} == {"baseline", "flipped"}
    assert set(result.verdicts) == {"flipped"}
    assert result.verdicts["flipped"] in ("better", "worse", "equivalent", "inconclusive")
    assert result.verdicts["flipped"] == result.summary["vs_baseline"]["flipped"]["primary"]["verdict"]
    again = load_run(result.run_dir)
    assert (again.history, again.verdicts) == (result.history, result.verdicts)
    # the command line on the run's config.toml gives the same numbers
    assert cli.main(["run", str(result.run_dir / "config.toml"), "--out", str(folder / "cli"), "--run-id", "c"]) == 0
    assert numbers(read_history(folder / "cli" / "mine" / "c" / "history.csv")) == numbers(result.history)
    capsys.readouterr()


def test_resume_run_with_more_seeds_trains_their_jobs(uninterrupted, tmp_path):
    run_dir = tmp_path / "whole"
    shutil.copytree(uninterrupted.run_dir, run_dir)
    result = resume_run(run_dir, overrides={"train.seeds": [0, 1]})
    assert result.summary["arms"]["flipped"]["seeds"] == [0, 1]
    assert numbers(result.history[:4]) == numbers(uninterrupted.history)  # seed 0's, as they were
    assert sorted({row["seed"] for row in result.history}) == [0, 1] and len(result.history) == 2 * 2 * 2
    with pytest.raises(UserError, match="--set may only add seeds"):
        resume_run(run_dir, overrides={"train.epochs": 3})


def test_experiments_by_name_or_path_with_overrides_and_mistakes_as_errors(tmp_path):
    from augcompare.experiments.api import _experiment
    by_name = _experiment("demo", {"train.epochs": 3, "train.seeds": (0, 1)})
    assert by_name.train.epochs == 3 and by_name.train.seeds == (0, 1)
    assert _experiment(config.DEFAULT_EXPERIMENT, ["train.epochs=4"]).train.epochs == 4
    with pytest.raises(UserError, match="unknown key train.epoch;"):
        _experiment("demo", {"train.epoch": 3})
    with pytest.raises(UserError, match="overrides must be a dict"):
        _experiment("demo", "train.epochs=3")
    with pytest.raises(UserError, match="no arms"):
        run_experiment({"name": "x"}, out=tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="is not a run directory"):
        load_run(tmp_path)


def wait_for_a_row(folder, timeout=120):
    """Waits until some job of the run under folder has checkpointed an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(rows_in(path) for path in folder.glob("results/mine/*/jobs/*/rows.csv")):
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_in_a_thread_without_signal_handlers_stops_resumably(arrays_experiment, uninterrupted, tmp_path):
    """A notebook's KeyboardInterrupt raised in a thread that runs the experiment (no signal
    handler can be installed there)."""
    _, experiment = arrays_experiment
    outcome = {}

    def target():
        try:
            outcome["result"] = run_experiment(experiment, out=tmp_path / "results", run_id="r")
        except BaseException as error:  # noqa: B036  (what the interrupted call raised, checked below)
            outcome["error"] = error
    thread = threading.Thread(target=target)
    thread.start()
    assert wait_for_a_row(tmp_path)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt))
    thread.join(120)
    run_dir = tmp_path / "results" / "mine" / "r"
    error = outcome.get("error")
    assert isinstance(error, RunStopped), outcome
    assert str(error) == ("interrupted; every finished epoch is saved. Continue with: "
                          f"augcompare run --resume {run_dir} "
                          f"(from Python: resume_run({str(run_dir)!r}))")
    resumed = resume_run(run_dir)
    assert numbers(resumed.history) == numbers(uninterrupted.history)
    assert resumed.verdicts == uninterrupted.verdicts


def test_the_kernels_sigint_in_the_main_thread_stops_resumably(arrays_experiment, uninterrupted, tmp_path):
    _, experiment = arrays_experiment
    watcher = threading.Thread(target=lambda: wait_for_a_row(tmp_path) and os.kill(os.getpid(), signal.SIGINT))
    watcher.start()
    with pytest.raises(RunStopped, match="stopped by SIGINT; every finished epoch is saved") as error:
        run_experiment(experiment, out=tmp_path / "results", run_id="r")
    watcher.join()
    assert error.value.exit_code == 130 and "resume_run(" in str(error.value)
    assert numbers(resume_run(error.value.run_dir).history) == numbers(uninterrupted.history)


@pytest.mark.slow
def test_tensorflow_start_up_lines_stay_off_when_augcompare_is_imported_first():
    script = ("from augcompare.experiments import run_experiment; import tensorflow as tf; "
              "print(int(tf.constant(2) + 1))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, "3\n", "")


def test_a_run_that_never_trained_is_named_as_such_by_plot_and_load_run(tmp_path, capsys):
    run_dir = tmp_path / "results" / "demo" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(config.dumps(config.to_dict(config.load())))
    assert cli.main(["plot", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert error == (f"augcompare: error: {run_dir} never trained an epoch (no history.csv), so there is nothing to "
                     f"plot; continue it with augcompare run --resume {run_dir}, or delete it\n")
    with pytest.raises(UserError, match=r"has not finished \(no summary.json yet\): continue it with resume_run\("):
        load_run(run_dir)


def written_run(run_dir, values, baseline, sweeps=None):
    """A run directory with a config.toml and the summary.json of arms whose test accuracy per seed
    is values[arm] (nothing trained)."""
    history, jobs = [], {}
    for arm, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            history.append({"arm": arm, "seed": seed, "epoch": 1, "loss": 0.1, "accuracy": 0.9, "val_loss": 0.3,
                            "val_accuracy": 0.7, "epoch_seconds": 1.0})
            jobs[arm, seed] = {"arm": arm, "seed": seed, "status": "finished", "epochs": 1, "reason": "",
                               "test_accuracy": value, "test_loss": 1 - value}
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(config.dumps(config.to_dict(config.load())))
    write_json(run_dir / "summary.json", {"name": "x", **stats.summarize(history, list(values), 1, jobs,
                                                                         baseline=baseline, sweeps=sweeps)})
    return run_dir


STRONG, PLAIN, WEAK = ([0.80, 0.83, 0.77, 0.82, 0.79, 0.81], [0.70, 0.72, 0.68, 0.71, 0.69, 0.70],
                       [0.60, 0.61, 0.57, 0.62, 0.58, 0.60])


def test_load_run_carries_the_ranking_the_best_arm_every_pair_and_the_sweeps(tmp_path):
    """Three augmented arms and no baseline: the verdicts are every pair's (not empty), with the
    ranking, the best arm, each pair's difference in points and the sweep."""
    sweeps = {"rot": {"setting": "rotation", "values": [10, 30], "arms": ["rot-10", "rot-30"]}}
    result = load_run(written_run(tmp_path / "r", {"standard": STRONG, "rot-10": PLAIN, "rot-30": WEAK}, None,
                                  sweeps))
    assert result.verdicts == {("rot-10", "standard"): "worse", ("rot-30", "standard"): "worse",
                               ("rot-30", "rot-10"): "worse"}
    assert result.ranking == ["standard", "rot-10", "rot-30"] and result.best == "standard"
    pair = result.pairs["rot-10", "standard"]
    assert pair["difference"] == pytest.approx(100 * np.mean(np.subtract(PLAIN, STRONG)))
    assert pair["ci95"][0] < pair["difference"] < pair["ci95"][1] < 0 and pair["seeds"] == 6
    assert result.sweeps["rot"]["best"] == 10 and "best='standard'" in repr(result)


def test_load_run_of_two_arms_names_the_better_one_or_none(tmp_path):
    result = load_run(written_run(tmp_path / "a", {"baseline": PLAIN, "flip": STRONG}, "baseline"))
    assert result.verdicts == {"flip": "better"} and result.best == "flip" and result.ranking == ["flip", "baseline"]
    assert set(result.pairs) == {("flip", "baseline")} and result.sweeps == {}
    close = [value + 0.001 * (-1) ** seed for seed, value in enumerate(PLAIN)]
    result = load_run(written_run(tmp_path / "b", {"baseline": PLAIN, "flip": close}, "baseline"))
    assert result.best is None and result.verdicts["flip"] != "better"
