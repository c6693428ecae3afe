"""Figures, drawn from history rows and saved sample images alone, so they can be redrawn
without training."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_LABELS = {"accuracy": "accuracy", "loss": "loss (cross-entropy)"}


def _curves(history, arm, metric):
    """epochs [E], and mean and std over seeds [E] of one arm's train and val metric."""
    seeds = sorted({row["seed"] for row in history if row["arm"] == arm})
    if not seeds:
        return np.array([]), {}
    by_seed = {seed: {row["epoch"]: row for row in history if row["arm"] == arm and row["seed"] == seed}
               for seed in seeds}
    # Plot only the epochs every seed reached: a mean over fewer seeds would jump.
    epochs = sorted(set.intersection(*(set(rows) for rows in by_seed.values())))
    out = {}
    for key in (metric, f"val_{metric}"):
        values = np.array([[by_seed[s][e][key] for e in epochs] for s in seeds]).reshape(len(seeds), len(epochs))
        out[key] = (values.mean(axis=0), values.std(axis=0), values)
    return np.array(epochs), out


def _draw_arm(axis, history, arm, metric, colour, per_seed):
    epochs, curves = _curves(history, arm, metric)
    if not len(epochs):
        return
    for key, style, split in ((metric, "--", "train"), (f"val_{metric}", "-", "val")):
        mean, std, values = curves[key]
        axis.plot(epochs, mean, style, color=colour, label=f"{arm} {split} (mean)")
        axis.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
        if per_seed:
            for row in values:
                axis.plot(epochs, row, style, color=colour, alpha=0.35, linewidth=0.7)


def curves_figure(history, arm_titles, metric, path, per_seed=False):
    """One panel of all arms overlaid, then one panel per arm: train dashed, val solid, the mean
    over seeds as a line and a band of +-1 std; per_seed adds each seed's curve as a thin line
    in the per-arm panels."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = len(arm_titles) + 1
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), sharey=True, squeeze=False)
    axes = axes[0]
    for index, (arm, arm_title) in enumerate(arm_titles.items()):
        colour = colours[index % len(colours)]
        _draw_arm(axes[0], history, arm, metric, colour, False)
        _draw_arm(axes[index + 1], history, arm, metric, colour, per_seed)
        axes[index + 1].set_title(f"{arm}: {arm_title}", fontsize=10)
    axes[0].set_title("All arms", fontsize=10)
    seeds = len({row["seed"] for row in history})
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    axes[0].set_ylabel(_LABELS[metric])
    figure.suptitle(f"{_LABELS[metric]}: mean over {seeds} seed(s), band = ±1 std; "
                    "train dashed, val solid" + ("; thin lines = single seeds" if per_seed else ""), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def differences_figure(summary, path):
    """ablation.png: each arm's paired difference from the baseline. Left, the primary metric
    (declared before the run) with its 95% interval, the smallest effect of interest as a band and
    the verdict; right, secondary metrics in percentage points."""
    from augcompare.experiments.stats import LABELS, is_fraction
    primary = summary["primary"]
    metric = primary["metric"]
    compared = {arm: entry for arm, entry in summary["vs_baseline"].items() if "primary" in entry}
    arms = list(compared)
    scale = 100.0 if is_fraction(metric) else 1.0
    width = max(7.0, 1.6 * len(arms) + 4.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(width, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    for axis in (left, right):
        axis.axhline(0, color="black", linewidth=0.8)
        axis.grid(axis="y", alpha=0.3)
        axis.set_xlim(-0.6, max(len(arms), 1) - 0.4)
        axis.set_xticks(np.arange(len(arms)), [f"{arm}\n(n={len(compared[arm]['seeds'])})" for arm in arms],
                        fontsize=8)
    threshold = primary["min_effect"] * scale
    left.axhspan(-threshold, threshold, color="grey", alpha=0.15, linewidth=0,
                 label=f"smallest effect of interest (±{threshold:g})")
    colours = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "tab:grey"}
    for index, arm in enumerate(arms):
        entry = compared[arm]["primary"]
        mean = entry["mean"] * scale
        interval = entry["ci95"]
        error = [[mean - interval[0] * scale], [interval[1] * scale - mean]] if interval else [[0.0], [0.0]]
        left.errorbar([index], [mean], yerr=error, fmt="o", markersize=8, capsize=6, color=colours[entry["verdict"]])
        left.annotate(entry["verdict"], (index, mean), xytext=(8, 0), textcoords="offset points", va="center",
                      fontsize=8, color=colours[entry["verdict"]])
    unit = " (percentage points)" if is_fraction(metric) else ""
    left.set_ylabel(f"arm - {summary['baseline']}{unit}")
    left.set_title(f"Primary: {LABELS[metric]}\nmean over paired seeds, bars = 95% CI (paired t)", fontsize=9)
    left.legend(fontsize=7, loc="best")
    secondary = [m for m in ("selected_test_accuracy", "test_accuracy", "final_val_accuracy") if m != metric]
    for offset, key in zip((-0.15, 0.0, 0.15), secondary):
        x, means, errors = [], [], []
        for index, arm in enumerate(arms):
            difference = compared[arm].get(key)
            if difference is None:
                continue
            x.append(index + offset)
            means.append(difference["mean"] * 100)
            interval = difference["ci95"]
            errors.append([difference["mean"] * 100 - interval[0] * 100, interval[1] * 100 - difference["mean"] * 100]
                          if interval else [0.0, 0.0])
        if x:
            right.errorbar(x, means, yerr=np.array(errors).T, fmt="o", markersize=4, capsize=3, label=LABELS[key])
    right.set_ylabel(f"arm - {summary['baseline']} (percentage points)")
    right.set_title("Secondary metrics\n95% CI, not corrected across arms", fontsize=9)
    if arms:
        right.legend(fontsize=7, loc="best")
    else:
        left.text(0.5, 0.5, "no arm to compare with the baseline", ha="center", transform=left.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def augmentation_grid(samples, sample_titles, variants_by_arm, path, value_range=(0, 255)):
    """Rows: sample images. Columns: the original, then each augmented arm's variants.

    samples: [R, H, W, C]; variants_by_arm: arm -> [(images [R, H, W, C], captions or None)].
    """
    low, high = value_range
    columns = 1 + sum(len(v) for v in variants_by_arm.values())
    rows = len(samples)
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.3 * rows + 0.4), squeeze=False)

    def show(axis, image):
        image = (np.clip(np.asarray(image, np.float32), low, high) - low) / (high - low)
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axis.axis("off")
    for r in range(rows):
        images = [samples[r]] + [v[0][r] for variants in variants_by_arm.values() for v in variants]
        for c, image in enumerate(images):
            show(axes[r, c], image)
    axes[0, 0].set_title("original", fontsize=8)
    column = 1
    for arm, variants in variants_by_arm.items():
        axes[0, column].set_title(arm, fontsize=8, loc="left")
        column += len(variants)
    figure.tight_layout(pad=0.3)
    figure.savefig(path, dpi=110)
    plt.close(figure)
