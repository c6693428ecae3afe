import math

import pytest

from augcompare.augment import Augmentation
from augcompare.experiments import stats


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantiles_match_the_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_paired_difference_interval():
    # differences 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2) / sqrt(3)
    diff = stats.paired_difference([11, 12, 13], [10, 10, 10])
    half = 4.302653 / math.sqrt(3)
    assert diff["mean"] == pytest.approx(2)
    assert diff["ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-3)
    assert stats.paired_difference([1.0], [0.5])["ci95"] is None


def rows(arm, seed, val_accuracies, accuracy=0.9):
    return [{"arm": arm, "seed": seed, "epoch": e + 1, "loss": 0.1, "accuracy": accuracy, "val_loss": 1 - v,
             "val_accuracy": v, "epoch_seconds": 1.0} for e, v in enumerate(val_accuracies)]


def test_summary_reports_arms_gaps_and_paired_differences():
    arms = {"plain": Augmentation(), "flip": Augmentation(horizontal_flip=True)}
    history = (rows("plain", 0, [0.5, 0.7, 0.6]) + rows("flip", 0, [0.5, 0.6, 0.8])
               + rows("plain", 1, [0.5, 0.6, 0.7]) + rows("flip", 1, [0.6, 0.7, 0.8])
               + rows("flip", 2, [0.6]))  # unfinished: left out
    summary = stats.summarize(history, arms, epochs=3)
    assert summary["baseline"] == "plain"
    flip = summary["arms"]["flip"]
    assert flip["seeds"] == [0, 1]
    assert flip["final_val_accuracy"]["mean"] == pytest.approx(0.8)
    assert summary["arms"]["plain"]["best_val_accuracy"]["values"] == [0.7, 0.7]
    assert flip["generalization_gap"]["mean"] == pytest.approx(0.1)
    diff = summary["vs_baseline"]["flip"]["final_val_accuracy"]
    assert diff["mean"] == pytest.approx(0.15) and diff["n"] == 2
    assert diff["ci95"][0] < 0.15 < diff["ci95"][1]
    text = stats.to_markdown(summary, "x")
    assert "| flip | 2 | 80.0 ± 0.0" in text and "+15.0 [" in text


def test_baseline_is_the_arm_named_baseline_else_the_first_without_augmentation():
    assert stats.baseline_arm({"a": Augmentation(rotation=5), "baseline": Augmentation(zoom=0.1)}) == "baseline"
    assert stats.baseline_arm({"a": Augmentation(rotation=5), "b": Augmentation()}) == "b"
    assert stats.baseline_arm({"a": Augmentation(rotation=5)}) is None
