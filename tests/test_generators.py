import numpy as np
import pytest

from augcompare.augment import Augmentation, DataGenerator, get_generator, get_generator_cyclic

STANDARD = Augmentation(rotation=20, brightness=0.2, horizontal_flip=True)


@pytest.mark.parametrize("n,batch,drop,sizes", [(10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]),
                                                (8, 4, False, [4, 4]), (3, 8, False, [3])])
def test_finite_generator_batch_counts(n, batch, drop, sizes):
    x = np.zeros((n, 4, 4, 3), np.uint8)
    y = np.arange(n)
    batches = list(get_generator(x, y, batch, drop_remainder=drop))
    assert [len(b[1]) for b in batches] == sizes
    assert all(b[0].shape == (s, 4, 4, 3) and b[0].dtype == np.float32 for b, s in zip(batches, sizes))


def test_partial_last_batch_holds_the_right_samples(images):
    x, _ = images
    y = np.arange(len(x))
    batches = list(get_generator(x, y, 5, normalize="rescale", shuffle=True, seed=3))
    last_x, last_y = batches[-1]
    assert len(last_y) == 1
    assert np.allclose(last_x, x[last_y] / 255.0)  # no leftover rows from an earlier batch
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen) == list(range(len(x)))


def test_each_cyclic_pass_covers_every_sample_once_and_reshuffles(images):
    x, _ = images
    y = np.arange(len(x))
    stream = get_generator_cyclic(x, y, 5, seed=1)  # 16 samples: batches of 5, 5, 5, 1
    passes = [np.concatenate([next(stream)[1] for _ in range(4)]) for _ in range(3)]
    for order in passes:
        assert sorted(order) == list(range(16))
    assert not np.array_equal(passes[0], passes[1]) and not np.array_equal(passes[1], passes[2])


def test_cyclic_generator_is_seeded(images):
    x, y = images
    a = get_generator_cyclic(x, y, 4, augment=STANDARD, seed=7)
    b = get_generator_cyclic(x, y, 4, augment=STANDARD, seed=7)
    c = get_generator_cyclic(x, y, 4, augment=STANDARD, seed=8)
    for _ in range(6):
        (xa, ya), (xb, yb), (xc, _) = next(a), next(b), next(c)
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(xa, xc)


def test_augmentation_does_not_change_the_sample_order(images):
    x, _ = images
    y = np.arange(len(x))
    plain = get_generator_cyclic(x, y, 4, seed=2)
    augmented = get_generator_cyclic(x, y, 4, augment=STANDARD, seed=2)
    assert [next(plain)[1].tolist() for _ in range(12)] == [next(augmented)[1].tolist() for _ in range(12)]


def test_start_pass_resumes_the_stream(images):
    x, y = images
    full = get_generator_cyclic(x, y, 8, augment=STANDARD, seed=4)
    for _ in range(4):  # two passes of two batches
        next(full)
    resumed = get_generator_cyclic(x, y, 8, augment=STANDARD, seed=4, start_pass=2)
    for _ in range(3):
        (xf, yf), (xr, yr) = next(full), next(resumed)
        assert np.array_equal(xf, xr) and np.array_equal(yf, yr)


@pytest.mark.parametrize("normalize", ["rescale", "standardize", "divmax"])
def test_inputs_are_never_modified(images, normalize):
    x, y = images
    x_before, y_before = x.copy(), y.copy()
    list(get_generator(x.astype(np.float32), y, 5, augment=STANDARD, normalize=normalize, shuffle=True))
    floats = x.astype(np.float32)
    floats_before = floats.copy()
    list(get_generator(floats, y, 5, augment=STANDARD, normalize=normalize, shuffle=True))
    assert np.array_equal(floats, floats_before)
    list(get_generator(x, y, 5, augment=STANDARD, normalize=normalize, shuffle=True))
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)


def test_memory_mapped_source(images, tmp_path):
    x, y = images
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    from_map = list(get_generator(mapped, y, 5, shuffle=True, seed=1))
    from_memory = list(get_generator(x, y, 5, shuffle=True, seed=1))
    for (a, ya), (b, yb) in zip(from_map, from_memory):
        assert np.array_equal(a, b) and np.array_equal(ya, yb)
    generator = DataGenerator(range(len(x)), y, source=mapped, batch_size=5, dim=x.shape[1:], seed=1)
    assert np.allclose(generator[3][0], x[generator._order[15:]] / 255.0)


def test_generators_reject_mismatched_labels(images):
    x, y = images
    with pytest.raises(ValueError, match="16 images but 15 labels"):
        get_generator(x, y[:-1], 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        get_generator_cyclic(x, y, 0)


def write_npy_samples(directory, x, y):
    ids = [f"sample{i:03d}" for i in range(len(x))]
    for sample_id, image in zip(ids, x):
        np.save(directory / f"{sample_id}.npy", image)
    return ids, dict(zip(ids, y.tolist()))


def test_data_generator_streams_npy_files(images, tmp_path):
    x, y = images
    ids, labels = write_npy_samples(tmp_path, x, y)
    generator = DataGenerator(ids, labels, directory=tmp_path, batch_size=6, dim=(24, 24, 3),
                              shuffle=True, norm="standardize", seed=0)
    assert len(generator) == 3
    seen = []
    for index in range(len(generator)):
        batch_x, batch_y = generator[index]
        assert batch_x.dtype == np.float32 and batch_x.shape[1:] == (24, 24, 3)
        assert np.allclose(batch_x.mean(axis=(1, 2, 3)), 0, atol=1e-4)
        seen += batch_y.tolist()
    assert len(seen) == 16 and sorted(seen) == sorted(y.tolist())
    assert generator[2][0].shape[0] == 4  # the partial batch is complete and correct
    first_epoch = generator._order.copy()
    generator.on_epoch_end()
    assert not np.array_equal(first_epoch, generator._order)
    assert sorted(generator._order) == list(range(16))


def test_data_generator_inference_mode_returns_images_only(images, tmp_path):
    x, y = images
    ids, labels = write_npy_samples(tmp_path, x, y)
    generator = DataGenerator(ids, labels, directory=tmp_path, batch_size=4, dim=(24, 24, 3),
                              shuffle=False, train=False, norm="rescale")
    batch = generator[0]
    assert isinstance(batch, np.ndarray) and np.allclose(batch, x[:4] / 255.0)


def test_data_generator_names_a_file_of_the_wrong_shape(images, tmp_path):
    x, y = images
    ids, labels = write_npy_samples(tmp_path, x, y)
    np.save(tmp_path / "sample003.npy", np.zeros((10, 10, 3), np.uint8))
    generator = DataGenerator(ids, labels, directory=tmp_path, batch_size=4, dim=(24, 24, 3), shuffle=False)
    with pytest.raises(ValueError, match=r"sample003.npy has shape \(10, 10, 3\), expected dim=\(24, 24, 3\)"):
        generator[0]


def test_data_generator_is_seeded_per_epoch_and_batch(images):
    x, y = images
    a = DataGenerator(range(16), y, source=x, batch_size=4, dim=(24, 24, 3), augment=STANDARD, seed=5)
    b = DataGenerator(range(16), y, source=x, batch_size=4, dim=(24, 24, 3), augment=STANDARD, seed=5)
    assert np.array_equal(a[2][0], b[2][0])
    a.on_epoch_end()
    b.on_epoch_end()
    assert np.array_equal(a[1][0], b[1][0])


WORKER_SCRIPT = """
import os, threading, time
import numpy as np
from augcompare.augment import DataGenerator
from augcompare.augment.backend import keras

seen, done = set(), threading.Event()

def watch_children():  # the pool is made and closed within each epoch: poll for its workers
    while not done.is_set():
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and f"PPid:\\t{os.getpid()}\\n" in open(f"/proc/{entry}/status").read():
                    seen.add(int(entry))
            except OSError:
                pass
        time.sleep(0.005)

threading.Thread(target=watch_children, daemon=True).start()
rng = np.random.default_rng(0)
images = rng.uniform(-1, 1, (256, 8, 8, 1)).astype(np.float32)
labels = rng.integers(0, 2, 256)
data = DataGenerator(range(256), labels, source=images, batch_size=16, dim=(8, 8, 1), norm="standardize",
                     workers=2, use_multiprocessing=True)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(data, epochs=2, verbose=0)
done.set()
print("pids", *sorted(seen))
"""


@pytest.mark.slow
def test_worker_processes_make_batches_without_tensorflow_and_never_hang_or_outlive_the_parent(tmp_path):
    """The original Sequence with worker processes: model.fit finishes (a hang fails the
    timeout), the workers ran (they were seen as children) and none is left afterwards."""
    import os
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", WORKER_SCRIPT], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    pids = [int(p) for p in result.stdout.split("pids")[-1].split()]
    assert len(pids) >= 2  # the batches came from worker processes
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


def test_augmentation_in_worker_processes_is_refused_with_the_fix(images):
    x, y = images
    with pytest.raises(ValueError, match="hang in worker processes .* AugmentationLayer\\(augment\\)"):
        DataGenerator(range(16), y, source=x, batch_size=4, dim=(24, 24, 3), augment=STANDARD, workers=2,
                      use_multiprocessing=True)
    DataGenerator(range(16), y, source=x, batch_size=4, dim=(24, 24, 3), augment=STANDARD, workers=2)  # threads


def test_float_values_are_refused_outside_the_augmentations_range(images):
    x, y = images
    values = (x.astype(np.float32) / 127.5) - 1.0  # in [-1, 1]
    with pytest.raises(ValueError, match=r"values in \[-1, .*outside value_range \(0.0, 255.0\)"):
        next(get_generator(values, y, 4, augment=Augmentation(brightness=0.3)))
    kept = next(get_generator(values, y, 4, augment=Augmentation(brightness=0.3, value_range=(-1, 1)), normalize=None))
    assert kept[0].min() < -0.5 and kept[0].max() <= 1.0  # negative values survive, clipped to the data's range


def test_data_generator_takes_dim_from_the_source_and_labels_as_documented(images, tmp_path):
    x, y = images
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    by_index = DataGenerator(range(16), y, source=mapped, batch_size=4, shuffle=False)
    assert by_index.dim == (24, 24, 3)  # the array's shape, not (64, 64, 3)
    assert np.array_equal(by_index[1][1], y[4:8])
    subset = DataGenerator([15, 3, 7], y, source=mapped, batch_size=3, shuffle=False)  # labels parallel to source
    assert np.array_equal(subset[0][1], y[[15, 3, 7]])
    ids, mapping = write_npy_samples(tmp_path, x, y)
    from_files = DataGenerator(ids, y, directory=tmp_path, batch_size=4, shuffle=False)  # parallel to list_IDs
    assert from_files.dim == (24, 24, 3) and np.array_equal(from_files[3][1], y[12:])
    assert np.array_equal(DataGenerator(ids, mapping, directory=tmp_path, batch_size=4, shuffle=False)[3][1], y[12:])
    assert DataGenerator(ids, None, directory=tmp_path, train=False)[0].shape == (16, 24, 24, 3)


@pytest.mark.parametrize("arguments, message", [
    (dict(list_IDs=["sample000", "sample001"], labels=np.zeros(16)), r"labels has 16 entries for 2 list_IDs"),
    (dict(list_IDs=["sample000", "sample001"], labels={"sample000": 0}),
     r"labels has no entry for ID 'sample001' \(1 of 2 IDs lack one\)"),
    (dict(list_IDs=["sample000"], labels=3),
     r"labels must be a mapping \{ID: label\} or a sequence of labels, got int"),
    (dict(list_IDs=["sample000"], labels="cat"), r"got str"),
    (dict(list_IDs=["sample000"], labels=None), r"labels is None but train=True"),
    (dict(list_IDs=["missing"], labels=[0]), r"missing.npy cannot be read as a sample"),
    (dict(list_IDs=range(4), labels=np.zeros(4), source="x"), r"labels has 4 entries but the source has 16 samples"),
    (dict(list_IDs=["a", "b"], labels=np.zeros(16), source="x"), r"list_IDs are integer indices into the source"),
    (dict(list_IDs=[0, 16], labels=np.zeros(16), source="x"), r"list_IDs holds index 16 but the source has 16"),
])
def test_data_generator_mistakes_are_one_line_value_errors(images, tmp_path, arguments, message):
    x, y = images
    write_npy_samples(tmp_path, x, y)
    if arguments.get("source") == "x":
        arguments["source"] = x
    else:
        arguments["directory"] = tmp_path
    with pytest.raises(ValueError, match=message) as error:
        DataGenerator(**arguments)
    assert "\n" not in str(error.value)
