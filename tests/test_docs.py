"""The documentation against the code: the configuration reference is generated from
experiments/config.py (every key described, every default as the dataclass holds it), the speed
tables from the records in results/bench/, and every page the site lists exists. No MkDocs needed:
docs/generate.py is plain Python (.ci/run builds the site itself with --strict)."""

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest

from augcompare.augment import params
from augcompare.experiments import config

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("augcompare_docs_generate", ROOT / "docs" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)


def test_every_setting_of_config_py_has_a_description():
    descriptions = generate.field_descriptions(generate.CONFIG_SOURCE.read_text())
    for section, cls in config.SECTIONS.items():
        for field in dataclasses.fields(cls):
            assert descriptions.get((cls.__name__, field.name)), f"{section}.{field.name} has no comment in config.py"


def test_a_field_without_its_comment_has_no_description_and_the_reference_refuses_it(tmp_path, monkeypatch):
    source = generate.CONFIG_SOURCE.read_text()
    line = next(line for line in source.splitlines() if line.lstrip().startswith("epochs: int ="))
    stripped = source.replace(line, line.split("#")[0].rstrip())
    assert not generate.field_descriptions(stripped)[("TrainConfig", "epochs")]
    (tmp_path / "config.py").write_text(stripped)
    monkeypatch.setattr(generate, "CONFIG_SOURCE", tmp_path / "config.py")
    with pytest.raises(ValueError, match="train.epochs without a description"):
        generate.configuration_reference()


def test_comments_above_beside_and_continuing_a_field_are_its_description():
    source = ("class C:\n"
              "    # Above.\n"
              "    a: int = 1      # beside\n"
              "                    # continued\n"
              "    b: str = ''\n"
              "    c: float = 0.5  # c's own\n")
    assert generate.field_descriptions(source) == {("C", "a"): "Above. beside continued", ("C", "b"): "",
                                                   ("C", "c"): "c's own"}


def _reference_rows():
    """{dotted key: (default cell, description cell)} of the generated reference's section tables."""
    rows, section = {}, None
    for line in generate.configuration_reference().splitlines():
        heading = re.match(r"## `\[(\w+)\]`$", line)
        if heading:
            section = heading.group(1)
        elif line.startswith("| `") and section:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[f"{section}.{cells[0].strip('`')}"] = (cells[1], cells[3])
        elif line.startswith("## "):
            section = None
    return rows


def test_the_reference_lists_every_key_with_the_default_the_code_gives_it():
    rows = _reference_rows()
    expected = {}
    for section, cls in config.SECTIONS.items():
        defaults = cls()
        for field in dataclasses.fields(cls):
            expected[f"{section}.{field.name}"] = getattr(defaults, field.name)
    assert set(rows) == set(expected)
    for key, default in expected.items():
        assert rows[key][0] == f"`{generate.toml_value(default)}`", key
        assert rows[key][1], key
    # The defaults are the ones an experiment file that leaves the keys out gets.
    built = config.build({"arms": {"baseline": {}}})
    for key, default in expected.items():
        section, name = key.split(".")
        assert getattr(getattr(built, section), name) == default


@pytest.mark.parametrize("value, text", [(64, "64"), ("demo", '"demo"'), ((0, 1, 2), "[0, 1, 2]"), (False, "false"),
                                         (0.05, "0.05"), ((), "[]")])
def test_defaults_are_written_as_an_experiment_file_writes_them(value, text):
    assert generate.toml_value(value) == text


def test_the_reference_gives_the_choices_and_ranges_config_py_checks():
    reference = generate.configuration_reference()
    for key, choices in config._CHOICES.items():
        section, name = key.split(".")
        row = next(line for line in reference.split(f"## `[{section}]`")[1].splitlines()
                   if line.startswith(f"| `{name}` |"))
        for choice in choices:
            assert f"`{choice}`" in row, (key, choice)
    for key in params.PARAMS:
        assert f"| `{key}` |" in reference
    for name in params.PRESETS:
        assert f"| `{name}` |" in reference


def test_every_bench_record_has_its_machine_command_date_and_figures_and_renders():
    records = generate.read_records()
    assert records
    for name, record in records:
        assert record["machine"]["cpu"] and record["machine"]["cores"] >= 1, name
        assert record["command"].startswith("augcompare"), name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", record["date"]), name
        assert record["figures"], name
        rendered = "\n".join(generate.render_record(name, record))
        assert record["command"] in rendered and f"results/bench/{name}" in rendered


def test_a_record_without_its_machine_is_refused(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"command": "augcompare bench", "date": "2026-01-01",
                                                 "figures": {}}))
    with pytest.raises(ValueError, match="x.json: a measurement record needs machine"):
        generate.read_records(tmp_path)


def test_a_new_record_adds_its_table_without_touching_the_pages(tmp_path):
    record = {"machine": {"cpu": "Test CPU", "cores": 4, "instruction_sets": ["avx2"]},
              "versions": {"TensorFlow": "2.21"},
              "command": "augcompare bench memory --json m.json", "date": "2027-01-01", "conditions": "one run",
              "figures": {"memory": {"peak_rss_anon_kib": {"10000": 2048, "100000": 4096}, "ratio": 2.0}}}
    (tmp_path / "m.json").write_text(json.dumps(record))
    text = generate.measurements(tmp_path, benchmark="memory")
    assert "Test CPU, 4 cores" in text and "| 10,000 | 2.0 MiB |" in text and "2.000x" in text
    assert generate.measurements(tmp_path, benchmark="run") == "\n"


def test_every_page_in_the_nav_exists_and_every_page_is_in_the_nav():
    text = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w/-]+\.md)\s*$", text, re.M))
    pages = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert listed == pages


def test_the_pages_markers_name_parts_that_render():
    for path in (ROOT / "docs").rglob("*.md"):
        for marker in re.findall(r"<!-- generated:(.*?)-->", path.read_text()):
            assert generate.render(marker.split()).strip(), (path, marker)


def test_a_default_the_guides_mention_is_the_one_the_code_gives():
    """Prose may name a default beside its key ("`data.max_skip_fraction` (default 0.05)"); it must
    be config.py's. The reference itself is generated and cannot disagree."""
    defaults = {f"{section}.{field.name}": field.default for section, cls in config.SECTIONS.items()
                for field in dataclasses.fields(cls) if field.default is not dataclasses.MISSING}
    mentioned = 0
    for path in (ROOT / "docs").rglob("*.md"):
        text = " ".join(path.read_text().split())
        for key, value in re.findall(r"`(\w+\.\w+)`[^`(]{0,20}\(default:?\s+`?([^\s)`,;:]+)", text):
            if key not in defaults:
                continue
            mentioned += 1
            default = defaults[key]
            if isinstance(default, bool):
                assert value == str(default).lower(), (path.name, key, value, default)
            elif isinstance(default, (int, float)):
                assert float(value) == default, (path.name, key, value, default)
            else:
                assert value.strip('"') == default, (path.name, key, value, default)
    assert mentioned >= 3


def test_every_experiment_file_example_in_the_readme_and_the_docs_is_valid(tmp_path):
    """Each ```toml block (an experiment file or a part of one) is read as augcompare reads an
    experiment, with the files it names made in a temporary folder."""
    import tomllib
    (tmp_path / "shapes").mkdir()
    (tmp_path / "my_sets.toml").write_text("[tilt]\nrotation = 45\n")
    (tmp_path / "my_augs.py").write_text("def jitter(images, seed):\n    return images\n")
    blocks = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        blocks += [(path.name, block) for block in re.findall(r"```toml\n(.*?)```", path.read_text(), re.S)
                   if not block.startswith("--8<--")]
    assert len(blocks) >= 5
    for name, block in blocks:
        raw = tomllib.loads(block)
        raw.setdefault("arms", {"baseline": {}})
        if raw.get("data", {}).get("root"):
            raw["data"]["root"] = str(tmp_path / "shapes")
        experiment = config.build(raw, base_dir=tmp_path)
        assert experiment.arms, name


def test_the_command_line_page_has_every_commands_help_from_the_parser():
    import argparse
    from augcompare.experiments import cli
    text = generate.command_line()
    (commands,) = [action for action in cli._parser()._actions if isinstance(action, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        assert f"### `augcompare {name}`" in text
        for action in command._actions:
            assert all(option in text for option in action.option_strings), (name, action.option_strings)
