"""MLflow tracking of a run (`[track] mlflow = URI`): the run is one MLflow run, each job (arm and
seed) a run nested in it.

Only the driver talks to MLflow, through MlflowClient with explicit run ids (never the fluent
API's global active run): jobs train in worker processes or on Ray and report each epoch to the
driver (executors.py), which logs it as it arrives.

- The run: the resolved configuration as params (dotted keys: train.epochs, arms.augmented.rotation),
  environment.json as tags (env.tensorflow, env.kernels.onednn, ...), config.toml, environment.json
  and data.json as artifacts at the start; at the end the comparisons as metrics and their
  verdicts as tags, named by their path in summary.json: every comparison with the baseline
  (vs_baseline.augmented.primary.mean, ...ci95_low, ...p_holm; the tag ...primary.verdict), every
  pair's where the summary compares every pair (pairs.flip - rotation.primary.mean) and each
  sweep's best value and points (sweeps.rotation.best, sweeps.rotation.rotation-45.mean), each
  arm's mean primary metric (arms.augmented.test_accuracy.mean), and summary.md, summary.json,
  history.csv, runs.json and the figures as artifacts.
- A job: its arm, seed and the arm's settings as params; loss, accuracy, val_loss, val_accuracy
  and epoch_seconds at step = epoch as each epoch ends; its test results and its status when it
  ends (FINISHED, or FAILED for a NaN loss).

mlflow.json in the run directory keeps the MLflow ids (the experiment, the run, each job's nested
run), written atomically once each run holds its params, so that `--resume` continues the same
MLflow runs. Whatever an interrupted run left unlogged (epochs, a job's params or end, the summary)
is logged when it resumes. MLflow keeps every value logged at a step, so an epoch trained again
(its job folder removed, or a job repeated from its checkpoint) is logged again: the latest value
at each step is history.csv's. An epoch MLflow already holds with the same values is never logged
again (MLflow is asked what it holds).

MLflow is imported only here, and only when tracking is on: importing it takes seconds.
"""

import contextlib
import functools
import getpass
import json
import math
import os
import re
import time
from pathlib import Path

from augcompare.experiments.errors import RunStopped, UserError
from augcompare.experiments.files import read_json, write_json

IDS = "mlflow.json"
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")
END_METRICS = ("test_loss", "test_accuracy", "selected_test_loss", "selected_test_accuracy", "selected_epoch",
               "epochs", "seconds")
START_FILES = ("config.toml", "environment.json", "data.json")
END_FILES = ("summary.md", "summary.json", "history.csv", "runs.json", "accuracy.png", "loss.png", "ablation.png",
             "pairs.png", "strength.png", "augmentations.png")
BATCH = 100  # MLflow takes at most 100 params or tags (1000 metrics) in one log_batch
INSTALL = 'pip install -e ".[mlflow]"'


@contextlib.contextmanager
def _environ(**values):
    """MLflow's settings that it reads from the environment on each call, set for a block."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _during_the_run():
    """MLflow's settings for the tracker's calls: no URL printed as each run ends (MLflow prints
    one for a server; our own line names the run), and, unless you set them, 3 retries and a 30 s
    timeout instead of MLflow's 7 and 120 s, which would hold the training up for minutes once a
    server has gone (the run goes on untracked, and --resume logs what MLflow missed)."""
    settings = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        if key not in os.environ:
            settings[key] = value
    return _environ(**settings)


def _problem(error):
    """An exception in one line: the system's reason where the message holds one (a connection's
    "[Errno 111] Connection refused" deep in MLflow's text), else its type and first sentence."""
    text = " ".join(str(error).split())
    reason = re.search(r"\[Errno -?\d+\] [^'\"()\]]+('[^']*')?", text)
    if reason:
        return reason[0].strip().rstrip(":")
    first = text.split(". ")[0][:240]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _flat(document, prefix=""):
    """(dotted key, value) of every leaf of nested dicts; lists, numbers and dicts keyed by other
    than names (environment.json's function files, keyed by path) as JSON text."""
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(re.fullmatch(r"[\w.-]+", str(k)) for k in value):
            yield from _flat(value, name + ".")
        else:
            yield name, value if isinstance(value, str) else json.dumps(value)


def _clip(text, limit):
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _numbers_and_words(prefix, tree):
    """Metrics (finite numbers) and tags (strings) of a part of summary.json, named by their path;
    an interval [low, high] becomes <name>_low and <name>_high."""
    metrics, tags = {}, {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            more_metrics, more_tags = _numbers_and_words(name, value)
            metrics.update(more_metrics)
            tags.update(more_tags)
        elif isinstance(value, str):
            tags[name] = value
        elif isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            metrics[f"{name}_low"], metrics[f"{name}_high"] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[name] = value
    return {key: float(value) for key, value in metrics.items() if math.isfinite(value)}, tags


def _comparisons(summary):
    """(name, comparison) of each comparison summary.json holds, named as MLflow logs it: each
    arm's with the baseline (vs_baseline.<arm>.primary), every pair's (pairs.<arm> - <other>.primary,
    read as arm - other) and each sweep's best value (absent where none is separably best), its
    leader (the value ahead) and the values not shown worse (sweeps.<name>) and points (sweeps.<name>.<arm>:
    its mean difference from the baseline, interval and verdict). The one place that reads where
    summary.json keeps them."""
    for arm, entry in (summary.get("vs_baseline") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("primary"), dict):
            yield f"vs_baseline.{arm}.primary", entry["primary"]
    for pair in summary.get("pairs") or []:
        yield f"pairs.{pair['arm']} - {pair['other']}.primary", pair["primary"]
    for name, sweep in (summary.get("sweeps") or {}).items():
        yield f"sweeps.{name}", {"best": sweep.get("best"), "best_arm": sweep.get("best_arm"),
                                 "leader": sweep.get("leader"),
                                 "not_worse": ", ".join(str(value) for value in sweep.get("not_worse") or []) or None}
        for point in sweep.get("points") or []:
            yield f"sweeps.{name}.{point['arm']}", {key: point.get(key) for key in ("mean", "ci95", "verdict")}


def read_ids(run_dir):
    """The MLflow ids a run directory keeps ({} when it has none); a damaged file is a UserError."""
    path = Path(run_dir) / IDS
    if not path.is_file():
        return {}
    recover = ("delete it to log the run to MLflow as a new run (the old MLflow run stays as it is), or restore it "
               "from a copy")
    ids = read_json(path, recover)
    valid = (isinstance(ids, dict) and isinstance(ids.get("run_id"), str) and isinstance(ids.get("experiment_id"), str)
             and isinstance(ids.get("jobs"), dict) and all(isinstance(key, str) and isinstance(value, str)
                                                           for key, value in ids["jobs"].items()))
    if not valid:
        raise UserError(f"{path} lacks the MLflow ids of a run (run_id, experiment_id, jobs); {recover}")
    return ids


def connect(experiment, run_dir, log):
    """The Tracker of a run before it trains, or None: tracking off (MLflow is not imported), or
    MLflow unreachable with track.on_error = "continue" (warned once). An unreachable MLflow with
    on_error = "stop", a missing mlflow package and a damaged mlflow.json are UserErrors."""
    track = experiment.track
    if not track.mlflow:
        return None
    ids = read_ids(run_dir)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UserError(f"track.mlflow is set but the mlflow package is not installed; {INSTALL}, or set "
                        "track.mlflow = \"\" to run untracked") from None
    name = track.experiment or experiment.name
    try:
        # One try, no retries: an unreachable server is said at once rather than after minutes.
        with _environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="20"):
            client = MlflowClient(tracking_uri=track.mlflow)
            experiment_id = _continued(client, ids, run_dir) if ids else _experiment_id(client, name, track.mlflow)
    except UserError:
        raise
    except Exception as error:  # MLflow's, SQLAlchemy's and requests' own errors alike
        problem = f"MLflow at track.mlflow = {track.mlflow!r} cannot be used ({_problem(error)})"
        if track.on_error == "continue":
            log(f"warning: {problem}; the run goes on untracked (track.on_error = \"continue\")")
            return None
        fix = ("start the tracking server or correct the URI (an embedded store needs no server: "
               "sqlite:///PATH/mlflow.db)")
        if "filesystem tracking backend" in str(error):
            fix = "use sqlite:///PATH/mlflow.db (MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE=true)"
        raise UserError(f"{problem}; {fix}, or set track.on_error = \"continue\" to run untracked") from None
    return Tracker(client, experiment_id, name, track.mlflow, run_dir, ids, log)


def _experiment_id(client, name, uri):
    """The id of MLflow experiment `name`, created where missing. An embedded sqlite store keeps
    its artifacts beside the database (mlartifacts/), not in the current folder."""
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if uri.startswith("sqlite:///"):
            database = Path(uri[len("sqlite:///"):].partition("?")[0])
            location = (database.parent / "mlartifacts").as_uri() if database.is_absolute() else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # another run created it since we looked
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise UserError(f"the MLflow experiment {name!r} at {uri} is deleted; restore it (mlflow experiments restore "
                        f"--experiment-id {found.experiment_id}) or set track.experiment to another name")
    return found.experiment_id


def _continued(client, ids, run_dir):
    """The experiment id of the MLflow run mlflow.json names, which must still be there."""
    try:
        run = client.get_run(ids["run_id"])
    except Exception as error:
        if getattr(error, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    fresh = f"delete {IDS} to log the run as a new MLflow run"
    if run is None:
        raise UserError(f"MLflow run {ids['run_id']} of {Path(run_dir) / IDS} is not in this tracking store; {fresh}")
    if run.info.lifecycle_stage == "deleted":
        raise UserError(f"MLflow run {ids['run_id']} of {Path(run_dir) / IDS} is deleted; restore it (mlflow runs "
                        f"restore --run-id {ids['run_id']}), or {fresh}")
    return run.info.experiment_id


def _guarded(method):
    """A tracker call that never stops the run: the first failure is warned once and tracking
    ends for this process; the run's own files are complete and `--resume` logs what MLflow missed.
    A stop (Ctrl-C) passes through."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.broken:
            return None
        try:
            with _during_the_run():
                return method(self, *args, **kwargs)
        except RunStopped:  # a stop (Ctrl-C, SIGTERM) stops the run, as anywhere else
            raise
        except Exception as error:
            self.broken = True
            self.log(f"warning: MLflow tracking at {self.uri} failed ({_problem(error)}); the run goes on untracked "
                     f"and its own files are complete; augcompare run --resume {self.run_dir} logs what MLflow missed")
            return None
    return guarded


class Tracker:
    """Logs one run directory to MLflow from the driver. begin() before training (it creates the
    MLflow run or continues it and logs what earlier processes left unlogged), epoch() and
    job_ended() as they happen, finish() after the summary, stop() when the run stops before."""

    def __init__(self, client, experiment_id, experiment_name, uri, run_dir, ids, log):
        self.client, self.uri, self.log = client, uri, log
        self.experiment_name = experiment_name
        self.run_dir = Path(run_dir)
        self.ids = ids or {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": None, "jobs": {}}
        self.arms = {}
        self.logged = {}      # job name -> {epoch (step): the latest values MLflow holds, as in EPOCH_METRICS}
        self.ended = set()    # jobs whose end MLflow holds (test metrics and a terminal status)
        self.end_logged = set()  # jobs whose test metrics MLflow holds
        self.broken = False
        self.last_timestamp = 0  # ms; each batch later than the one before, so that the latest value is plain

    def _write_ids(self):
        write_json(self.run_dir / IDS, self.ids)

    def _log(self, run_id, metrics=(), params=(), tags=()):
        from mlflow.entities import Metric, Param, RunTag
        now = self.last_timestamp = max(int(time.time() * 1000), self.last_timestamp + 1)
        metrics = [Metric(key, value, now, step) for key, value, step in metrics]
        params = [Param(key, _clip(value, 6000)) for key, value in params]
        tags = [RunTag(key, _clip(value, 8000)) for key, value in tags]
        for start in range(0, max(len(metrics), len(params), len(tags)), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH], params=params[start:start + BATCH],
                                  tags=tags[start:start + BATCH])

    def _source_tags(self):
        from mlflow.utils import mlflow_tags
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        return {mlflow_tags.MLFLOW_SOURCE_NAME: "augcompare", mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
                mlflow_tags.MLFLOW_USER: user,
                "augcompare.run_dir": str(self.run_dir.resolve())}

    @_guarded
    def begin(self, config, environment, arms, history, records, unfinished):
        """Before training: creates the MLflow run (or continues the one mlflow.json names) with
        its params, tags and the run's first files, then logs what MLflow lacks of the jobs that
        ended (history rows, records) and of those that trained some epochs (unfinished: (arm,
        seed) -> checkpointed rows)."""
        self.arms = arms
        run_id = self.ids["run_id"]
        continuing = run_id is not None
        if run_id is None:
            run_id = self.client.create_run(self.ids["experiment_id"], run_name=self.run_dir.name,
                                            tags=self._source_tags()).info.run_id
            self.ids["run_id"] = run_id
            self._write_ids()
            self.log(f"tracking: MLflow run {run_id} in experiment {self.experiment_name!r} at {self.uri}")
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.log(f"tracking: continuing MLflow run {run_id} at {self.uri}")
        from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT
        tags = [(f"env.{key}", value) for key, value in _flat(environment)]
        if environment.get("git_commit"):
            tags.append((MLFLOW_GIT_COMMIT, environment["git_commit"]))
        params = [(key, value) for key, value in _flat(config) if not key.startswith("track.")]
        # An MLflow param never changes; the one setting a resume may change (train.seeds, seeds
        # added) keeps the value it started with, and a tag augcompare.<key> holds the new one.
        logged = self.client.get_run(run_id).data.params if continuing else {}
        changed = {key for key, value in params if logged.get(key, _clip(value, 6000)) != _clip(value, 6000)}
        tags += [(f"augcompare.{key}", value) for key, value in params if key in changed]
        params = [(key, value) for key, value in params if key not in changed]
        self._log(run_id, params=params, tags=tags)
        self._artifacts(START_FILES)
        # A nested run created just before a kill may have missed mlflow.json: its tags find it.
        nested = self.client.search_runs([self.ids["experiment_id"]],
                                         filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
        found = {run.data.tags.get("augcompare.job"): run.info.run_id for run in nested}
        missing = {name: job_run for name, job_run in found.items() if name and name not in self.ids["jobs"]}
        if missing:
            self.ids["jobs"].update(missing)
            self._write_ids()
        for name, job_run in self.ids["jobs"].items():
            info = self.client.get_run(job_run)
            self.logged[name] = self._held_epochs(job_run)
            if not info.data.params:  # killed between creating its nested run and logging its params
                arm, _, seed = name.rpartition("-seed")
                self._log(job_run, params=self._job_params(arm, seed))
            if info.info.status in ("FINISHED", "FAILED"):
                self.ended.add(name)
            else:
                if "test_accuracy" in info.data.metrics or "epochs" in info.data.metrics:
                    self.end_logged.add(name)
                if info.info.status != "RUNNING":
                    self.client.update_run(job_run, status="RUNNING")
        for (arm, seed), record in records.items():
            self._epochs(arm, seed, [row for row in history if (row["arm"], row["seed"]) == (arm, seed)])
            self._job_ended(arm, seed, record)
        for (arm, seed), rows in unfinished.items():
            self._epochs(arm, seed, rows)

    def _artifacts(self, names):
        for name in names:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.ids["run_id"], str(self.run_dir / name))

    def _held_epochs(self, job_run):
        """{epoch: the latest value MLflow holds at that step of each of EPOCH_METRICS}."""
        held = {}
        for key in EPOCH_METRICS:
            for metric in sorted(self.client.get_metric_history(job_run, key), key=lambda metric: metric.timestamp):
                held.setdefault(metric.step, {})[key] = metric.value
        return {step: tuple(values.get(key) for key in EPOCH_METRICS) for step, values in held.items()}

    def _job_params(self, arm, seed):
        return [("arm", arm), ("seed", str(seed)), *_flat(self.arms.get(arm, {}))]

    def _job_run(self, arm, seed):
        """The id of a job's nested run, created at its first report and kept in mlflow.json
        once it holds its params (one made just before a kill is found by its tags and given
        its params by begin())."""
        name = f"{arm}-seed{seed}"
        if name not in self.ids["jobs"]:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
            tags = {**self._source_tags(), MLFLOW_PARENT_RUN_ID: self.ids["run_id"], "augcompare.job": name}
            job_run = self.client.create_run(self.ids["experiment_id"], run_name=name, tags=tags).info.run_id
            self._log(job_run, params=self._job_params(arm, seed))
            self.ids["jobs"][name] = job_run
            self._write_ids()
            self.logged[name] = {}
        return self.ids["jobs"][name]

    def _epochs(self, arm, seed, rows):
        """Logs the rows whose values MLflow does not hold as the latest at their step: new
        epochs, and epochs trained again since MLflow got them."""
        job_run = self._job_run(arm, seed)
        held = self.logged[f"{arm}-seed{seed}"]
        changed = [row for row in rows if held.get(row["epoch"]) != tuple(float(row[key]) for key in EPOCH_METRICS)]
        if changed:
            self._log(job_run, metrics=[(key, float(row[key]), row["epoch"]) for row in changed
                                        for key in EPOCH_METRICS])
            held.update((row["epoch"], tuple(float(row[key]) for key in EPOCH_METRICS)) for row in changed)

    @_guarded
    def epoch(self, arm, seed, row):
        """A job's epoch ended (its history row); an epoch MLflow already holds with these values is
        not logged again, one trained again is."""
        self._epochs(arm, seed, [row])

    def _job_ended(self, arm, seed, record):
        name = f"{arm}-seed{seed}"
        if name in self.ended:
            return
        job_run = self._job_run(arm, seed)
        if name not in self.end_logged:
            metrics = [(key, float(record[key]), 0) for key in END_METRICS
                       if isinstance(record.get(key), (int, float)) and math.isfinite(record[key])]
            tags = [("status", record["status"])] + ([("reason", record["reason"])] if record.get("reason") else [])
            self._log(job_run, metrics=metrics, tags=tags)
            self.end_logged.add(name)
        self.client.set_terminated(job_run, "FAILED" if record["status"] == "failed" else "FINISHED")
        self.ended.add(name)

    @_guarded
    def job_ended(self, arm, seed, record):
        """A job ended (its record in runs.json): its test results and status."""
        self._job_ended(arm, seed, record)

    @_guarded
    def finish(self, summary):
        """After the summary and figures: the comparisons, the run's files, FINISHED."""
        run_id = self.ids["run_id"]
        primary = summary.get("primary", {}).get("metric")
        metrics, tags = {}, {"primary_metric": str(primary), "baseline": str(summary.get("baseline"))}
        for name, comparison in _comparisons(summary):
            more_metrics, more_tags = _numbers_and_words(name, comparison)
            metrics.update(more_metrics)
            tags.update(more_tags)
        for arm, entry in (summary.get("arms") or {}).items():
            value = (entry.get(primary) or {}).get("mean") if isinstance(entry, dict) else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"arms.{arm}.{primary}.mean"] = float(value)
        ranking = summary.get("ranking")
        if isinstance(ranking, dict):
            tags.update({"ranking.best": str(ranking.get("best") or "no separable best"),
                         "ranking.order": ", ".join(ranking.get("order", [])),
                         "ranking.not_worse": ", ".join(ranking.get("not_worse", []))})
        held = self.client.get_run(run_id).data.metrics  # a resumed run logs only what changed
        self._log(run_id, metrics=[(key, value, 0) for key, value in metrics.items() if held.get(key) != value],
                  tags=list(tags.items()))
        self._artifacts(END_FILES)
        self.client.set_terminated(run_id, "FINISHED")
        if self.uri.startswith("sqlite:"):
            where = f"(mlflow ui --backend-store-uri {self.uri})"
        elif self.uri.startswith(("http://", "https://")):
            where = f"at {self.uri.rstrip('/')}/#/experiments/{self.ids['experiment_id']}/runs/{run_id}"
        else:
            where = f"at {self.uri}"
        self.log(f"tracking: logged to MLflow run {run_id} {where}")

    @_guarded
    def stop(self, status):
        """The run stopped before its end: KILLED (resumable) or FAILED, with its unended jobs."""
        if self.ids["run_id"] is None:
            return
        for name, job_run in self.ids["jobs"].items():
            if name not in self.ended:
                self.client.set_terminated(job_run, status)
        self.client.set_terminated(self.ids["run_id"], status)
