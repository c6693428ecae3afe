"""GPUs used right, tested with stand-in device lists (no GPU needed): the plan counts GPUs and
their memory, each worker sees its one GPU with memory growth on, the plan line suggests
mixed_float16 where it pays, and environment.json records each GPU."""

import os
import stat

import pytest

from augcompare.experiments import config, executors, gpus, planning
from augcompare.experiments.config import RunConfig

LISTING = """0, GPU-aaaa-1111, NVIDIA H100 80GB HBM3, 81559, 550.54.15, 9.0
1, GPU-bbbb-2222, NVIDIA H100 80GB HBM3, 81559, 550.54.15, 9.0
"""
H100 = gpus.parse(LISTING)
OLD = gpus.GPU(index="0", uuid="GPU-cccc", name="Tesla P100", memory_bytes=16 * 2**30, driver="470.1",
               compute_capability=(6, 0))
SMALL_STEP, LARGE_STEP = 2e9, 1e12  # the demo's step (32 images of 32 px); one far past the crossover


def test_the_listing_gives_each_gpus_model_memory_driver_and_capability():
    assert [gpu.index for gpu in H100] == ["0", "1"]
    assert H100[0].name == "NVIDIA H100 80GB HBM3" and H100[0].memory_bytes == 81559 * 2**20
    assert H100[0].driver == "550.54.15" and H100[0].compute_capability == (9, 0)
    assert gpus.parse("0, GPU-x, Old card, 4096, 390.1, [N/A]\n")[0].compute_capability == ()


@pytest.mark.parametrize(("visible", "indices"), [
    (None, ["0", "1"]), ("1", ["1"]), ("1,0", ["1", "0"]), ("GPU-bbbb-2222", ["1"]), ("GPU-bbbb", ["1"]),
    ("", []), ("-1", []), ("0,7,1", ["0"]),  # CUDA stops at the first it cannot use
])
def test_cuda_visible_devices_narrows_the_gpus_as_cuda_does(visible, indices):
    assert [gpu.index for gpu in gpus.parse(LISTING, visible)] == indices


def test_detect_reads_nvidia_smi_and_finds_none_without_it(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{LISTING}EOF\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpus.detect({"CUDA_VISIBLE_DEVICES": "1"}) == [H100[1]]
    assert gpus.detect({}) == H100
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gpus.detect({}) == []


def test_a_small_models_steps_share_a_gpu_and_a_large_ones_take_it_alone():
    assert gpus.jobs_per_gpu(SMALL_STEP, H100[0]) == gpus.MAX_JOBS_PER_GPU
    assert gpus.jobs_per_gpu(LARGE_STEP, H100[0]) == 1
    small_card = gpus.GPU(index="0", name="small", memory_bytes=3 * 2**30)
    assert gpus.jobs_per_gpu(SMALL_STEP, small_card) == 1  # as many as its memory holds


@pytest.mark.parametrize(("cores", "gpu_list", "step", "setting", "expected"), [
    (16, H100, SMALL_STEP, RunConfig(), (8, 2)),            # 4 on each GPU, the cores shared among them
    (16, H100, LARGE_STEP, RunConfig(), (2, 8)),            # one job per GPU, not one per core
    (16, H100[:1], LARGE_STEP, RunConfig(), (1, 16)),       # one GPU: one job at a time
    (2, H100, SMALL_STEP, RunConfig(), (2, 1)),             # no more jobs than cores to feed them
    (16, H100, SMALL_STEP, RunConfig(jobs_at_once=3), (3, 5)),  # the user's count
    (16, [], SMALL_STEP, RunConfig(), (12, 1)),             # no GPU: the cores, as before
    (16, H100, SMALL_STEP, RunConfig(executor="ray"), (1, 1)),  # Ray reserves its GPUs itself
])
def test_the_default_plan_counts_gpus_not_cores(monkeypatch, cores, gpu_list, step, setting, expected):
    monkeypatch.setattr(executors, "available_cores", lambda: cores)
    monkeypatch.setattr(executors, "memory_bytes", lambda: 128 * 2**30)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert executors.plan(setting, 12, 1e13, gpus=gpu_list, step_flops=step) == expected


def test_a_resumed_run_on_gpus_keeps_its_threads_and_the_gpus_count(monkeypatch):
    monkeypatch.setattr(executors, "available_cores", lambda: 16)
    assert executors.plan(RunConfig(), 12, 1e13, threads=2, gpus=H100, step_flops=SMALL_STEP) == (8, 2)
    assert executors.plan(RunConfig(), 12, 1e13, threads=2, gpus=H100, step_flops=LARGE_STEP) == (2, 2)


class FakePopen:
    """Records what a worker process would have been started with."""
    started = []

    def __init__(self, command, **options):
        self.command, self.options = command, options
        FakePopen.started.append(self)

    def poll(self):
        return 0


def test_each_worker_sees_its_own_gpu_with_memory_growth_before_tensorflow_loads(monkeypatch):
    FakePopen.started = []
    monkeypatch.setattr(executors.subprocess, "Popen", FakePopen)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    pool = executors.WorkerPool(3, 2, H100)
    environments = [process.options["env"] for process in FakePopen.started]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in environments] == ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-aaaa-1111"]
    assert all(env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for env in environments)
    assert all(env["PATH"] == os.environ["PATH"] for env in environments)  # the rest as the driver's
    for worker in pool.workers:
        worker.connection.close()


def test_without_gpus_a_worker_gets_the_drivers_environment(monkeypatch):
    FakePopen.started = []
    monkeypatch.setattr(executors.subprocess, "Popen", FakePopen)
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    pool = executors.WorkerPool(2, 1)
    assert all(process.options["env"] == dict(os.environ) for process in FakePopen.started)
    for worker in pool.workers:
        worker.connection.close()


def test_the_plan_line_names_the_gpus_and_suggests_float16_where_it_is_fast():
    line = gpus.plan_line(H100, 8, "float32")
    assert "2 x NVIDIA H100 80GB HBM3" in line and "up to 4 jobs on each" in line and "mixed_float16" in line
    assert "mixed_float16" not in gpus.plan_line(H100, 8, "mixed_float16")  # already
    assert "mixed_float16" not in gpus.plan_line([OLD], 1, "float32")  # no fast float16 before 7.0
    assert gpus.plan_line([], 2, "float32") is None


def test_environment_json_records_each_gpus_model_and_driver():
    tensorflow = {"tensorflow": "2", "keras": "3", "devices": [], "replicas": 1, "kernels": {}}
    recorded = planning.environment(config.load(), 8, 2, tensorflow, gpus=H100)
    assert recorded["gpus"] == [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * 2**20,
                                 "driver": "550.54.15", "compute_capability": "9.0"}] * 2
    assert planning.environment(config.load(), 1, 2, tensorflow)["gpus"] == []
