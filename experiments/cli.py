"""The augcompare command line."""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter off the terminal


# augcompare prepare's options: [data] settings, given as TOML values (--categories bedroom,tower too).
PREPARE_OPTIONS = {
    "categories": "lsun: comma-separated, in label order",
    "name": "tfds | keras: the data set (TFDS's name; keras: cifar10, cifar100, fashion_mnist or mnist)",
    "names": "tfds: one data set per class instead, comma-separated, in label order (lsun/bedroom,lsun/tower)",
    "data_dir": "tfds: TFDS's data directory; keras: the folder of Keras' files (default: the library's own)",
    "download": "tfds | keras: true fetches a data set that is not on disk",
    "train_per_class": "training images per class, or all (every image left after val and test)",
    "val_per_class": "validation images per class (they decide: early stopping, selection)",
    "test_per_class": "test images per class (they only report)",
    "image_size": "images are resized and cropped to this size (values: their own size)",
    "seed": "which images are taken",
    "workers": "decoding processes (0 = all cores)",
    "max_skip_fraction": "undecodable images tolerated before preparation fails",
}


def _parser():
    parser = argparse.ArgumentParser(
        prog="augcompare",
        description="Paired experiments: does an augmentation set make a small CNN generalize better?")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train every arm for every seed and write a run directory")
    run.add_argument("experiment", nargs="?",
                     help="experiment .toml file or bundled experiment name, e.g. ablation (default: the demo)")
    run.add_argument("--out", default="results", help="results root; the run goes to OUT/<name>/<run-id>/")
    run.add_argument("--run-id", help="name of the run directory (default: YYYYmmdd-HHMMSS)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting, e.g. --set train.epochs=3 --set train.seeds=[0]")
    run.add_argument("--resume", metavar="RUN_DIR",
                     help="continue an interrupted run: ended runs are kept, the others go on from their last epoch; "
                     "--set train.seeds=[...] with more seeds trains the added seeds' jobs")
    run.add_argument("--per-seed", action="store_true", help="draw each seed's curve as a thin line too")
    run.add_argument("--estimate", action="store_true",
                     help="print the plan and the predicted wall time, measured on this machine (a build, a few "
                     "training steps and an evaluation of each arm); trains no job and writes no run directory")
    run.add_argument("--json", metavar="FILE", help="with --estimate: also write the prediction to this JSON file")
    run.add_argument("--quiet", action="store_true",
                     help="print the plan, a progress bar and the answer, not a line per epoch and job")

    plot = commands.add_parser("plot", help="redraw every figure of a run directory from its saved history")
    plot.add_argument("run_dir")
    plot.add_argument("--per-seed", action="store_true", help="draw each seed's curve as a thin line too")

    analyze = commands.add_parser("analyze", help="a run's summary and figures again with other analysis settings, "
                                  "into RUN_DIR/analyses/<name>/ (trains nothing, changes none of the run's files)")
    analyze.add_argument("run_dir")
    analyze.add_argument("--set", dest="overrides", action="append", default=[], metavar="analysis.KEY=VALUE",
                         help="primary, min_effect, baseline or comparisons, e.g. --set analysis.comparisons=all")
    analyze.add_argument("--name", help="the folder under RUN_DIR/analyses/ (default: from the changed settings, e.g. "
                         "min_effect-0.5_comparisons-all)")
    analyze.add_argument("--force", action="store_true", help="replace an analysis of that name")
    analyze.add_argument("--per-seed", action="store_true", help="draw each seed's curve as a thin line too")

    show = commands.add_parser("preview", help="draw originals and augmented variants to a PNG")
    show.add_argument("experiment", nargs="?", help="experiment .toml file or bundled name (default: the demo)")
    show.add_argument("--arm", help="only this arm (default: every augmenting arm)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--count", type=int, default=6, help="how many sample images (rows)")
    show.add_argument("--variants", type=int, default=5, help="augmented variants per arm (columns)")
    show.add_argument("--output", default="augmentations.png", help="where to write the grid")

    listing = commands.add_parser("augmentations", help="list the operations, their valid ranges and the presets")
    listing.add_argument("experiment", nargs="?", help="also list the presets this experiment's preset_files add")
    listing.add_argument("--keras", action="store_true",
                         help="also list the Keras 3 preprocessing layers an arm can use (loads TensorFlow)")

    commands.add_parser("experiments", help="list the bundled experiments, which run by name (augcompare run ablation)")

    prepare = commands.add_parser("prepare", help="decode a data set once into a cache that training memory-maps")
    prepare.add_argument("source", choices=["lsun", "folder", "npy", "arrays", "tfds", "keras"])
    prepare.add_argument("--root", help="the LSUN folder, image folder or .npy folder; arrays: the .npz file or .npy "
                         "folder (tfds and keras: --name instead)")
    prepare.add_argument("--out", required=True, help="the cache directory to write")
    # Each option is a [data] setting: its default and valid range live in experiments.config.
    from augcompare.experiments.config import DataConfig
    for option, help_text in PREPARE_OPTIONS.items():
        default = getattr(DataConfig(), option)
        shown = f" (default: {default})" if default not in ((), "") else ""
        prepare.add_argument(f"--{option.replace('_', '-')}", help=help_text + shown)

    bench = commands.add_parser("bench", help="measure speed ratios side by side in one run")
    bench.add_argument("names", nargs="*", metavar="NAME",
                       help="pipeline, training, memory, prepare and/or run (default: the first four; run times the "
                       "whole demo command, a few minutes per variant)")
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.add_argument("--experiment", help="training: measure every arm of this experiment file or bundled name; "
                       "run: run this experiment (default: the demo)")
    bench.add_argument("--variant", dest="variants", action="append", metavar="NAME",
                       help="run: the variants run side by side, any of default, one-job-at-a-time, two-jobs-at-once, "
                       "eigen, onednn-avx2, mixed_bfloat16 (default: default and one-job-at-a-time)")
    bench.add_argument("--repeat", type=int, default=1, metavar="K",
                       help="run: run each variant K times, the variants in turn, and report the median and range")
    return parser


def _run(args):
    from augcompare.experiments import timing
    with timing.span("run: start-up (imports)"):
        from augcompare.experiments import config, run
    if args.json and not args.estimate:
        raise config.UserError("--json writes the prediction of --estimate; add --estimate, or leave --json out")
    if args.estimate:
        if args.resume:
            raise config.UserError("--estimate predicts a new run; leave --resume out (the resumed run's ETA shows "
                                   "as it trains)")
        from augcompare.experiments.estimate import estimate
        estimate(config.load(args.experiment, args.overrides), args.json)
        return
    if args.resume:
        if args.experiment or args.run_id:
            raise config.UserError("--resume takes only the run directory (and --set train.seeds=[...] to add seeds); "
                                   "its config.toml says the rest")
        run_dir = run.resume(args.resume, per_seed=args.per_seed, overrides=args.overrides, quiet=args.quiet)
    else:
        experiment = config.load(args.experiment, args.overrides)
        run_dir = run.start(experiment, args.out, args.run_id, per_seed=args.per_seed, quiet=args.quiet)
    print(f"results in {run_dir}")


def _plot(args):
    from augcompare.experiments import outputs
    print(outputs.redraw(args.run_dir, per_seed=args.per_seed), end="")
    print(f"figures redrawn in {args.run_dir}")


def _analyze(args):
    from augcompare.experiments.analyze import analyze
    folder, markdown = analyze(args.run_dir, args.overrides, args.name, args.force, args.per_seed)
    print(markdown, end="")
    print(f"analysis written to {folder}")


def _preview(args):
    from augcompare.augment.params import augments
    from augcompare.experiments import config, preview
    from augcompare.experiments.data import load_dataset
    from augcompare.experiments.training import check_arms
    experiment = config.load(args.experiment, args.overrides)
    arms = experiment.arms
    if args.arm:
        if args.arm not in arms:
            raise config.UserError(f"no arm {args.arm!r}; arms: {', '.join(arms)}")
        if not augments(arms[args.arm]):
            raise config.UserError(f"arm {args.arm!r} has no augmentation: there is nothing to preview; name an arm "
                                   f"that augments (arms: {', '.join(a for a in arms if augments(arms[a])) or 'none'})")
        arms = {args.arm: arms[args.arm]}
    if not any(augments(settings) for settings in arms.values()):
        raise config.UserError("no augmenting arm to preview; add one to the experiment")
    if args.count < 1 or args.variants < 1:
        raise config.UserError("--count and --variants must be at least 1")
    dataset = load_dataset(experiment.data)
    check_arms(experiment, dataset)  # a Keras argument the layer refuses, a function that fails: one line
    samples, labels = preview.pick_samples(dataset.train_images, dataset.train_labels, args.count)
    preview.draw(samples, labels, dataset.class_names, arms, dataset.value_range, Path(args.output), args.variants)
    print(f"wrote {args.output}")


def _augmentations(args):
    from augcompare.augment.params import describe
    from augcompare.experiments import config
    presets = None
    if args.experiment:
        path = config.find(args.experiment)
        presets = config.read_presets(config.read_toml(path).get("preset_files", []), path.parent)
    print("\n".join(describe(presets)))
    if args.keras:
        from augcompare.augment import keras_layers
        print("\nKeras 3 preprocessing layers an arm can use (keras = [{layer = \"<name>\", <argument> = ...}]; "
              "the harness sets value_range and seed):")
        print("\n".join(keras_layers.describe()))
    else:
        print("\nKeras 3 preprocessing layers (RandAugment, AugMix, RandomErasing, ...) can be arms too: "
              "augcompare augmentations --keras lists them with their arguments.")


def _experiments(args):
    from augcompare.experiments import config
    print("bundled experiments (augcompare run <name>; copy the file from the path below to change it):")
    print("\n".join(config.describe_bundled()))
    print(f"  in {config.EXPERIMENTS_DIR}")


def _prepare(args):
    import re

    from augcompare.experiments import config
    from augcompare.experiments.errors import UserError
    from augcompare.experiments.prepare import prepare_source
    table = {"source": args.source}
    if args.root is not None:
        table["path" if args.source == "arrays" else "root"] = args.root
    elif args.source in ("lsun", "folder", "npy", "arrays"):
        raise UserError(f"augcompare prepare {args.source} needs --root, the folder (or file) holding the data")
    for option in PREPARE_OPTIONS:
        text = getattr(args, option)
        if text is None:
            continue
        if option in ("categories", "names"):
            table[option] = [c for c in text.split(",") if c]
        else:
            table[option] = config.parse_override(f"data.{option}={text}")[1]
    try:
        data = config.data_config(table)
    except UserError as error:  # name the options as they were given
        raise UserError(re.sub(r"data\.(\w+)", lambda m: "--" + m[1].replace("_", "-"), str(error))) from None
    out = prepare_source(data, args.out)
    print(f"prepared data set in {out}")


def _bench(args):
    from augcompare.experiments import bench
    from augcompare.experiments.errors import UserError
    unknown = [name for name in args.names if name not in bench.BENCHMARKS]
    if unknown:
        raise UserError(f"no benchmark {unknown[0]!r}; choose from {', '.join(bench.BENCHMARKS)}")
    names = args.names or [name for name in bench.BENCHMARKS if name != "run"]
    experiment = None
    if args.variants and "run" not in names:
        raise UserError("--variant chooses what `run` measures; add run to the benchmarks named")
    unknown = [name for name in args.variants or () if name not in bench.RUN_VARIANTS]
    if unknown:
        raise UserError(f"no variant {unknown[0]!r}; choose from {', '.join(bench.RUN_VARIANTS)}")
    if args.repeat != 1 and "run" not in names:
        raise UserError("--repeat repeats what `run` measures; add run to the benchmarks named")
    if args.repeat < 1:
        raise UserError(f"--repeat {args.repeat} runs nothing; give 1 or more")
    if args.experiment:
        if "training" not in names and "run" not in names:
            raise UserError("--experiment is what `training` and `run` measure; add one of them to the benchmarks "
                            "named")
        from augcompare.experiments import config
        experiment = config.find(args.experiment)  # a file or a bundled experiment's name
        if not experiment.is_file():
            raise UserError(f"experiment file {experiment} does not exist; give the path of a .toml file or a "
                            "bundled experiment's name (augcompare experiments lists them)")
    bench.run(names, args.json, experiment, args.variants, args.repeat)


def main(argv=None):
    started_at = time.time()
    from augcompare.experiments.machine import lean_keras
    lean_keras()  # this process is the harness's
    args = _parser().parse_args(argv)
    from augcompare.experiments import console, timing
    from augcompare.experiments.errors import RunStopped, UserError
    handlers = {"run": _run, "plot": _plot, "analyze": _analyze, "preview": _preview, "augmentations": _augmentations,
                "experiments": _experiments, "prepare": _prepare, "bench": _bench}
    try:
        with timing.written_if_asked(started_at):
            handlers[args.command](args)
    except UserError as error:
        console.line(f"augcompare: error: {error}")  # below an open progress line, never glued to it
        return 2
    except RunStopped as error:
        console.line(f"augcompare: {error}")
        return error.exit_code
    except KeyboardInterrupt as error:  # Interrupted says what is kept and what continues it
        console.line(f"augcompare: {error}" if str(error) else "augcompare: interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
