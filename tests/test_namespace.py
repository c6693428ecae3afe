"""The folders augment/, models/ and experiments/ install as augcompare.augment, augcompare.models
and augcompare.experiments: no module may import them by their short names, which a user's own
models.py or experiments/ folder would shadow."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT_NAMES = {"augment", "models", "experiments"}


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_no_module_imports_the_short_names():
    files = [p for folder in ("augment", "models", "experiments", "tests") for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 20
    offenders = [f"{path.relative_to(ROOT)}: {name}" for path in files for name in imported_modules(path)
                 if name.split(".")[0] in SHORT_NAMES]
    assert not offenders, offenders


def test_a_users_own_models_and_experiments_do_not_shadow_ours(tmp_path):
    (tmp_path / "models.py").write_text("raise ImportError('the user models.py was imported')\n")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("raise ImportError('the user experiments/ was imported')\n")
    code = ("from augcompare.models import small_cnn; from augcompare.experiments import config; "
            "print(config.DEFAULT_EXPERIMENT.is_file())")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
