"""The original's data end to end from the command line: one float32 .npy file per sample, one
channel (32 x 32 x 1 lattices of -1/+1) or any other count (continuous fields of two channels), a
labels file, normalized by "standardize" or "divmax", with rotation and flip arms, paired runs and
plots."""

import json

import numpy as np
import pytest
from conftest import overrides

from augcompare.experiments import cli
from augcompare.experiments.cache import open_cache
from augcompare.experiments.history import read_history


def write_samples(root, kind, per_class=20, size=32):
    """Two classes of float32 samples: ordered vs disordered lattices of -1/+1 (one channel), or
    smooth vs rough continuous fields (two channels)."""
    rng = np.random.default_rng(0)
    root.mkdir()
    lines = ["file,label"]
    for i in range(2 * per_class):
        label = i % 2
        if kind == "spins":
            if label == 0:
                sample = np.where(rng.random((size, size, 1)) < 0.9, 1.0, -1.0) * rng.choice([-1.0, 1.0])
            else:
                sample = np.where(rng.random((size, size, 1)) < 0.5, 1.0, -1.0)
        else:
            y, x = np.mgrid[0:size, 0:size]
            smooth = np.sin(x / rng.uniform(3, 8) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 8))
            field = smooth if label == 0 else rng.normal(0, 0.7, (size, size))
            sample = np.stack([field, -0.5 * field], axis=-1) * 3.5
        np.save(root / f"sample{i:03d}.npy", sample.astype(np.float32))
        lines.append(f"sample{i:03d}.npy,{'ordered' if label == 0 else 'disordered'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


EXPERIMENT = '''name = "lattice"
[data]
source = "cache"
image_size = 32
[train]
epochs = 2
batch_size = 8
seeds = [0, 1]
[model]
filters = [8, 16]
dense_units = 16
[arms.baseline]
[arms.turn_and_flip]
rotation = 90
horizontal_flip = true
'''


@pytest.mark.slow
@pytest.mark.parametrize("kind, normalize, channels", [("spins", "standardize", 1), ("values", "divmax", 2)])
def test_float_npy_data_of_any_channel_count_from_the_command_line(tmp_path, capsys, kind, normalize, channels):
    write_samples(tmp_path / "samples", kind)
    cache = tmp_path / "cache"
    assert cli.main(["prepare", "npy", "--root", str(tmp_path / "samples"), "--out", str(cache), "--image-size", "32",
                     "--train-per-class", "12", "--val-per-class", "4", "--test-per-class", "4", "--workers", "1"]) == 0
    dataset = open_cache(cache)
    assert dataset.kind == "values" and dataset.image_shape == (32, 32, channels)
    original = np.load(tmp_path / "samples" / "sample000.npy")
    assert any(np.array_equal(image, original) for image in np.concatenate(
        [dataset.train_images, dataset.val_images, dataset.test_images]))  # kept bit for bit
    (tmp_path / "lattice.toml").write_text(EXPERIMENT)
    args = ["run", str(tmp_path / "lattice.toml"), "--out", str(tmp_path / "results"), "--run-id", "r"]
    assert cli.main(args + overrides("train.normalize=rescale", f"data.path={cache}")) == 2
    assert "use train.normalize = \"standardize\" or \"divmax\"" in capsys.readouterr().err
    assert cli.main(args + overrides(f"train.normalize={normalize}", f"data.path={cache}")) == 0
    run_dir = tmp_path / "results" / "lattice" / "r"
    history = read_history(run_dir / "history.csv")
    assert len(history) == 2 * 2 * 2 and all(np.isfinite(row["loss"]) for row in history)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["vs_baseline"]["turn_and_flip"]["primary"]["seeds"] == 2
    data = json.loads((run_dir / "data.json").read_text())
    assert data["kind"] == "values" and data["channels"] == channels and data["value_range"][0] < 0
    assert cli.main(["plot", str(run_dir)]) == 0
    for figure in ("accuracy.png", "loss.png", "ablation.png", "augmentations.png"):
        assert (run_dir / figure).stat().st_size > 1000
