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


def curves_figure(history, arms, metric, path, per_seed=False):
    """One panel of all arms overlaid, then one panel per arm: train dashed, val solid, the mean
    over seeds as a line and a band of +-1 std; per_seed adds each seed's curve as a thin line
    in the per-arm panels."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = len(arms) + 1
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), sharey=True, squeeze=False)
    axes = axes[0]
    for index, (arm, augmentation) in enumerate(arms.items()):
        colour = colours[index % len(colours)]
        _draw_arm(axes[0], history, arm, metric, colour, False)
        _draw_arm(axes[index + 1], history, arm, metric, colour, per_seed)
        title = "No augmentation" if augmentation.is_identity else "With augmentation"
        axes[index + 1].set_title(f"{arm}: {title}", fontsize=10)
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
    """ablation.png: each arm's paired difference from the baseline in final and best val
    accuracy, in percentage points, as the mean over seeds with its 95% confidence interval."""
    compared = summary["vs_baseline"]
    arms = list(compared)
    figure, axis = plt.subplots(figsize=(max(4.5, 1.3 * len(arms) + 2), 3.8))
    axis.axhline(0, color="black", linewidth=0.8)
    for offset, (metric, label) in zip((-0.12, 0.12), (("final_val_accuracy", "final val accuracy"),
                                                       ("best_val_accuracy", "best val accuracy"))):
        x = np.arange(len(arms)) + offset
        means = np.array([compared[arm][metric]["mean"] * 100 for arm in arms])
        intervals = [compared[arm][metric]["ci95"] for arm in arms]
        # One seed gives no interval: the point is drawn without a bar.
        errors = np.array([[m - ci[0] * 100, ci[1] * 100 - m] if ci else [0.0, 0.0]
                           for m, ci in zip(means, intervals)]).reshape(len(arms), 2).T
        axis.errorbar(x, means, yerr=errors, fmt="o", capsize=4, label=label)
    axis.set_xticks(np.arange(len(arms)), [f"{arm}\n(n={len(compared[arm]['seeds'])})" for arm in arms],
                    fontsize=8)
    axis.set_xlim(-0.6, max(len(arms), 1) - 0.4)
    axis.set_ylabel("arm - baseline (percentage points)")
    axis.grid(axis="y", alpha=0.3)
    if arms:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "no arm to compare with the baseline", ha="center", transform=axis.transAxes)
    axis.set_title(f"Difference from {summary['baseline']}\nmean over paired seeds, bars = 95% CI (paired t)",
                   fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def augmentation_grid(samples, variants_by_arm, path):
    """Rows: sample images. Columns: the original, then each augmented arm's variants.

    samples: uint8 [R, H, W, C]; variants_by_arm: arm -> float [V, R, H, W, C] in [0, 255].
    """
    columns = 1 + sum(len(v) for v in variants_by_arm.values())
    rows = len(samples)
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.3 * rows + 0.4), squeeze=False)
    for r in range(rows):
        images = [samples[r]] + [v[r] for variants in variants_by_arm.values() for v in variants]
        for c, image in enumerate(images):
            axes[r, c].imshow(np.clip(image, 0, 255).astype(np.uint8))
            axes[r, c].axis("off")
    axes[0, 0].set_title("original", fontsize=8)
    column = 1
    for arm, variants in variants_by_arm.items():
        axes[0, column].set_title(arm, fontsize=8, loc="left")
        column += len(variants)
    figure.tight_layout(pad=0.3)
    figure.savefig(path, dpi=110)
    plt.close(figure)
