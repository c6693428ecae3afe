"""MkDocs hooks: the generated parts of the pages (docs/generate.py) and the demo's reference
figures, taken from results/ as they are."""

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File

_spec = importlib.util.spec_from_file_location("augcompare_docs_generate", Path(__file__).with_name("generate.py"))
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

# Figures of the reference runs the pages show: results/<experiment>/reference/<file>.
FIGURES = ("demo/reference/accuracy.png", "demo/reference/ablation.png", "demo/reference/augmentations.png",
           "ablation/reference/ablation.png", "policies/reference/pairs.png", "strength/reference/strength.png")


def on_files(files, config):
    for figure in FIGURES:
        files.append(File.generated(config, f"figures/{figure}", abs_src_path=str(generate.ROOT / "results" / figure)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Replaces each `<!-- generated: WHAT -->` line with what generate.py writes for it."""
    lines = []
    for line in markdown.splitlines():
        marker = line.strip()
        if marker.startswith("<!-- generated:") and marker.endswith("-->"):
            what = marker[len("<!-- generated:"):-len("-->")].split()
            lines.append(generate.render(what))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
