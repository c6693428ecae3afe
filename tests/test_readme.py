"""The README against the project: the "When something goes wrong" table names a test for every row
(each must exist), and the demo reference it reports is the default run and a positive control."""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_row_of_the_troubleshooting_table_names_an_existing_test():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
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
