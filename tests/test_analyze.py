"""augcompare analyze: a finished run's summary and figures again with other analysis settings,
into RUN_DIR/analyses/<name>/, training nothing and changing none of the run's own files."""

import json
import shutil

import pytest
from conftest import SMALL, run_small

from augcompare.experiments import cli, config, load_run
from augcompare.experiments.errors import UserError


def run_files(run_dir):
    """The run's own files and their bytes, its lock's included (an analysis's folder is not the
    run's)."""
    return {path: path.read_bytes() for path in run_dir.rglob("*")
            if path.is_file() and "analyses" not in path.relative_to(run_dir).parts}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small run of two seeds."""
    return run_small(tmp_path_factory.mktemp("analyze"), "train.seeds=[0, 1]", run_id="two")


@pytest.fixture
def run_dir(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def analyze(run_dir, *args):
    return cli.main(["analyze", str(run_dir), *args])


@pytest.mark.slow
def test_analyze_writes_another_summary_to_its_own_folder_and_changes_none_of_the_runs_files(run_dir, capsys):
    before = run_files(run_dir)
    assert analyze(run_dir, "--set", "analysis.min_effect=0.5", "--set", "analysis.comparisons=all") == 0
    folder = run_dir / "analyses" / "min_effect-0.5_comparisons-all"
    out = capsys.readouterr().out
    assert out.endswith(f"analysis written to {folder}\n") and "# demo: summary" in out
    assert {path.name for path in folder.iterdir()} == {"summary.md", "summary.json", "settings.toml", "accuracy.png",
                                                        "loss.png", "ablation.png", "pairs.png"}
    summary = json.loads((folder / "summary.json").read_text())
    own = json.loads((run_dir / "summary.json").read_text())
    assert summary["primary"]["min_effect"] == 0.005 and own["primary"]["min_effect"] == 0.01
    assert summary["comparisons"] == "all" and "pairs" in summary and "pairs" not in own
    assert summary["arms"] == own["arms"]  # the same jobs: only the analysis differs
    settings = config.read_toml(folder / "settings.toml")["analysis"]
    assert (settings["min_effect"], settings["comparisons"], settings["primary"]) == (0.5, "all", "test_accuracy")
    assert "with analysis.min_effect, analysis.comparisons changed" in (folder / "settings.toml").read_text()
    assert run_files(run_dir) == before
    # With the run's own settings it answers as the run did.
    assert analyze(run_dir) == 0
    assert json.loads((run_dir / "analyses" / "as-run" / "summary.json").read_text()) == own
    assert run_files(run_dir) == before
    assert cli.main(["plot", str(run_dir)]) == 0  # plot still redraws the run's own


@pytest.mark.slow
def test_an_existing_analysis_is_replaced_only_with_force_and_a_name_can_be_given(run_dir, capsys):
    assert analyze(run_dir, "--set", "analysis.comparisons=all") == 0
    folder = run_dir / "analyses" / "comparisons-all"
    stale = folder / "stale.png"
    stale.write_bytes(b"")
    assert analyze(run_dir, "--set", "analysis.comparisons=all") == 2
    error = capsys.readouterr().err
    assert error == f"augcompare: error: {folder} exists; give --force to replace it or --name for another\n"
    assert stale.exists()
    assert analyze(run_dir, "--set", "analysis.comparisons=all", "--force") == 0
    assert not stale.exists() and (folder / "pairs.png").is_file()
    assert analyze(run_dir, "--set", "analysis.primary=test_loss", "--name", "loss") == 0
    assert json.loads((run_dir / "analyses" / "loss" / "summary.json").read_text())["primary"]["metric"] == "test_loss"
    assert analyze(run_dir, "--name", "../x") == 2
    assert "--name '../x' must be letters" in capsys.readouterr().err


ERRORS = {
    "a training setting": (["train.epochs=3"], "takes only analysis.primary, analysis.min_effect, analysis.baseline, "
                           "analysis.comparisons; train.epochs is the run's (it changes what trains)"),
    "a design setting": (["analysis.max_seeds=3"], "analysis.max_seeds is the run's (it chose which seeds trained)"),
    "an arm that is not there": (["analysis.baseline=nope"], "analysis.baseline = 'nope' is not an arm"),
    "a metric that is not one": (["analysis.primary=speed"], "analysis.primary = 'speed' is not valid"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_a_setting_analyze_cannot_take_is_a_one_line_error(run_dir, capsys, case):
    sets, message = ERRORS[case]
    before = run_files(run_dir)
    assert analyze(run_dir, *[arg for item in sets for arg in ("--set", item)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert run_files(run_dir) == before and not any((run_dir / "analyses").glob("*"))


DAMAGE = {
    "history.csv missing": (lambda d: (d / "history.csv").unlink(), "history.csv is missing, so there is nothing to "
                            "analyze"),
    "runs.json missing": (lambda d: (d / "runs.json").unlink(), "runs.json is missing, so there is nothing to analyze"),
    "runs.json garbage": (lambda d: (d / "runs.json").write_text('{"jobs": ['), "runs.json is not valid JSON"),
    "history.csv a row short": (lambda d: (d / "history.csv").write_text(
        "".join((d / "history.csv").read_text().splitlines(keepends=True)[:-1])),
        "history.csv holds 1 rows of augmented seed 1 but runs.json says 2 epochs"),
    "config.toml edited": (lambda d: (d / "config.toml").write_text(
        (d / "config.toml").read_text().replace("epochs = 2\n", "epochs = 6\n", 1)),
        "config.toml was edited since the run started: train.epochs = 6 (started with 2)"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_or_missing_run_file_is_a_one_line_error(run_dir, capsys, case):
    damage, message = DAMAGE[case]
    damage(run_dir)
    assert analyze(run_dir, "--set", "analysis.min_effect=0.5") == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not (run_dir / "analyses").exists()


def test_load_run_analyze_answers_with_the_analysis_summary_and_verdicts(run_dir):
    before = run_files(run_dir)
    result = load_run(run_dir).analyze({"analysis.primary": "test_loss"})
    assert result.folder == run_dir / "analyses" / "primary-test_loss"
    assert result.summary["primary"]["metric"] == "test_loss"
    assert result.verdicts == {"augmented": result.summary["vs_baseline"]["augmented"]["primary"]["verdict"]}
    assert set(result.ranking) == {"baseline", "augmented"}
    assert set(result.pairs) == {("augmented", "baseline")}
    assert result.pairs[("augmented", "baseline")]["verdict"] == result.verdicts["augmented"]
    assert run_files(run_dir) == before
    with pytest.raises(UserError, match="train.seeds is the run's"):
        load_run(run_dir).analyze(["train.seeds=[0, 1, 2]"])


def test_the_two_stage_designs_pilot_sd_applies_only_to_its_own_metric_and_pair():
    from augcompare.experiments.analyze import _design
    experiment = config.load(None, SMALL + ["analysis.target_half_width=2"])
    design = {"pilot_sd": {"augmented": 0.02}, "pilot_seeds": [0, 1], "seeds": [0, 1, 2]}
    same = _design(design, experiment, experiment, "baseline", "baseline")
    assert same == design
    loss = config.load(None, SMALL + ["analysis.target_half_width=2", "analysis.primary=test_loss"])
    assert _design(design, experiment, loss, "baseline", "baseline")["pilot_sd"] == {}
    other = config.load(None, SMALL + ["analysis.target_half_width=2", "analysis.baseline=augmented"])
    assert _design(design, experiment, other, "baseline", "augmented")["pilot_sd"] == {"augmented - baseline": 0.02}
    assert design["pilot_sd"] == {"augmented": 0.02}  # the run's own is left as it was
