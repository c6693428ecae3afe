"""A run's files read back and its answer written: the ended jobs' records and the two-stage
design (runs.json: read_runs), the rows they own (history.csv: ended_rows), and summary.json,
summary.md and the figures made from them (write_outputs), which `augcompare plot` redraws and
`augcompare analyze` writes to a folder of its own. Damage to any of them is a UserError naming
the file and the fix."""

from pathlib import Path

import numpy as np

from augcompare.augment.params import arm_title, augments
from augcompare.experiments import plots, report, stats
from augcompare.experiments import started as started_with
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import DirectoryLock, read_json, write_json, write_text
from augcompare.experiments.history import read_history
from augcompare.experiments.jobfiles import check_record, job_folder
from augcompare.experiments.planning import model_line

RESTART = "start the run again with augcompare run RUN_DIR/config.toml"


def read_runs(run_dir):
    """runs.json: (arm, seed) -> record of each ended job, and the two-stage design (or None).
    A job that is not there has not ended."""
    path = Path(run_dir) / "runs.json"
    if not path.is_file():
        return {}, None
    document = read_json(path, RESTART)
    try:
        records = {(record["arm"], record["seed"]): check_record(record) for record in document["jobs"]}
        design = document.get("design")
        if design is not None and not (isinstance(design.get("seeds"), list)
                                       and all(isinstance(seed, int) for seed in design["seeds"])
                                       and isinstance(design.get("pilot_seeds"), list)
                                       and isinstance(design.get("pilot_sd"), dict)
                                       and isinstance(design.get("planning_sd"), (int, float))):
            raise ValueError("the two-stage design lacks its seeds")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{path} lacks the fields of a run's job records ({error}); {RESTART}") from None
    return records, design


def ended_rows(run_dir, records):
    """(every row of history.csv, the rows of the jobs runs.json lists as ended: records), the
    latter checked against their records. Rows of a job runs.json does not list are a merge cut
    short (history.csv is written first): the job's own folder still holds them and its record.
    Anything else is damage, a UserError."""
    history_path = Path(run_dir) / "history.csv"
    rows = read_history(history_path, appended=False)
    orphans = sorted({(row["arm"], row["seed"]) for row in rows} - set(records))
    for arm, seed in orphans:
        if not (job_folder(run_dir, arm, seed) / "record.json").is_file():
            raise UserError(f"{history_path} holds rows of {arm} seed {seed}, which runs.json does not "
                            f"list{' (runs.json is missing)' if not records else ''}; restore runs.json "
                            f"from a copy or {RESTART}")
    kept = [row for row in rows if (row["arm"], row["seed"]) in records]
    epochs = {key: [] for key in records}
    for row in kept:
        epochs[row["arm"], row["seed"]].append(row["epoch"])
    for key, record in records.items():
        if len(epochs[key]) != record["epochs"]:
            raise UserError(f"{history_path} holds {len(epochs[key])} rows of {key[0]} seed {key[1]} "
                            f"but runs.json says {record['epochs']} epochs; restore both files from a copy "
                            f"or {RESTART}")
        if sorted(epochs[key]) != list(range(1, record["epochs"] + 1)):
            raise UserError(f"{history_path} holds epochs {sorted(epochs[key])} of {key[0]} seed "
                            f"{key[1]}, not 1 to {record['epochs']}; restore it from a copy or {RESTART}")
    return rows, kept


def summary_of(run_dir, experiment, history, records, design):
    """(summary.json's content, summary.md's text) of a run, from its history rows and job records."""
    run_dir = Path(run_dir)
    data = read_json(run_dir / "data.json", "delete it to leave the noise floor out") if (
        run_dir / "data.json").is_file() else {}
    test_count = (data.get("counts") or {}).get("test") if isinstance(data, dict) else None
    analysis = experiment.analysis
    summary = stats.summarize(history, list(experiment.arms), experiment.train.epochs, records,
                              primary=analysis.primary, min_effect=analysis.min_effect,
                              baseline=stats.baseline_arm(experiment.arms, augments, analysis.baseline),
                              test_count=test_count, design=design, comparisons=analysis.comparisons,
                              sweeps=experiment.sweeps)
    summary = {"name": experiment.name, **summary}
    markdown = report.to_markdown(summary, experiment.name)
    environment_json = run_dir / "environment.json"
    recorded = read_json(environment_json, "delete it to leave the model out") if environment_json.is_file() else {}
    if isinstance(recorded, dict) and isinstance(recorded.get("model"), dict):
        summary["model"] = recorded["model"]
        title, _, rest = markdown.partition("\n\n")  # the network below the title
        markdown = f"{title}\n\n{model_line(recorded['model'])}\n\n{rest}"
    return summary, markdown


def write_outputs(run_dir, experiment, history, records, design, per_seed=False, out_dir=None):
    """summary.json, summary.md and the figures, from history rows and the job records, in
    out_dir (default: the run directory)."""
    summary, markdown = summary_of(run_dir, experiment, history, records, design)
    run_dir = Path(out_dir or run_dir)
    write_json(run_dir / "summary.json", summary)
    write_text(run_dir / "summary.md", markdown)
    titles = {arm: arm_title(settings) for arm, settings in experiment.arms.items()}
    for metric in ("accuracy", "loss"):
        plots.curves_figure(history, titles, metric, run_dir / f"{metric}.png", per_seed)
    plots.differences_figure(summary, run_dir / "ablation.png")
    if "pairs" in summary:
        plots.pairs_figure(summary, run_dir / "pairs.png")
    if summary.get("sweeps"):
        plots.strength_figure(summary, run_dir / "strength.png")
    return markdown


def redraw(run_dir, per_seed=False):
    """Redraws every figure of a run directory from its saved history and samples."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.toml)")
    if not (run_dir / "history.csv").is_file():
        raise UserError(f"{run_dir} never trained an epoch (no history.csv), so there is nothing to plot; continue it "
                        f"with augcompare run --resume {run_dir}, or delete it")
    lock = DirectoryLock(run_dir / ".lock", "augcompare plot").acquire()  # a running run writes these files too
    try:
        return _redraw(run_dir, per_seed)
    finally:
        lock.release()


def _redraw(run_dir, per_seed):
    from augcompare.experiments import preview
    experiment = started_with.check(run_dir, command="augcompare plot")
    records, design = read_runs(run_dir)
    markdown = write_outputs(run_dir, experiment, read_history(run_dir / "history.csv"), records, design, per_seed)
    samples_path, labels_path = run_dir / "preview_samples.npy", run_dir / "preview_labels.npy"
    if samples_path.is_file() and labels_path.is_file():
        data = read_json(run_dir / "data.json", "delete it and redraw") if (run_dir / "data.json").is_file() else {}
        try:
            samples = np.load(samples_path, allow_pickle=False)
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UserError(f"{samples_path} or {labels_path} cannot be read ({error}); delete them to skip "
                            "the grid") from None
        preview.draw(samples, labels, tuple(data.get("class_names", ())), experiment.arms,
                     tuple(data.get("value_range", (0.0, 255.0))), run_dir / "augmentations.png")
    return markdown

