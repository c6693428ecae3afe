"""What a run was started with: started.json, the resolved configuration written beside config.toml
when the run starts, with its sha256. A resume and an analysis check the run's config.toml against
it, so that a config.toml edited by hand (epochs 5 -> 6) is refused, naming the setting, instead of
resuming nothing and describing a run that never happened. The one change a resume may make is to
add seeds (train.seeds grows, the run's seeds first and in order); the record then grows with it.

A run started before this record existed has none: its config.toml is taken as what it started
with, and the record is written at its next resume.
"""

import hashlib
import json
from pathlib import Path

from augcompare.experiments import config as config_mod
from augcompare.experiments.errors import UserError
from augcompare.experiments.files import read_json, write_json, write_text

STARTED = "started.json"


def _plain(document):
    """document as JSON gives it back (tuples as lists), so that the record compares with it."""
    return json.loads(json.dumps(document))


def _digest(document):
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def write(run_dir, experiment):
    """Records experiment as what the run in run_dir started with (or grew to, adding seeds)."""
    document = _plain(config_mod.to_dict(experiment))
    write_json(Path(run_dir) / STARTED, {"config": document, "sha256": _digest(document)})


def read(run_dir):
    """The resolved configuration the run started with (to_dict's form), or None for a run
    started before the record existed. A damaged or edited record is a UserError."""
    path = Path(run_dir) / STARTED
    if not path.is_file():
        return None
    recover = ("restore it from a copy: it records what the run started with, against which a resume checks "
               "config.toml")
    document = read_json(path, recover)
    if not (isinstance(document, dict) and isinstance(document.get("config"), dict)
            and isinstance(document.get("sha256"), str)):
        raise UserError(f"{path} lacks its fields (config, sha256); {recover}")
    if _digest(document["config"]) != document["sha256"]:
        raise UserError(f"{path} was changed since it was written (its sha256 does not match); {recover}")
    return document["config"]


def differences(before, after, prefix=""):
    """The dotted keys whose values differ between two configurations of to_dict's form, in
    order (a key one of them lacks counts)."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [] if before == after else [prefix]
    changed = []
    for key in list(before) + [key for key in after if key not in before]:
        dotted = f"{prefix}.{key}" if prefix else str(key)
        changed += differences(before.get(key), after.get(key), dotted)
    return changed


def value_at(document, dotted):
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _shown(value):
    return "(none)" if value is None else json.dumps(value)


def _seeds_error(before, after, where):
    """Why train.seeds cannot change from before's to after's, or None where seeds are added."""
    old, new = before["train"]["seeds"], after["train"]["seeds"]
    if before["analysis"].get("target_half_width"):
        return (f"{where} changes train.seeds, but the run uses the two-stage design (analysis.target_half_width = "
                f"{before['analysis']['target_half_width']:g}): its seeds are chosen from the pilot's spread, and "
                "seeds added once its results are in would void the design's half-width; start a new run for more "
                "seeds")
    if len(new) <= len(old) or new[:len(old)] != old:
        example = old + [max(old) + 1]
        return (f"{where} sets train.seeds = {_shown(new)}, but a resumed run keeps its seeds {_shown(old)} first, in "
                f"order, and may only add more, e.g. train.seeds={_shown(example).replace(' ', '')}")
    return None


def check(run_dir, overrides=(), command="augcompare run --resume"):
    """The Experiment of run_dir's config.toml with overrides (--set's KEY=VALUE strings or (key,
    value) pairs) applied, checked against what the run started with: anything but seeds added
    is a UserError naming the setting."""
    run_dir = Path(run_dir)
    toml_path = run_dir / "config.toml"
    try:
        raw = config_mod.read_toml(toml_path)
        as_written = config_mod.build(raw)
    except UserError as error:
        raise UserError(f"{toml_path} cannot be used ({error}); restore it from a copy") from None
    experiment = config_mod.build(config_mod.apply_overrides(raw, overrides)) if overrides else as_written
    started = read(run_dir)
    written = _plain(config_mod.to_dict(as_written))
    before = started if started is not None else written
    now = _plain(config_mod.to_dict(experiment))
    # config.toml first: an edit by hand is named as one, whatever --set says.
    for where, document in ((str(toml_path), written), ("--set", now)):
        changed = differences(before, document)
        if "train.seeds" in changed:
            error = _seeds_error(before, document, where)
            if error:
                raise UserError(error)
        others = [key for key in changed if key != "train.seeds"]
        if not others:
            continue
        listed = ", ".join(f"{key} = {_shown(value_at(document, key))} (started with "
                           f"{_shown(value_at(before, key))})" for key in others)
        hint = (f"; to compare with other analysis settings: augcompare analyze {run_dir} --set analysis.KEY=VALUE"
                if all(key.startswith("analysis.") for key in others) else "")
        if where == "--set":
            example = f"{others[0]}={_shown(value_at(document, others[0]))}"
            raise UserError(f"{command} continues the run as it started, so --set may only add seeds "
                            f"(train.seeds); it changes {listed}. Start a new run for that: augcompare run "
                            f"{toml_path} --set {example}{hint}")
        raise UserError(f"{toml_path} was edited since the run started: {listed}; set it back to use this run "
                        f"({command}), or start a new run from the edited file: augcompare run {toml_path}")
    return experiment


def keep(run_dir, experiment):
    """Makes experiment (checked by check: the run's settings, perhaps with seeds added) the
    run's: config.toml first, then started.json, each only where it differs, so that a kill
    between them leaves config.toml with more seeds than the record, which the next resume
    accepts as seeds added. A run without a record gets one. Returns the seeds added."""
    run_dir = Path(run_dir)
    document = config_mod.to_dict(experiment)
    written = _plain(config_mod.to_dict(config_mod.build(config_mod.read_toml(run_dir / "config.toml"))))
    started = read(run_dir) or written
    if _plain(document) != written:
        write_text(run_dir / "config.toml", config_mod.dumps(document))
    if read(run_dir) != _plain(document):
        write(run_dir, experiment)
    return [seed for seed in experiment.train.seeds if seed not in started["train"]["seeds"]]
