"""train.strategy: each arm under tf.distribute, on a CPU split into two logical devices. Each
case runs in a fresh process, since devices are fixed when TensorFlow starts."""

import json
import os
import subprocess
import sys

import pytest
from conftest import SMALL

from augcompare.experiments.history import read_history


@pytest.mark.slow
def test_arms_train_under_a_distribution_strategy(tmp_path):
    """mirrored over two CPU devices (its augmented arm a Keras layer's, which must not start
    TensorFlow's devices before they are split), and multi_worker with one worker; side by side,
    each in its own process."""
    cases = {"mirrored": 2, "multi_worker": 1}
    arms = {"mirrored": ['arms.augmented={keras = [{layer = "RandomErasing", factor = 0.5}]}'], "multi_worker": []}
    processes = {}
    for strategy in cases:
        sets = SMALL + [f"data.cache_dir={tmp_path / strategy / 'cache'}", f"train.strategy={strategy}",
                        "train.cpu_devices=2", *arms[strategy]]
        command = [sys.executable, "-m", "augcompare.experiments.cli", "run", "--out", str(tmp_path / strategy),
                   "--run-id", "r"]
        processes[strategy] = subprocess.Popen(command + [a for s in sets for a in ("--set", s)],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                               env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"})
    for strategy, replicas in cases.items():
        _, stderr = processes[strategy].communicate(timeout=240)
        assert processes[strategy].returncode == 0, stderr[-2000:]
        run_dir = tmp_path / strategy / "demo" / "r"
        environment = json.loads((run_dir / "environment.json").read_text())
        assert environment["devices"] == ["/device:CPU:0", "/device:CPU:1"]
        assert environment["strategy"] == strategy and environment["replicas"] == replicas
        history = read_history(run_dir / "history.csv")
        assert [(r["arm"], r["epoch"]) for r in history] == [("baseline", 1), ("baseline", 2), ("augmented", 1),
                                                              ("augmented", 2)]
        assert all(0 <= r["val_accuracy"] <= 1 and r["loss"] > 0 for r in history)


def test_multi_worker_across_workers_is_refused_with_the_reason(tmp_path, monkeypatch, capsys):
    from augcompare.experiments import cli
    cluster = {"cluster": {"worker": ["localhost:23456", "localhost:23457"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster))
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", "train.strategy=multi_worker"]
    assert cli.main(["run", "--out", str(tmp_path), "--run-id", "r"] + [a for s in sets for a in ("--set", s)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "with 2 workers in TF_CONFIG" in error and "keras-team/keras#20585" in error
    assert not (tmp_path / "demo" / "r").exists()
