"""MLflow tracking ([track] mlflow), with the real package on an embedded sqlite store: a run is
one MLflow run with a nested run per job; --resume continues the same MLflow runs and never logs
an epoch twice; a tracker failing mid-run leaves the run's own files whole and --resume logs what
it missed; an unreachable tracking URI stops the run before training, or lets it go on untracked
when the user says so; with tracking off MLflow is never imported."""

import ast
import contextlib
import csv
import io
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import SMALL, overrides

from augcompare.experiments import cli, config, resume_run, tracking
from augcompare.experiments.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def closed_port():
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A tracked run (two arms, one seed, two epochs) taken through what resuming must survive:

    1. stopped (as by Ctrl-C) right after the baseline's first epoch reached MLflow;
    2. its baseline job folder deleted, so that epoch, which MLflow holds, is trained again, then
       resumed with the tracking store failing at the augmented job's first epoch: the run ends
       untracked, with a warning;
    3. its mlflow.json stripped of the augmented job's id (as by a kill just after its nested run
       was made), then resumed again, with nothing left to train: it logs what MLflow missed.
    Yields the run directory, the store's URI, an MlflowClient of it and what was seen on the way."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    tmp_path = tmp_path_factory.mktemp("tracked")
    # A new sqlite store runs MLflow's schema migrations, each synced to disk: seconds on a disk,
    # none in memory (tmpfs), where there is one.
    memory = Path("/dev/shm")
    store = Path(tempfile.mkdtemp(dir=memory)) if memory.is_dir() and os.access(memory, os.W_OK) else tmp_path
    uri = f"sqlite:///{store / 'mlflow.db'}"
    seen = {}
    with pytest.MonkeyPatch.context() as patch:
        epoch = tracking.Tracker.epoch

        def epoch_then_ctrl_c(self, arm, seed, row):
            epoch(self, arm, seed, row)
            raise KeyboardInterrupt
        patch.setattr(tracking.Tracker, "epoch", epoch_then_ctrl_c)
        sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", f"track.mlflow={uri}", "track.experiment=tracked"]
        code = cli.main(["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + overrides(*sets))
    run_dir = tmp_path / "results" / "demo" / "r"
    client = MlflowClient(uri)
    ids = json.loads((run_dir / "mlflow.json").read_text())
    baseline_run = ids["jobs"]["baseline-seed0"]
    seen["stopped"] = (code, client.get_run(ids["run_id"]).info.status, client.get_run(baseline_run).info.status,
                       [m.step for m in client.get_metric_history(baseline_run, "loss")], dict(ids["jobs"]))
    shutil.rmtree(run_dir / "jobs" / "baseline-seed0")

    with pytest.MonkeyPatch.context() as patch:
        log_batch = MlflowClient.log_batch

        def failing_log_batch(self, run_id, metrics=(), *args, **kwargs):
            first = any(metric.key == "loss" and metric.step == 1 for metric in metrics)
            if first and run_id != baseline_run:  # the augmented job's first epoch
                raise MlflowException("the tracking server went away")
            return log_batch(self, run_id, metrics, *args, **kwargs)
        patch.setattr(MlflowClient, "log_batch", failing_log_batch)
        with contextlib.redirect_stdout(io.StringIO()) as out:
            resume_run(run_dir)
    seen["output"] = out.getvalue()
    seen["files"] = {name: (run_dir / name).stat().st_size for name in ("summary.md", "history.csv", "runs.json",
                                                                       "accuracy.png")}
    ids = json.loads((run_dir / "mlflow.json").read_text())
    seen["augmented_before_catch_up"] = [m.step for m in client.get_metric_history(ids["jobs"]["augmented-seed0"],
                                                                                   "loss")]
    seen["jobs"] = dict(ids["jobs"])
    del ids["jobs"]["augmented-seed0"]  # as if killed between creating its nested run and keeping its id
    (run_dir / "mlflow.json").write_text(json.dumps(ids))
    seen["result"] = resume_run(run_dir)
    yield run_dir, uri, client, seen
    if store != tmp_path:
        shutil.rmtree(store, ignore_errors=True)


def history(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def latest_per_step(client, run_id, key):
    """[(step, the value logged last at that step)] of a metric, by step: what MLflow's charts of
    a run trained again should agree with."""
    latest = {}
    for metric in sorted(client.get_metric_history(run_id, key), key=lambda metric: metric.timestamp):
        latest[metric.step] = metric.value
    return sorted(latest.items())


@pytest.mark.slow
def test_a_tracked_run_is_one_mlflow_run_with_params_tags_verdicts_and_artifacts(tracked):
    run_dir, uri, client, seen = tracked
    ids = json.loads((run_dir / "mlflow.json").read_text())
    parent = client.get_run(ids["run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "r"
    assert seen["result"].mlflow_run_id == ids["run_id"]  # the Python API's answer names it
    assert client.get_experiment(parent.info.experiment_id).name == "tracked"  # track.experiment
    params = parent.data.params
    assert params["train.epochs"] == "2" and params["model.filters"] == "[8, 16]"
    assert params["arms.augmented.rotation"] == "20.0" and params["arms.baseline"] == "{}"
    assert not any(key.startswith("track.") for key in params)
    environment = json.loads((run_dir / "environment.json").read_text())
    assert parent.data.tags["env.tensorflow"] == environment["tensorflow"]
    assert parent.data.tags["env.kernels.onednn"] == json.dumps(environment["kernels"]["onednn"])
    summary = json.loads((run_dir / "summary.json").read_text())
    primary = summary["vs_baseline"]["augmented"]["primary"]
    metrics, tags = parent.data.metrics, parent.data.tags
    assert metrics["vs_baseline.augmented.primary.mean"] == pytest.approx(primary["mean"])
    assert metrics["arms.augmented.test_accuracy.mean"] == pytest.approx(summary["arms"]["augmented"][
        "test_accuracy"]["mean"])
    assert tags["vs_baseline.augmented.primary.verdict"] == primary["verdict"]
    assert tags["primary_metric"] == "test_accuracy" and tags["baseline"] == "baseline"
    # Resumed twice, the summary's metrics are still logged once.
    assert len(client.get_metric_history(ids["run_id"], "vs_baseline.augmented.primary.mean")) == 1
    artifacts = {artifact.path for artifact in client.list_artifacts(ids["run_id"])}
    assert {"summary.md", "summary.json", "accuracy.png", "loss.png", "ablation.png", "config.toml",
            "history.csv"} <= artifacts
    # An embedded store keeps artifacts beside its database, not in the current folder.
    assert parent.info.artifact_uri.startswith((Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri())


def test_each_job_is_a_nested_run_with_its_epochs_at_their_steps_and_its_test_results(tracked):
    run_dir, _, client, _ = tracked
    ids = json.loads((run_dir / "mlflow.json").read_text())
    jobs = json.loads((run_dir / "runs.json").read_text())["jobs"]
    records = {f"{job['arm']}-seed{job['seed']}": job for job in jobs}
    assert set(ids["jobs"]) == set(records) == {"baseline-seed0", "augmented-seed0"}
    rows = history(run_dir)
    for name, job_run in ids["jobs"].items():
        run = client.get_run(job_run)
        assert run.data.tags["mlflow.parentRunId"] == ids["run_id"] and run.info.run_name == name
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
        arm = name.split("-seed")[0]
        assert run.data.params["arm"] == arm and run.data.params["seed"] == "0"
        for key in tracking.EPOCH_METRICS:
            # The baseline's first epoch was trained again after its folder was removed: MLflow's
            # latest value at each step is history.csv's, its epoch_seconds included.
            assert latest_per_step(client, job_run, key) == [(int(row["epoch"]), float(row[key])) for row in rows
                                                             if row["arm"] == arm], (name, key)
        assert run.data.metrics["test_accuracy"] == pytest.approx(records[name]["test_accuracy"])
        assert run.data.metrics["selected_epoch"] == records[name]["selected_epoch"]
    assert client.get_run(ids["jobs"]["augmented-seed0"]).data.params["rotation"] == "20.0"


def test_resume_continues_the_same_mlflow_runs_without_logging_an_epoch_twice(tracked):
    run_dir, _, client, seen = tracked
    code, parent_status, baseline_status, baseline_steps, jobs = seen["stopped"]
    assert code == 130 and parent_status == "KILLED" and baseline_status == "KILLED" and baseline_steps == [1]
    ids = json.loads((run_dir / "mlflow.json").read_text())
    assert ids["jobs"]["baseline-seed0"] == jobs["baseline-seed0"]  # the same nested run, continued
    # A nested run whose id mlflow.json lost is found again by its tags, not made twice.
    assert ids["jobs"] == seen["jobs"]
    nested = client.search_runs([client.get_run(ids["run_id"]).info.experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{ids['run_id']}'")
    assert sorted(run.info.run_name for run in nested) == ["augmented-seed0", "baseline-seed0"]
    # An epoch is logged again only where it was trained again: the baseline's first, after its
    # folder was deleted; the augmented job's epochs, caught up on the last resume, once each.
    steps = {name: [metric.step for metric in client.get_metric_history(job_run, "loss")]
             for name, job_run in ids["jobs"].items()}
    assert sorted(steps["baseline-seed0"]) == [1, 1, 2] and sorted(steps["augmented-seed0"]) == [1, 2]


def test_a_tracker_failing_mid_run_leaves_the_runs_files_and_resume_logs_what_it_missed(tracked):
    run_dir, _, client, seen = tracked
    assert seen["augmented_before_catch_up"] == []  # the store failed there; the run went on
    assert all(size > 0 for size in seen["files"].values())
    warnings = [line for line in seen["output"].splitlines() if line.startswith("warning: MLflow")]
    assert len(warnings) == 1 and "the tracking server went away" in warnings[0]  # once, then silence
    assert f"augcompare run --resume {run_dir} logs what MLflow missed" in warnings[0]
    ids = json.loads((run_dir / "mlflow.json").read_text())
    assert [m.step for m in client.get_metric_history(ids["jobs"]["augmented-seed0"], "loss")] == [1, 2]


def test_every_pair_and_each_sweep_reach_mlflow_as_metrics(tracked, tmp_path):
    """A summary that compares every pair and has sweeps (the bundled strength experiment's
    reference): each pair's and each sweep point's comparison is a metric, its verdict a tag."""
    _, uri, client, _ = tracked
    summary = json.loads((ROOT / "results/strength/reference/summary.json").read_text())
    assert summary["sweeps"]["rotation"]["best"] is None  # four seeds: no value separably best
    summary["sweeps"]["standard"].update(best=1, best_arm="standard-1")  # as six seeds could show it
    experiment = config.load(overrides=SMALL + [f"track.mlflow={uri}", "track.experiment=comparisons"])
    tracker = tracking.connect(experiment, tmp_path, print)
    tracker.begin({}, {}, {}, [], {}, {})
    tracker.finish(summary)
    run = client.get_run(json.loads((tmp_path / "mlflow.json").read_text())["run_id"])
    metrics, tags = run.data.metrics, run.data.tags
    assert summary["pairs"]
    for pair in summary["pairs"]:
        name = f"pairs.{pair['arm']} - {pair['other']}.primary"
        assert metrics[f"{name}.mean"] == pytest.approx(pair["primary"]["mean"])
        assert metrics[f"{name}.ci95_low"] == pytest.approx(pair["primary"]["ci95"][0])
        assert metrics[f"{name}.p_holm"] == pytest.approx(pair["primary"]["p_holm"])
        assert tags[f"{name}.verdict"] == pair["primary"]["verdict"]
    assert summary["sweeps"]
    for sweep_name, sweep in summary["sweeps"].items():
        assert metrics[f"sweeps.{sweep_name}.leader"] == pytest.approx(sweep["leader"])
        if sweep["best"] is None:  # nothing logged as best
            assert f"sweeps.{sweep_name}.best" not in metrics and f"sweeps.{sweep_name}.best_arm" not in tags
        else:
            assert metrics[f"sweeps.{sweep_name}.best"] == pytest.approx(sweep["best"])
            assert tags[f"sweeps.{sweep_name}.best_arm"] == sweep["best_arm"]
        for point in sweep["points"]:
            assert metrics[f"sweeps.{sweep_name}.{point['arm']}.mean"] == pytest.approx(point["mean"])
            assert tags[f"sweeps.{sweep_name}.{point['arm']}.verdict"] == point["verdict"]


def test_a_nested_run_killed_before_its_params_gets_them_when_the_run_resumes(tracked, tmp_path, monkeypatch):
    """A kill between creating a job's nested run and logging its params: mlflow.json does not
    keep the run yet, and resuming finds it by its tags and logs its params."""
    _, uri, client, _ = tracked
    experiment = config.load(overrides=SMALL + [f"track.mlflow={uri}", "track.experiment=killed"])
    arms = {"baseline": {}, "augmented": {"rotation": 20.0}}
    tracker = tracking.connect(experiment, tmp_path, print)
    tracker.begin({}, {}, arms, [], {}, {})
    log = tracking.Tracker._log

    def killed_at_params(self, run_id, metrics=(), params=(), tags=()):
        if run_id != self.ids["run_id"] and params:
            raise KeyboardInterrupt  # as a kill: nothing after it runs
        return log(self, run_id, metrics, params, tags)
    monkeypatch.setattr(tracking.Tracker, "_log", killed_at_params)
    row = {"epoch": 1, "loss": 0.7, "accuracy": 0.5, "val_loss": 0.7, "val_accuracy": 0.5, "epoch_seconds": 1.0}
    with pytest.raises(KeyboardInterrupt):
        tracker.epoch("augmented", 0, row)
    monkeypatch.undo()
    resumed = tracking.connect(experiment, tmp_path, print)
    resumed.begin({}, {}, arms, [], {}, {})
    job_run = json.loads((tmp_path / "mlflow.json").read_text())["jobs"]["augmented-seed0"]
    assert client.get_run(job_run).data.params == {"arm": "augmented", "seed": "0", "rotation": "20.0"}


@pytest.mark.parametrize("content", ["{not json", '{"run_id": 3}', "deleted"])
def test_a_damaged_ids_file_or_a_deleted_mlflow_run_is_a_one_line_error(tracked, tmp_path, content, capsys):
    run_dir, _, client, _ = tracked
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    if content == "deleted":
        run_id = json.loads((copy / "mlflow.json").read_text())["run_id"]
        client.delete_run(run_id)
    else:
        (copy / "mlflow.json").write_text(content)
    try:
        assert cli.main(["run", "--resume", str(copy)]) == 2
    finally:
        if content == "deleted":
            client.restore_run(run_id)
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "mlflow.json" in error and "Traceback" not in error
    assert ("is deleted; restore it" in error) if content == "deleted" else ("delete it to log the run" in error)


@pytest.mark.parametrize("where", ["server", "sqlite", "file store"])
def test_an_unreachable_tracking_uri_stops_before_training_or_continues_when_told(tmp_path, where, capsys):
    (tmp_path / "a_file").write_text("")
    uri = {"server": f"http://127.0.0.1:{closed_port()}", "sqlite": f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}",
           "file store": str(tmp_path / "mlruns")}[where]
    sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", f"track.mlflow={uri}"]
    assert cli.main(["run", "--out", str(tmp_path / "results")] + overrides(*sets)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and repr(uri) in error and "track.on_error = \"continue\"" in error
    assert not (tmp_path / "cache").exists() and not list((tmp_path / "results").glob("*/*"))  # before the data
    if where == "file store":
        assert "use sqlite:///PATH/mlflow.db (MLflow 3 refuses its file store" in error
    if where == "server":  # told to go on, it warns once and the run trains untracked (no tracker)
        told = config.load(overrides=SMALL + [f"track.mlflow={uri}", "track.on_error=continue"])
        lines = []
        assert tracking.connect(told, tmp_path, lines.append) is None
        assert len(lines) == 1 and lines[0].startswith(f"warning: MLflow at track.mlflow = {uri!r} cannot be used")
        assert "Connection refused" in lines[0] and lines[0].endswith("the run goes on untracked "
                                                                       "(track.on_error = \"continue\")")


def test_a_missing_mlflow_package_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    experiment = config.load(overrides=SMALL + ["track.mlflow=sqlite:///mlflow.db"])
    with pytest.raises(UserError, match=r'mlflow package is not installed; pip install -e "\.\[mlflow\]"') as error:
        tracking.connect(experiment, tmp_path, print)
    assert "\n" not in str(error.value)


def test_tracking_off_never_imports_mlflow(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert tracking.connect(config.load(overrides=SMALL), tmp_path, print) is None
    # Nothing imports mlflow at import time: only tracking.py names it, inside its functions.
    for path in sorted((ROOT / "experiments").glob("*.py")) + sorted((ROOT / "augment").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(name.split(".")[0] == "mlflow" for name in names):
                    assert path.name == "tracking.py" and node not in tree.body, (path, node.lineno)


def test_a_relative_sqlite_path_is_made_absolute_and_on_error_is_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    experiment = config.load(overrides=["track.mlflow=sqlite:///stores/mlflow.db"])
    assert experiment.track.mlflow == f"sqlite:///{tmp_path.resolve() / 'stores' / 'mlflow.db'}"
    assert config.load(overrides=["track.mlflow=http://host:5000"]).track.mlflow == "http://host:5000"
    with pytest.raises(UserError, match="track.on_error = 'later' is not valid; choose one of stop, continue"):
        config.load(overrides=["track.on_error=later"])


@pytest.mark.slow
def test_seeds_added_on_resume_stay_tracked_with_the_new_seeds_as_a_tag(tmp_path, capsys):
    """An MLflow param never changes: train.seeds keeps the start's value, augcompare.train.seeds
    holds the seeds added, and the added seeds' jobs get their nested runs."""
    from mlflow.tracking import MlflowClient
    memory = Path("/dev/shm")
    store = Path(tempfile.mkdtemp(dir=memory)) if memory.is_dir() and os.access(memory, os.W_OK) else tmp_path
    uri = f"sqlite:///{store / 'mlflow.db'}"
    try:
        sets = SMALL + [f"data.cache_dir={tmp_path / 'cache'}", f"track.mlflow={uri}", "train.epochs=1"]
        assert cli.main(["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + overrides(*sets)) == 0
        run_dir = tmp_path / "results" / "demo" / "r"
        assert cli.main(["run", "--resume", str(run_dir), "--set", "train.seeds=[0, 1]"]) == 0
        assert "warning: MLflow" not in capsys.readouterr().out
        client = MlflowClient(uri)
        ids = json.loads((run_dir / "mlflow.json").read_text())
        run = client.get_run(ids["run_id"])
        assert run.data.params["train.seeds"] == "[0]" and run.data.tags["augcompare.train.seeds"] == "[0, 1]"
        assert run.info.status == "FINISHED"
        assert sorted(ids["jobs"]) == ["augmented-seed0", "augmented-seed1", "baseline-seed0", "baseline-seed1"]
    finally:
        if store != tmp_path:
            shutil.rmtree(store, ignore_errors=True)
