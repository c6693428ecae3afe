"""The README's "When something goes wrong" table names a test for every row: each must exist."""

import ast
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
