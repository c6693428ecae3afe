"""What decides a run's numbers and speed besides the code: oneDNN's kernels (on unless the user
says otherwise), the precision, and where the time goes (experiments.timing, read by
`augcompare bench run`)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import run_small

from augcompare.experiments.machine import kernels
from augcompare.augment.keras_layers import _example_spec, usable_layers
from augcompare.experiments import bench, executors, timing

SHOW_KERNELS = "import json; from augcompare.experiments.machine import kernels; print(json.dumps(kernels()))"


@pytest.mark.slow
@pytest.mark.parametrize(("value", "onednn"), [(None, True), ("0", False)])  # unset: set to 1; the user's value wins
def test_onednn_is_on_unless_the_user_turns_it_off(value, onednn):
    env = {key: item for key, item in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = value
    shown = json.loads(subprocess.run([sys.executable, "-c", SHOW_KERNELS], env=env, capture_output=True, text=True,
                                      check=True).stdout)
    assert shown["onednn"] is onednn and shown["TF_ENABLE_ONEDNN_OPTS"] == (value or "1")


@pytest.mark.slow
def test_a_run_records_its_kernels_precision_and_where_its_time_went(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUGCOMPARE_TIMINGS", str(tmp_path / "timings.json"))
    timing.take()
    run_dir = run_small(tmp_path, "train.precision=mixed_bfloat16")
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["precision"] == "mixed_bfloat16"
    assert environment["kernels"] == {**kernels(), "intra_op_threads": environment["kernels"]["intra_op_threads"],
                                      "inter_op_threads": environment["kernels"]["inter_op_threads"]}
    assert environment["jobs_at_once"] == 1 and environment["threads_per_job"] == 1  # TF_NUM_INTRAOP_THREADS, counted
    assert environment["memory_bytes"] == executors.memory_bytes()  # what the plan counted
    without_bf16 = not {"avx512_bf16", "amx_bf16"} & set(kernels()["cpu"]["features"])
    output = capsys.readouterr().out
    assert ("mixed_bfloat16\" on a CPU without AVX512_BF16 or AMX" in output) == without_bf16
    assert "one job at a time on 1 TensorFlow thread (run.threads_per_job)" in output
    document = json.loads((tmp_path / "timings.json").read_text())
    spans = document["spans"]
    for part in ("run: data", "run: checks", "run: preview grid", "run: summary and figures", "job: build and compile",
                 "job: training steps", "job: validation", "job: test evaluation", "job: checkpoints and rows"):
        assert spans[part] > 0, part
    job_seconds = sum(job["seconds"] for job in json.loads((run_dir / "runs.json").read_text())["jobs"])
    assert sum(spans[part] for part in timing.JOB_PARTS if part in spans) == pytest.approx(job_seconds, rel=0.05,
                                                                                             abs=0.2)
    document["startup_seconds"] = 1.0
    wall = document["ended_at"] - document["main_started_at"] + 1.0
    breakdown = bench._breakdown(wall, document, environment)
    assert 0 < breakdown["training_and_evaluation_fraction"] < 1
    assert breakdown["other_fraction"] == pytest.approx(1 - breakdown["training_and_evaluation_fraction"])
    assert sum(breakdown["parts_seconds"].values()) <= wall * 1.01  # one lane: the parts fit in the wall time


def test_mixed_float16_scales_the_loss_and_keeps_float32_probabilities():
    from augcompare.augment.backend import keras, tf
    from augcompare.experiments import config
    from augcompare.experiments.training import Trainer
    experiment = config.load(overrides=["train.precision=mixed_float16", "model.filters=[4]", "model.dense_units=8"])
    trainer = Trainer(experiment, "augmented", (16, 16, 3), 2, (0.0, 255.0), 1, tf.distribute.get_strategy())
    assert isinstance(trainer.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.classifier.layers[1].compute_dtype == "float16"
    assert trainer.classifier.output.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back


@pytest.mark.parametrize("name", list(usable_layers()))
def test_every_arm_augments_in_float32_under_a_mixed_precision(name):
    """The built-in operations and Keras' layers alike: a layer built inside the model's
    mixed_bfloat16 scope (training.Trainer) still augments in float32."""
    from augcompare.augment.backend import tf
    from augcompare.augment.layer import AugmentationLayer
    from augcompare.experiments.training import precision
    with precision("mixed_bfloat16"):
        layer = AugmentationLayer(keras_layers=[_example_spec(name, usable_layers()[name])], dtype="float32")
    images = tf.random.stateless_uniform((2, 16, 16, 3), seed=(0, 1), maxval=255.0)
    (keras_layer,) = layer.keras_layers
    assert keras_layer.compute_dtype == "float32"
    assert keras_layer(images, training=True).dtype == tf.float32


@pytest.mark.slow
def test_a_resume_on_other_kernels_warns_that_its_epochs_may_differ(tmp_path, capsys):
    from augcompare.experiments import cli
    run_dir = run_small(tmp_path, "train.seeds=[0]", "train.epochs=1")
    path = run_dir / "environment.json"
    recorded = json.loads(path.read_text())
    assert recorded["kernels"]["ONEDNN_MAX_CPU_ISA"] == os.environ.get("ONEDNN_MAX_CPU_ISA")
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert "differ from when the run started" not in capsys.readouterr().out
    recorded["kernels"]["ONEDNN_MAX_CPU_ISA"] = "AVX2" if os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2" else None
    path.write_text(json.dumps(recorded))
    assert cli.main(["run", "--resume", str(run_dir)]) == 0
    assert "warning: kernels differ from when the run started" in capsys.readouterr().out
