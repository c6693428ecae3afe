"""The figures read at a glance for any number of arms, epochs and samples: panels wrap into
rows of at most three, epochs are ticked with whole numbers, the sample grid names each arm's
block and each sample's class, and no figure grows past a screen."""

import math

import numpy as np
import pytest
from matplotlib.image import AxesImage
from matplotlib.text import Text
from PIL import Image

from augcompare.experiments import plots, preview

ARM_NAMES = ["baseline", "rotation", "brightness", "flip", "all", "zoom", "mixup", "cutmix"]
ARM_COUNTS = [1, 2, 5, 8]
# The largest figure a reader can take in without zooming out, in pixels.
MAX_PIXELS = 2000


def arm_titles(count):
    return {name: f"{name} setting {index}" for index, name in enumerate(ARM_NAMES[:count])}


def synthetic_history(arms, epochs, seeds=2):
    rng = np.random.default_rng(0)
    rows = []
    for arm in arms:
        for seed in range(seeds):
            for epoch in range(1, epochs + 1):
                accuracy = 1 - 0.5 * np.exp(-epoch / 4) + rng.normal(0, 0.02)
                rows.append({"arm": arm, "seed": seed, "epoch": epoch, "accuracy": accuracy,
                             "val_accuracy": accuracy - 0.05, "loss": 1 - accuracy, "val_loss": 1.1 - accuracy})
    return rows


def texts(figure):
    """Every string drawn on the figure, line breaks read as spaces."""
    return {artist.get_text().replace("\n", " ") for artist in figure.findobj(Text) if artist.get_text()}


def epoch_tick_labels(axis):
    """The x tick labels inside the view (drawn figure)."""
    low, high = axis.get_xlim()
    return [label.get_text() for tick, label in zip(axis.get_xticks(), axis.get_xticklabels())
            if low <= tick <= high]


def pixel_size(path):
    with Image.open(path) as image:
        return image.size


# ---- Curves ------------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs", [1, 3, 15])
@pytest.mark.parametrize("arm_count", ARM_COUNTS)
def test_curves_wrap_into_rows_of_three_with_whole_epoch_ticks(tmp_path, arm_count, epochs):
    titles = arm_titles(arm_count)
    history = synthetic_history(titles, epochs)
    figure = plots.draw_curves(history, titles, "accuracy")
    figure.draw_without_rendering()
    axes = figure.get_axes()
    rows = math.ceil((arm_count + 1) / 3)
    assert len(axes) == arm_count + 1
    assert len({axis.get_subplotspec().rowspan.start for axis in axes}) == rows
    assert max(axis.get_subplotspec().colspan.start for axis in axes) < 3
    assert all(axes[0].get_shared_y_axes().joined(axes[0], axis) for axis in axes)
    for axis in axes:
        labels = epoch_tick_labels(axis)
        assert labels and all(label.isdigit() for label in labels), labels
        assert {int(label) for label in labels} <= set(range(1, epochs + 1))
    if epochs <= 3:
        assert set(epoch_tick_labels(axes[0])) == {str(epoch) for epoch in range(1, epochs + 1)}
    assert {"all arms", *(f"{arm}: {title}" for arm, title in titles.items())} <= texts(figure)


def test_curves_stay_on_screen_and_grow_down_not_across(tmp_path):
    sizes = []
    for arm_count in ARM_COUNTS:  # 1, 1, 2 and 3 rows of panels
        titles = arm_titles(arm_count)
        path = tmp_path / f"loss-{arm_count}.png"
        layout = plots.curves_figure(synthetic_history(titles, 15), titles, "loss", path)
        assert layout == (math.ceil((arm_count + 1) / 3), min(arm_count + 1, 3))
        sizes.append(pixel_size(path))
    for width, height in sizes:
        assert width <= MAX_PIXELS and height <= MAX_PIXELS
        assert width / height < 3.5  # the old single row of 6 panels was 2772 x 418
    widths, heights = zip(*sizes[1:])
    assert len(set(widths)) == 1
    assert heights[0] < heights[1] < heights[2]


@pytest.mark.parametrize("arm_count", [1, 8])
def test_curves_have_one_legend_outside_every_panel(arm_count):
    titles = arm_titles(arm_count)
    figure = plots.draw_curves(synthetic_history(titles, 5), titles, "accuracy", per_seed=True)
    figure.draw_without_rendering()
    assert len(figure.legends) == 1 and not any(axis.get_legend() for axis in figure.get_axes())
    legend = figure.legends[0].get_window_extent()
    assert not any(legend.overlaps(axis.get_window_extent()) for axis in figure.get_axes())
    assert set(titles) | {"train", "val", "single seed"} <= {text.get_text() for text in figure.legends[0].texts}


def test_per_seed_draws_a_line_per_seed_in_the_arm_panels():
    titles = arm_titles(2)
    history = synthetic_history(titles, 4, seeds=3)
    plain = plots.draw_curves(history, titles, "loss").get_axes()
    with_seeds = plots.draw_curves(history, titles, "loss", per_seed=True).get_axes()
    # 3 seeds x (train, val) more lines in each arm's panel, none in the all-arms panel.
    assert len(with_seeds[0].lines) == len(plain[0].lines)
    assert [len(b.lines) - len(a.lines) for a, b in zip(plain[1:], with_seeds[1:])] == [6, 6]


# ---- Sample grid -------------------------------------------------------------------------------

CLASS_NAMES = ["room", "tower", "bedroom", "church outdoor", "kitchen", "living room", "bridge", "lake"]


def grid_inputs(arm_count, sample_count, variants=4, size=16, channels=3, value_range=(0, 255), seed=0):
    rng = np.random.default_rng(seed)
    low, high = value_range
    samples = rng.uniform(low, high, (sample_count, size, size, channels))
    if value_range == (0, 255):
        samples = samples.astype(np.uint8)
    variants_by_arm = {arm: [(rng.uniform(low, high, samples.shape), None) for _ in range(variants)]
                       for arm in ARM_NAMES[:arm_count]}
    return samples, CLASS_NAMES[:sample_count], variants_by_arm


@pytest.mark.parametrize("sample_count", [1, 3])
@pytest.mark.parametrize("arm_count", ARM_COUNTS)
def test_grid_names_each_block_above_its_columns_and_each_row_by_class(tmp_path, arm_count, sample_count):
    samples, titles, variants_by_arm = grid_inputs(arm_count, sample_count)
    figure = plots.draw_augmentation_grid(samples, titles, variants_by_arm)
    assert {"original", *variants_by_arm, *titles} <= texts(figure)
    canvas, = figure.get_axes()  # positions in inches from the top left
    headers = {text.get_text().replace("\n", " "): text for text in canvas.texts}
    for arm in variants_by_arm:
        extents = [image.get_extent() for image in canvas.images if image.get_label() == arm]
        assert len(extents) == 4 * sample_count
        left, right = min(extent[0] for extent in extents), max(extent[1] for extent in extents)
        # Centred over the arm's own columns, above their first row.
        header = headers[arm]
        assert header.get_position()[1] < min(extent[3] for extent in extents)
        drawn_left, drawn_right = canvas.transData.inverted().transform(
            header.get_window_extent())[:, 0]
        assert abs((drawn_left + drawn_right) / 2 - (left + right) / 2) < 0.05 * (right - left)
        assert left < drawn_left < drawn_right < right

    path = tmp_path / "augmentations.png"
    plots.augmentation_grid(samples, titles, variants_by_arm, path)
    width, height = pixel_size(path)
    assert width <= MAX_PIXELS and height <= MAX_PIXELS


def test_grid_of_eight_arms_and_eight_samples_wraps_and_stays_on_screen(tmp_path):
    samples, titles, variants_by_arm = grid_inputs(8, 8)
    path = tmp_path / "augmentations.png"
    plots.augmentation_grid(samples, titles, variants_by_arm, path)
    assert len(plots._bands(variants_by_arm)) == 2
    width, height = pixel_size(path)
    assert width <= MAX_PIXELS and height <= 2600
    assert 0.4 < width / height < 2.5


def test_grid_draws_captions_under_images():
    samples, titles, variants_by_arm = grid_inputs(2, 3)
    captions = [f"room 0.{k + 6} / tower 0.{4 - k}" for k in range(3)]
    variants_by_arm["mixup"] = [(samples.astype(np.float32), captions)]
    assert set(captions) <= texts(plots.draw_augmentation_grid(samples, titles, variants_by_arm))


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_grid_draws_value_data_in_grayscale_over_its_range(channels):
    """One channel, or any count but 3 (the first channel shown)."""
    samples, titles, variants_by_arm = grid_inputs(2, 3, channels=channels, value_range=(-1.0, 1.0))
    figure = plots.draw_augmentation_grid(samples, titles, variants_by_arm, value_range=(-1.0, 1.0))
    images = figure.findobj(AxesImage)
    assert len(images) == 3 * (1 + 2 * 4)
    assert all(image.get_cmap().name == "gray" and image.get_clim() == (-1.0, 1.0) for image in images)
    originals = [image.get_array() for image in images if image.get_label() == "original"]
    assert np.allclose(originals, samples[..., 0].astype(np.float32))


def test_grid_scales_colour_values_from_the_value_range_and_clips_them(caplog):
    samples = np.zeros((1, 4, 4, 3))  # the middle of (-1, 1)
    figure = plots.draw_augmentation_grid(samples, ["room"], {"brighter": [(samples + 3, None)],
                                                              "darker": [(samples - 3, None)]},
                                          value_range=(-1.0, 1.0))
    assert not caplog.records  # matplotlib warns where it has to clip RGB values itself
    drawn = {image.get_label(): image.get_array() for image in figure.findobj(AxesImage)}
    assert np.allclose(drawn["original"], 0.5)
    assert np.allclose(drawn["brighter"], 1.0) and np.allclose(drawn["darker"], 0.0)


@pytest.mark.parametrize("change, message", [
    (lambda s, t, v: (s[0], t, v), "must be \\[R, H, W, C\\]"),
    (lambda s, t, v: (s, t[:-1], v), "sample titles"),
    (lambda s, t, v: (s, t, {"rotation": [(s[:1], None)]}), "variant of shape"),
    (lambda s, t, v: (s, t, {"mixup": [(s, ["one caption"])]}), "captions"),
])
def test_grid_refuses_inputs_that_do_not_line_up(change, message):
    with pytest.raises(ValueError, match=message):
        plots.draw_augmentation_grid(*change(*grid_inputs(1, 2)))


# ---- Preview -----------------------------------------------------------------------------------

def test_pick_samples_returns_the_labels_of_the_samples(images):
    pixels, labels = images
    samples, sample_labels = preview.pick_samples(pixels, labels, count=5, seed=3)
    assert samples.shape == (5, *pixels.shape[1:])
    assert list(sample_labels) == [0, 1, 0, 1, 0]  # the classes in turn
    for sample, label in zip(samples, sample_labels):
        assert label in labels[(pixels == sample).all(axis=(1, 2, 3))]


def test_preview_draws_each_augmenting_arm_with_rows_named_by_class(images, monkeypatch):
    pixels, labels = images
    samples, sample_labels = preview.pick_samples(pixels, labels, count=2)
    calls = []
    monkeypatch.setattr(plots, "augmentation_grid", lambda *args, **kwargs: calls.append((args, kwargs)))
    preview.draw(samples, sample_labels, ("cat", "dog"), {"baseline": {}, "mirror": {"horizontal_flip": True}},
                 (0.0, 255.0), "augmentations.png", count=2)
    ((grid_samples, sample_titles, variants_by_arm, path), kwargs), = calls
    assert grid_samples is samples and sample_titles == ["cat", "dog"] and kwargs["value_range"] == (0.0, 255.0)
    assert list(variants_by_arm) == ["mirror"]  # no block for the arm without augmentation
    (first, first_captions), (second, second_captions) = variants_by_arm["mirror"]
    assert first_captions is None and second_captions is None
    for variant in (first, second):  # each image is itself or its mirror
        assert all(np.array_equal(v, s) or np.array_equal(v, s[:, ::-1]) for v, s in zip(variant, samples))
