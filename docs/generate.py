"""The documentation's generated parts: the configuration reference, read from experiments/config.py
(each default from its dataclass, each description from the comment beside it, valid values where
config.py declares them) and augment/params.py (the arm keys and presets), the command line's
options from experiments/cli.py's parser, and the speed tables, read from the measurement records
in results/bench/*.json.

Pure Python, no MkDocs: docs/hooks.py calls it while the site builds, and tests/test_docs.py
calls it to hold the pages to the code.
"""

import ast
import dataclasses
import io
import json
import tokenize
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
CONFIG_SOURCE = ROOT / "experiments" / "config.py"
BENCH_RECORDS = ROOT / "results" / "bench"


# ---------------------------------------------------------------- descriptions from the comments

def field_descriptions(source):
    """{(class name, field name): description} of every annotated field of every class in source.

    A field's description is its comment: the comment lines just above it at the class body's
    indentation, the comment at the end of its line, and the comment lines after it indented
    deeper than the body (continuations of that comment), joined in that order."""
    tree = ast.parse(source)
    comments = []  # (line, column, text, alone on its line)
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line, column = token.start
            alone = not lines[line - 1][:column].strip()
            comments.append((line, column, token.string.lstrip("#").strip(), alone))
    descriptions = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for index, statement in enumerate(body):
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            indent = statement.col_offset
            first, last = statement.lineno, statement.end_lineno
            before = body[index - 1].end_lineno if index else node.lineno
            after = body[index + 1].lineno if index + 1 < len(body) else node.end_lineno + 1
            above = [text for line, column, text, alone in comments
                     if alone and before < line < first and column == indent]
            beside = [text for line, column, text, alone in comments if not alone and first <= line <= last]
            below = [text for line, column, text, alone in comments
                     if alone and last < line < after and column > indent]
            descriptions[(node.name, statement.target.id)] = " ".join(above + beside + below)
    return descriptions


# ---------------------------------------------------------------- the configuration reference

def toml_value(value):
    """A value as an experiment file writes it: 64, "demo", [0, 1], false."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"
    return tomli_w.dumps({"v": value}).strip()[len("v = "):]


def _code(text):
    """Text as code inside a markdown table cell."""
    return "`" + text.replace("`", "'") + "`"


def _cell(text):
    """Text safe inside a markdown table cell: no table bar, no HTML tag (<arm> is text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def _number(value):
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _range(low, high):
    if low is None:
        return f"at most {_number(high)}"
    if high is None:
        return f"at least {_number(low)}"
    return f"{_number(low)} to {_number(high)}"


def valid_values(config, key):
    """What config.py accepts for a dotted key beyond its type, or ""."""
    parts = []
    if key in config._CHOICES:
        parts.append(" \\| ".join(f"`{choice}`" for choice in config._CHOICES[key]))
    if key in config._RANGES:
        parts.append(_range(*config._RANGES[key]))
    if key == "data.train_per_class":
        parts.append(f'or `"{config.ALL}"`')
    return ", ".join(parts)


def config_keys(config=None):
    """[(dotted key, default, valid values, description)] of every setting, in config.py's order."""
    if config is None:
        from augcompare.experiments import config
    descriptions = field_descriptions(CONFIG_SOURCE.read_text())
    missing = [f"{section}.{field.name}" for section, cls in config.SECTIONS.items()
               for field in dataclasses.fields(cls) if not descriptions.get((cls.__name__, field.name))]
    if missing:
        raise ValueError(f"experiments/config.py: {', '.join(missing)} without a description; write what each does "
                         "in a comment beside its default")
    rows = []
    for section, cls in config.SECTIONS.items():
        for field in dataclasses.fields(cls):
            key = f"{section}.{field.name}"
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            rows.append((key, default, valid_values(config, key), descriptions.get((cls.__name__, field.name), "")))
    return rows


def operations():
    """The built-in operations: key, valid values, default (off) and what each does."""
    from augcompare.augment import params
    out = ["| key | valid | default | what it does |", "| --- | --- | --- | --- |"]
    for key, param in params.PARAMS.items():
        default = params.DEFAULTS.get(key, False if param.kind is bool else 0)
        valid = param.describe() + (", whole" if param.kind is int else "")
        out.append(f"| `{key}` | {_cell(valid)} | {_code(toml_value(default))} | {_cell(param.doc)} |")
    return "\n".join(out) + "\n\nA value of 0 (or false) switches an operation off.\n"


def arm_keys():
    """The arm keys besides the operations: Keras layers, a function, mixing, a preset."""
    from augcompare.augment import params
    out = ["| key | what it does |", "| --- | --- |"]
    out += [f"| `{key}` | {_cell(doc)} |" for key, doc in params.ARM_KEYS.items()]
    out += ["| `preset` | a named set (below, or from the experiment's `preset_files`); the arm's own keys override "
            "it |",
            "| `strength` | with `preset`: multiplies the preset's magnitudes; a list sweeps it |"]
    return "\n".join(out) + "\n"


def presets():
    """The named sets an arm can use with `preset = "<name>"`, as augment/params.py defines them."""
    from augcompare.augment import params
    out = ["| preset | settings |", "| --- | --- |"]
    for name, settings in params.PRESETS.items():
        text = ", ".join(f"{key} = {toml_value(value)}" for key, value in settings.items())
        out.append(f"| `{name}` | {_code(text)} |")
    return "\n".join(out) + "\n"


def configuration_reference():
    """The markdown of the configuration reference: a table per section of every key, its
    default, its valid values and what it does; then the arm keys and the presets."""
    from augcompare.experiments import config
    out = []
    rows = config_keys(config)
    for section in config.SECTIONS:
        out += [f"## `[{section}]`", "", "| key | default | valid | what it does |", "| --- | --- | --- | --- |"]
        for key, default, valid, description in rows:
            if key.split(".")[0] == section:
                out.append(f"| `{key.split('.', 1)[1]}` | {_code(toml_value(default))} | {valid} | "
                           f"{_cell(description)} |")
        out.append("")
    out += ["## `[arms.<name>]`", "",
            "Each arm is one augmentation set; an arm without keys is the baseline (no augmentation). "
            "The arms have no default: a file needs at least one.", "",
            "### The built-in operations", "", operations(), "### The other arm keys", "", arm_keys(),
            "### Presets", "", presets()]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the command line

def command_line(width=100):
    """Each command's `--help`, as the command line's own parser (experiments/cli.py) writes it."""
    import argparse
    import os
    from augcompare.experiments import cli
    parser = cli._parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # argparse wraps to the terminal's width; the page's is fixed
    try:
        out = []
        for name, command in commands.choices.items():
            out += [f"### `augcompare {name}`", "", "```text", command.format_help().rstrip(), "```", ""]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(out)


# ---------------------------------------------------------------- measurements

RECORD_KEYS = ("machine", "versions", "command", "date", "conditions", "figures")


def read_records(folder=BENCH_RECORDS):
    """The measurement records, oldest first: [(file name, record)]. ValueError naming a record
    that lacks one of RECORD_KEYS."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        record = json.loads(path.read_text())
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise ValueError(f"{path}: a measurement record needs {', '.join(missing)}")
        records.append((path.name, record))
    return sorted(records, key=lambda item: (item[1]["date"], item[0]))


def _machine(record):
    machine = record["machine"]
    flags = ", ".join(machine.get("instruction_sets", []))
    text = f"{machine['cpu']}, {machine['cores']} cores" + (f"; instruction sets: {flags}" if flags else "")
    return text + (f" ({machine['note']})" if machine.get("note") else "")


def _seconds(value):
    return f"{value:.1f} s"


def _heading(name, record):
    versions = ", ".join(f"{key} {value}" for key, value in record["versions"].items())
    lines = [f"### {record.get('title', name)}", "",
             f"- **Machine:** {_machine(record)}",
             f"- **Command:** `{record['command']}`",
             f"- **Versions:** {versions}" if versions else None,
             f"- **Date:** {record['date']}",
             f"- **Conditions:** {record['conditions'] or 'not stated'}",
             f"- **Source:** {record['source']}" if record.get("source") else None,
             f"- **Record:** `results/bench/{name}`", ""]
    return [line for line in lines if line is not None]


def _run_table(run):
    """The parts of a `bench run` record's variants, a column each."""
    variants = run["variants"]
    names = list(variants)
    first = variants[names[0]]["wall_seconds"]
    out = ["| | " + " | ".join(f"`{name}`" for name in names) + " |", "| --- |" + " --- |" * len(names)]
    out.append("| whole command | " + " | ".join(
        f"{_seconds(v['wall_seconds'])} ({first / v['wall_seconds']:.2f}x)" for v in variants.values()) + " |")
    def part_cell(v, part):
        seconds = v.get("parts_seconds", {}).get(part)
        # A record converted from earlier prose keeps the shares it stated; a new one computes them.
        share = (v["parts_share_percent"].get(part) if "parts_share_percent" in v
                 else None if seconds is None else 100 * seconds / v["wall_seconds"])
        return "-" if seconds is None else _seconds(seconds) + ("" if share is None else f" ({share:.1f}%)")

    def answer_cell(v, arm):
        answer = v.get("answer", {}).get(arm)
        return "-" if answer is None else "%+.1f [%+.1f, %+.1f] *%s*" % tuple(answer)

    def rows(key, label, cell):
        """A row for each part (or arm) any variant has under key."""
        for name in dict.fromkeys(name for v in variants.values() for name in v.get(key, {})):
            out.append(f"| {label(name)} | " + " | ".join(cell(v, name) for v in variants.values()) + " |")

    rows("parts_seconds", _cell, part_cell)
    if all("other_fraction" in v for v in variants.values()):
        out.append("| everything but training and evaluation | " + " | ".join(
            f"{100 * v['other_fraction']:.1f}%" for v in variants.values()) + " |")
    rows("answer", lambda arm: f"the answer: {arm} - baseline, 95% CI", answer_cell)
    return out


def _pipeline(figures):
    speeds = figures["images_per_s"]
    rows = [f"| {_cell(name)} | {value:,.0f} |" for name, value in speeds.items()]
    return (["| pipeline | images/s |", "| --- | --- |", *rows, "",
             f"The standard set against the best anchor: **{figures['ratio_vs_best_anchor']:.2f}x**."])


def _training(figures):
    rows = [f"| {_cell(name)} | {value:.3f} |" for name, value in figures["seconds_per_epoch"].items()]
    lines = ["| arm | s/epoch |", "| --- | --- |", *rows]
    if figures.get("speed_vs_baseline"):
        lines += ["", f"Speed against {figures.get('baseline', 'the baseline')}: " + ", ".join(
            f"{name} {value:.2f}x" for name, value in figures["speed_vs_baseline"].items()) + "."]
    return lines


def _memory(figures):
    rows = [f"| {int(count):,} | {kib / 1024:.1f} MiB |" for count, kib in figures["peak_rss_anon_kib"].items()]
    return ["| images | peak RssAnon |", "| --- | --- |", *rows, "", f"Ratio: **{figures['ratio']:.3f}x**."]


def _prepare(figures):
    lines = ["| | images/s | CPU per image |", "| --- | --- | --- |",
             f"| single-process Pillow loop | {figures['single_process_images_per_s']:,.0f} | "
             f"{figures['cpu_ms_per_image']['single_process']:.2f} ms |",
             f"| `augcompare prepare` | {figures['prepare_images_per_s']:,.0f} | "
             f"{figures['cpu_ms_per_image']['prepare']:.2f} ms |", "",
             f"Ratio: **{figures['ratio']:.2f}x**."]
    if "peak_rss_anon_kib" in figures:
        peaks = ", ".join(f"{kib / 1024:.1f} MiB for {int(count):,} images"
                          for count, kib in figures["peak_rss_anon_kib"].items())
        lines += ["", f"Peak RssAnon of the command and its workers: {peaks} "
                      f"(**{figures['memory_ratio']:.2f}x**)."]
    return lines


def _epochs(figures):
    out = ["| arm | second epoch | job of 2 epochs, with evaluation | a 15-epoch job, extrapolated |",
           "| --- | --- | --- | --- |"]
    for arm, row in figures["arms"].items():
        out.append(f"| {arm} | {row['second_epoch_seconds']:,.0f} s | {row['job_seconds']:,.0f} s | "
                   f"{row['extrapolated_job_minutes']:,.0f} min |")
    out += ["", f"The whole command: {figures['wall_seconds'] / 60:.0f} min {figures['wall_seconds'] % 60:.0f} s."]
    return out


def _hours(seconds):
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _estimate(figures):
    """`augcompare run --estimate --json` of each experiment: the plan and the prediction, then
    each arm's measured training step."""
    out = ["| experiment | jobs: pilot (most) | jobs at once x threads | predicted: pilot | predicted: most |",
           "| --- | --- | --- | --- | --- |"]
    for experiment, answer in figures.items():
        seconds = answer["seconds"]
        out.append(f"| `{experiment}` | {answer['jobs']} ({answer['jobs_most']}) | {answer['jobs_at_once']} x "
                   f"{answer['threads_per_job']} | {_hours(seconds['expected'])} | {_hours(seconds['most'])} |")
    arms = list(dict.fromkeys(arm for answer in figures.values() for arm in answer["arms"]))
    out += ["", "| ms a training step | " + " | ".join(f"`{experiment}`" for experiment in figures) + " |",
            "| --- |" + " --- |" * len(figures)]
    for arm in arms:
        cells = [f"{answer['arms'][arm]['step'] * 1000:.0f}" if arm in answer["arms"] else "-"
                 for answer in figures.values()]
        out.append(f"| {arm} | " + " | ".join(cells) + " |")
    return out


# A table per benchmark a record holds: what `augcompare bench --json` writes under each name,
# `epochs`, the per-arm epoch times of an `augcompare run` (the CIFAR-10 and Fashion-MNIST stand-ins),
# and `estimate`, what `augcompare run --estimate --json` wrote for each experiment.
RENDERERS = {"run": _run_table, "pipeline": _pipeline, "training": _training, "memory": _memory,
             "prepare": _prepare, "epochs": _epochs, "estimate": _estimate}


def render_record(name, record):
    """One record as markdown: its machine, command, versions, date and conditions, then a table
    per benchmark it holds (what `augcompare bench --json` writes, under figures)."""
    out = _heading(name, record)
    for benchmark, figures in record["figures"].items():
        if benchmark not in RENDERERS:
            raise ValueError(f"{name}: no table for benchmark {benchmark!r}; known: {', '.join(RENDERERS)}")
        out += [f"**`{benchmark}`**", "", *RENDERERS[benchmark](figures), ""]
        if record.get("targets", {}).get(benchmark):
            out += [f"Target: {record['targets'][benchmark]}.", ""]
    if record.get("notes"):
        out += [record["notes"], ""]
    return out


def measurements(folder=BENCH_RECORDS, benchmark=None):
    """The markdown of every record (or of those holding `benchmark`), newest first."""
    out = []
    for name, record in reversed(read_records(folder)):
        if benchmark is None or benchmark in record["figures"]:
            out += render_record(name, record)
    return "\n".join(out) + "\n"



def render(what):
    """The markdown a page's `<!-- generated: WHAT -->` line stands for: `configuration`, or
    `operations`, `presets`, `arm-keys`, `command-line`, or `measurements [BENCHMARK]`."""
    parts = {"configuration": configuration_reference, "operations": operations, "presets": presets,
             "arm-keys": arm_keys, "command-line": command_line}
    if len(what) == 1 and what[0] in parts:
        return parts[what[0]]()
    if what and what[0] == "measurements" and len(what) <= 2:
        return measurements(benchmark=what[1] if len(what) == 2 else None)
    raise ValueError(f"no generated part {' '.join(what)!r}; write one of configuration, operations, presets, "
                     "arm-keys, command-line or measurements [BENCHMARK]")
