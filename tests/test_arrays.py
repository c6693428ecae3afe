"""The arrays source (x_train / y_train in an .npz file or a folder of .npy files), the counts that
fit (train_per_class = "all", errors naming the settings), and Ctrl-C while data is prepared or drawn."""

import json
import re

import numpy as np
import pytest
from conftest import overrides
from PIL import Image

from augcompare.experiments import cli, config, data, demo_scenes, images, prepare
from augcompare.experiments.cache import open_cache
from augcompare.experiments.errors import UserError
from augcompare.experiments.images import resize_and_crop
from augcompare.experiments.sources import arrays as arrays_source


def arrays_config(path, **settings):
    table = {"source": "arrays", "path": str(path), "image_size": 16, "train_per_class": 6, "val_per_class": 2,
             "test_per_class": 2, "workers": 1, **settings}
    return config.data_config(table)


def pixels(count, size=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def taken(plan, split):
    """(cache position, array name, index) of every image a split of a plan takes, no skips."""
    return [(group.offset + i, group.array_name, group.candidates[i])
            for group in plan.groups if group.split == split for i in range(group.needed)]


def test_an_npz_of_pixels_with_string_labels_is_held_out_seeded_and_stratified(tmp_path):
    x = pixels(36)
    y = np.array(["cat", "dog", "eel"] * 12)
    np.savez(tmp_path / "data.npz", x_train=x, y_train=y)
    settings = arrays_config(tmp_path / "data.npz")
    dataset = open_cache(prepare.prepare_source(settings, tmp_path / "cache"))
    assert dataset.class_names == ("cat", "dog", "eel") and dataset.kind == "pixels"
    assert dataset.train_images.shape == (18, 16, 16, 3)
    for split in ("train", "val", "test"):
        labels = dataset.split(split)[1]
        assert np.bincount(labels).tolist() == [2 if split != "train" else 6] * 3  # stratified
    plan = arrays_source.plan(settings, tmp_path / "data.npz")
    used = [index for split in ("train", "val", "test") for _, _, index in taken(plan, split)]
    assert len(set(used)) == len(used) == 30  # no image in two splits
    for split in ("train", "val", "test"):
        images_, labels = dataset.split(split)
        for position, name, index in taken(plan, split):
            assert name == "x_train" and dataset.class_names[labels[position]] == y[index]
            # resized exactly as every pixel source is
            assert np.array_equal(images_[position], resize_and_crop(Image.fromarray(x[index]), 16))
    other = arrays_source.plan(arrays_config(tmp_path / "data.npz", seed=1), tmp_path / "data.npz")
    assert taken(other, "test") != taken(plan, "test")  # the seed chooses
    assert taken(arrays_source.plan(settings, tmp_path / "data.npz"), "test") == taken(plan, "test")


def test_a_folder_of_float_npy_with_its_own_splits_keeps_values_bit_for_bit(tmp_path):
    rng = np.random.default_rng(1)
    x = {split: rng.normal(size=(n, 8, 8, 2)).astype(np.float32) for split, n in
         (("train", 20), ("val", 6), ("test", 8))}
    for split, values in x.items():
        np.save(tmp_path / f"x_{split}.npy", values)
        np.save(tmp_path / f"y_{split}.npy", (np.arange(len(values)) % 2).reshape(-1, 1))  # Keras' [N, 1]
    settings = arrays_config(tmp_path, image_size=8, train_per_class="all", val_per_class=3, test_per_class=4)
    dataset = open_cache(prepare.prepare_source(settings, tmp_path / "out" / "cache"))
    assert dataset.kind == "values" and dataset.class_names == ("0", "1")
    assert [len(dataset.split(s)[1]) for s in ("train", "val", "test")] == [20, 6, 8]  # "all": every train image
    plan = arrays_source.plan(settings, tmp_path)
    for split in ("train", "val", "test"):
        images_, _ = dataset.split(split)
        for position, name, index in taken(plan, split):
            assert name == f"x_{split}"
            assert images_[position].tobytes() == x[split][index].tobytes()
    # the images are memory-mapped by the workers, never read whole
    assert isinstance(images.open_array(str(tmp_path / "x_train.npy"), ""), np.memmap)


def test_with_train_per_class_all_a_sample_that_cannot_be_used_is_an_error_naming_it(tmp_path):
    x = np.random.default_rng(2).normal(size=(12, 8, 8, 1)).astype(np.float32)
    x[5, 0, 0, 0] = np.nan
    given = {"x_val": x[:4], "y_val": np.arange(4) % 2, "x_test": x[:4], "y_test": np.arange(4) % 2}
    np.savez(tmp_path / "data.npz", x_train=x, y_train=np.arange(12) % 2, **given)
    settings = arrays_config(tmp_path / "data.npz", image_size=8, train_per_class="all", val_per_class=2,
                             test_per_class=2, max_skip_fraction=0.5)
    with pytest.raises(UserError, match=r"class 1: only 5 decodable images for train, asked for 6; fix or remove the "
                                        r"undecodable ones, or lower data.train_per_class \(skipped: \{'values not "
                                        r"finite \(NaN or infinity\)': 1\}, e.g. x_train\[5\]\)"):
        prepare.prepare_source(settings, tmp_path / "cache")


def test_arrays_are_reused_and_a_changed_file_is_prepared_again(tmp_path):
    np.savez(tmp_path / "data.npz", x_train=pixels(30), y_train=np.arange(30) % 2)
    settings = arrays_config(tmp_path / "data.npz", cache_dir=str(tmp_path / "caches"))
    first = data.load_dataset(settings)
    stamp = (first.path / "meta.json").stat().st_mtime_ns
    again = data.load_dataset(settings)
    assert again.path == first.path and (again.path / "meta.json").stat().st_mtime_ns == stamp
    np.savez(tmp_path / "data.npz", x_train=pixels(30, seed=5), y_train=np.arange(30) % 2)
    changed = data.load_dataset(settings)
    assert changed.path != first.path and not np.array_equal(changed.train_images, first.train_images)


@pytest.mark.parametrize("arrays, message", [
    ({"y_train": np.arange(10)}, r"has no x_train"),
    ({"x_train": pixels(10), "y_train": np.arange(9) % 2}, r"x_train .* holds 10 images but y_train .* holds 9"),
    ({"x_train": pixels(10)[:, :, :, :2], "y_train": np.arange(10) % 2}, r"uint8 pixels with 2 channels"),
    ({"x_train": np.zeros((10, 16)), "y_train": np.arange(10) % 2}, r"shape \(10, 16\); give images as"),
    ({"x_train": np.zeros((10, 16, 16, 3), complex), "y_train": np.arange(10) % 2}, r"complex128 is not real"),
    ({"x_train": pixels(10), "y_train": np.arange(10) % 2 * 0.5}, r"float64 labels; give integers or strings"),
    ({"x_train": pixels(10), "y_train": np.array([{"a": 1}] * 10, dtype=object)}, r"object array .* never loaded"),
    ({"x_train": pixels(10), "y_train": np.arange(10) % 2, "x_val": pixels(4)}, r"has x_val but no y_val"),
    ({"x_train": pixels(10), "y_train": np.arange(10) % 2, "x_tset": pixels(4), "y_tset": np.arange(4)},
     r"holds x_tset, which is not one of"),
    ({"x_train": pixels(10), "y_train": np.arange(10) % 2, "x_test": pixels(4), "y_test": np.arange(4)},
     r"y_test has class 2, which y_train does not have"),
    ({"x_train": pixels(10), "y_train": np.arange(10) % 2, "x_test": np.zeros((4, 20, 20, 3), np.float32),
      "y_test": np.arange(4) % 2}, r"x_test .* float32 .* but x_train uint8"),
    ({"x_train": np.zeros((10, 12, 12, 1), np.float32), "y_train": np.arange(10) % 2},
     r"values of shape \(12, 12, 1\).*set data.image_size = 12"),
])
def test_bad_arrays_are_one_line_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(UserError, match=message) as error:
        prepare.prepare_source(arrays_config(tmp_path / "data.npz", train_per_class=2, val_per_class=1,
                                             test_per_class=1), tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_too_few_images_name_the_settings_and_counts_that_fit(tmp_path):
    np.savez(tmp_path / "data.npz", x_train=pixels(40), y_train=np.array([0] * 14 + [1] * 26))
    with pytest.raises(UserError) as error:
        prepare.prepare_source(arrays_config(tmp_path / "data.npz", train_per_class=30, val_per_class=10,
                                             test_per_class=10), tmp_path / "cache")
    text = str(error.value)
    assert "class 0 has 14 images; asked for 30 train + 10 val + 10 test" in text
    fit = {key: int(value) for key, value in re_settings(text)}
    assert fit == {"train_per_class": 8, "val_per_class": 2, "test_per_class": 2}
    assert 'or keep data.test_per_class and data.val_per_class' not in text  # 20 held out do not fit 14
    out = prepare.prepare_source(arrays_config(tmp_path / "data.npz", **fit), tmp_path / "cache")  # they do fit
    assert open_cache(out).train_images.shape[0] == 16
    with pytest.raises(UserError, match=r'data.train_per_class = "all" \(the smallest class then trains on 8\)'):
        prepare.prepare_source(arrays_config(tmp_path / "data.npz", train_per_class=30, val_per_class=2,
                                             test_per_class=2), tmp_path / "cache2")


def re_settings(text):
    return re.findall(r"data\.(\w+_per_class) = (\d+)", text)


def test_train_per_class_all_on_a_folder_needs_no_arithmetic(tmp_path):
    from test_faults import write_folder
    write_folder(tmp_path / "images", {"circle": (60, 0, 0), "square": (0, 60, 0)}, 12)
    settings = config.data_config({"source": "folder", "root": str(tmp_path / "images"), "image_size": 16,
                                   "train_per_class": "all", "val_per_class": 2, "test_per_class": 2,
                                   "max_skip_fraction": 0.0, "workers": 1})
    dataset = open_cache(prepare.prepare_source(settings, tmp_path / "cache"))
    assert [len(dataset.split(s)[1]) for s in ("train", "val", "test")] == [16, 4, 4]
    meta = json.loads((dataset.path / "meta.json").read_text())
    assert meta["params"]["train_per_class"] == "all"
    with pytest.raises(UserError, match=r'data.train_per_class must be an integer or "all"'):
        config.data_config({"train_per_class": "most"})
    with pytest.raises(UserError, match="the demo draws its images: give a number"):
        config.data_config({"train_per_class": "all"})


def test_ctrl_c_while_preparing_says_what_is_kept_and_the_same_command_continues(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "data.npz", x_train=pixels(300, size=8), y_train=np.arange(300) % 2)
    calls = []
    decode_chunk = prepare.decode_chunk

    def interrupted_after_two_chunks(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode_chunk(*args)
    monkeypatch.setattr(prepare, "decode_chunk", interrupted_after_two_chunks)
    command = ["prepare", "arrays", "--root", str(tmp_path / "data.npz"), "--out", str(tmp_path / "cache"),
               "--image-size", "8", "--train-per-class", "all", "--val-per-class", "10", "--test-per-class", "10",
               "--workers", "1"]
    assert cli.main(command) == 130
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"augcompare: interrupted while preparing {tmp_path / 'cache'}: the ")
    assert f"kept in {tmp_path / '.cache.preparing'}; the same command continues from them" in error
    monkeypatch.setattr(prepare, "decode_chunk", decode_chunk)
    assert cli.main(command) == 0
    assert "continuing the preparation" in capsys.readouterr().err
    # 150 a class, less 10 + 1 spare each for val and test
    assert open_cache(tmp_path / "cache").train_images.shape == (256, 8, 8, 3)


def test_ctrl_c_while_the_demo_is_drawn_says_nothing_is_kept_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    draw_scene = demo_scenes.draw_scene
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return draw_scene(*args)
    monkeypatch.setattr(demo_scenes, "draw_scene", interrupted)
    command = ["run", "--out", str(tmp_path / "results"), "--run-id", "r"] + overrides(
        f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=16")
    assert cli.main(command) == 130
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == ("augcompare: interrupted while drawing the demo data (4 of 1,800 images); nothing is kept: the "
                     "same command draws it again, then caches it")
    assert not (tmp_path / "results" / "demo" / "r").exists()


def test_a_long_demo_draw_shows_progress(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "SHOW_AFTER", 0.0)
    settings = config.data_config({"image_size": 8, "train_per_class": 3, "val_per_class": 1, "test_per_class": 1,
                                   "cache_dir": str(tmp_path)})
    data.load_dataset(settings)
    assert "drawing the demo data: 10/10 images" in capsys.readouterr().err
