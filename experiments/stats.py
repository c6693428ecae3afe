"""Summaries over seeds: means, standard deviations and paired confidence intervals."""

import math

import numpy as np

# What summary.json reports per arm, each from the last epoch of a run unless named best.
METRICS = ("final_val_accuracy", "best_val_accuracy", "final_val_loss", "final_accuracy",
           "generalization_gap")
# The paired differences against the baseline arm.
COMPARED = ("final_val_accuracy", "best_val_accuracy", "final_val_loss")


def t_quantile(probability, df):
    """The quantile of Student's t distribution with df degrees of freedom, probability > 0.5.

    With t = sqrt(df) tan(theta) the density integrates to a multiple of cos(theta)^(df - 1) on
    [0, pi/2], a smooth integrand on a bounded interval, so a fine trapezoid rule is accurate to
    about 1e-7 (for df = 1 the quantile is tan(pi (p - 1/2)) exactly).
    """
    theta = np.linspace(0.0, math.pi / 2, 200_001)
    density = np.cos(theta) ** (df - 1)
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    # P(0 < T < t) = (probability - 1/2), as a fraction of the half-mass 1/2.
    target = (probability - 0.5) * 2 * cumulative[-1]
    angle = float(np.interp(target, cumulative, theta))
    return math.sqrt(df) * math.tan(angle)


def describe(values):
    """Mean and sample standard deviation (None for one value) of a list of numbers."""
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def paired_difference(treated, control, confidence=0.95):
    """Mean of treated - control over paired seeds, with a paired-t confidence interval
    (None where there are fewer than two pairs)."""
    differences = np.asarray(treated, dtype=float) - np.asarray(control, dtype=float)
    n = len(differences)
    mean = float(differences.mean())
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n}
    half = t_quantile(0.5 + confidence / 2, n - 1) * float(differences.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def run_metrics(rows):
    """The per-run metrics of one arm and seed, from its history rows (in epoch order)."""
    last = rows[-1]
    return {
        "final_val_accuracy": last["val_accuracy"],
        "best_val_accuracy": max(row["val_accuracy"] for row in rows),
        "final_val_loss": last["val_loss"],
        "final_accuracy": last["accuracy"],
        "generalization_gap": last["accuracy"] - last["val_accuracy"],
        "epochs": last["epoch"],
        # The median: the first epoch also traces and compiles the step, once per run.
        "seconds_per_epoch": float(np.median([row["epoch_seconds"] for row in rows])),
    }


def baseline_arm(arms):
    """The arm others are compared with: the one named baseline, else the first with no
    augmentation, else None. arms maps names to Augmentation."""
    if "baseline" in arms:
        return "baseline"
    return next((name for name, aug in arms.items() if aug.is_identity), None)


def summarize(history, arms, epochs, runs=None):
    """summary.json's content from history rows (dicts of history.csv's columns).

    runs: (arm, seed) -> record of an ended run (status finished | stopped_early | failed, with
    the reason), as in runs.json; None takes every run with all epochs in history as finished.
    Finished and early-stopped runs count; failed ones are listed with their reason. Paired
    differences use the seeds counted in both arms.
    """
    by_run = {}
    for row in history:
        by_run.setdefault((row["arm"], row["seed"]), []).append(row)
    if runs is None:
        runs = {key: {"status": "finished"} for key, rows in by_run.items() if len(rows) >= epochs}
    counted = {key: run_metrics(sorted(by_run[key], key=lambda r: r["epoch"]))
               for key, record in runs.items() if record["status"] != "failed" and key in by_run}
    summary = {"epochs": epochs, "baseline": baseline_arm(arms), "arms": {}, "vs_baseline": {}}
    for arm in arms:
        seeds = sorted(seed for (name, seed) in counted if name == arm)
        per_arm = {"seeds": seeds}
        if seeds:
            for metric in METRICS + ("seconds_per_epoch",):
                per_arm[metric] = describe([counted[arm, seed][metric] for seed in seeds])
        per_arm["stopped_early"] = sorted(seed for (name, seed), record in runs.items()
                                          if name == arm and record["status"] == "stopped_early")
        per_arm["failed"] = [{"seed": seed, "reason": record["reason"]}
                             for (name, seed), record in sorted(runs.items())
                             if name == arm and record["status"] == "failed"]
        summary["arms"][arm] = per_arm
    base = summary["baseline"]
    for arm in arms:
        if base is None or arm == base:
            continue
        shared = sorted(seed for (name, seed) in counted if name == arm and (base, seed) in counted)
        if shared:
            summary["vs_baseline"][arm] = {"seeds": shared, **{
                metric: paired_difference([counted[arm, s][metric] for s in shared],
                                          [counted[base, s][metric] for s in shared])
                for metric in COMPARED}}
    return summary


def _fmt(stat, scale=1.0, digits=3):
    if stat is None:
        return "n/a"
    text = f"{stat['mean'] * scale:.{digits}f}"
    return text + (f" ± {stat['std'] * scale:.{digits}f}" if stat.get("std") is not None else "")


def _fmt_diff(diff, scale=100.0):
    text = f"{diff['mean'] * scale:+.1f}"
    if diff["ci95"] is None:
        return text + " (one seed: no interval)"
    low, high = (v * scale for v in diff["ci95"])
    return f"{text} [{low:+.1f}, {high:+.1f}]"


def to_markdown(summary, name):
    """summary.md: one table of the arms, one of the paired differences."""
    lines = [f"# {name}: summary", "",
             f"Mean ± std over seeds; accuracies in %, at the last of {summary['epochs']} epochs (or the "
             "epoch a run stopped early) unless 'best'. Gap = train accuracy - val accuracy at the end.", "",
             "| arm | seeds | final val acc | best val acc | final val loss | final train acc | gap | s/epoch (median) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for arm, stats in summary["arms"].items():
        if not stats["seeds"]:
            lines.append(f"| {arm} | 0 | not finished | | | | | |")
            continue
        lines.append(
            f"| {arm} | {len(stats['seeds'])} | {_fmt(stats['final_val_accuracy'], 100, 1)} | "
            f"{_fmt(stats['best_val_accuracy'], 100, 1)} | {_fmt(stats['final_val_loss'])} | "
            f"{_fmt(stats['final_accuracy'], 100, 1)} | {_fmt(stats['generalization_gap'], 100, 1)} | "
            f"{_fmt(stats['seconds_per_epoch'], 1, 2)} |")
    if summary["vs_baseline"]:
        lines += ["", f"Paired differences against `{summary['baseline']}` (arm - baseline, same seeds), "
                  "mean [95% confidence interval, paired t over seeds]; accuracy in percentage points:", "",
                  "| arm | seeds | final val acc | best val acc | final val loss |", "| --- | --- | --- | --- | --- |"]
        for arm, diff in summary["vs_baseline"].items():
            loss = diff["final_val_loss"]
            loss_text = f"{loss['mean']:+.3f}" + (
                f" [{loss['ci95'][0]:+.3f}, {loss['ci95'][1]:+.3f}]" if loss["ci95"] else "")
            lines.append(f"| {arm} | {len(diff['seeds'])} | {_fmt_diff(diff['final_val_accuracy'])} | "
                         f"{_fmt_diff(diff['best_val_accuracy'])} | {loss_text} |")
        lines += ["", "An interval that excludes 0 is a difference larger than the seed-to-seed noise."]
    notes = [f"- {arm} seed {failure['seed']} failed: {failure['reason']}"
             for arm, stats in summary["arms"].items() for failure in stats["failed"]]
    notes += [f"- {arm} seed {seed} stopped early (train.early_stopping)"
              for arm, stats in summary["arms"].items() for seed in stats["stopped_early"]]
    if notes:
        lines += ["", "Runs that did not train every epoch (failed runs are left out of the tables):", ""] + notes
    return "\n".join(lines) + "\n"
