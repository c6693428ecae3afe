import re
import tomllib

import pytest

from augcompare.experiments import config
from augcompare.experiments.config import UserError


def test_demo_experiment_loads_with_the_documented_schema():
    experiment = config.load()
    assert experiment.name == "demo"
    assert experiment.data.source == "demo" and experiment.data.image_size == 32
    assert experiment.train.seeds == tuple(range(6)) and experiment.train.normalize == "rescale"
    assert experiment.arms == {"baseline": {},
                               "augmented": {"rotation": 20.0, "brightness": 0.2, "horizontal_flip": True}}
    assert experiment.analysis.primary == "test_accuracy" and experiment.train.lr_schedule == "cosine"


def test_overrides_use_dotted_keys_and_toml_values():
    experiment = config.load(overrides=["train.epochs=3", "train.seeds=[0]", "data.source=demo",
                                        "arms.augmented.rotation=5", "arms.extra.horizontal_flip=true"])
    assert experiment.train.epochs == 3 and experiment.train.seeds == (0,)
    assert experiment.arms["augmented"] == {"rotation": 5.0, "brightness": 0.2, "horizontal_flip": True}
    assert list(experiment.arms) == ["baseline", "augmented", "extra"]


@pytest.mark.parametrize("override,message", [
    ("train.epoch=3", "unknown key train.epoch; valid keys in \\[train\\]: epochs, batch_size"),
    ("trian.epochs=3", "unknown top-level key 'trian'"),
    ("train.epochs=0", "train.epochs = 0 is out of range"),
    ("train.epochs=2.5", "train.epochs must be an integer"),
    ("train.seeds=[]", "train.seeds must be a non-empty list"),
    ("train.seeds=[1, 1]", "train.seeds has duplicates"),
    ("train.normalize=zscore", "train.normalize = 'zscore' is not valid; choose one of rescale"),
    ("arms.augmented.rotaton=3", "arms.augmented: unknown augmentation key 'rotaton'"),
    ("train.epochs", "bad --set 'train.epochs'; write KEY=VALUE"),
    ("train.epochs=[1", "bad value in --set"),
    ("data.source=cache", "needs data.path"),
    ("analysis.primary=best_val_accuracy", "'best_val_accuracy' is not valid; choose one of test_accuracy"),
    ("run.executor=slurm", "run.executor = 'slurm' is not valid; choose one of local, ray"),
    ("analysis.eliminate_alpha=0.05", "analysis.eliminate_alpha = 0.05 is out of range"),
    ("analysis.eliminate=1", "analysis.eliminate must be a bool"),
    ("analysis.eliminate=true", "analysis.eliminate stops beaten arms after the two-stage design's pilot; set"),
    ("arms.m={mixup = -1}", "arms.m: mixup is the Beta"),
    ("arms.m={mixup = 0.2, cutmix = 1.0}", "mixup and cutmix are exclusive"),
    ("arms.f={function = \"nowhere\"}", "function must be \"file.py:name\""),
    ("arms.f={function = \"no_such_module_here:jitter\"}", "function module 'no_such_module_here' cannot be found"),
])
def test_mistakes_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(UserError, match=message) as error:
        config.load(overrides=[override])
    assert "\n" not in str(error.value)


def test_no_arms_is_an_error(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n[train]\nepochs = 1\n')
    with pytest.raises(UserError, match="no arms"):
        config.load(path)


def test_malformed_toml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[train\n')
    with pytest.raises(UserError, match=r"broken.toml is not valid TOML: .*line 2"):
        config.load(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_resolved_configuration_round_trips_through_toml():
    experiment = config.load(overrides=["train.learning_rate=0.0005", "model.dropout=0.25"])
    text = config.dumps(config.to_dict(experiment))
    assert config.build(tomllib.loads(text)) == experiment


def test_arms_use_presets_and_override_them():
    experiment = config.load(overrides=["arms.augmented={preset = \"standard\", rotation = 5}",
                                        "arms.strong={preset = \"strong\"}"])
    assert experiment.arms["augmented"] == {"rotation": 5.0, "brightness": 0.2, "horizontal_flip": True}
    assert experiment.arms["strong"] == config.PRESETS["strong"]
    with pytest.raises(UserError, match="unknown preset 'strnog'; presets: standard, geometric"):
        config.load(overrides=["arms.x={preset = \"strnog\"}"])


def test_presets_from_another_file_relative_to_the_experiment(tmp_path):
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "mine.toml").write_text("[tilt]\nrotation = 45\n\n[dim]\nbrightness = 0.5\n")
    (tmp_path / "exp.toml").write_text('preset_files = ["sets/mine.toml"]\n[arms.baseline]\n'
                                       '[arms.tilted]\npreset = "tilt"\n')
    experiment = config.load(tmp_path / "exp.toml")
    assert experiment.arms["tilted"] == {"rotation": 45.0}
    # The snapshot of a run has the sets written out, so it needs no preset file.
    snapshot = tomllib.loads(config.dumps(config.to_dict(experiment)))
    assert config.build(snapshot).arms == experiment.arms
    (tmp_path / "sets" / "mine.toml").write_text("[standard]\nrotation = 1\n")
    with pytest.raises(UserError, match="preset 'standard' is built in"):
        config.load(tmp_path / "exp.toml")
    (tmp_path / "sets" / "mine.toml").write_text("[tilt]\nrotation = 400\n")
    with pytest.raises(UserError, match=r"\[tilt\]: augmentation rotation = 400 is out of range"):
        config.load(tmp_path / "exp.toml")
    (tmp_path / "sets" / "mine.toml").unlink()
    with pytest.raises(UserError, match="preset file .*mine.toml does not exist"):
        config.load(tmp_path / "exp.toml")


def test_ablation_experiment_has_one_arm_per_operation_and_all_together():
    experiment = config.load(config.EXPERIMENTS_DIR / "ablation.toml")
    assert experiment.arms == {
        "baseline": {}, "rotation": {"rotation": 20.0}, "brightness": {"brightness": 0.2},
        "flip": {"horizontal_flip": True}, "all": config.PRESETS["standard"]}


def test_a_run_directory_is_not_an_experiment_file(tmp_path):
    (tmp_path / "config.toml").write_text("")
    with pytest.raises(UserError, match="is a directory; .* augcompare run --resume DIR"):
        config.load(tmp_path)


def test_augmentations_command_lists_operations_ranges_and_presets(tmp_path, capsys):
    from augcompare.experiments import cli
    (tmp_path / "sets.toml").write_text("[tilt]\nrotation = 45\n")
    (tmp_path / "exp.toml").write_text('preset_files = ["sets.toml"]\n[arms.baseline]\n')
    assert cli.main(["augmentations", str(tmp_path / "exp.toml")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^rotation +0 to 180 ", out, re.M)
    assert re.search(r"^fill_mode +reflect \| nearest \| constant \| wrap  how", out, re.M)
    assert re.search(r"^  standard +rotation = 20.0, brightness = 0.2, horizontal_flip = true", out, re.M)
    assert re.search(r"^  tilt +rotation = 45", out, re.M)
    # every column starts where the one above it does: no value runs into the next column
    from augcompare.augment.params import PARAMS
    rows = [line for line in out.splitlines() if line.split(" ")[0] in PARAMS]
    starts = {line.index("  " + PARAMS[line.split(" ")[0]].doc) for line in rows}
    assert len(rows) == len(PARAMS) and len(starts) == 1


def test_bundled_experiments_run_by_name_and_are_listed(capsys):
    from augcompare.experiments import cli
    assert config.find("ablation") == config.EXPERIMENTS_DIR / "ablation.toml"
    assert config.load("policies").arms["trivialaugment"] == {"trivial_augment": True}
    assert cli.main(["experiments"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in ("ablation", "demo", "policies", "lsun10"))
    with pytest.raises(UserError, match="no experiment file ablatoin and no bundled experiment of that name; "
                                        "bundled: ablation, cifar10, demo"):
        config.load("ablatoin")


@pytest.mark.parametrize("name", sorted(config.bundled()))
def test_every_bundled_experiment_loads(name, tmp_path):
    reads_a_folder = "root" in config.read_toml(config.bundled()[name]).get("data", {})
    experiment = config.load(name, [f"data.root={tmp_path}"] if reads_a_folder else [])
    assert experiment.name == name and experiment.arms
    if experiment.data.source in ("keras", "tfds"):  # the data sets papers compare on: the policies, two stages
        assert list(experiment.arms) == list(config.load("policies").arms)
        assert experiment.analysis.target_half_width > 0 and experiment.analysis.comparisons == "all"
