"""The statistics of a run: intervals that cover at their nominal rate, Holm's adjustment, the
exact sign-flip test, the minimum detectable effect, Stein's two-stage seed count, verdicts, and
the summary built from history rows and job records."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from augcompare.augment.params import augments
from augcompare.experiments import report, stats


def test_the_paired_interval_covers_a_known_mean_at_the_nominal_rate():
    """400 simulated experiments of 6 paired seeds with a shared seed effect and a true
    difference of 0.02: the 95% interval holds the true difference in about 95% of them."""
    rng = np.random.default_rng(0)
    covered = 0
    draws = 400
    for _ in range(draws):
        seed_effect = rng.normal(0.8, 0.05, 6)
        control = seed_effect + rng.normal(0, 0.01, 6)
        treated = seed_effect + 0.02 + rng.normal(0, 0.01, 6)
        low, high = stats.paired_difference(treated, control)["ci95"]
        covered += low <= 0.02 <= high
    assert abs(covered / draws - 0.95) < 3 * math.sqrt(0.95 * 0.05 / draws)


def test_paired_difference_matches_the_t_formula():
    # differences 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3)
    diff = stats.paired_difference([11, 12, 13], [10, 10, 10])
    half = 4.302653 / math.sqrt(3)
    assert diff["mean"] == pytest.approx(2)
    assert diff["ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-5)
    assert stats.paired_difference([1.0], [0.5])["ci95"] is None


def test_a_difference_without_spread_keeps_its_place_in_holms_family():
    """Every seed 12.5 points better: no spread for the t-test, so the exact sign-flip test's
    p-value (2 / 2^n), not a missing one that would drop the arm from the correction, nor the
    t statistic's limit of 0; no difference at all: p = 1."""
    assert stats.paired_difference([0.75, 0.625, 0.875], [0.625, 0.5, 0.75]) == {
        "mean": 0.125, "ci95": [0.125, 0.125], "p": 0.25, "n": 3}
    assert stats.paired_difference([0.7, 0.6], [0.7, 0.6])["p"] == 1.0
    history, jobs = [], {}
    values = [(0.625, 0.75, 0.74), (0.5, 0.625, 0.53), (0.75, 0.875, 0.79), (0.25, 0.375, 0.3), (0.5, 0.625, 0.6),
              (0.375, 0.5, 0.4)]
    for seed, (base, steady, noisy) in enumerate(values):
        for arm, value in (("plain", base), ("steady", steady), ("noisy", noisy)):
            history += rows(arm, seed, [0.5, value])
            jobs[arm, seed] = record(arm, seed, value)
    summary = stats.summarize(history, ["plain", "steady", "noisy"], 2, jobs, baseline="plain", test_count=500)
    steady, noisy = (summary["vs_baseline"][arm]["primary"] for arm in ("steady", "noisy"))
    assert steady["p"] == pytest.approx(2 / 2**6) and steady["p_holm"] == pytest.approx(stats.holm(
        [steady["p"], noisy["p"]])[0]) and steady["verdict"] == "better"
    assert noisy["p_holm"] == pytest.approx(stats.holm([steady["p"], noisy["p"]])[1])


def test_holm_on_a_known_p_vector():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([0.3, 0.8]) == pytest.approx([0.6, 0.8])  # monotone
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_the_sign_flip_test_is_exact():
    # With n seeds all favouring one arm, the two-sided exact p is 2 / 2^n.
    assert stats.sign_flip_p([1, 2, 3]) == pytest.approx(0.25)
    assert stats.sign_flip_p([1, 2, 3, 4]) == pytest.approx(0.125)
    assert stats.sign_flip_p([1, -1, 2, -2]) == pytest.approx(1.0)


def test_the_minimum_detectable_effect_has_80_percent_power():
    """Simulated paired t-tests with the true effect set to the MDE reject at 5% in about 80% of
    draws."""
    sd, n, draws = 1.5, 8, 4000
    effect = stats.minimum_detectable_effect(sd, n)
    rng = np.random.default_rng(1)
    samples = rng.normal(effect, sd, (draws, n))
    p = scipy_stats.ttest_1samp(samples, 0.0, axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.80) < 0.03
    assert stats.minimum_detectable_effect(sd, 16) < effect  # more seeds detect less
    assert stats.minimum_detectable_effect(None, 8) is None and stats.minimum_detectable_effect(1.0, 1) is None


def test_steins_two_stage_seed_count_on_a_known_pilot():
    # t(0.975, 4) = 2.776: (2.776 * 2 / 1)^2 = 30.8 -> 31 seeds for a half-width of 1
    assert stats.stein_seeds(2.0, 5, 1.0, 100) == 31
    assert stats.stein_seeds(2.0, 5, 1.0, 20) == 20  # capped
    assert stats.stein_seeds(0.1, 5, 1.0, 20) == 5  # never fewer than the pilot
    differences = [1.0, 2.0, 1.5, 0.5, 1.0, 2.0]
    low, high = stats.stein_interval(differences, 0.6, 5)
    assert (high - low) / 2 == pytest.approx(2.7764 * 0.6 / math.sqrt(6), abs=1e-3)


def test_pairing_efficiency():
    shared = np.array([0.7, 0.8, 0.9, 0.75])
    assert stats.pairing_efficiency(shared + 0.01, shared) == pytest.approx(1.0)  # the noise is all shared
    assert stats.pairing_efficiency([0.7, 0.9, 0.8], [0.9, 0.7, 0.8]) < 0  # anti-correlated: pairing hurts


@pytest.mark.parametrize("difference, interval90, p_holm, p_sign_flip, sd, floor, expected", [
    (0.05, [0.03, 0.07], 0.01, 0.031, 0.02, None, "better"),
    (-0.05, [-0.07, -0.03], 0.01, 0.031, 0.02, None, "worse"),
    (0.05, [0.03, 0.07], 0.01, 0.125, 0.02, None, "inconclusive"),  # 4 seeds: the sign-flip test cannot decide
    (0.001, [-0.004, 0.006], 0.6, 0.8, 0.004, 0.009, "equivalent"),
    (0.002, [0.002, 0.002], 0.5, 0.5, 0.0, None, "inconclusive"),  # no spread: not evidence of equivalence
    (0.001, [-0.004, 0.006], 0.6, 0.8, 0.004, 0.026, "inconclusive"),  # 300 test images cannot resolve 1 point
    (0.01, [-0.02, 0.04], 0.4, 0.4, 0.02, None, "inconclusive"),
])
def test_verdicts(difference, interval90, p_holm, p_sign_flip, sd, floor, expected):
    assert stats.verdict("test_accuracy", difference, interval90, p_holm, 0.01, p_sign_flip, sd, floor) == expected


def test_a_lower_loss_is_better():
    assert stats.verdict("test_loss", -0.2, [-0.3, -0.1], 0.001, 0.01, 0.01, 0.05) == "better"


def rows(arm, seed, val_accuracies, accuracy=0.9):
    return [{"arm": arm, "seed": seed, "epoch": e + 1, "loss": 0.1, "accuracy": accuracy, "val_loss": 1 - v,
             "val_accuracy": v, "epoch_seconds": 1.0} for e, v in enumerate(val_accuracies)]


def record(arm, seed, test_accuracy, status="finished"):
    return {"arm": arm, "seed": seed, "status": status, "epochs": 3, "reason": "", "selected_epoch": 3,
            "test_accuracy": test_accuracy, "test_loss": 1 - test_accuracy, "selected_test_accuracy": test_accuracy,
            "selected_test_loss": 1 - test_accuracy}


def test_summary_reports_the_primary_comparison_with_holm_across_arms():
    arms = ["plain", "flip", "tilt"]
    history, jobs = [], {}
    for seed, (base, flip, tilt) in enumerate([(0.70, 0.80, 0.71), (0.72, 0.83, 0.70), (0.68, 0.77, 0.69),
                                                (0.71, 0.82, 0.72), (0.69, 0.80, 0.70), (0.70, 0.81, 0.69)]):
        for arm, value in zip(arms, (base, flip, tilt)):
            history += rows(arm, seed, [0.5, 0.6, value])
            jobs[arm, seed] = record(arm, seed, value)
    history += rows("flip", 9, [0.6])  # a job that has not ended: left out
    summary = stats.summarize(history, arms, 3, jobs, baseline="plain", test_count=500)
    flip = summary["vs_baseline"]["flip"]["primary"]
    assert flip["metric"] == "test_accuracy" and flip["seeds"] == 6
    assert flip["mean"] == pytest.approx(0.105)
    assert flip["verdict"] == "better" and flip["p_holm"] < 0.05 and flip["p_sign_flip"] == pytest.approx(2 / 2**6)
    raw = [summary["vs_baseline"][arm]["primary"]["p"] for arm in ("flip", "tilt")]
    assert [summary["vs_baseline"][arm]["primary"]["p_holm"] for arm in ("flip", "tilt")] == pytest.approx(
        stats.holm(raw))
    assert summary["arms"]["flip"]["test_accuracy"]["values"] == pytest.approx([0.80, 0.83, 0.77, 0.82, 0.80, 0.81])
    assert summary["primary"]["noise_floor"]["test_images"] == 500
    assert "fractions in [0, 1]" in summary["units"] and "percentage points" in summary["units"]
    text = report.to_markdown(summary, "x")
    assert "**flip: better** than plain" in text and text.index("## Primary metric") < text.index("## Arms")


def summary_of(values, **options):
    """The summary of arms whose test accuracy per seed is values[arm] (seeds 0, 1, ...)."""
    history, jobs = [], {}
    for arm, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            history += rows(arm, seed, [0.5, value])
            jobs[arm, seed] = record(arm, seed, value)
    return stats.summarize(history, list(values), 2, jobs, baseline=list(values)[0], **options)


@pytest.mark.parametrize("control, treated", [
    ([0.80, 0.75], [0.802, 0.752]),  # +0.2 points on both seeds
    ([0.80, 0.75], [0.80, 0.75]),  # the same numbers
    ([994 / 997, 969 / 997], [996 / 997, 971 / 997]),  # +2 images of 997 on both, 1e-16 apart in floats
])
def test_no_spread_across_seeds_is_not_equivalence(control, treated):
    """Seeds that all give the same difference show nothing about its noise: inconclusive, said
    as "no spread across 2 seeds", never equivalent, and never a t-test on rounding."""
    summary = summary_of({"plain": control, "other": treated}, test_count=100_000)
    entry = summary["vs_baseline"]["other"]["primary"]
    assert entry["verdict"] == "inconclusive" and entry["reason"] == "no spread across 2 seeds"
    assert "inconclusive (no spread across 2 seeds)" in report.to_markdown(summary, "x")
    assert entry["p"] == stats.sign_flip_p(np.subtract(treated, control)) and entry["mde"] is None


def test_six_seeds_without_spread_are_better_by_the_sign_flip_test_and_say_so():
    summary = summary_of({"plain": [0.70, 0.72, 0.68, 0.71, 0.69, 0.70],
                          "flip": [0.75, 0.77, 0.73, 0.76, 0.74, 0.75]}, test_count=1000)
    entry = summary["vs_baseline"]["flip"]["primary"]
    assert entry["verdict"] == "better" and entry["reason"] == "no spread across 6 seeds"
    assert entry["p"] == pytest.approx(2 / 2**6)
    assert "better (no spread across 6 seeds)" in report.to_markdown(summary, "x")


def test_four_seeds_cannot_show_better_whatever_the_t_test_says():
    """Four seeds, every one 10 points better: the t-test's p is tiny, but the exact sign-flip
    test cannot go below 0.125, so the verdict is inconclusive and says why."""
    summary = summary_of({"plain": [0.70, 0.72, 0.68, 0.71], "flip": [0.80, 0.83, 0.77, 0.82]})
    entry = summary["vs_baseline"]["flip"]["primary"]
    assert entry["p_holm"] < 0.001 and entry["p_sign_flip"] == pytest.approx(0.125)
    assert entry["verdict"] == "inconclusive" and entry["reason"] == "sign-flip p = 0.12 at 4 seeds"


@pytest.mark.parametrize("test_count, expected", [(300, "inconclusive"), (100_000, "equivalent"), (None, "equivalent")])
def test_equivalence_needs_a_test_split_that_resolves_the_smallest_effect(test_count, expected):
    """A tight interval inside +-1 point: equivalent where the test split measures an accuracy to
    better than 1 point (binomial standard error), not on 300 images (2.6 points)."""
    summary = summary_of({"plain": [0.70, 0.72, 0.68, 0.71, 0.69, 0.70],
                          "same": [0.701, 0.719, 0.681, 0.712, 0.689, 0.700]}, test_count=test_count)
    entry = summary["vs_baseline"]["same"]["primary"]
    assert entry["verdict"] == expected
    if expected == "inconclusive":
        assert entry["reason"] == "noise floor 2.6 > ±1.0"


@pytest.mark.parametrize("seeds, test_count, arms, expected", [
    (6, 2500, {"plain": {}, "flip": {"horizontal_flip": True}}, []),
    (4, 2500, None, ["warning: 4 seed(s) cannot show an arm better or worse: the exact sign-flip test's smallest p "
                     "over 4 seed(s) is 0.125, not below 0.05; give at least 6 seeds (train.seeds)"]),
    (6, 300, None, ["warning: on 300 test images an accuracy between 3% and 97% has a binomial standard error above "
                    "min_effect (1 points), so no arm there can be shown equivalent; 2500 test images (or a larger "
                    "analysis.min_effect) would do"]),
    (6, None, {"a": {"rotation": 5.0}, "b": {"rotation": 5.0}},
     ["warning: arms a and b are the same set (identical settings): they differ by seed noise at most, so their "
      "comparison can show no difference; change or remove one"]),
])
def test_the_start_warns_where_the_design_cannot_reach_a_verdict(seeds, test_count, arms, expected):
    assert stats.design_warnings(seeds, "test_accuracy", 1.0, test_count, arms) == expected


def test_the_two_stage_design_is_warned_where_it_may_stop_short_of_six_seeds():
    (pilot,) = stats.design_warnings(5, "test_accuracy", 1.0, None, None, most=30)
    assert pilot.startswith("warning: the two-stage design may stop at its 5 pilot seed(s)")
    assert "analysis.pilot_seeds = 6" in pilot and stats.design_warnings(6, "test_accuracy", 1.0, most=30) == []
    (capped,) = stats.design_warnings(3, "test_accuracy", 1.0, most=4)  # max_seeds 4: never enough
    assert capped.startswith("warning: 4 seed(s) cannot show an arm better or worse") and "(analysis.max_seeds)" in capped


def test_the_noise_floor_warning_matches_the_binomial_standard_error():
    """Below the accuracy the warning names, the standard error is within min_effect; just above, not."""
    (line,) = stats.design_warnings(6, "test_accuracy", 1.0, 1000)
    low = int(line.split("between ")[1].split("%")[0]) / 100  # 11%
    assert math.sqrt(low * (1 - low) / 1000) <= 0.01 < math.sqrt((low + 0.01) * (1 - low - 0.01) / 1000)
    assert stats.design_warnings(6, "test_loss", 1.0, 300) == []  # a loss has no binomial floor


def test_failed_jobs_are_listed_and_left_out():
    history = rows("plain", 0, [0.5, 0.6, 0.7]) + rows("flip", 0, [0.5, 0.6, 0.7])
    jobs = {("plain", 0): record("plain", 0, 0.7), ("flip", 0): {**record("flip", 0, 0.0), "status": "failed",
                                                                  "reason": "loss became nan"}}
    summary = stats.summarize(history, ["plain", "flip"], 3, jobs, baseline="plain")
    flip = summary["arms"]["flip"]
    assert flip["seeds"] == [] and flip["failed"][0]["reason"] == "loss became nan"
    assert "flip" not in summary["vs_baseline"]


def test_baseline_is_the_arm_named_baseline_else_the_first_without_augmentation():
    assert stats.baseline_arm({"a": {"rotation": 5.0}, "baseline": {"zoom": 0.1}}, augments) == "baseline"
    assert stats.baseline_arm({"a": {"rotation": 5.0}, "b": {}}, augments) == "b"
    assert stats.baseline_arm({"a": {"rotation": 5.0}, "m": {"mixup": 0.2}}, augments) is None
