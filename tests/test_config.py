import tomllib

import pytest

from augment import Augmentation
from experiments import config
from experiments.config import ConfigError


def test_demo_experiment_loads_with_the_documented_schema():
    experiment = config.load()
    assert experiment.name == "demo"
    assert experiment.data.source == "demo" and experiment.data.image_size == 64
    assert experiment.train.seeds == (0, 1, 2) and experiment.train.normalize == "rescale"
    assert experiment.arms == {"baseline": Augmentation(),
                               "augmented": Augmentation(rotation=20, brightness=0.2, horizontal_flip=True)}


def test_overrides_use_dotted_keys_and_toml_values():
    experiment = config.load(overrides=["train.epochs=3", "train.seeds=[0]", "data.source=demo",
                                        "arms.augmented.rotation=5", "arms.extra.horizontal_flip=true"])
    assert experiment.train.epochs == 3 and experiment.train.seeds == (0,)
    assert experiment.arms["augmented"] == Augmentation(rotation=5, brightness=0.2, horizontal_flip=True)
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
])
def test_mistakes_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        config.load(overrides=[override])
    assert "\n" not in str(error.value)


def test_no_arms_is_an_error(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n[train]\nepochs = 1\n')
    with pytest.raises(ConfigError, match="no arms"):
        config.load(path)


def test_malformed_toml_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[train\n')
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML: .*line 2"):
        config.load(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_resolved_configuration_round_trips_through_toml():
    experiment = config.load(overrides=["train.learning_rate=0.0005", "model.dropout=0.25"])
    text = config.dumps(config.to_dict(experiment))
    assert config.build(tomllib.loads(text)) == experiment
