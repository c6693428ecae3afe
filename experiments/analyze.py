"""`augcompare analyze RUN_DIR --set analysis.KEY=VALUE`: a run's summary and figures again, from
its history.csv and runs.json, with other analysis settings (the primary metric, the smallest
effect of interest, the baseline, which pairs are compared). Nothing trains, and none of the
run's own files is written: the answer goes to RUN_DIR/analyses/<name>/ (summary.md,
summary.json, the figures, and settings.toml, the analysis settings used).
"""

import copy
import shutil
from pathlib import Path

from augcompare.augment.params import augments
from augcompare.experiments import config as config_mod
from augcompare.experiments import outputs
from augcompare.experiments import stats
from augcompare.experiments import started as started_with
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import write_text

# The analysis settings that only read what the run trained. target_half_width, pilot_seeds,
# max_seeds, eliminate and eliminate_alpha chose which seeds trained: they are the run's (an
# analysis reads the arms the pilot eliminated, and the final verdicts' level, from runs.json).
ANALYZABLE = ("primary", "min_effect", "baseline", "comparisons")
FOLDER = "analyses"


def override_key(override):
    """The dotted key of an override: a 'KEY=VALUE' string (--set) or a (key, value) pair."""
    if isinstance(override, tuple):
        return str(override[0])
    return ".".join(config_mod.parse_override(override)[0])


def _check_keys(run_dir, overrides):
    allowed = ", ".join(f"analysis.{key}" for key in ANALYZABLE)
    for override in overrides:
        key = override_key(override)
        if not key.startswith("analysis.") or key.split(".", 1)[1] not in ANALYZABLE:
            why = ("it chose which seeds trained" if key.startswith("analysis.") else "it changes what trains")
            raise UserError(f"augcompare analyze takes only {allowed}; {key} is the run's ({why}): for another, "
                            f"start a new run with augcompare run {run_dir / 'config.toml'} --set {key}=...")


def _name_part(value):
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def default_name(experiment, analysed):
    """The analysis's folder name from the settings it changes, e.g. min_effect-0.5_comparisons-all;
    as-run where it changes none."""
    before, after = experiment.analysis, analysed.analysis
    parts = [f"{key}-{_name_part(getattr(after, key))}" for key in ANALYZABLE
             if getattr(after, key) != getattr(before, key)]
    return "_".join(parts) or "as-run"


def _design(design, experiment, analysed, baseline_then, baseline_now):
    """The run's two-stage design as the analysis may use it: the pilot's sds are of the run's
    primary metric (none apply to another), and those keyed by arm were against the run's
    baseline (keyed "arm - baseline", they still name their pair under another baseline)."""
    if not design:
        return design
    design = copy.deepcopy(design)
    if analysed.analysis.primary != experiment.analysis.primary:
        design["pilot_sd"] = {}
    elif baseline_now != baseline_then and baseline_then is not None:
        design["pilot_sd"] = {key if " - " in key else f"{key} - {baseline_then}": sd
                              for key, sd in design["pilot_sd"].items()}
    return design


def _folder(run_dir, name, force):
    if not config_mod._NAME.match(name) or name in (".", ".."):
        raise UserError(f"--name {name!r} must be letters, digits, '.', '_' or '-'")
    folder = run_dir / FOLDER / name
    try:
        (run_dir / FOLDER).mkdir(exist_ok=True)
        if force and folder.is_dir():
            shutil.rmtree(folder)  # what an earlier analysis of that name drew (pairs.png) must not stay
        folder.mkdir()
    except FileExistsError:
        raise UserError(f"{folder} exists; give --force to replace it or --name for another") from None
    except OSError as error:
        raise UserError(f"cannot create {folder} ({error.strerror}); fix the folder's permissions") from None
    return folder


def analyze(run_dir, overrides=(), name=None, force=False, per_seed=False):
    """Recomputes run_dir's summary and figures with overrides (analysis.* only: 'KEY=VALUE'
    strings as --set takes them, or (key, value) pairs) into run_dir/analyses/<name>/ (name:
    derived from the changed settings where None; an existing one is replaced only with force).
    Returns (that folder, the summary's markdown)."""
    run_dir = Path(run_dir)
    overrides = list(overrides)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.toml); give the directory that "
                        "`augcompare run` printed")
    _check_keys(run_dir, overrides)
    experiment = started_with.check(run_dir, command="augcompare analyze")
    analysed = config_mod.build(config_mod.apply_overrides(config_mod.to_dict(experiment), overrides))
    for needed in ("runs.json", "history.csv"):
        if not (run_dir / needed).is_file():
            raise UserError(f"{run_dir / needed} is missing, so there is nothing to analyze: continue the run with "
                            f"augcompare run --resume {run_dir}, or restore the file from a copy")
    records, design = outputs.read_runs(run_dir)
    _, history = outputs.ended_rows(run_dir, records)
    baselines = [stats.baseline_arm(e.arms, augments, e.analysis.baseline)
                 for e in (experiment, analysed)]
    design = _design(design, experiment, analysed, *baselines)
    folder = _folder(run_dir, name or default_name(experiment, analysed), force)
    changed = [f"analysis.{key}" for key in ANALYZABLE
               if getattr(analysed.analysis, key) != getattr(experiment.analysis, key)]
    try:
        write_text(folder / "settings.toml",
                   f"# augcompare analyze {run_dir}: the run's analysis settings"
                   + (f", with {', '.join(changed)} changed" if changed else "") + "\n"
                   + config_mod.dumps({"analysis": config_mod.to_dict(analysed)["analysis"]}))
        markdown = outputs.write_outputs(run_dir, analysed, history, records, design, per_seed, out_dir=folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # no half-written analysis is left to be taken for one
        raise
    return folder, markdown
