"""Experiment configuration: TOML files, dotted overrides, validation and the resolved snapshot.

Every value is checked here, before any data is read or any model is built, and every mistake
raises UserError with a one-line message that names the key and what would be valid. Each
setting's default lives here, in its dataclass, and nowhere else.
"""

import copy
import dataclasses
import hashlib
import importlib.resources
import importlib.util
import math
import re
import tomllib
from pathlib import Path

import tomli_w

from augcompare.augment.params import MIXING, NORMALIZATIONS, PARAMS, PRESETS, check_arm, parse_function, scale_preset
from augcompare.experiments.errors import UserError
from augcompare.experiments.lsun_release import CATEGORIES as LSUN_CATEGORIES
from augcompare.models.networks import KERAS_PREFIX, NETWORKS

# The experiment files installed with the package (read through importlib.resources, so they are
# found wherever the package is installed).
EXPERIMENTS_DIR = Path(str(importlib.resources.files("augcompare.experiments")))
DEFAULT_EXPERIMENT = EXPERIMENTS_DIR / "demo.toml"
SOURCES = ("demo", "lsun", "folder", "npy", "arrays", "tfds", "keras", "cache")
# The data sets of source = "keras": the ones keras.datasets loads into ~/.keras/datasets.
KERAS_DATASETS = ("cifar10", "cifar100", "fashion_mnist", "mnist")
# data.train_per_class may also be this word: every image of a class left after val and test.
ALL = "all"
# What a run may declare as its primary metric: measured on the test split, which decides nothing,
# or at the last epoch on val. "selected_" is the test metric of the weights of the epoch that
# val chose (train.monitor).
PRIMARY_METRICS = ("test_accuracy", "test_loss", "selected_test_accuracy", "selected_test_loss",
                   "final_val_accuracy", "final_val_loss")
# The arm settings a list of values sweeps: every numeric operation, MixUp's and CutMix's alpha,
# and a preset's strength (a multiplier of its magnitudes, augment.params.scale_preset).
SWEEPABLE = (*(key for key, param in PARAMS.items() if param.kind in (int, float)), *MIXING, "strength")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str = "demo"            # where the images come from: demo | lsun | folder | npy | arrays | tfds | keras |
                                    # cache
    image_size: int = 64            # images are image_size x image_size (value data: its own size)
    train_per_class: int = 300      # or "all": every image of a class left after val and test (not the demo)
    val_per_class: int = 200        # decides: early stopping, the selected epoch, save_best
    test_per_class: int = 200       # reports: evaluated once per arm and seed at the end, decides nothing
    root: str = ""                  # lsun | folder | npy: the folder holding the data
    categories: tuple = dataclasses.field(default=(), metadata={"item": str})  # lsun categories
    path: str = ""                  # cache: the directory written by prepare; arrays: an .npz file or .npy folder
    name: str = ""                  # tfds | keras: the data set, e.g. "cifar10" (TFDS's name, or one of KERAS_DATASETS)
    names: tuple = dataclasses.field(default=(), metadata={"item": str})  # tfds: one data set per class, e.g.
                                    # ["lsun/bedroom", "lsun/church_outdoor"], in label order (instead of name)
    data_dir: str = ""              # tfds: TFDS's data directory; keras: the folder of Keras' files; "" = their own
    download: bool = False          # tfds | keras: fetch a data set that is not on disk (else an error says how)
    cache_dir: str = ""             # where prepared data sets are kept; "" = ~/.cache/augcompare
    seed: int = 0                   # which images are drawn (demo) or taken (lsun, folder, npy)
    workers: int = 0                # processes that decode during preparation; 0 = all cores
    max_skip_fraction: float = 0.05  # undecodable images tolerated before preparation fails


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15                # training epochs of every job (fewer when early stopping ends one)
    batch_size: int = 32            # images per training step
    # Six: the fewest at which the exact sign-flip test can reach p < 0.05 (2 / 2^6 = 0.031).
    seeds: tuple = dataclasses.field(default=(0, 1, 2, 3, 4, 5), metadata={"item": int})
    normalize: str = "rescale"      # rescale | standardize | divmax, shared by all arms
    learning_rate: float = 0.001    # Adam's learning rate at the first epoch (lr_schedule shapes it after)
    lr_schedule: str = "cosine"     # cosine (decays to 0 by the last epoch) | constant
    early_stopping: int = 0         # stop an arm and seed after this many epochs without a better monitor; 0 = off
    monitor: str = "val_loss"       # val_loss | val_accuracy: what selects the epoch, early stopping and save_best
    save_best: bool = False         # keep each arm and seed's val-selected model as best/<arm>-seed<S>.keras
    tensorboard: bool = False       # write TensorBoard logs to tensorboard/<arm>-seed<S>/
    strategy: str = "default"       # default | mirrored | multi_worker: tf.distribute strategy of each arm
    cpu_devices: int = 0            # split the CPU into this many logical devices (to try a strategy); 0 = no split
    precision: str = "float32"      # float32 | mixed_bfloat16 (CPUs with AVX512_BF16 or AMX) | mixed_float16 (GPUs)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "small_cnn"         # small_cnn | resnet20 | "keras:<Application>" (random weights), e.g.
                                    # "keras:MobileNetV3Small"
    build: str = ""                 # your network instead: "my_net.py:build" or "package.module:build", called as
                                    # build(input_shape, num_classes, seed) -> an uncompiled keras.Model
    from_logits: bool = False       # build's model returns logits (a float32 softmax is put after it)
    weights: str = ""               # every job starts from these weights (.keras or .weights.h5), not the seed's
    build_sha256: str = ""          # written by a run into its config.toml: build's file and the weights file as
    weights_sha256: str = ""        # they were, so that a rerun of that config.toml says when one changed
    filters: tuple = dataclasses.field(default=(32, 64, 128), metadata={"item": int})  # small_cnn: Conv-Pool channels
    dense_units: int = 128          # small_cnn: units of the dense layer before the classifier
    dropout: float = 0.0            # small_cnn: dropout rate before the classifier (0 = none)


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    primary: str = "test_accuracy"  # the metric the verdict is about, declared before the run
    min_effect: float = 1.0         # smallest effect of interest, percentage points (loss: hundredths)
    target_half_width: float = 0.0  # > 0: choose the seed count for this 95% half-width (points), Stein's two stages
    pilot_seeds: int = 5            # first stage of the two-stage design
    max_seeds: int = 30             # the two-stage design never runs more seeds than this
    baseline: str = ""              # the arm the others are compared with; "" = the one named baseline, else the
                                    # first without augmentation (none: every pair is compared)
    comparisons: str = "baseline"   # baseline (each arm against it) | all (every pair, Holm across all of them)
    eliminate: bool = False         # two-stage design: an arm the pilot shows worse than another (paired t, Holm
                                    # across every pair, at eliminate_alpha) trains no second-stage seeds
    eliminate_alpha: float = 0.01   # the pilot's elimination level, in (0, 0.05); the final verdicts then run
                                    # at 0.05 - eliminate_alpha (Bonferroni across the two looks)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    executor: str = "local"         # local (this machine's processes) | ray (a job per worker)
    jobs_at_once: int = 0           # local: jobs side by side, each in its own process; 0 = chosen from the cores
    threads_per_job: int = 0        # TensorFlow threads a job trains on, every executor; 0 = cores // jobs_at_once
    address: str = ""               # ray: "" starts a cluster on this machine; "auto" or "host:port" joins one
    cpus_per_job: float = 1.0       # ray: CPUs each job reserves (fractions allowed; not its threads)
    gpus_per_job: float = 0.0       # ray: GPUs each job reserves (fractions share a GPU)


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    mlflow: str = ""                # "" = off; an MLflow tracking URI: "sqlite:///path/mlflow.db" or a server's
    experiment: str = ""            # the MLflow experiment the run goes to; "" = the experiment's name
    on_error: str = "stop"          # stop | continue (untracked, warned): when MLflow cannot be reached at the start


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    data: DataConfig
    train: TrainConfig
    model: ModelConfig
    analysis: AnalysisConfig
    run: RunConfig
    track: TrackConfig
    arms: dict  # arm name -> its settings (built-in operations, keras, function, mixup, cutmix), in file order
    # sweep name -> {"setting", "values", "arms"}: the arms a list-valued setting expanded into
    sweeps: dict = dataclasses.field(default_factory=dict)


SECTIONS = {"data": DataConfig, "train": TrainConfig, "model": ModelConfig, "analysis": AnalysisConfig,
            "run": RunConfig, "track": TrackConfig}

# (minimum, maximum) of each number; None is unbounded.
_RANGES = {
    "data.image_size": (8, 1024), "data.train_per_class": (1, None), "data.val_per_class": (1, None),
    "data.test_per_class": (1, None),
    "data.seed": (0, None), "data.workers": (0, 1024), "data.max_skip_fraction": (0.0, 1.0),
    "train.epochs": (1, None), "train.batch_size": (1, 65536), "train.early_stopping": (0, None),
    "train.cpu_devices": (0, 64),
    "train.seeds": (0, 2**31 - 1), "train.learning_rate": (1e-9, 10.0), "model.filters": (1, 4096),
    "model.dense_units": (1, 65536), "model.dropout": (0.0, 0.99),
    "analysis.min_effect": (0.0, 100.0), "analysis.target_half_width": (0.0, 100.0),
    "analysis.pilot_seeds": (2, 1000), "analysis.max_seeds": (2, 10000),
    "analysis.eliminate_alpha": (1e-6, 0.049),
    "run.cpus_per_job": (0.0, 1024.0), "run.jobs_at_once": (0, 1024), "run.threads_per_job": (0, 1024),
    "run.gpus_per_job": (0.0, 64.0),
}
_CHOICES = {"data.source": SOURCES, "train.normalize": NORMALIZATIONS,
            "train.monitor": ("val_loss", "val_accuracy"), "train.lr_schedule": ("cosine", "constant"),
            "train.strategy": ("default", "mirrored", "multi_worker"), "analysis.primary": PRIMARY_METRICS,
            "train.precision": ("float32", "mixed_bfloat16", "mixed_float16"),
            "analysis.comparisons": ("baseline", "all"),
            "run.executor": ("local", "ray"), "track.on_error": ("stop", "continue")}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check_value(key, value, default, item_type=int):
    """Checks value against the type of its default and its range; returns it as stored."""
    if key == "data.train_per_class" and value == ALL:
        return value
    if isinstance(default, tuple):
        kind = "integers" if item_type is int else "strings"
        if not isinstance(value, list) or (default and not value):
            raise UserError(f"{key} must be a non-empty list of {kind}, got {value!r}")
        for item in value:
            _check_value(key, item, item_type())
        return tuple(value)
    if isinstance(default, bool) or isinstance(default, str):
        if type(value) is not type(default):
            raise UserError(f"{key} must be a {type(default).__name__}, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            also = f' or "{ALL}" (every image left after val and test)' if key == "data.train_per_class" else ""
            raise UserError(f"{key} must be an integer{also}, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{key} must be a number, got {value!r}")
        value = float(value)
    if key in _CHOICES and value not in _CHOICES[key]:
        raise UserError(f"{key} = {value!r} is not valid; choose one of {', '.join(_CHOICES[key])}")
    low, high = _RANGES.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise UserError(f"{key} = {value!r} is out of range; it must be {bounds}")
    return value


def _build_table(cls, section, table):
    if not isinstance(table, dict):
        raise UserError(f"[{section}] must be a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise UserError(f"unknown key {section}.{key}; valid keys in [{section}]: {', '.join(fields)}")
    return cls(**{key: _check_value(f"{section}.{key}", value, fields[key].default,
                                    fields[key].metadata.get("item", int))
                  for key, value in table.items()})


def read_presets(paths, base_dir):
    """The built-in presets plus the sets defined in preset files: each file's top-level tables
    are named augmentation sets, e.g. `[strong_rotation] rotation = 45`. Relative paths are
    taken from base_dir (the experiment file's folder)."""
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UserError(f"preset_files must be a list of file paths, got {paths!r}")
    presets = dict(PRESETS)
    for text in paths:
        path = Path(base_dir or ".") / Path(text).expanduser()
        for name, table in read_toml(path, "preset file").items():
            if name in PRESETS:
                raise UserError(f"{path}: preset {name!r} is built in; give your set another name")
            if not isinstance(table, dict):
                raise UserError(f"{path}: {name} must be a table of augmentation settings, got {table!r}")
            try:
                check_arm(table)
            except ValueError as error:
                raise UserError(f"{path}: [{name}]: {error}") from None
            presets[name] = table
    return presets


def _function(arm, text, base_dir, key="function"):
    """A function key with a file path made absolute (so the run's config.toml works from any
    folder), after checking that the file or module exists. arm: where the key is (an arm's name,
    or "model" for model.build)."""
    where = "model" if arm == "model" else f"arms.{arm}"
    module, attr = parse_function(text)
    if module.endswith(".py"):
        path = (Path(base_dir or ".") / Path(module).expanduser()).resolve()
        if not path.is_file():
            raise UserError(f"{where}: {key} file {path} does not exist; give a .py file beside the experiment "
                            "file or a package.module")
        return f"{path}:{attr}"
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(f"{where}: {key} module {module!r} cannot be found; install it or give a .py file")
    return text


WEIGHTS_SUFFIXES = (".keras", ".weights.h5")


def _model(model, base_dir):
    """[model] checked where it needs no Keras: the network's name, build's file or module and the
    weights file (made absolute, as function files are); what Keras must check (the application's
    name, the model build returns, whether the weights fit) is checked before anything trains
    (augcompare.models.networks.check_network)."""
    defaults = ModelConfig()
    if model.name not in NETWORKS and not (model.name.startswith(KERAS_PREFIX)
                                           and model.name[len(KERAS_PREFIX):].isidentifier()):
        raise UserError(f"model.name = {model.name!r} is not a network; choose one of {', '.join(NETWORKS)} or "
                        "\"keras:<Application>\" (e.g. \"keras:MobileNetV3Small\"), or give model.build")
    own = [key for key in ("filters", "dense_units", "dropout") if getattr(model, key) != getattr(defaults, key)]
    if (model.build or model.name != "small_cnn") and own:
        network = f"model.build = {model.build!r}" if model.build else f"model.name = {model.name!r}"
        raise UserError(f"model.{own[0]} sets the small CNN, but {network} is the network; remove model.{own[0]}")
    if model.build and model.name != "small_cnn":
        raise UserError(f"model.build and model.name = {model.name!r} both choose the network; give one of them")
    if model.from_logits and not model.build:
        raise UserError("model.from_logits = true is for a network of yours (model.build); the built-in ones return "
                        "probabilities: remove it")
    changes = {}
    if model.build:
        try:
            parse_function(model.build)
        except ValueError as error:
            raise UserError(f"model.build: {error}") from None
        changes["build"] = _function("model", model.build, base_dir, key="build")
    if model.weights:
        path = (Path(base_dir or ".") / Path(model.weights).expanduser()).resolve()
        if not path.name.endswith(WEIGHTS_SUFFIXES):
            raise UserError(f"model.weights = {model.weights!r} must be a .keras or .weights.h5 file (as "
                            "model.save or model.save_weights writes it)")
        if not path.is_file():
            raise UserError(f"model.weights file {path} does not exist; give the path of a .keras or .weights.h5 "
                            "file (relative to the experiment file)")
        changes["weights"] = str(path)
    return dataclasses.replace(model, **changes)


def _arm(arm, table, presets, base_dir):
    """An arm's settings: its preset's (if it names one) updated by its own keys, checked."""
    if not _NAME.match(arm):
        raise UserError(f"arm name {arm!r} must be letters, digits, '.', '_' or '-'")
    if not isinstance(table, dict):
        raise UserError(f"arms.{arm} must be a table of augmentation settings, got {table!r}")
    table = dict(table)
    preset = table.pop("preset", None)
    strength = table.pop("strength", None)
    settings = {}
    if preset is not None:
        if preset not in presets:
            raise UserError(f"arms.{arm}: unknown preset {preset!r}; presets: {', '.join(presets)} "
                            "(add your own with preset_files)")
        settings.update(copy.deepcopy(presets[preset]))
    if strength is not None:
        if preset is None:
            raise UserError(f"arms.{arm}: strength scales a preset's magnitudes; name one (preset = \"standard\") or "
                            "set the operations themselves")
        try:
            settings = scale_preset(preset, settings, strength)
        except ValueError as error:
            raise UserError(f"arms.{arm}: {error}") from None
    settings.update(table)
    try:
        settings = check_arm(settings)
    except ValueError as error:
        raise UserError(f"arms.{arm}: {error}") from None
    if settings.get("keras"):
        from augcompare.augment.keras_layers import check_layers  # loads Keras: only where an arm uses it
        try:
            check_layers(settings["keras"])
        except ValueError as error:
            raise UserError(f"arms.{arm}: {error}") from None
    if settings.get("function"):
        settings["function"] = _function(arm, settings["function"], base_dir)
    return settings


def _value_name(value):
    """A swept value as its arm's name ends: 10, 0.25."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _sweep(arm, table):
    """(setting, values) of an arm whose setting is given as a list of numbers, else None."""
    listed = [key for key, value in table.items() if isinstance(value, list) and key != "keras"]
    if not listed:
        return None
    if len(listed) > 1:
        raise UserError(f"arms.{arm} sweeps both {listed[0]} and {listed[1]}; sweep one setting per arm (make an arm "
                        "for each)")
    key, values = listed[0], table[listed[0]]
    if key not in SWEEPABLE:
        raise UserError(f"arms.{arm}: {key} = {values!r} is a list, but only a numeric setting can be swept: "
                        f"{', '.join(SWEEPABLE)}")
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                             for v in values):
        raise UserError(f"arms.{arm}: a sweep of {key} is a list of numbers, e.g. {key} = [10, 30], got {values!r}")
    names = [_value_name(value) for value in values]
    if len(set(names)) != len(names):
        raise UserError(f"arms.{arm}: {key} = {values!r} lists a value twice; list each value once")
    return key, values


def _arms(arms_table, presets, base_dir):
    """The arms, each sweep expanded into an arm per value named <arm>-<value> in its place, and
    the sweeps: name -> {setting, values, arms}."""
    arms, sweeps = {}, {}
    for arm, table in arms_table.items():
        sweep = _sweep(arm, table) if isinstance(table, dict) else None
        if sweep is None:
            arms[arm] = _arm(arm, table, presets, base_dir)
            continue
        key, values = sweep
        names = [f"{arm}-{_value_name(value)}" for value in values]
        for name, value in zip(names, values):
            if name in arms_table:
                raise UserError(f"arms.{arm}: its sweep's arm {name} is also an arm of the file; rename one")
            if name in arms:  # made by another sweep: x = [-1] and x- = [1] both make x--1
                other = next(swept for swept, sweep in sweeps.items() if name in sweep["arms"])
                raise UserError(f"arms.{arm}: its sweep's arm {name} is also an arm of the sweep of arms.{other}; "
                                "rename one")
            arms[name] = _arm(name, {**table, key: value}, presets, base_dir)
        sweeps[arm] = {"setting": key, "values": list(values), "arms": names}
    return arms, sweeps


def _recorded_sweeps(table, arms):
    """The sweeps a run's config.toml records (its arms are written out one per value)."""
    if not isinstance(table, dict):
        raise UserError(f"sweeps must be a table of sweeps, got {table!r}")
    for name, sweep in table.items():
        valid = (isinstance(sweep, dict) and set(sweep) == {"setting", "values", "arms"}
                 and sweep["setting"] in SWEEPABLE and isinstance(sweep["arms"], list)
                 and isinstance(sweep["values"], list) and len(sweep["values"]) == len(sweep["arms"])
                 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sweep["values"]))
        if not valid:
            raise UserError(f"sweeps.{name} must be {{setting = <a numeric setting>, values = [numbers], arms = [one "
                            f"arm per value]}}, got {sweep!r}")
        missing = [arm for arm in sweep["arms"] if arm not in arms]
        if missing:
            raise UserError(f"sweeps.{name} names arm {missing[0]!r}, which is not an arm; arms: {', '.join(arms)}")
    return {name: dict(sweep) for name, sweep in table.items()}


def _check_data(data):
    """The checks of [data] that involve more than one key or the file system."""
    if data.source == "cache" and not data.path:
        raise UserError("data.source = \"cache\" needs data.path, the directory written by prepare")
    if data.source == "arrays":
        if not data.path:
            raise UserError("data.source = \"arrays\" needs data.path: an .npz file or a folder of .npy files holding "
                            "x_train and y_train (x_val, y_val, x_test, y_test where you have them)")
        if not Path(data.path).expanduser().exists():
            raise UserError(f"data.path {data.path} does not exist; give an .npz file or a folder of .npy files")
    if data.source == "demo" and data.train_per_class == ALL:
        raise UserError(f"data.train_per_class = \"{ALL}\" takes every image a source holds; the demo draws its "
                        "images: give a number")
    if data.source in ("lsun", "folder", "npy"):
        if not data.root:
            raise UserError(f"data.source = \"{data.source}\" needs data.root, the folder holding the data")
        if not Path(data.root).expanduser().is_dir():
            raise UserError(f"data.root {data.root} does not exist; give the folder holding the data")
    if data.source == "tfds":
        if bool(data.name) == bool(data.names):
            raise UserError("data.source = \"tfds\" needs data.name, a TFDS data set with an image and a class label "
                            "(e.g. \"cifar10\"), or data.names, one data set per class (e.g. [\"lsun/bedroom\", "
                            "\"lsun/church_outdoor\"]), not both")
        if data.names and (len(data.names) < 2 or len(set(data.names)) != len(data.names)):
            raise UserError(f"data.names = {list(data.names)!r} must name at least 2 different data sets, one per "
                            "class")
    if data.source == "keras":
        if data.names or data.name not in KERAS_DATASETS:
            given = f"data.name = {data.name!r}" if data.name else "no data.name"
            raise UserError(f"data.source = \"keras\" with {given}; choose one of {', '.join(KERAS_DATASETS)} (or "
                            "source = \"tfds\" for TFDS's data sets)")
    if (data.source in ("tfds", "keras") and data.data_dir and not data.download
            and not Path(data.data_dir).expanduser().is_dir()):
        raise UserError(f"data.data_dir {data.data_dir} does not exist; give the folder holding the data set, or leave "
                        "it out for the library's own")
    if data.source == "lsun":
        if not data.categories:
            raise UserError("data.source = \"lsun\" needs data.categories, e.g. [\"bedroom\", \"church_outdoor\"]")
        unknown = [c for c in data.categories if c not in LSUN_CATEGORIES]
        if unknown:
            raise UserError(f"unknown LSUN category {unknown[0]!r}; valid: {', '.join(LSUN_CATEGORIES)}")


def _tracking_uri(uri):
    """A sqlite URI's relative path made absolute (from the current folder, as data.root is), so
    that the run's config.toml resumes into the same database from any folder."""
    prefix = "sqlite:///"
    path, sep, query = uri[len(prefix):].partition("?")
    if not uri.startswith(prefix) or not path or path.startswith("/"):
        return uri
    return prefix + str(Path(path).expanduser().resolve()) + sep + query


def data_config(table):
    """A DataConfig from a table of [data] settings (as `augcompare prepare` gets them), defaults
    filled in and checked exactly as an experiment file's [data]."""
    data = _build_table(DataConfig, "data", table)
    _check_data(data)
    return data


def build(raw, base_dir=None):
    """An Experiment from a parsed TOML document (a dict), checked in full. base_dir: where
    relative preset_files and function files are found."""
    known = ("name", "preset_files", *SECTIONS, "arms", "sweeps")
    for key in raw:
        if key not in known:
            raise UserError(f"unknown top-level key {key!r}; valid: {', '.join(known)}")
    name = raw.get("name", "experiment")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"name must be letters, digits, '.', '_' or '-', got {name!r}")
    sections = {section: _build_table(cls, section, raw.get(section, {})) for section, cls in SECTIONS.items()}
    sections["track"] = dataclasses.replace(sections["track"], mlflow=_tracking_uri(sections["track"].mlflow))
    sections["model"] = _model(sections["model"], base_dir)
    train, analysis = sections["train"], sections["analysis"]
    _check_data(sections["data"])
    if len(set(train.seeds)) != len(train.seeds):
        raise UserError(f"train.seeds has duplicates: {list(train.seeds)}; list each seed once")
    if analysis.target_half_width and analysis.max_seeds < analysis.pilot_seeds:
        raise UserError(f"analysis.max_seeds = {analysis.max_seeds} is below analysis.pilot_seeds = "
                        f"{analysis.pilot_seeds}; raise max_seeds")
    if analysis.eliminate and not analysis.target_half_width:
        raise UserError("analysis.eliminate stops beaten arms after the two-stage design's pilot; set "
                        "analysis.target_half_width > 0 (the two-stage design) or leave analysis.eliminate false")
    arms_table = raw.get("arms", {})
    if not isinstance(arms_table, dict) or not arms_table:
        raise UserError("no arms: add at least one [arms.<name>] table, e.g. [arms.baseline]")
    presets = read_presets(raw.get("preset_files", []), base_dir)
    arms, sweeps = _arms(arms_table, presets, base_dir)
    recorded = _recorded_sweeps(raw.get("sweeps", {}), arms)
    for sweep in recorded:
        if sweep in sweeps:
            raise UserError(f"sweeps.{sweep} is also an arm swept by a list; remove the sweeps table or the list")
    sweeps.update(recorded)
    if analysis.baseline and analysis.baseline not in arms:
        raise UserError(f"analysis.baseline = {analysis.baseline!r} is not an arm; choose one of {', '.join(arms)}")
    return Experiment(name=name, arms=arms, sweeps=sweeps, **sections)


def parse_override(expression):
    """'train.epochs=3' -> (['train', 'epochs'], 3). The value is TOML ('[0, 1]', 'true', '"x"');
    a bare word that is not TOML (demo, /data/lsun) is taken as a string."""
    key, sep, text = expression.partition("=")
    key = key.strip()
    if not sep or not key or not all(_NAME.match(part) for part in key.split(".")):
        raise UserError(f"bad --set {expression!r}; write KEY=VALUE, e.g. --set train.epochs=3")
    text = text.strip()
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if not re.fullmatch(r"[A-Za-z0-9_./~:+-]+", text):
            raise UserError(f"bad value in --set {expression!r}; quote strings, e.g. {key}=\"text\"") from None
        value = text
    return key.split("."), value


def apply_overrides(raw, expressions):
    """raw with each override applied: a 'KEY=VALUE' string (--set) or a (dotted key, value) pair
    (the Python API's {"train.epochs": 3})."""
    raw = copy.deepcopy(raw)
    for expression in expressions:
        if isinstance(expression, tuple):
            key, value = expression
            path = str(key).split(".")
            if not all(_NAME.match(part) for part in path):
                raise UserError(f"bad override key {key!r}; write a dotted key, e.g. train.epochs")
            value = list(value) if isinstance(value, tuple) else value
            expression = f"{key}={value!r}"
        else:
            path, value = parse_override(expression)
        table = raw
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise UserError(f"--set {expression!r}: {part} is not a table")
        table[path[-1]] = value
    return raw


def read_toml(path, what="experiment file"):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; give the path of a .toml file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not valid TOML: bytes that are not UTF-8 text at offset {error.start}") from None
    except OSError as error:
        raise UserError(f"{what} {path} cannot be read ({error.strerror})") from None


def bundled():
    """name -> path of each experiment file installed with augcompare."""
    return {path.stem: path for path in sorted(EXPERIMENTS_DIR.glob("*.toml"))}


def describe_bundled():
    """Lines naming each bundled experiment with the first line of its leading comment."""
    lines = []
    for name, path in bundled().items():
        comment = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        text = " ".join(comment)
        lines.append(f"  {name:24s} {text.split('. ')[0].rstrip('.') + '.' if text else ''}")
    return lines


def find(name_or_path):
    """The experiment file a run names: a path, or the name of a bundled experiment (ablation)."""
    path = Path(name_or_path)
    if not path.exists() and path.suffix != ".toml" and len(path.parts) == 1:
        found = bundled().get(name_or_path)
        if found is None:
            raise UserError(f"no experiment file {name_or_path} and no bundled experiment of that name; bundled: "
                            f"{', '.join(bundled())} (augcompare experiments lists them)")
        return found
    return path


def load(path=None, overrides=()):
    """The Experiment of a TOML file or bundled experiment name (the demo when path is None),
    with overrides applied."""
    path = find(path) if path else DEFAULT_EXPERIMENT
    if path.is_dir():
        hint = (" (to continue an interrupted run: augcompare run --resume DIR)"
                if (path / "config.toml").is_file() else "")
        raise UserError(f"{path} is a directory; give an experiment .toml file{hint}")
    raw = read_toml(path)
    return build(apply_overrides(raw, overrides), base_dir=path.parent)


def _model_files(model):
    """(hash key, path) of [model]'s files: build's .py file, the weights file."""
    files = []
    if model.build:
        module, _ = parse_function(model.build)
        if module.endswith(".py"):
            files.append(("build_sha256", Path(module)))
    if model.weights:
        files.append(("weights_sha256", Path(model.weights)))
    return files


def with_file_hashes(experiment, log):
    """The experiment with the sha256 of [model]'s files in model.build_sha256 and
    model.weights_sha256 (a run's config.toml keeps them); where the experiment recorded other
    hashes (a rerun of a run's config.toml), log warns that the file changed."""
    model, hashes = experiment.model, {}
    for key, path in _model_files(model):
        try:
            hashes[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as error:
            raise UserError(f"model: cannot read {path} ({error.strerror}); check the file") from None
        if getattr(model, key) and getattr(model, key) != hashes[key]:
            log(f"warning: {path} changed since this configuration was recorded (model.{key}); the network or "
                "its weights may differ from the recorded run's")
    return dataclasses.replace(experiment, model=dataclasses.replace(model, **hashes)) if hashes else experiment


def to_dict(experiment):
    """The resolved configuration as plain TOML-ready data, defaults filled in and presets
    expanded, so that it rebuilds the same experiment on its own."""
    def table(config):
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(config).items()}
    document = {"name": experiment.name, **{section: table(getattr(experiment, section)) for section in SECTIONS},
                "arms": copy.deepcopy(experiment.arms)}
    if experiment.sweeps:
        document["sweeps"] = copy.deepcopy(experiment.sweeps)
    return document


def dumps(document):
    """TOML text of a document (tomli-w)."""
    return tomli_w.dumps(document)
