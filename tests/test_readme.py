"""The README and the documentation against the project: the README is short and gives the set-up
commands CI runs, the "When something goes wrong" table (docs/guides/troubleshooting.md) names a
test for every row (each must exist), the demo reference they report is the default run and a
positive control, and the API page's DataGenerator snippet runs."""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_is_short_and_its_set_up_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for command in ('pip install -e . && augcompare run', 'pip install -e ".[test]" && pytest',
                    'pip install -e ".[docs]" && mkdocs serve'):
        assert command in readme, command
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'install --quiet -e ".[test,docs]"' in ci and "mkdocs build --strict" in ci
    assert ci.rstrip().splitlines()[-1] == "python3 -m pytest"  # the README's test command


def test_every_row_of_the_troubleshooting_table_names_an_existing_test():
    page = (ROOT / "docs" / "guides" / "troubleshooting.md").read_text()
    table = page.split("# When something goes wrong", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| bad input")
            and not line.startswith("| ---")]
    assert len(rows) >= 15
    for row in rows:
        references = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row)
        assert references, f"no test named in: {row}"
        for file_name, test_name in references:
            tree = ast.parse((ROOT / "tests" / file_name).read_text())
            names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
            assert test_name in names, f"{file_name}::{test_name} does not exist"


def test_the_demo_reference_is_the_default_run_and_meets_the_positive_control():
    """results/demo/reference is `augcompare run` with the defaults, and shows what the demo is
    for: the baseline overfits (train at least 15 points above test), the augmented arm's gap is
    smaller, and the primary metric's paired 95% interval is at most 3 points wide either side."""
    from augcompare.experiments import config
    reference = ROOT / "results" / "demo" / "reference"
    assert config.read_toml(reference / "config.toml") == config.to_dict(config.load())
    summary = json.loads((reference / "summary.json").read_text())
    arms = summary["arms"]
    gaps = {arm: arms[arm]["final_accuracy"]["mean"] - arms[arm]["test_accuracy"]["mean"] for arm in arms}
    assert gaps["baseline"] >= 0.15 and gaps["augmented"] < gaps["baseline"]
    primary = summary["vs_baseline"]["augmented"]["primary"]
    assert primary["metric"] == "test_accuracy" and primary["seeds"] == len(config.load().train.seeds)
    low, high = primary["ci95"]
    assert (high - low) / 2 <= 0.03


def test_the_data_generator_snippet_runs_as_written_with_its_placeholders_filled_in(tmp_path, monkeypatch):
    import numpy as np
    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    (snippet,) = [block for block in blocks if block.startswith("# DataGenerator: your samples")]
    filled = snippet.replace(", ...]", "]").replace(", ...}", "}")  # the placeholders: the user's other samples
    assert "..." not in filled.split("#")[0]
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for name in ("cat_001", "dog_001"):
        np.save(tmp_path / "data" / f"{name}.npy", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    np.save(tmp_path / "x_train.npy", rng.integers(0, 256, (40, 24, 24, 3), dtype=np.uint8))
    np.save(tmp_path / "y_train.npy", np.arange(40) % 2)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(filled, "docs/reference/api.md", "exec"), namespace)
    x, y = namespace["x"], namespace["y"]
    assert x.shape == (32, 24, 24, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    order = namespace["from_array"]._order[:32]  # shuffled (shuffle=True by default)
    assert y.tolist() == (order % 2).tolist()  # each image's own label
    from_files = namespace["from_files"]
    files_x, files_y = from_files[0]
    assert files_x.shape == (2, 24, 24, 3)
    assert files_y.tolist() == [{"cat_001": 0, "dog_001": 1}[from_files.list_IDs[i]] for i in from_files._order]
