"""The benchmarks run and report what they measure (their speeds are never asserted: speed
targets are read from `augcompare bench`, not from timed tests)."""

import importlib.util

import pytest

from augcompare.experiments import bench


def test_pipeline_bench_reports_every_pipeline_and_the_ratio():
    result = bench.bench_pipeline(count=128, size=16, batch_size=16, seconds=0.05, rounds=1, log=lambda line: None)
    names = set(result["images_per_s"])
    assert {"get_generator_cyclic, no augmentation (floor)", "get_generator_cyclic, standard set",
            "tf.data + Keras 3 layers (anchor)"} <= names
    assert ("albumentations per image (anchor)" in names) == (importlib.util.find_spec("albumentations") is not None)
    assert all(value > 0 for value in result["images_per_s"].values()) and result["ratio_vs_best_anchor"] > 0


@pytest.mark.slow
def test_memory_bench_measures_both_sizes():
    result = bench.bench_memory(small=200, large=400, size=8, batch_size=32, log=lambda line: None)
    assert set(result["peak_rss_anon_kib"]) == {200, 400} and result["ratio"] > 0


@pytest.mark.slow
def test_training_bench_times_every_arm_of_an_experiment(tmp_path):
    experiment = tmp_path / "two.toml"
    experiment.write_text('name = "two"\n[data]\nimage_size = 16\ntrain_per_class = 16\nval_per_class = 4\n'
                          f'test_per_class = 4\ncache_dir = "{tmp_path / "cache"}"\n'
                          '[model]\nfilters = [4]\ndense_units = 8\n'
                          '[arms.baseline]\n[arms.flip]\nhorizontal_flip = true\n[arms.mixup]\nmixup = 0.2\n')
    result = bench.bench_training(epochs=1, experiment_path=experiment, log=lambda line: None)
    assert result["baseline"] == "baseline"
    assert set(result["seconds_per_epoch"]) == {"baseline", "flip", "mixup", "Keras 3 layers in tf.data (anchor)"}
    assert all(value > 0 for value in result["seconds_per_epoch"].values())


@pytest.mark.slow
def test_prepare_bench_measures_speed_and_the_memory_of_two_sizes():
    result = bench.bench_prepare(count=40, size=16, memory_counts=(20, 40), log=lambda line: None)
    assert result["ratio"] > 0 and result["single_process_images_per_s"] > 0
    assert set(result["peak_rss_anon_kib"]) == {20, 40} and all(v > 0 for v in result["peak_rss_anon_kib"].values())
    assert result["memory_ratio"] > 0


def test_bench_takes_a_bundled_experiment_by_name_and_refuses_what_it_would_ignore(capsys):
    from augcompare.experiments import cli
    assert cli.main(["bench", "training", "--experiment", "polices"]) == 2
    assert "no bundled experiment of that name; bundled: " in capsys.readouterr().err
    assert cli.main(["bench", "pipeline", "--experiment", "policies"]) == 2
    assert "--experiment is what `training` and `run` measure" in capsys.readouterr().err
    assert cli.main(["bench", "pipeline", "--variant", "eigen"]) == 2
    assert "--variant chooses what `run` measures" in capsys.readouterr().err
    assert cli.main(["bench", "run", "--variant", "fast"]) == 2
    assert "no variant 'fast'; choose from default, one-job-at-a-time" in capsys.readouterr().err


def test_bench_run_reads_each_variants_answer_from_its_summary():
    import json
    from pathlib import Path
    summary = json.loads((Path(__file__).parent.parent / "results/demo/reference/summary.json").read_text())
    ((arm, (mean, low, high, verdict)),) = bench._answer(summary).items()
    primary = summary["vs_baseline"]["augmented"]["primary"]
    assert arm == "augmented" and verdict == primary["verdict"] == "better"
    assert (mean, low, high) == (100 * primary["mean"], 100 * primary["ci95"][0], 100 * primary["ci95"][1])
    assert low < mean < high


def test_bench_run_repeats_the_variants_in_turn_and_reports_the_median_and_range(tmp_path, monkeypatch):
    """--repeat 3: A, B, A, B, A, B, each run's figures kept, the median and range of each
    variant's wall time reported (the runs themselves stand in: a whole run is minutes)."""
    import json
    experiment = tmp_path / "tiny.toml"
    experiment.write_text('name = "tiny"\n[data]\nimage_size = 16\ntrain_per_class = 8\nval_per_class = 2\n'
                          'test_per_class = 2\n[arms.baseline]\n[arms.flip]\nhorizontal_flip = true\n')
    walls = {"default": iter([30.0, 10.0, 20.0]), "eigen": iter([40.0, 44.0, 42.0])}
    order = []

    def timed_run(experiment_path, cache_dir, out, variant, run_id):
        order.append(variant)
        wall = next(walls[variant])
        document = {"spans": {"run: data": wall / 10, "job: training steps": wall / 2}, "startup_seconds": 1.0}
        environment = {"jobs_at_once": 1, "threads_per_job": 1, "kernels": {"onednn": variant == "default"}}
        return wall, document, environment, {"flip": (1.0, -1.0, 3.0, "inconclusive")}
    monkeypatch.setattr(bench, "_timed_run", timed_run)
    lines = []
    written = tmp_path / "bench.json"
    bench.run(["run"], str(written), experiment, ["default", "eigen"], repeat=3, log=lines.append)
    assert order == ["default", "eigen"] * 3
    result = json.loads(written.read_text())["figures"]["run"]
    assert result["repeat"] == 3
    default, eigen = result["variants"]["default"], result["variants"]["eigen"]
    assert [run["wall_seconds"] for run in default["repeats"]] == [30.0, 10.0, 20.0]
    assert default["wall_seconds"] == 20.0 and default["wall_seconds_range"] == [10.0, 30.0]
    assert eigen["wall_seconds"] == 42.0 and eigen["wall_seconds_range"] == [40.0, 44.0]
    assert default["parts_seconds"]["run: data"] == 2.0  # the median of each part too
    assert eigen["speed_vs_first"] == round(20.0 / 42.0, 3)
    assert any(line.strip().startswith("wall time range over 3 runs") and "10.0-30.0 s" in line for line in lines)


def test_bench_refuses_a_repeat_it_would_ignore_or_that_runs_nothing(capsys):
    from augcompare.experiments import cli
    assert cli.main(["bench", "pipeline", "--repeat", "3"]) == 2
    assert "--repeat repeats what `run` measures; add run" in capsys.readouterr().err
    assert cli.main(["bench", "run", "--repeat", "0"]) == 2
    assert "--repeat 0 runs nothing; give 1 or more" in capsys.readouterr().err


def test_bench_json_writes_a_record_that_the_docs_render(tmp_path, monkeypatch):
    """--json writes a record for results/bench/: the machine, versions, command and date beside the
    figures, in the form docs/generate.py draws the speed tables from."""
    import json
    from pathlib import Path
    figures = {"peak_rss_anon_kib": {10: 1024, 20: 2048}, "ratio": 2.0}
    monkeypatch.setitem(bench.BENCHMARKS, "memory", lambda log: figures)
    bench.run(["memory"], json_path=tmp_path / "m.json", log=lambda line: None)
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["command"] == f"augcompare bench memory --json {tmp_path / 'm.json'}"
    assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1
    assert {"augcompare", "Python", "TensorFlow", "Keras", "NumPy"} <= set(record["versions"])
    assert record["figures"] == {"memory": {"peak_rss_anon_kib": {"10": 1024, "20": 2048}, "ratio": 2.0}}
    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("augcompare_docs_generate", root / "docs" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    ((name, read),) = generate.read_records(tmp_path)
    text = generate.measurements(tmp_path, benchmark="memory")
    assert record["command"] in text and record["machine"]["cpu"] in text and "| 20 | 2.0 MiB |" in text
