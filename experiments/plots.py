"""Figures, drawn from history rows and saved sample images alone, so they can be redrawn
without training.

The curves and the sample grid are built on a plain matplotlib Figure (no pyplot registry, so
nothing outlives a call); draw_curves and draw_augmentation_grid return that Figure so that
tests and notebooks can inspect it, curves_figure and augmentation_grid save it.
"""

import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_LABELS = {"accuracy": "accuracy", "loss": "loss (cross-entropy)"}
DPI = 110
PANELS_PER_ROW = 3
# Inches per curves panel: three columns stay near 1400 px wide at DPI.
_PANEL_WIDTH, _PANEL_HEIGHT = 4.0, 3.0


def _text_width(text, fontsize):
    """Rough width in inches of one line of text: about 0.55 em per character."""
    return 0.55 * fontsize / 72 * len(text)


def _wrap(text, width_in, fontsize):
    """text broken into lines that fit width_in inches, at " / " first ("room 0.7 / tower 0.3"
    reads as two weights, not as "room 0.7 / tower" and "0.3")."""
    characters = max(4, int(width_in / _text_width("x", fontsize)))
    text = str(text)
    parts = text.split(" / ") if len(text) > characters else [text]
    parts = [part + " /" for part in parts[:-1]] + parts[-1:]
    lines = [line for part in parts for line in textwrap.wrap(part, characters, break_on_hyphens=False)]
    return "\n".join(lines) or text


# ---- Curves ------------------------------------------------------------------------------------

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


def _draw_arm(axis, epochs, curves, metric, colour, per_seed):
    # With a handful of epochs a line alone hides where the measurements are (one epoch draws
    # nothing at all), so those get markers.
    marker = "o" if len(epochs) <= 5 else None
    for key, style in ((metric, "--"), (f"val_{metric}", "-")):
        mean, std, values = curves[key]
        axis.plot(epochs, mean, style, color=colour, marker=marker, markersize=3)
        if len(epochs) == 1:  # a band over one epoch has no width: draw it as an error bar
            axis.errorbar(epochs, mean, yerr=std, color=colour, alpha=0.5, capsize=3, linestyle="none")
        axis.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
        if per_seed:
            for row in values:
                axis.plot(epochs, row, style, color=colour, alpha=0.35, linewidth=0.7)


def curves_layout(arm_count):
    """(rows, columns) of the curves panels: the all-arms panel, then one per arm, at most
    PANELS_PER_ROW to a row."""
    panels = arm_count + 1
    columns = min(panels, PANELS_PER_ROW)
    return math.ceil(panels / columns), columns


def _legend_handles(arm_colours, per_seed):
    handles = [Line2D([], [], color=colour, linewidth=2, label=arm) for arm, colour in arm_colours.items()]
    handles += [Line2D([], [], color="black", linestyle="--", label="train"),
                Line2D([], [], color="black", linestyle="-", label="val"),
                Patch(color="black", alpha=0.15, linewidth=0, label="±1 std over seeds")]
    if per_seed:
        handles.append(Line2D([], [], color="black", alpha=0.35, linewidth=0.7, label="single seed"))
    return handles


def draw_curves(history, arm_titles, metric, per_seed=False):
    """The Figure of curves_figure (see there), unsaved."""
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    arm_colours = {arm: colours[index % len(colours)] for index, arm in enumerate(arm_titles)}
    rows, columns = curves_layout(len(arm_titles))
    panels = len(arm_titles) + 1
    handles = _legend_handles(arm_colours, per_seed)
    # As many legend entries to a line as fit the figure's width.
    width = _PANEL_WIDTH * columns + 0.4
    entry_width = 0.6 + max(_text_width(handle.get_label(), 8) for handle in handles)
    legend_columns = max(1, min(len(handles), int(width / entry_width)))
    legend_lines = math.ceil(len(handles) / legend_columns)
    figure = Figure(figsize=(width, _PANEL_HEIGHT * rows + 0.5 + 0.22 * legend_lines), layout="constrained")
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    for axis in axes[panels:]:
        figure.delaxes(axis)
    axes = axes[:panels]

    curves = {arm: _curves(history, arm, metric) for arm in arm_titles}
    epochs_drawn = [int(epoch) for epochs, _ in curves.values() for epoch in epochs]
    for index, (arm, title) in enumerate(arm_titles.items()):
        epochs, arm_curves = curves[arm]
        panel = axes[index + 1]
        name = arm if title == arm else f"{arm}: {title}"
        panel.set_title(_wrap(name, _PANEL_WIDTH - 0.3, 10), fontsize=10)
        if not len(epochs):
            panel.text(0.5, 0.5, "no epoch recorded", ha="center", va="center", transform=panel.transAxes)
            continue
        _draw_arm(axes[0], epochs, arm_curves, metric, arm_colours[arm], False)
        _draw_arm(panel, epochs, arm_curves, metric, arm_colours[arm], per_seed)
    axes[0].set_title("all arms", fontsize=10)

    first, last = (min(epochs_drawn), max(epochs_drawn)) if epochs_drawn else (1, 1)
    padding = max(0.3, 0.02 * (last - first))
    for index, axis in enumerate(axes):
        axis.set_xlim(first - padding, last + padding)
        # Epochs are whole numbers: without this, three epochs are ticked 1.00, 1.25, ...;
        # min_n_ticks=1 keeps the ticks whole where the view holds a single epoch.
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axis.grid(alpha=0.3)
        if index + columns >= panels:  # no panel below this one
            axis.set_xlabel("epoch")
        if index % columns == 0:
            axis.set_ylabel(_LABELS[metric])
    seeds = len({row["seed"] for row in history})
    figure.suptitle(f"{_LABELS[metric]} per epoch, mean over {seeds} seed(s)", fontsize=11)
    figure.legend(handles=handles, loc="outside lower center", ncols=legend_columns, fontsize=8,
                  frameon=False)
    return figure


def curves_figure(history, arm_titles, metric, path, per_seed=False):
    """Saves accuracy.png or loss.png: a panel of all arms overlaid, then one panel per arm, at
    most three panels to a row, all on one y scale; train dashed, val solid, the mean over seeds
    as a line and a band of +-1 std; per_seed adds each seed's curve as a thin line in the
    per-arm panels. One legend, below the panels.

    history: rows with arm, seed, epoch (1, 2, ...), loss, accuracy, val_loss, val_accuracy.
    arm_titles: arm -> the short title on its panel, in display order. metric: "accuracy" or
    "loss". Returns the panel grid's (rows, columns).
    """
    figure = draw_curves(history, arm_titles, metric, per_seed)
    figure.savefig(path, dpi=DPI)
    return curves_layout(len(arm_titles))


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


_VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "inconclusive": "tab:grey"}


def draw_pairs(summary):
    """The Figure of pairs_figure (see there), unsaved."""
    from augcompare.experiments.stats import LABELS, is_fraction
    metric = summary["primary"]["metric"]
    scale, unit = (100.0, " (points)") if is_fraction(metric) else (1.0, "")
    order = (summary.get("ranking") or {}).get("order") or [arm for arm in summary["arms"]
                                                              if summary["arms"][arm].get(metric)]
    entries = {}
    for pair in summary["pairs"]:
        entry = pair["primary"]
        entries[pair["arm"], pair["other"]] = (entry["mean"], entry["ci95"], entry["verdict"])
        flipped = None if entry["ci95"] is None else [-entry["ci95"][1], -entry["ci95"][0]]
        opposite = {"better": "worse", "worse": "better"}.get(entry["verdict"], entry["verdict"])
        entries[pair["other"], pair["arm"]] = (-entry["mean"], flipped, opposite)
    count = len(order)
    cell = 1.0 if count <= 7 else 0.85
    label_width = 0.3 + max([_text_width(arm, 9) for arm in order] + [1.0])
    figure = Figure(figsize=(label_width + cell * max(count, 1) + 1.6, label_width * 0.6 + cell * max(count, 1) + 1.3),
                    layout="constrained")
    axis = figure.subplots()
    values = np.full((count, count), np.nan)
    for i, row in enumerate(order):
        for j, column in enumerate(order):
            if (row, column) in entries:
                values[i, j] = entries[row, column][0] * scale
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    image = axis.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
    fontsize = 7 if count <= 7 else 6
    for i, row in enumerate(order):
        for j, column in enumerate(order):
            if i == j:
                axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#dddddd", edgecolor="none"))
                continue
            if (row, column) not in entries:
                axis.text(j, i, "n/a", ha="center", va="center", fontsize=fontsize)
                continue
            mean, interval, verdict_ = entries[row, column]
            mean *= scale
            text = f"{mean:+.1f}" if scale != 1 else f"{mean:+.3f}"
            if interval is not None:
                low, high = interval[0] * scale, interval[1] * scale
                text += f"\n[{low:+.1f}, {high:+.1f}]" if scale != 1 else f"\n[{low:+.3f}, {high:+.3f}]"
            text += f"\n{verdict_}"
            strong = abs(mean) > 0.6 * limit
            axis.text(j, i, text, ha="center", va="center", fontsize=fontsize, linespacing=1.1,
                      color="white" if strong else "black",
                      fontweight="bold" if verdict_ in ("better", "worse") else "normal")
            if verdict_ in ("better", "worse"):
                axis.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False,
                                         edgecolor=_VERDICT_COLOURS[verdict_], linewidth=1.5))
    axis.set_xticks(np.arange(count), order, rotation=40, ha="right", fontsize=9)
    axis.set_yticks(np.arange(count), order, fontsize=9)
    axis.set_xlabel("column arm")
    axis.set_ylabel("row arm")
    correction = summary["primary"].get("correction", "")
    every = f"Holm across all {len(summary['pairs'])} pairs"
    figure.suptitle(f"{LABELS[metric]}: row - column{unit}, mean over paired seeds\n95% CI (paired t); verdict "
                    f"{'as in the summary, ' + correction if summary.get('comparisons') == 'all' else 'with ' + every}"
                    + (f", at p < {summary['primary']['alpha']:g}" if "alpha" in summary["primary"] else "")
                    + "; best first", fontsize=9)
    figure.colorbar(image, ax=axis, shrink=0.7, label=f"row - column{unit}")
    return figure


def pairs_figure(summary, path):
    """Saves pairs.png: a matrix of every pair's primary difference (row arm - column arm, arms
    best first), each cell with its 95% interval and verdict, coloured by the difference; framed
    where the Holm-adjusted test across every pair finds a difference."""
    draw_pairs(summary).savefig(path, dpi=DPI)


_SETTING_UNITS = {"rotation": "degrees", "strength": "x the preset's magnitudes", "mixup": "alpha",
                  "cutmix": "alpha", "translate": "pixels"}


def draw_strength(summary):
    """The Figure of strength_figure (see there), unsaved."""
    from augcompare.experiments.stats import LABELS, is_fraction
    primary = summary["primary"]
    metric = primary["metric"]
    scale, unit = (100.0, " (points)") if is_fraction(metric) else (1.0, "")
    sweeps = summary["sweeps"]
    columns = min(len(sweeps), PANELS_PER_ROW)
    rows = math.ceil(len(sweeps) / columns)
    figure = Figure(figsize=(_PANEL_WIDTH * columns + 0.6, _PANEL_HEIGHT * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for axis in axes[len(sweeps):]:
        figure.delaxes(axis)
    against = summary["baseline"]
    for axis, (name, sweep) in zip(axes, sweeps.items()):
        points_ = sorted(sweep["points"], key=lambda point: point["value"])
        x = [point["value"] for point in points_]
        y = [point["mean"] * scale for point in points_]
        errors = np.array([[point["mean"] * scale - point["ci95"][0] * scale, point["ci95"][1] * scale
                            - point["mean"] * scale] if point["ci95"] else [0.0, 0.0] for point in points_]).reshape(-1, 2)
        if against:
            axis.axhline(0, color="black", linewidth=0.8)
            threshold = primary["min_effect"] * scale
            axis.axhspan(-threshold, threshold, color="grey", alpha=0.15, linewidth=0)
        axis.plot(x, y, "-", color="tab:blue", alpha=0.6)
        for point, x_, y_, error in zip(points_, x, y, errors):
            colour = _VERDICT_COLOURS.get(point["verdict"], "tab:blue")
            axis.errorbar([x_], [y_], yerr=error.reshape(2, 1), fmt="o", capsize=4, color=colour, zorder=6)
        if sweep["best"] is not None:
            best = next(point for point in points_ if point["value"] == sweep["best"])
            axis.plot([best["value"]], [best["mean"] * scale], "*", markersize=18, color="gold",
                      markeredgecolor="black", zorder=5)  # under the point and its bars, which stay readable
        for point in points_:
            if point["value"] in sweep["not_worse"]:
                axis.plot([point["value"]], [point["mean"] * scale], "o", markersize=11, fillstyle="none",
                          color="goldenrod", zorder=4)
        axis.set_xticks(x, [f"{value:g}" for value in x])
        axis.set_title(f"{name}: {sweep['setting']}", fontsize=10)
        axis.set_xlabel(f"{sweep['setting']} ({_SETTING_UNITS.get(sweep['setting'], 'value')})")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"arm - {against}{unit}" if against else f"{LABELS[metric]}{unit}")
    handles = [Line2D([], [], marker="o", linestyle="none", color=colour, label=verdict_)
               for verdict_, colour in _VERDICT_COLOURS.items()]
    handles += [Line2D([], [], marker="*", linestyle="none", markersize=12, color="gold", markeredgecolor="black",
                       label="best value"),
                Line2D([], [], marker="o", linestyle="none", markersize=10, fillstyle="none", color="goldenrod",
                       label="could equally be picked")]
    if against:
        handles.append(Patch(color="grey", alpha=0.15, linewidth=0, label="smallest effect of interest"))
    figure.suptitle(f"{LABELS[metric]} against each swept value: "
                    + (f"difference from {against}" if against else "mean") + ", bars = 95% CI", fontsize=10)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    return figure


def strength_figure(summary, path):
    """Saves strength.png: a panel per sweep, the primary metric's difference from the baseline
    (the arm's own mean where there is none) against the swept value with 95% intervals coloured
    by verdict; the best value starred (only where it is separable), the other values that could
    equally be picked ringed."""
    draw_strength(summary).savefig(path, dpi=DPI)


_CELL = 1.1
# Smaller images no longer read: past this the figure grows beyond the limits instead.
_MIN_CELL = 0.35
_CELL_GAP = 0.04
_BLOCK_GAP = 0.14
_BAND_GAP = 0.3
_MARGIN = 0.1
_GRID_MAX_WIDTH, _GRID_MAX_HEIGHT = 16.0, 22.0
# At most this many augmented columns side by side; more arms wrap into another band of blocks.
_BAND_COLUMNS = 16
_ARM_FONT, _SAMPLE_FONT, _CAPTION_FONT = 9, 8, 6.5


def _line_height(fontsize):
    """Inches per line of text."""
    return 1.3 * fontsize / 72


def _displayable(image, value_range):
    """imshow arguments for one image [H, W, C]: C = 3 as RGB clipped to value_range; any other C
    (1, 2, 4, ...) shows its first channel in grayscale over value_range."""
    low, high = value_range
    if image.shape[-1] != 3:
        return image[..., 0].astype(np.float32), {"cmap": "gray", "vmin": low, "vmax": high}
    return (np.clip(image.astype(np.float32), low, high) - low) / (high - low), {}


def _check_grid(samples, sample_titles, variants_by_arm, value_range):
    if samples.ndim != 4:
        raise ValueError(f"samples must be [R, H, W, C], not shape {samples.shape}")
    if len(sample_titles) != len(samples):
        raise ValueError(f"{len(sample_titles)} sample titles for {len(samples)} samples")
    if not value_range[0] < value_range[1]:
        raise ValueError(f"value_range {value_range} is empty")
    for arm, variants in variants_by_arm.items():
        if not variants:
            raise ValueError(f"arm {arm!r} has no variants to draw")
        for images, captions in variants:
            if np.shape(images) != samples.shape:
                raise ValueError(f"arm {arm!r}: variant of shape {np.shape(images)}, samples are {samples.shape}")
            if captions is not None and len(captions) != len(samples):
                raise ValueError(f"arm {arm!r}: {len(captions)} captions for {len(samples)} samples")


def _bands(variants_by_arm):
    """The arms in bands (rows of blocks) of about _BAND_COLUMNS augmented columns, as even as
    whole arms allow."""
    arms = list(variants_by_arm)
    if not arms:
        return [[]]
    columns = sum(len(variants) for variants in variants_by_arm.values())
    per_band = math.ceil(len(arms) / math.ceil(columns / _BAND_COLUMNS))
    return [arms[start:start + per_band] for start in range(0, len(arms), per_band)]


def _grid_text(blocks_by_band, cell):
    """For cells cell inches wide: each block's name wrapped to its width, the height of the
    names' header, and each band's caption height under the images, in inches."""
    block_names = {name: _wrap(name, len(variants) * (cell + _CELL_GAP), _ARM_FONT)
                   for blocks in blocks_by_band for name, variants in blocks}
    header = 0.1 + _line_height(_ARM_FONT) * max(name.count("\n") + 1 for name in block_names.values())
    caption_heights = []
    for blocks in blocks_by_band:
        lines = max((_wrap(caption, cell, _CAPTION_FONT).count("\n") + 1
                     for _, variants in blocks for _, captions in variants for caption in captions or []),
                    default=0)
        caption_heights.append(lines * _line_height(_CAPTION_FONT))
    return block_names, header, caption_heights


def draw_augmentation_grid(samples, sample_titles, variants_by_arm, value_range=(0, 255)):
    """The Figure of augmentation_grid (see there), unsaved."""
    samples = np.asarray(samples)
    _check_grid(samples, sample_titles, variants_by_arm, value_range)
    rows, height, width = samples.shape[:3]
    bands = _bands(variants_by_arm)
    # Blocks per band: ("original", [(samples, None)]) first, then the band's arms.
    blocks_by_band = [[("original", [(samples, None)])] + [(arm, variants_by_arm[arm]) for arm in band]
                      for band in bands]
    widest_columns = max(sum(len(variants) for _, variants in blocks) for blocks in blocks_by_band)
    widest_blocks = max(len(blocks) for blocks in blocks_by_band)

    wrapped_titles = [_wrap(title, 1.2, _SAMPLE_FONT) for title in sample_titles]
    label_width = 0.15 + max(_text_width(line, _SAMPLE_FONT)
                             for title in wrapped_titles for line in title.split("\n"))
    fixed_width = 2 * _MARGIN + label_width + widest_columns * _CELL_GAP + widest_blocks * _BLOCK_GAP
    aspect = height / width
    # The widest band sets the cell width; then the cells shrink to the height limit. Narrower
    # cells can wrap the text into more lines, which takes more height, so this repeats until
    # the cells fit (line counts only grow, and are bounded, so it ends).
    cell = max(_MIN_CELL, min(_CELL, (_GRID_MAX_WIDTH - fixed_width) / widest_columns))
    while True:
        block_names, header, caption_heights = _grid_text(blocks_by_band, cell)
        fixed_height = (2 * _MARGIN + (len(bands) - 1) * _BAND_GAP
                        + sum(header + rows * (caption + _CELL_GAP) for caption in caption_heights))
        fitted = max(_MIN_CELL, min(cell, (_GRID_MAX_HEIGHT - fixed_height) / (len(bands) * rows * aspect)))
        if fitted >= cell:
            break
        cell = fitted
    cell_height = cell * aspect

    figure_width = fixed_width + widest_columns * cell
    figure_height = fixed_height + len(bands) * rows * cell_height
    figure = Figure(figsize=(figure_width, figure_height))
    # One canvas in inches from the top left: each image is an artist placed by its extent (an
    # Axes per image took three times as long with 8 arms x 4 variants x 8 samples).
    canvas = figure.add_axes((0, 0, 1, 1))
    canvas.set_axis_off()
    top = _MARGIN
    for blocks, caption_height in zip(blocks_by_band, caption_heights):
        row_height = cell_height + caption_height + _CELL_GAP
        for r, title in enumerate(wrapped_titles):
            canvas.text(_MARGIN + label_width - 0.1, top + header + r * row_height + cell_height / 2, title,
                        ha="right", va="center", fontsize=_SAMPLE_FONT)
        left = _MARGIN + label_width
        for name, variants in blocks:
            block_width = len(variants) * (cell + _CELL_GAP)
            # A tinted background behind the whole block groups its columns under its name.
            canvas.add_patch(Rectangle((left - _CELL_GAP, top), block_width + _CELL_GAP, header + rows * row_height,
                                       facecolor="#e9e9ef", edgecolor="none", zorder=0))
            canvas.text(left + block_width / 2 - _CELL_GAP / 2, top + header / 2, block_names[name],
                        ha="center", va="center", fontsize=_ARM_FONT, fontweight="bold")
            for images, captions in variants:
                for r in range(rows):
                    image_top = top + header + r * row_height
                    pixels, options = _displayable(np.asarray(images[r]), value_range)
                    # Labelled with its block's name, so a reader of the Figure can tell blocks apart.
                    canvas.imshow(pixels, extent=(left, left + cell, image_top + cell_height, image_top),
                                  interpolation="nearest", aspect="auto", label=name, zorder=1, **options)
                    if captions is not None:
                        canvas.text(left + cell / 2, image_top + cell_height + 0.02,
                                    _wrap(captions[r], cell, _CAPTION_FONT), ha="center", va="top",
                                    fontsize=_CAPTION_FONT, linespacing=1.0)
                left += cell + _CELL_GAP
            left += _BLOCK_GAP
        top += header + rows * row_height + _BAND_GAP
    # Set last: imshow rescales the view to each image it adds.
    canvas.set_xlim(0, figure_width)
    canvas.set_ylim(figure_height, 0)
    return figure


def augmentation_grid(samples, sample_titles, variants_by_arm, path, value_range=(0, 255)):
    """Saves augmentations.png: one row per sample, named by sample_titles (its class) at the
    left; a block of columns per arm, named above it, the first block the original samples.
    Many arms wrap into several bands of blocks, each band with its own original column; cells
    shrink so the figure stays within about 16 x 22 inches.

    samples: [R, H, W, C], C = 1 (drawn in grayscale over value_range) or 3 (RGB, clipped to
    value_range); uint8 pixels with the default value_range (0, 255), or float values.
    variants_by_arm: arm -> list of (images [R, H, W, C] like samples, captions), captions None
    or R short strings drawn under the images (e.g. the label weights of a mixing arm).
    """
    figure = draw_augmentation_grid(samples, sample_titles, variants_by_arm, value_range)
    figure.savefig(path, dpi=DPI)
