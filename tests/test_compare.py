"""Which set is best, and how strong: any arm as the reference, every pair when asked (Holm across
the whole family), a ranking with the arms not shown worse than the best, the probability of
improvement with an exact interval, strength sweeps from list-valued settings, their figures, and
two-arm summaries left exactly as they were."""

import json
import math

import numpy as np
import pytest
from conftest import run_small
from matplotlib.text import Text
from scipy import stats as scipy_stats

from augcompare.augment.params import MAGNITUDES, MIXING, PARAMS, PRESETS, REQUIRES, augments
from augcompare.experiments import config, outputs, planning, plots, report, run, stats
from augcompare.experiments.config import SWEEPABLE, UserError
from augcompare.experiments.files import write_json
from augcompare.experiments.history import read_history

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def rows(arm, seed, value):
    return [{"arm": arm, "seed": seed, "epoch": 1, "loss": 0.1, "accuracy": 0.9, "val_loss": 1 - value,
             "val_accuracy": value, "epoch_seconds": 1.0}]


def record(arm, seed, value):
    return {"arm": arm, "seed": seed, "status": "finished", "epochs": 1, "reason": "", "selected_epoch": 1,
            "test_accuracy": value, "test_loss": 1 - value, "selected_test_accuracy": value,
            "selected_test_loss": 1 - value}


def experiment_of(values):
    """history rows and job records of arms whose test accuracy per seed is values[arm]."""
    history, jobs = [], {}
    for arm, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            history += rows(arm, seed, value)
            jobs[arm, seed] = record(arm, seed, value)
    return history, jobs


# Four arms over six seeds: "strong" clearly best, "close" just behind it, "plain" the reference
# and "weak" clearly worst.
FOUR = {"plain": [0.70, 0.72, 0.68, 0.71, 0.69, 0.70], "strong": [0.80, 0.83, 0.77, 0.82, 0.79, 0.81],
        "close": [0.80, 0.82, 0.78, 0.81, 0.79, 0.80], "weak": [0.60, 0.61, 0.57, 0.62, 0.58, 0.60]}


def summary_of(values, **options):
    history, jobs = experiment_of(values)
    return stats.summarize(history, list(values), 1, jobs, test_count=1000, **options)


# ---- Which comparisons -------------------------------------------------------------------------

@pytest.mark.parametrize("arms, baseline, comparisons, expected", [
    (["b", "x", "y"], "b", "baseline", [("x", "b"), ("y", "b")]),
    (["b", "x", "y"], "b", "all", [("x", "b"), ("y", "b"), ("y", "x")]),
    (["x", "b", "y"], "b", "all", [("x", "b"), ("y", "b"), ("y", "x")]),  # the baseline first, whatever its place
    (["x", "y", "z"], None, "baseline", [("y", "x"), ("z", "x"), ("z", "y")]),  # no baseline: every pair
])
def test_the_compared_pairs(arms, baseline, comparisons, expected):
    assert stats.compared_pairs(arms, baseline, comparisons) == expected


@pytest.mark.parametrize("arms, named, expected", [
    ({"baseline": {}, "flip": {"horizontal_flip": True}}, "flip", "flip"),  # analysis.baseline wins
    ({"baseline": {"zoom": 0.1}, "a": {}}, "", "baseline"),
    ({"a": {"rotation": 5.0}, "b": {}}, "", "b"),
    ({"standard": {"rotation": 20.0}, "geometric": {"zoom": 0.1}}, "", None),
])
def test_the_reference_arm(arms, named, expected):
    assert stats.baseline_arm(arms, augments, named) == expected


# ---- Probability of improvement ----------------------------------------------------------------

@pytest.mark.parametrize("treated, control, metric, estimate, wins, ties", [
    ([2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6], "test_accuracy", 1.0, 6, 0),
    ([1, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6], "test_accuracy", 11 / 12, 5, 1),  # a tie counts half
    ([0, 3, 2, 5, 4, 7], [1, 2, 3, 4, 5, 6], "test_accuracy", 0.5, 3, 0),
    ([2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6], "test_loss", 0.0, 0, 0),  # a higher loss never improves
])
def test_probability_of_improvement_counts_wins_per_seed(treated, control, metric, estimate, wins, ties):
    result = stats.probability_of_improvement(treated, control, metric)
    assert result["estimate"] == pytest.approx(estimate) and (result["wins"], result["ties"]) == (wins, ties)
    low, high = result["ci95"]
    assert low == pytest.approx(scipy_stats.binomtest(wins, 6).proportion_ci().low)
    assert high == pytest.approx(scipy_stats.binomtest(wins + ties, 6).proportion_ci().high)
    assert low <= estimate <= high


@pytest.mark.parametrize("p_win, p_tie", [(0.5, 0.0), (0.8, 0.0), (0.95, 0.0), (0.4, 0.3), (0.1, 0.6)])
def test_the_interval_of_the_probability_of_improvement_covers_it(p_win, p_tie):
    """Over every outcome of six seeds (wins, ties, losses), weighted by its multinomial
    probability, the 95% interval holds the true P(win) + P(tie) / 2 at least 95% of the time."""
    truth, coverage = p_win + p_tie / 2, 0.0
    for wins in range(7):
        for ties in range(7 - wins):
            outcome = [1.0] * wins + [0.0] * ties + [-1.0] * (6 - wins - ties)
            low, high = stats.probability_of_improvement(outcome, np.zeros(6), "test_accuracy")["ci95"]
            if low <= truth <= high:
                coverage += scipy_stats.multinomial.pmf([wins, ties, 6 - wins - ties], 6,
                                                        [p_win, p_tie, 1 - p_win - p_tie])
    assert coverage >= 0.95


# ---- Every pair and the ranking ----------------------------------------------------------------

def test_every_pair_is_one_family_under_holm():
    summary = summary_of(FOUR, baseline="plain", comparisons="all")
    assert summary["comparisons"] == "all" and len(summary["pairs"]) == 6
    raw = [pair["primary"]["p"] for pair in summary["pairs"]]
    assert [pair["primary"]["p_holm"] for pair in summary["pairs"]] == pytest.approx(stats.holm(raw))
    by_pair = {(pair["arm"], pair["other"]): pair["primary"] for pair in summary["pairs"]}
    for arm, entry in summary["vs_baseline"].items():  # the baseline's comparisons are members of the family
        assert entry["primary"]["p_holm"] == by_pair[arm, "plain"]["p_holm"]
        assert entry["primary"]["verdict"] == by_pair[arm, "plain"]["verdict"]
    # A larger family is a stricter correction than against the baseline alone.
    against_baseline = summary_of(FOUR, baseline="plain")
    assert all(summary["vs_baseline"][arm]["primary"]["p_holm"] >= against_baseline["vs_baseline"][arm]["primary"][
        "p_holm"] for arm in ("strong", "close", "weak"))
    assert against_baseline["comparisons"] == "baseline" and "every pair" in summary["primary"]["correction"]


def test_the_ranking_names_the_best_and_the_arms_not_shown_worse():
    summary = summary_of(FOUR, baseline="plain")
    ranking = summary["ranking"]
    # strong and close are not told apart: no separable best, though strong leads by mean.
    assert ranking["order"] == ["strong", "close", "plain", "weak"] and ranking["best"] is None
    assert ranking["leader"] == "strong" and ranking["picks"] == ranking["not_worse"] == ["strong", "close"]
    close, weak = ranking["vs_best"]["close"], ranking["vs_best"]["weak"]
    assert close["mean"] == pytest.approx(np.mean(np.subtract(FOUR["close"], FOUR["strong"])))
    assert close["verdict"] != "worse" and weak["verdict"] == "worse" and weak["mean"] < 0
    assert weak["prob_improvement"]["estimate"] == 0.0  # weak never beats strong
    text = report.to_markdown({"name": "x", **summary}, "x")
    assert "## Ranking" in text and "**No separable best.** strong, close could equally be picked" in text
    assert "**Best" not in text


def test_the_ranking_stands_on_the_seeds_every_arm_ran():
    """a is ahead of b by 1.8 points on every seed; b's seed 8 failed, where a had its worst
    result: ranked on each arm's own seeds, b came out on top while the evidence says a - b =
    +1.8 points, better. The ranking uses seeds 0-7 and says seed 8 is left out."""
    seeds = range(9)
    b = [0.80, 0.82, 0.79, 0.81, 0.80, 0.83, 0.81, 0.80]
    values = {"a": [value + 0.018 + 0.0004 * (seed % 3) for seed, value in enumerate(b)] + [0.70],
              "b": b + [None], "c": [value - 0.05 + 0.001 * (seed % 2) for seed, value in enumerate(b)] + [0.60]}
    history, jobs = [], {}
    for arm, per_seed in values.items():
        for seed, value in zip(seeds, per_seed):
            if value is None:
                jobs[arm, seed] = {**record(arm, seed, 0.0), "status": "failed", "reason": "loss became nan"}
                continue
            history += rows(arm, seed, value)
            jobs[arm, seed] = record(arm, seed, value)
    summary = stats.summarize(history, list(values), 1, jobs, test_count=1000)
    ranking = summary["ranking"]
    assert ranking["order"] == ["a", "b", "c"] and ranking["best"] == "a" and ranking["seeds"] == list(range(8))
    assert ranking["vs_best"]["b"]["verdict"] == "worse"
    assert ranking["means"]["a"]["mean"] == pytest.approx(np.mean(values["a"][:8]))
    text = report.to_markdown(summary, "x")
    assert "**Best: a.** Every other arm is shown worse than it." in text and "seed(s) 8 left out" in text


def test_an_arm_shown_worse_than_the_baseline_is_never_offered_as_a_pick():
    """Three arms against the baseline (not every pair): flip is worse than the baseline (Holm
    across the two baseline comparisons) but not shown worse than strong in the every-pair
    family. The summary must not offer it as a pick; strong and the baseline are not told
    apart, so there is no separable best."""
    values = {"baseline": [0.9204, 0.8744, 0.9042, 0.8943, 0.8955, 0.8978],
              "strong": [0.8840, 0.8738, 0.8909, 0.9648, 0.9040, 0.8948],
              "flip": [0.9076, 0.8604, 0.8890, 0.8811, 0.8820, 0.8851]}
    summary = summary_of(values, baseline="baseline")
    assert summary["vs_baseline"]["flip"]["primary"]["verdict"] == "worse"
    ranking = summary["ranking"]
    assert ranking["vs_best"]["flip"]["verdict"] == "inconclusive"  # the larger family does not separate them
    assert "flip" not in ranking["picks"] and ranking["picks"] == ["strong", "baseline"] and ranking["best"] is None
    text = report.to_markdown(summary, "x")
    assert "**No separable best.** strong, baseline could equally be picked" in text
    # With the baseline leading, flip's row against it shows the verdict of the table above: one verdict a pair.
    summary = summary_of({**values, "strong": [value - 0.01 for value in values["strong"]]}, baseline="baseline")
    assert summary["ranking"]["leader"] == "baseline" and "flip" not in summary["ranking"]["picks"]
    assert summary["ranking"]["vs_best"]["flip"]["verdict"] == "worse"
    assert summary["ranking"]["vs_best"]["flip"]["p_holm"] == summary["vs_baseline"]["flip"]["primary"]["p_holm"]


def test_the_plan_line_warns_when_the_seeds_or_the_test_split_cannot_support_a_verdict():
    """Four seeds and 300 test images: the start says that no arm can be shown better, worse or
    equivalent, and what would do; the bundled demo (6 seeds, 1000 test images) is only told about
    equivalence."""
    lines = planning.plan_lines(config.load("demo", ["train.seeds=[0, 1, 2, 3]"]), 300)
    assert any(line.startswith("warning: 4 seed(s) cannot show an arm better or worse") for line in lines)
    assert any(line.startswith("warning: on 300 test images") and "2500 test images" in line for line in lines)
    demo = planning.plan_lines(config.load("demo"), 1000)
    assert not any("seed(s) cannot" in line for line in demo) and any("on 1000 test images" in line for line in demo)
    assert not any(line.startswith("warning") for line in planning.plan_lines(config.load("demo"), 2500))


def test_a_ranking_at_four_seeds_says_that_no_comparison_can_be_decided():
    summary = summary_of({arm: values[:4] for arm, values in FOUR.items()}, baseline="plain")
    assert summary["ranking"]["best"] is None
    assert ("**No separable best.** At 4 seed(s) no comparison can be shown better or worse (the exact sign-flip "
            "test's smallest p is 0.125); 6 seeds can. The order above is by mean alone.") in report.to_markdown(summary,
                                                                                                                 "x")


def test_two_augmented_arms_without_a_baseline_are_compared():
    """The new user's experiment: preset standard against preset geometric, no baseline."""
    summary = summary_of({"standard": FOUR["strong"], "geometric": FOUR["plain"]})
    (pair,) = summary["pairs"]
    assert (pair["arm"], pair["other"]) == ("geometric", "standard") and pair["primary"]["verdict"] == "worse"
    text = report.to_markdown(summary, "x")
    assert "nothing is compared" not in text and "| geometric | standard | 6 | -10.3 |" in text


@pytest.mark.parametrize("comparisons", ["baseline", "all"])
def test_a_two_arm_summary_is_unchanged_unless_it_asks_for_more(comparisons):
    summary = summary_of({"plain": FOUR["plain"], "strong": FOUR["strong"]}, baseline="plain",
                         comparisons=comparisons)
    new_keys = {"pairs", "ranking", "comparisons", "sweeps"}
    if comparisons == "baseline":
        assert not new_keys & set(summary) and "prob_improvement" not in summary["vs_baseline"]["strong"]["primary"]
    else:
        assert summary["pairs"] and "prob_improvement" in summary["vs_baseline"]["strong"]["primary"]
    assert "ranking" not in summary  # a ranking needs three arms


@pytest.mark.parametrize("name", ["demo", "ablation", "policies", "strength"])
def test_the_reference_summaries_recompute_from_their_history(name, tmp_path):
    """results/<name>/reference: summary.json and summary.md are what the statistics make of its
    history.csv and runs.json today, byte for byte (the demo's as before this comparison of pairs)."""
    reference = ROOT / "results" / name / "reference"
    experiment = config.build(config.read_toml(reference / "config.toml"))
    records, design = outputs.read_runs(reference)
    summary, markdown = outputs.summary_of(reference, experiment, read_history(reference / "history.csv"), records,
                                       design)
    write_json(tmp_path / "summary.json", summary)
    assert (tmp_path / "summary.json").read_text() == (reference / "summary.json").read_text()
    assert markdown == (reference / "summary.md").read_text()
    if len(experiment.arms) >= 3:
        assert (reference / "pairs.png").is_file() and "## Ranking" in markdown


# ---- Sweeps ------------------------------------------------------------------------------------

def sweep_row(key):
    """A sweep of one setting over two values inside its range, with the setting it needs."""
    if key in MIXING:
        return {key: [0.2, 1.0]}, [0.2, 1.0]
    param = PARAMS[key]
    values = [param.kind(param.high / 4), param.kind(param.high / 2)] if param.high != math.inf else [1.0, 2.0]
    table = {key: values}
    if key in REQUIRES:
        table[REQUIRES[key]] = True if PARAMS[REQUIRES[key]].kind is bool else PARAMS[REQUIRES[key]].high
    return table, values


@pytest.mark.parametrize("key", [key for key in SWEEPABLE if key != "strength"])
def test_every_numeric_setting_sweeps_into_an_arm_per_value(key):
    table, values = sweep_row(key)
    experiment = config.build({"arms": {"baseline": {}, "s": table}})
    names = [f"s-{config._value_name(value)}" for value in values]
    assert list(experiment.arms) == ["baseline", *names]
    assert [experiment.arms[name][key] for name in names] == pytest.approx(values)
    assert experiment.sweeps == {"s": {"setting": key, "values": values, "arms": names}}


def scalable(settings):
    return (any(key in MAGNITUDES or key in MIXING for key in settings) or settings.get("trivial_augment")
            or any(layer.get("layer") == "RandAugment" for layer in settings.get("keras", [])))


@pytest.mark.parametrize("preset", [name for name, settings in PRESETS.items() if scalable(settings)])
def test_a_presets_strength_sweeps_its_magnitudes(preset):
    experiment = config.build({"arms": {"baseline": {}, "p": {"preset": preset, "strength": [0.5, 1]}}})
    half, same = experiment.arms["p-0.5"], experiment.arms["p-1"]
    assert experiment.sweeps["p"]["setting"] == "strength"
    assert {key: value for key, value in same.items() if key != "trivial_strength"} == PRESETS[preset]
    for key, value in PRESETS[preset].items():
        if key in MAGNITUDES or key in MIXING:
            assert half[key] == pytest.approx(PARAMS[key].kind(value * 0.5) if key in PARAMS else value * 0.5)
        elif key == "keras":
            assert half[key][0]["factor"] == pytest.approx(value[0]["factor"] * 0.5)
        elif key == "trivial_augment":
            assert half["trivial_strength"] == 0.5
        else:
            assert half[key] == value  # switches stay as they are


@pytest.mark.parametrize("arms, message", [
    ({"r": {"rotation": [10, 30], "brightness": [0.1, 0.2]}}, "arms.r sweeps both rotation and brightness"),
    ({"r": {"horizontal_flip": [True, False]}}, "only a numeric setting can be swept"),
    ({"r": {"rotation": []}}, "a sweep of rotation is a list of numbers"),
    ({"r": {"rotation": [10, "30"]}}, "a sweep of rotation is a list of numbers"),
    ({"r": {"rotation": [10, 10.0]}}, "lists a value twice"),
    ({"r": {"rotation": [10, 200]}}, "arms.r-200: augmentation rotation = 200 is out of range"),
    ({"r": {"rotation": [10]}, "r-10": {}}, "its sweep's arm r-10 is also an arm"),
    ({"x": {"fill_value": [-1, 2]}, "x-": {"fill_value": [1]}}, "arms.x-: its sweep's arm x--1 is also an arm of "
     "the sweep of arms.x; rename one"),  # two sweeps, one name: one arm's settings would replace the other's
    ({"r": {"strength": [1, 2]}}, "arms.r-1: strength scales a preset's magnitudes"),
    ({"r": {"preset": "augmix", "strength": [1, 2]}}, "preset 'augmix' has no magnitude for strength to scale"),
    ({"r": {"preset": "standard", "strength": [1, 6]}}, "arms.r-6: augmentation brightness = 1.2"),
    ({"r": {"preset": "trivialaugment", "strength": [2]}}, "arms.r-2: augmentation trivial_strength = 2.0"),
])
def test_bad_sweeps_are_one_line_errors(arms, message):
    with pytest.raises(UserError, match=message) as error:
        config.build({"arms": {"baseline": {}, **arms}})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("raw, message", [
    ({"analysis": {"baseline": "nope"}}, "analysis.baseline = 'nope' is not an arm; choose one of baseline, r-10"),
    ({"analysis": {"comparisons": "some"}}, "analysis.comparisons = 'some' is not valid; choose one of baseline, all"),
    ({"sweeps": {"r": {"setting": "rotation", "values": [10], "arms": ["r-99"]}}}, "sweeps.r names arm 'r-99'"),
    ({"sweeps": {"q": {"setting": "rotation", "values": [10]}}}, "sweeps.q must be {setting"),
])
def test_bad_analysis_and_sweeps_tables_are_one_line_errors(raw, message):
    with pytest.raises(UserError, match=message.replace("{", "\\{")) as error:
        config.build({"arms": {"baseline": {}, "r": {"rotation": [10]}}, **raw})
    assert "\n" not in str(error.value)


def test_the_snapshot_of_a_sweep_rebuilds_the_same_experiment():
    experiment = config.load("strength")
    document = config.to_dict(experiment)
    assert document["sweeps"]["standard"] == {"setting": "strength", "values": [1, 2, 4],
                                              "arms": ["standard-1", "standard-2", "standard-4"]}
    rebuilt = config.build(config.tomllib.loads(config.dumps(document)))
    assert rebuilt == experiment
    assert experiment.arms["standard-4"] == {"rotation": 80.0, "brightness": 0.8, "horizontal_flip": True}


def test_a_sweep_summary_names_the_best_value_and_those_not_shown_worse():
    values = {"plain": FOUR["plain"], "r-10": FOUR["close"], "r-30": FOUR["strong"], "r-90": FOUR["weak"]}
    sweeps = {"r": {"setting": "rotation", "values": [10, 30, 90], "arms": ["r-10", "r-30", "r-90"]}}
    summary = summary_of(values, baseline="plain", sweeps=sweeps)
    sweep = summary["sweeps"]["r"]
    # 30 and 10 are not told apart: no separable best, both could be picked; 90 is shown worse.
    assert (sweep["best"], sweep["best_arm"], sweep["leader"], sweep["picks"]) == (None, None, 30, [30, 10])
    assert [point["value"] for point in sweep["points"]] == [10, 30, 90]
    assert sweep["points"][2]["mean"] == pytest.approx(np.mean(np.subtract(FOUR["weak"], FOUR["plain"])))
    text = report.to_markdown(summary, "x")
    assert "no separable best; rotation = 30, 10 could equally be picked." in text
    separable = summary_of({**values, "r-10": FOUR["plain"]}, baseline="plain", sweeps=sweeps)["sweeps"]["r"]
    assert (separable["best"], separable["best_arm"], separable["not_worse"]) == (30, "r-30", [])
    assert "best rotation = **30** (`r-30`)" in report.to_markdown(summary_of({**values, "r-10": FOUR["plain"]},
                                                                             baseline="plain", sweeps=sweeps), "x")


# ---- Figures -----------------------------------------------------------------------------------

def ten_arms():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0.7, 0.02, 6)
    return {f"arm{index}": list(seed_effect + 0.01 * index + rng.normal(0, 0.005, 6)) for index in range(10)}


def test_pairs_png_shows_every_pair_of_ten_arms_and_stays_on_screen(tmp_path):
    summary = summary_of(ten_arms(), comparisons="all")
    figure = plots.draw_pairs(summary)
    cells = [text for text in figure.findobj(Text) if text.get_text().count("\n") == 2]
    assert len(cells) == 90  # each ordered pair off the diagonal: difference, interval, verdict
    plots.pairs_figure(summary, tmp_path / "pairs.png")
    from PIL import Image
    with Image.open(tmp_path / "pairs.png") as image:
        assert max(image.size) <= 2000
    assert {axis.get_text() for axis in figure.axes[0].get_yticklabels()} == set(summary["ranking"]["order"])


def test_strength_png_has_a_panel_per_sweep_with_a_point_per_value(tmp_path):
    values = {"plain": FOUR["plain"], "r-10": FOUR["close"], "r-30": FOUR["strong"], "s-1": FOUR["weak"],
              "s-2": FOUR["close"]}
    sweeps = {"r": {"setting": "rotation", "values": [10, 30], "arms": ["r-10", "r-30"]},
              "s": {"setting": "strength", "values": [1, 2], "arms": ["s-1", "s-2"]}}
    figure = plots.draw_strength(summary_of(values, baseline="plain", sweeps=sweeps))
    panels = [axis for axis in figure.axes if axis.get_title()]
    assert [axis.get_title() for axis in panels] == ["r: rotation", "s: strength"]
    for axis in panels:
        assert [label.get_text() for label in axis.get_xticklabels()] == (["10", "30"] if "rotation" in
                                                                          axis.get_title() else ["1", "2"])


# ---- End to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_sweep_runs_an_arm_per_value_compares_every_pair_and_redraws(tmp_path, capsys):
    run_dir = run_small(tmp_path, "arms={baseline = {}, rot = {rotation = [10, 30]}}", "analysis.comparisons=all",
                        "train.seeds=[0, 1]", "train.epochs=1")
    out = capsys.readouterr().out
    assert "plan: 3 arms x 2 seeds = 6 jobs of 1 epochs" in out and "sweep rot: rotation = 10, 30" in out
    assert "compared: every pair (3 comparisons, Holm across them)" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["arms"]) == ["baseline", "rot-10", "rot-30"]
    assert len(summary["pairs"]) == 3 and summary["sweeps"]["rot"]["arms"] == ["rot-10", "rot-30"]
    for name in ("pairs.png", "strength.png"):
        assert (run_dir / name).stat().st_size > 0
    (run_dir / "pairs.png").unlink()
    before = (run_dir / "summary.md").read_text()
    from augcompare.experiments import cli
    assert cli.main(["plot", str(run_dir)]) == 0  # config.toml keeps the sweep
    assert (run_dir / "pairs.png").is_file() and (run_dir / "summary.md").read_text() == before


@pytest.mark.parametrize("comparisons, keys", [("baseline", ["rot-10", "rot-30"]),
                                               ("all", ["rot-10 - baseline", "rot-30 - baseline",
                                                        "rot-30 - rot-10"])])
def test_the_two_stage_design_plans_from_the_widest_comparison_that_matters(tmp_path, comparisons, keys):
    experiment = config.load(overrides=["arms={baseline = {}, rot = {rotation = [10, 30]}}",
                                        f"analysis.comparisons={comparisons}", "analysis.target_half_width=1",
                                        "analysis.pilot_seeds=3", "analysis.max_seeds=40"])
    planner = run.Run(tmp_path, experiment, None, lambda line: None, False)
    values = {"baseline": [0.70, 0.72, 0.68], "rot-10": [0.71, 0.70, 0.69], "rot-30": [0.75, 0.80, 0.69]}
    planner.history, planner.records = experiment_of(values)
    planner.plan_second_stage()
    design = planner.design
    assert sorted(design["pilot_sd"]) == sorted(keys)
    differences = {"rot-10": np.subtract(values["rot-10"], values["baseline"]),
                   "rot-30": np.subtract(values["rot-30"], values["baseline"]),
                   "rot-30 - rot-10": np.subtract(values["rot-30"], values["rot-10"])}
    widest = max(np.std(differences[key.replace(" - baseline", "")], ddof=1) for key in keys)
    assert design["planning_sd"] == pytest.approx(widest)
    assert len(design["seeds"]) == stats.stein_seeds(widest * 100, 3, 1.0, 40)


@pytest.mark.parametrize("magnitude", [0.0, 0.25, 0.5])
def test_trivial_strength_scales_every_trivialaugment_strength(magnitude):
    """TrivialAugment's draws at trivial_strength t are t x those of the wide space, operation by
    operation and image by image, with the same choices (so a strength sweep changes one thing)."""
    import tensorflow as tf

    from augcompare.augment import Augmentation
    from augcompare.augment.params import TRIVIAL_AUGMENT
    seed = tf.constant([3, 7], tf.int64)
    choice, full = Augmentation.trivial_draws(seed, 64)
    scaled_choice, scaled = Augmentation.trivial_draws(seed, 64, magnitude)
    assert np.array_equal(choice.numpy(), scaled_choice.numpy())
    for name in TRIVIAL_AUGMENT:
        assert scaled(name).numpy() == pytest.approx(magnitude * full(name).numpy(), abs=1e-6)
    assert Augmentation(trivial_augment=True, trivial_strength=magnitude).params["trivial_strength"] == magnitude
