"""Any Keras network as the model: the user's own (model.build), ResNet-20 and Keras'
applications by name, started from given weights; pairing holds for each, the plan counts its
cost, and mistakes in it are one-line errors before anything trains."""

import hashlib
import json
import re

import numpy as np
import pytest
from conftest import SMALL, overrides

from augcompare.augment.backend import keras
from augcompare.augment.functions import load_function
from augcompare.experiments import cli, config
from augcompare.experiments.history import read_history
from augcompare.models import small_cnn, small_cnn_parameters, training_flops
from augcompare.models import networks
from augcompare.models.networks import forward_flops
from augcompare.models.resnet import resnet20

# SMALL without the small CNN's own settings, which another network refuses.
BASE = [item for item in SMALL if not item.startswith("model.")]

NETS = '''import keras
import numpy as np


def build(input_shape, num_classes, seed):
    """BatchNormalization and Dropout, initializers left unseeded (the harness seeds Keras)."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def logits(input_shape, num_classes, seed):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def explode(input_shape, num_classes, seed):
    raise RuntimeError("a bug in my network")


def not_a_model(input_shape, num_classes, seed):
    return "a string"


def three_outputs(input_shape, num_classes, seed):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))


def fixed_input(input_shape, num_classes, seed):
    inputs = keras.Input(shape=(28, 28, 1))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))


class Subclassed(keras.Model):
    """Makes its weights on its first call, from Keras' global random state."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(num_classes, activation="softmax")

    def call(self, x, training=False):
        return self.head(self.pool(self.conv(x)))


def subclassed(input_shape, num_classes, seed):
    return Subclassed(num_classes)


def random_each_time(input_shape, num_classes, seed):
    inputs = keras.Input(shape=input_shape)
    initializer = keras.initializers.Constant(np.random.default_rng().normal())
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, kernel_initializer=initializer)(x))
'''


def write_experiment(folder, model, arms=("baseline = {}",)):
    (folder / "my_nets.py").write_text(NETS)
    lines = ['name = "nets"', "[model]", *model, "[arms]", *arms]
    (folder / "nets.toml").write_text("\n".join(lines) + "\n")
    return folder / "nets.toml"


def run_base(folder, experiment, *extra, run_id="r"):
    """`augcompare run` of the small demo (without the small CNN's settings); the run directory."""
    sets = BASE + [f"data.cache_dir={folder / 'cache'}", *extra]
    assert cli.main(["run", str(experiment), "--out", str(folder / "results"), "--run-id", run_id]
                    + overrides(*sets)) == 0
    return folder / "results" / "nets" / run_id


def without_timings(run_dir, arm):
    return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "arm")}
            for row in read_history(run_dir / "history.csv") if row["arm"] == arm]


def test_resnet20_has_the_papers_parameter_count():
    model = resnet20((32, 32, 3), 10)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 269_722  # He et al. 2016: 0.27 M; option-A shortcuts add none
    assert model.count_params() - trainable == 1_376  # BatchNormalization's moving statistics
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)


def test_the_small_cnn_is_counted_without_keras_as_from_its_layers():
    shape, filters = (32, 32, 3), (8, 16)
    model = small_cnn(shape, 5, filters=filters, dense_units=16)
    assert small_cnn_parameters(shape, 5, filters, 16) == model.count_params()
    assert 3 * forward_flops(model) == training_flops(shape, 5, filters, 16)


def test_every_kind_of_layer_is_counted_nested_models_and_keras_ops_too():
    layers = keras.layers
    inner = keras.Sequential([keras.Input((8, 8, 4)), layers.DepthwiseConv2D(3, padding="same"),
                              layers.BatchNormalization()])
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)                     # 2*64*(3*3*3*4)
    x = inner(keras.ops.add(x, x))                                      # 2*64*(3*3*4) + 4*256; an op: 0
    x = layers.SeparableConv2D(6, 3, strides=2, padding="same")(x)      # 2*16*(3*3*4 + 4*6)
    x = layers.Conv2DTranspose(2, 2, strides=2)(x)                      # 2*16*(2*2*2*6)
    x = layers.Conv1D(5, 3)(layers.Reshape((64, 2))(x))                 # 2*62*(3*2*5)
    outputs = layers.Dense(3)(layers.Flatten()(x))                      # 2*(310*3)
    expected = (2 * 64 * 108 + 2 * 64 * 36 + 4 * 256 + 2 * 16 * (36 + 24) + 2 * 16 * 48 + 2 * 62 * 30
                + 2 * 310 * 3)
    assert forward_flops(keras.Model(inputs, outputs)) == expected


@pytest.fixture(scope="module")
def own_network_run(tmp_path_factory):
    """A network of the user's, with BatchNormalization and Dropout, two arms identical."""
    folder = tmp_path_factory.mktemp("nets")
    experiment = write_experiment(folder, ['build = "my_nets.py:build"'], ["baseline = {}", "again = {}"])
    return run_base(folder, experiment)


@pytest.mark.slow
def test_arms_of_a_seed_start_from_the_same_weights_with_batchnorm_and_dropout(own_network_run):
    first, second = without_timings(own_network_run, "baseline"), without_timings(own_network_run, "again")
    assert len(first) == 2 and first == second  # same initial weights, batches and dropout masks


def test_the_run_records_the_network_its_file_and_its_cost(own_network_run):
    snapshot = config.read_toml(own_network_run / "config.toml")
    build = snapshot["model"]["build"]
    assert build.startswith("/") and build.endswith("my_nets.py:build")  # runs again from any folder
    environment = json.loads((own_network_run / "environment.json").read_text())
    # 4 filters of 3x3x3 + 4 biases, 4 x 4 BatchNormalization, a 4 x 2 dense layer + 2 biases
    assert environment["model"] == {"network": build, "parameters": 112 + 16 + 10,
                                    "training_flops_per_image": 3 * (2 * 15 * 15 * 108 + 4 * 15 * 15 * 4 + 2 * 8)}
    assert build.split(":")[0] in environment["function_files"]  # a resume warns when the file changed
    summary = json.loads((own_network_run / "summary.json").read_text())
    assert summary["model"] == environment["model"]
    assert "my_nets.py:build, 138 parameters" in (own_network_run / "summary.md").read_text()


@pytest.mark.slow
def test_resnet20_and_a_network_returning_logits_train(tmp_path, capsys):
    run_dir = run_base(tmp_path, write_experiment(tmp_path, []), "model.name=resnet20", "train.epochs=1",
                       "train.save_best=true", run_id="resnet")
    assert "model: resnet20, 270,578 parameters" in capsys.readouterr().out
    best = keras.saving.load_model(run_dir / "best" / "baseline-seed0.keras")  # built-in layers only
    assert best.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0).shape == (1, 2)
    record = json.loads((run_dir / "environment.json").read_text())["model"]
    assert record["network"] == "resnet20" and record["parameters"] == 271_098 - 65 * 8  # 2 classes
    run_dir = run_base(tmp_path, write_experiment(tmp_path, ['build = "my_nets.py:logits"', "from_logits = true"]),
                       "train.epochs=1", run_id="logits")
    (job,) = json.loads((run_dir / "runs.json").read_text())["jobs"]
    assert job["status"] == "finished" and 0.0 <= job["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_every_job_starts_from_the_given_weights(tmp_path):
    start = tmp_path / "start.weights.h5"
    small_cnn((32, 32, 3), 2, filters=(8, 16), dense_units=16, seed=7).save_weights(start)
    experiment = write_experiment(tmp_path, ['weights = "start.weights.h5"', "filters = [8, 16]", "dense_units = 16"])
    run_dir = run_base(tmp_path, experiment, "train.seeds=[0, 1]", "train.epochs=1", "run.jobs_at_once=2")
    given = small_cnn((32, 32, 3), 2, filters=(8, 16), dense_units=16, seed=0)
    given.load_weights(start)
    for seed in (0, 1):
        model = small_cnn((32, 32, 3), 2, filters=(8, 16), dense_units=16, seed=seed)
        model.load_weights(run_dir / "weights" / f"initial-seed{seed}.weights.h5")
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), given.get_weights()))


@pytest.mark.slow
def test_a_resume_and_a_rerun_warn_when_the_network_file_changed(tmp_path, capsys):
    run_dir = run_base(tmp_path, write_experiment(tmp_path, ['build = "my_nets.py:build"']), "train.epochs=1")
    recorded = config.read_toml(run_dir / "config.toml")["model"]["build_sha256"]
    assert recorded == hashlib.sha256((tmp_path / "my_nets.py").read_bytes()).hexdigest()
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert "differ from when the run started" not in capsys.readouterr().out
    with open(tmp_path / "my_nets.py", "a") as handle:
        handle.write("# changed\n")
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert "warning: function_files differ from when the run started" in capsys.readouterr().out
    assert cli.main(["run", str(run_dir / "config.toml"), "--out", str(tmp_path / "again")]) == 0
    assert (f"warning: {tmp_path / 'my_nets.py'} changed since this configuration was recorded (model.build_sha256)"
            in capsys.readouterr().out)


def test_logits_and_a_mixed_precision_become_float32_probabilities_after_the_given_weights(tmp_path):
    from augcompare.augment.backend import tf
    from augcompare.experiments.training import Trainer
    start = tmp_path / "start.weights.h5"
    (tmp_path / "my_nets.py").write_text(NETS)
    own = {"build": f"{tmp_path / 'my_nets.py'}:logits"}
    given = load_function(own["build"])((16, 16, 3), 2, 3)  # the user's logits network, saved as built
    given.save_weights(start)
    experiment = config.build({"model": {**own, "from_logits": True, "weights": str(start)},
                               "train": {"precision": "mixed_float16"}, "arms": {"baseline": {}}})
    trainer = Trainer(experiment, "baseline", (16, 16, 3), 2, (0.0, 255.0), 1, tf.distribute.get_strategy())
    assert trainer.classifier.output.dtype == "float32"
    images = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    probabilities = trainer.classifier(images).numpy()
    assert np.allclose(probabilities, keras.ops.softmax(given(images)).numpy(), atol=1e-2)  # float16 inside
    experiment = config.build({"model": {"name": "resnet20"}, "train": {"precision": "mixed_float16"},
                               "arms": {"baseline": {}}})
    trainer = Trainer(experiment, "baseline", (16, 16, 3), 2, (0.0, 255.0), 1, tf.distribute.get_strategy())
    assert trainer.classifier.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"


def test_a_subclassed_model_that_makes_its_weights_when_called_is_checked_and_counted(tmp_path):
    experiment = write_experiment(tmp_path, ['build = "my_nets.py:subclassed"'])
    model = config.load(experiment).model
    parameters, flops = networks.cost(model, (16, 16, 3), 2)  # two builds from one seed give the same weights
    assert parameters == 4 * 27 + 4 + 4 * 2 + 2
    assert flops == 3 * 2 * (4 * 27 + 4 + 4 * 2 + 2)  # its layers' shapes are unknown: 2 per weight


def test_the_bundled_resnet20_experiment_parses():
    experiment = config.load("resnet20_cifar10")
    assert experiment.model.name == "resnet20" and experiment.data.name == "cifar10"
    assert experiment.data.image_size == 32 and len(experiment.arms) >= 2
    parameters, flops = networks.cost(experiment.model, (32, 32, 3), 10)
    assert round(flops / 1e6) == 246  # as its comment says
    comment = " ".join(line.lstrip("# ") for line in config.bundled()["resnet20_cifar10"].read_text().splitlines())
    assert "246 MFLOPs to train on an image" in comment


@pytest.mark.parametrize("model, message", [
    (['build = "missing.py:build"'], "model: build file .*missing.py does not exist"),
    (['name = "resnet21"'], "model.name = 'resnet21' is not a network; choose one of small_cnn, resnet20"),
    (['name = "resnet20"', "dense_units = 64"], "model.dense_units sets the small CNN, but model.name = 'resnet20'"),
    (['weights = "start.h5"'], "must be a .keras or .weights.h5 file"),
    (['weights = "gone.keras"'], "model.weights file .*gone.keras does not exist"),
    (['build = "my_nets.py:nothing"'], "model.build: .*has no function 'nothing'; it defines: build, logits"),
    (['build = "my_nets.py:explode"'], "model.build .*explode failed for input_shape=\\(32, 32, 3\\), num_classes=2: "
                                       "RuntimeError: a bug in my network"),
    (['build = "my_nets.py:not_a_model"'], "returned str, not a keras.Model"),
    (['build = "my_nets.py:three_outputs"'], "returns \\[2, 3\\] for a batch of 2 images; it must return one output "
                                             "of shape \\[2\\]"),
    (['build = "my_nets.py:fixed_input"'], "does not take the data's images of shape \\[32, 32, 3\\]"),
    (['build = "my_nets.py:random_each_time"'], "builds different initial weights from the same seed; pairing needs a "
                                                "deterministic build"),
    (['weights = "other.weights.h5"'], "model.weights .*other.weights.h5 does not fit this network"),
    (['name = "keras:MobileNetV3Smal"'], "keras.applications has no MobileNetV3Smal; choose one of"),
    (['name = "keras:InceptionV3"'], "does not take 32x32x3 images .*; raise data.image_size"),
])
def test_mistakes_in_the_model_are_one_line_errors_before_the_data_is_prepared(tmp_path, capsys, model, message):
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save_weights(tmp_path / "other.weights.h5")
    (tmp_path / "start.h5").write_text("")
    experiment = write_experiment(tmp_path, model)
    sets = BASE + [f"data.cache_dir={tmp_path / 'cache'}"]
    assert cli.main(["run", str(experiment), "--out", str(tmp_path / "out")] + overrides(*sets)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(message, error), error
    assert not list((tmp_path / "out").glob("*/*"))  # no run directory is left
    assert not (tmp_path / "cache").exists()  # before any data is drawn or prepared


def test_a_network_that_does_not_fit_stops_a_prepared_source_before_anything_is_decoded(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(100) % 2)
    experiment = write_experiment(tmp_path, ['name = "keras:InceptionV3"'])
    sets = BASE + [f"data.cache_dir={tmp_path / 'cache'}", "data.source=arrays", f"data.path={tmp_path / 'data.npz'}"]
    assert cli.main(["run", str(experiment), "--out", str(tmp_path / "out")] + overrides(*sets)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "does not take 32x32x3 images" in error, error
    prepared = [p for p in (tmp_path / "cache").glob("*arrays-*") if not p.name.endswith(".lock")]
    assert not prepared  # nothing prepared, not even begun
