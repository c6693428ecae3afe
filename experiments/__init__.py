"""The experiment harness: configuration, data sources, paired runs, statistics and figures.

From Python: `from augcompare.experiments import run_experiment, load_run` (experiments.api). The
names are loaded on first use, so that the command line's quick commands load no TensorFlow.
"""

import importlib

from augcompare.experiments.machine import use_onednn

use_onednn()  # before anything of the harness loads TensorFlow (experiments.machine)

_EXPORTS = {"run_experiment": "api", "resume_run": "api", "load_run": "api", "RunResult": "api"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
