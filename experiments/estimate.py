"""The cost before the compute: `augcompare run --estimate` predicts a run's wall time on this
machine without training a job or writing a run directory.

It reads or prepares the data as the run would, plans the run as it would (experiments.run's
Run.executor_plan: jobs at once, threads, GPUs), starts the same executor and sets it up (the
workers' start-up, the checks and the preview grid, drawn into a scratch folder), then has every
process that would train jobs measure each arm side by side (experiments.job.measure: a build, a
few training steps after a warm-up, a val and a test evaluation, a checkpoint). The run is then
the plan's jobs, in the run's order, on the measured costs, scheduled as the executor hands them
out (schedule()). Assumed, not measured: every job trains all its epochs (no early stop), each
job evaluates the test split twice (final and val-selected weights) and the summary and figures
take END_SECONDS.
"""

import tempfile
import time
from pathlib import Path

from augcompare.experiments import config as config_mod
from augcompare.experiments import gpus as gpus_mod
from augcompare.experiments import planning
from augcompare.experiments import run as run_mod
from augcompare.experiments.executors import make_executor
from augcompare.experiments.files import write_json
from augcompare.experiments.jobfiles import Measure, Setup
from augcompare.experiments.progress import duration

# The summary, its figures and the merges at a run's end (the demo's, timed with
# AUGCOMPARE_TIMINGS on 2 cores: about 3 s).
END_SECONDS = 3.0
TEST_EVALUATIONS = 2  # the final weights, and the val-selected epoch's where it is another


def job_seconds(costs, epochs, steps):
    """Seconds one job of an arm takes once its arm is compiled in its process: costs, one arm's
    measured parts (experiments.job.measure)."""
    epoch = steps * costs["step"] + costs["validation"] + costs["checkpoint"]
    return costs["fit_start"] + epochs * epoch + TEST_EVALUATIONS * costs["test"]


def schedule(jobs, workers, seconds, compile_seconds, start=0.0, compiled=None):
    """When the last of `jobs` ((arm, seed), in the run's order), a stage begun at `start`, ends on
    `workers` processes that each take the next job of an arm they have compiled where there is one,
    else the next in order (as WorkerPool hands them out): seconds[arm] a job, compile_seconds[arm]
    an arm's first job in a process. compiled: the arms each process compiled in an earlier stage
    (a stage begins when the one before has ended: the run plans the next from it). Returns (end,
    compiled)."""
    state = [(start, set(arms)) for arms in (compiled or [()] * workers)]
    queue = list(jobs)
    while queue:
        index = min(range(len(state)), key=lambda i: state[i][0])
        free, arms = state[index]
        job = next((job for job in queue if job[0] in arms), queue[0])
        queue.remove(job)
        arm = job[0]
        free += seconds[arm] + (0.0 if arm in arms else compile_seconds[arm])
        state[index] = (free, arms | {arm})
    return max((t for t, _ in state), default=start), [arms for _, arms in state]


def _mean_costs(answers, arm):
    parts = answers[0]["arms"][arm]
    return {part: sum(answer["arms"][arm][part] for answer in answers) / len(answers) for part in parts}


def estimate(experiment, json_path=None, log=print):
    """Predicts the run of `experiment` on this machine and prints the plan and the prediction;
    returns (and writes to json_path) {"jobs", "jobs_most", "jobs_at_once", "threads_per_job",
    "seconds": {"expected", "most", "start_up"}, "arms": {arm: measured seconds of each part}}.
    expected: the run (a two-stage design: its pilot); most: every seed it may run."""
    dataset = planning.checked_data(experiment)
    with tempfile.TemporaryDirectory(prefix="augcompare-estimate-") as scratch:
        # The run's own planner, on an empty folder: the same plan the run would make.
        planner = run_mod.Run(scratch, experiment, dataset, lambda line: None, False)
        jobs_at_once, threads = planner.executor_plan()
        counts = {split: len(dataset.split(split)[1]) for split in ("train", "val", "test")}
        for line in planning.plan_lines(experiment, counts["test"]):
            log(line)
        if line := gpus_mod.plan_line(planner.gpus, jobs_at_once, experiment.train.precision):
            log(line)
        log(f"{jobs_at_once} job{'s' if jobs_at_once > 1 else ''} at once on {threads} TensorFlow "
            f"thread{'s' if threads > 1 else ''} each; measuring every arm "
            f"{'side by side in each process' if jobs_at_once > 1 else 'in one process'} (trains no job)")
        began = time.time()
        executor = make_executor(experiment.run, jobs_at_once, threads, planner.gpus)
        try:
            executor.set_up(Setup(str(dataset.path), config_mod.to_dict(experiment), scratch))
            answers = executor.measure(Measure(str(dataset.path), config_mod.to_dict(experiment)))
        finally:
            executor.close()
    start_up = max(0.0, min(answer["began"] for answer in answers) - began)
    from augcompare.experiments.training import steps_per_epoch  # loads TensorFlow: after the start-up is timed
    train = experiment.train
    steps = steps_per_epoch(counts["train"], train.batch_size)
    arms = {arm: _mean_costs(answers, arm) for arm in experiment.arms}
    seconds = {arm: job_seconds(costs, train.epochs, steps) for arm, costs in arms.items()}
    compile_seconds = {arm: costs["build"] + costs["trace"] for arm, costs in arms.items()}
    first = [(arm, seed) for seed in planner.seeds() for arm in experiment.arms]
    rest = [(arm, seed) for seed in planner.candidates if seed not in planner.seeds() for arm in experiment.arms]
    pilot_end, compiled = schedule(first, jobs_at_once, seconds, compile_seconds)
    most_end, _ = schedule(rest, jobs_at_once, seconds, compile_seconds, pilot_end, compiled)
    expected = start_up + pilot_end + END_SECONDS
    most = start_up + most_end + END_SECONDS
    for arm, costs in arms.items():
        log(f"  {arm}: build and trace {compile_seconds[arm]:.1f} s, {costs['step'] * 1000:.0f} ms a step x {steps} "
            f"steps x {train.epochs} epochs, validation {costs['validation']:.1f} s an epoch, test "
            f"{costs['test']:.1f} s: {duration(seconds[arm])} a job")
    two_stage = bool(experiment.analysis.target_half_width)
    log(f"predicted wall time: {duration(expected)}" + (f" for the pilot's {len(first)} jobs, at most "
                                                        f"{duration(most)} for all {len(first) + len(rest)}"
                                                        if two_stage else f" for {len(first)} jobs")
        + f" (start-up {duration(start_up)}); no job trained, no run directory written")
    result = {"jobs": len(first), "jobs_most": len(first) + len(rest), "jobs_at_once": jobs_at_once,
              "threads_per_job": threads,
              "seconds": {"expected": round(expected, 2), "most": round(most, 2), "start_up": round(start_up, 2)},
              "arms": {arm: {part: round(value, 4) for part, value in costs.items()} for arm, costs in arms.items()}}
    if json_path:
        write_json(Path(json_path), result)
    return result
