"""Experiments from Python (a notebook, a script): the same runs as `augcompare run`, answered as
objects.

    from augcompare.experiments import run_experiment, load_run
    result = run_experiment("demo", overrides={"train.epochs": 3})
    result.verdicts          # {"augmented": "better"}
    result.best, result.ranking, result.pairs, result.sweeps
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
from augcompare.experiments import config, stats, tracking
from augcompare.experiments.errors import RunStopped, UserError
from augcompare.experiments.files import read_json
from augcompare.experiments.history import read_history


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A run directory's answer.

    run_dir: the directory; summary: summary.json as a dict (fractions in [0, 1], its "units"
    says which); history: the rows of history.csv as dicts (arm, seed, epoch, loss, accuracy,
    val_loss, val_accuracy, epoch_seconds); verdicts: arm -> verdict of the primary comparison
    with the baseline ("better", "worse", "equivalent" or "inconclusive"), or, in a run without
    a baseline, (arm, other) -> verdict of every pair; mlflow_run_id: the MLflow run the run was
    logged to (track.mlflow), else None; ranking: the arms best first (by the primary metric over
    the seeds they all counted); best: the best arm, None where the top cannot be separated;
    pairs: (arm, other) -> the comparison arm - other (verdict, reason, difference and ci95 in
    points, p_holm, seeds), every pair where the summary has them, else against the baseline;
    sweeps: summary.json's sweeps (name -> best value, picks, points), {} without sweeps.
    """
    run_dir: Path
    summary: dict
    history: list
    verdicts: dict
    mlflow_run_id: str | None = None
    ranking: list = dataclasses.field(default_factory=list)
    best: str | None = None
    pairs: dict = dataclasses.field(default_factory=dict)
    sweeps: dict = dataclasses.field(default_factory=dict)

    def __repr__(self):
        return f"RunResult({str(self.run_dir)!r}, verdicts={self.verdicts}, best={self.best!r})"

    def analyze(self, overrides=None, name=None, force=False, per_seed=False):
        """The run's summary and figures again with other analysis settings, as `augcompare
        analyze` does: overrides of analysis.primary, min_effect, baseline or comparisons
        ({"analysis.min_effect": 0.5} or ["analysis.comparisons=all"]); the answer goes to
        run_dir/analyses/<name>/ (name: from the changed settings where None; an existing one is
        replaced only with force). Nothing trains and none of the run's files changes. Returns
        its AnalysisResult."""
        from augcompare.experiments.analyze import analyze
        folder, _ = analyze(self.run_dir, _overrides(overrides), name, force, per_seed)
        summary = read_json(folder / "summary.json", "analyze again with force=True")
        return AnalysisResult(folder, summary, **_answer(summary, folder))


@dataclasses.dataclass(frozen=True)
class AnalysisResult:
    """An analysis of a run (RunResult.analyze): folder, run_dir/analyses/<name>/; summary, its
    summary.json; verdicts, ranking, best, pairs and sweeps as RunResult's, under the analysis's
    settings."""
    folder: Path
    summary: dict
    verdicts: dict
    ranking: list
    best: str | None
    pairs: dict
    sweeps: dict


def _answer(summary, folder):
    """What a summary.json (of a run, or of an analysis in folder) answers: the verdicts,
    ranking, best, pairs and sweeps that RunResult and AnalysisResult carry."""
    try:
        verdicts = {arm: entry["primary"]["verdict"] for arm, entry in summary["vs_baseline"].items()
                    if "primary" in entry}
        pairs = stats.pair_comparisons(summary)
        ranking, best = stats.ranked(summary)
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"{folder / 'summary.json'} lacks the primary comparison; redraw it with augcompare plot "
                        f"{folder}") from None
    if summary.get("baseline") is None:
        verdicts = {key: pair["verdict"] for key, pair in pairs.items()}
    return {"verdicts": verdicts, "ranking": ranking, "best": best, "pairs": pairs,
            "sweeps": summary.get("sweeps") or {}}


def _overrides(overrides):
    """overrides as config.apply_overrides takes them: "KEY=VALUE" strings as --set takes them,
    or a dict {"train.epochs": 3} as (key, value) pairs."""
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        return list(overrides.items())
    if isinstance(overrides, str) or not all(isinstance(item, str) for item in overrides):
        raise UserError(f"overrides must be a dict {{'train.epochs': 3}} or a list of 'KEY=VALUE' strings, got "
                        f"{overrides!r}")
    return list(overrides)


def _experiment(experiment, overrides):
    """The Experiment of a bundled name, a .toml path or a dict of the file's schema, with
    overrides: "KEY=VALUE" strings as --set takes them, or a dict {"train.epochs": 3}."""
    overrides = _overrides(overrides)
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


def resume_run(run_dir, per_seed=False, overrides=None, quiet=False):
    """Continues an interrupted run as `augcompare run --resume RUN_DIR` does; its RunResult.
    overrides may only add seeds ({"train.seeds": [0, 1, 2, 3]}, the run's seeds first), whose
    jobs then train, as `--set train.seeds=[...]` does. quiet: as for run_experiment."""
    from augcompare.experiments import run
    try:
        return load_run(run.resume(run_dir, per_seed=per_seed, overrides=_overrides(overrides), quiet=quiet))
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
    return RunResult(run_dir, summary, history, mlflow_run_id=tracking.read_ids(run_dir).get("run_id"),
                     **_answer(summary, run_dir))
