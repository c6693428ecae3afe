"""More seeds for a run, and no other change: `augcompare run --resume RUN_DIR --set
train.seeds=[...]` with the run's seeds first trains only the added seeds' jobs, as a run of every
seed would have; any other change, by --set or in a config.toml edited since the start (checked
against started.json), is a one-line error naming the setting, and nothing is trained or
rewritten."""

import json
import shutil

import pytest
from conftest import SMALL, numbers, overrides, run_small

from augcompare.experiments import cli, config
from augcompare.experiments.history import read_history


def hashes(run_dir):
    return {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".lock"}


@pytest.fixture(scope="module")
def one_seed_run(tmp_path_factory):
    """A finished small run of seed 0."""
    return run_small(tmp_path_factory.mktemp("one_seed"), run_id="one")


@pytest.mark.slow
def test_resume_with_more_seeds_trains_only_their_jobs_as_a_run_of_every_seed_would(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "grown"
    shutil.copytree(one_seed_run, run_dir)
    seed_0 = read_history(run_dir / "history.csv")  # epoch_seconds too: a job trained again would differ
    assert cli.main(["run", "--resume", str(run_dir), "--set", "train.seeds=[0, 1]"]) == 0
    assert "seeds added: 1; their 2 jobs train now, and the summary covers every seed" in capsys.readouterr().out
    rows = read_history(run_dir / "history.csv")
    assert [row for row in rows if row["seed"] == 0] == seed_0
    both = run_small(tmp_path, "train.seeds=[0, 1]", run_id="both", cache=one_seed_run.parent.parent.parent / "cache")
    assert numbers(run_dir) == numbers(both)  # each seed's initial weights and sample order, as always
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["arms"]["augmented"]["seeds"] == [0, 1] and summary["vs_baseline"]["augmented"]["seeds"] == [0, 1]
    assert config.load(run_dir / "config.toml").train.seeds == (0, 1)
    before = hashes(run_dir)
    assert cli.main(["run", "--resume", str(run_dir)]) == 0  # the seeds are the run's now: nothing to train
    assert hashes(run_dir)[run_dir / "history.csv"] == before[run_dir / "history.csv"]


def refused(run_dir, capsys, *sets):
    """The one-line error of a resume with sets, after checking that it changed no file."""
    before = hashes(run_dir)
    assert cli.main(["run", "--resume", str(run_dir)] + overrides(*sets)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert hashes(run_dir) == before
    return error


def test_a_resume_that_changes_any_setting_but_added_seeds_is_refused_naming_it(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(one_seed_run, run_dir)
    toml = run_dir / "config.toml"
    written = toml.read_text()
    # Edited by hand: once, this resumed nothing and wrote "at the last of 6 epochs" where every job ran 2.
    toml.write_text(written.replace("epochs = 2\n", "epochs = 6\n", 1))
    error = refused(run_dir, capsys)
    assert f"{toml} was edited since the run started: train.epochs = 6 (started with 2)" in error
    assert f"augcompare run {toml}" in error
    before = hashes(run_dir)
    assert cli.main(["plot", str(run_dir)]) == 2  # nor is the summary redrawn as a run of 6 epochs
    assert "train.epochs = 6 (started with 2); set it back to use this run (augcompare plot)" in capsys.readouterr().err
    assert hashes(run_dir) == before
    toml.write_text(written)
    error = refused(run_dir, capsys, "train.epochs=3")
    assert "--set may only add seeds (train.seeds); it changes train.epochs = 3 (started with 2)" in error
    assert f"augcompare run {toml} --set train.epochs=3" in error
    error = refused(run_dir, capsys, "analysis.min_effect=0.5")
    assert f"augcompare analyze {run_dir} --set analysis.KEY=VALUE" in error
    for seeds in ("[1]", "[1, 0]", "[1, 2]"):
        error = refused(run_dir, capsys, f"train.seeds={seeds}")
        assert "a resumed run keeps its seeds [0] first, in order, and may only add more, e.g. " \
               "train.seeds=[0,1]" in error
    assert "unknown key train.seed;" in refused(run_dir, capsys, "train.seed=[0, 1]")


def test_the_two_stage_design_refuses_added_seeds(tmp_path, capsys):
    from augcompare.experiments import started
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    experiment = config.load(None, SMALL + ["analysis.target_half_width=2", "train.seeds=[0, 1]"])
    (run_dir / "config.toml").write_text(config.dumps(config.to_dict(experiment)))
    started.write(run_dir, experiment)
    error = refused(run_dir, capsys, "train.seeds=[0, 1, 2]")
    assert "the run uses the two-stage design (analysis.target_half_width = 2)" in error
    assert "start a new run for more seeds" in error


def test_a_damaged_or_edited_record_of_the_start_is_a_one_line_error(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(one_seed_run, run_dir)
    record = run_dir / "started.json"
    written = record.read_text()
    record.write_text(written[:len(written) // 2])
    assert "started.json is not valid JSON" in refused(run_dir, capsys)
    record.write_text(written.replace('"epochs": 2', '"epochs": 6', 1))
    assert "started.json was changed since it was written (its sha256 does not match)" in refused(run_dir, capsys)
    record.write_text('{"config": {}}')
    assert "started.json lacks its fields (config, sha256)" in refused(run_dir, capsys)


def test_a_run_without_the_record_resumes_as_before_and_gets_one(one_seed_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    shutil.copytree(one_seed_run, run_dir)
    record = run_dir / "started.json"
    written = record.read_text()
    record.unlink()  # a run started before the record existed
    toml = (run_dir / "config.toml").read_text()
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert f"warning: {run_dir} has no started.json" in capsys.readouterr().out
    assert record.read_text() == written and (run_dir / "config.toml").read_text() == toml
