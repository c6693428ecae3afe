"""Experiments from Python (a notebook, a script): the same runs as `augcompare run`, answered as
objects.

    from augcompare.experiments import run_experiment, load_run
    result = run_experiment("demo", overrides={"train.epochs": 3})
    result.verdicts          # {"augmented": "better"}
    result.summary           # summary.json; result.history: the rows of history.csv

run_experiment runs exactly what the command line runs (config.load or config.build, then
run.start): the same run directory, files and resume. Mistakes raise UserError (a one-line
message); a run stopped by Ctrl-C (the notebook's interrupt, in the main thread or not) raises
RunStopped after every finished epoch is saved, and resume_run(run_dir) continues it.

Importing this module loads TensorFlow, quietly (augment.backend): a script that imports
augcompare's API before TensorFlow gets none of TensorFlow's start-up lines.
"""

import dataclasses
from pathlib import Path

from augcompare.augment import backend  # noqa: F401  (TensorFlow loaded quietly, before a user's own import)
from augcompare.experiments import config, tracking
from augcompare.experiments.errors import RunStopped, UserError
from augcompare.experiments.files import read_json
from augcompare.experiments.history import read_history


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A run directory's answer.

    run_dir: the directory; summary: summary.json as a dict (fractions in [0, 1]); history: the
    rows of history.csv as dicts (arm, seed, epoch, loss, accuracy, val_loss, val_accuracy,
    epoch_seconds); verdicts: arm -> verdict of the primary comparison with the baseline
    ("better", "worse", "equivalent" or "inconclusive"); mlflow_run_id: the MLflow run the run
    was logged to (track.mlflow), else None.
    """
    run_dir: Path
    summary: dict
    history: list
    verdicts: dict
    mlflow_run_id: str | None = None

    def __repr__(self):
        return f"RunResult({str(self.run_dir)!r}, verdicts={self.verdicts})"


def _experiment(experiment, overrides):
    """The Experiment of a bundled name, a .toml path or a dict of the file's schema, with
    overrides: "KEY=VALUE" strings as --set takes them, or a dict {"train.epochs": 3}."""
    if overrides is None:
        overrides = []
    elif isinstance(overrides, dict):
        overrides = list(overrides.items())
    elif isinstance(overrides, str) or not all(isinstance(item, str) for item in overrides):
        raise UserError(f"overrides must be a dict {{'train.epochs': 3}} or a list of 'KEY=VALUE' strings, got "
                        f"{overrides!r}")
    if isinstance(experiment, dict):
        return config.build(config.apply_overrides(experiment, overrides), base_dir=Path.cwd())
    if isinstance(experiment, (str, Path)):
        return config.load(str(experiment), overrides)
    raise UserError(f"experiment must be a bundled name, a .toml path or a dict, got {type(experiment).__name__}")


def _stopped(error):
    """RunStopped of a run stopped from Python, naming the call that continues it."""
    return RunStopped(f"{error} (from Python: resume_run({str(error.run_dir)!r}))", error.run_dir, error.exit_code)


def run_experiment(experiment="demo", overrides=None, out="results", run_id=None, per_seed=False, quiet=False):
    """Runs an experiment exactly as `augcompare run` does and returns its RunResult.

    experiment: a bundled experiment's name ("demo", "ablation"), a .toml path, or a dict of the
    same schema (relative files taken from the current folder). overrides: {"train.epochs": 3}
    or ["train.epochs=3"]. The run goes to out/<name>/<run_id or YYYYmmdd-HHMMSS>/. quiet: as
    `augcompare run --quiet`, the plan, a progress bar and the answer, not a line per epoch and job.
    """
    from augcompare.experiments import run
    resolved = _experiment(experiment, overrides)
    try:
        run_dir = run.start(resolved, out, run_id, per_seed=per_seed, quiet=quiet)
    except RunStopped as error:
        raise _stopped(error) from None
    return load_run(run_dir)


def resume_run(run_dir, per_seed=False, quiet=False):
    """Continues an interrupted run as `augcompare run --resume RUN_DIR` does; its RunResult."""
    from augcompare.experiments import run
    try:
        return load_run(run.resume(run_dir, per_seed=per_seed, quiet=quiet))
    except RunStopped as error:
        raise _stopped(error) from None


def load_run(run_dir):
    """The RunResult of an existing run directory (read only; nothing is trained or rewritten)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.toml); give the directory a run wrote")
    if not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir} has not finished (no summary.json yet): continue it with "
                        f"resume_run({str(run_dir)!r}) or augcompare run --resume {run_dir}")
    summary = read_json(run_dir / "summary.json", f"redraw it with augcompare plot {run_dir}")
    history = read_history(run_dir / "history.csv", appended=False) if (run_dir / "history.csv").is_file() else []
    try:
        verdicts = {arm: entry["primary"]["verdict"] for arm, entry in summary["vs_baseline"].items()
                    if "primary" in entry}
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{run_dir / 'summary.json'} lacks the primary comparison; redraw it with augcompare plot "
                        f"{run_dir}") from None
    return RunResult(run_dir, summary, history, verdicts, tracking.read_ids(run_dir).get("run_id"))
