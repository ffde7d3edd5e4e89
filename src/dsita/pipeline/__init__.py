"""`dsita run`: one non-interactive, resumable command from DATA_DIR/sources/it.tar.gz to the release files.

Steps, in order: checks, alphabet, import, lm, train, test, export, lm-optimize, package (see `steps`).
The names below are imported on first use, so that `dsita import` and `dsita lm build`, which take the
DATA_DIR lock of `dsita.pipeline.state`, do not load the whole pipeline (and torch) to do so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsita.pipeline.runner import RunOptions, RunResult, run_pipeline
    from dsita.pipeline.steps import STEP_NAMES

__all__ = ["STEP_NAMES", "RunOptions", "RunResult", "run_pipeline"]


def __getattr__(name: str) -> Any:
    if name in ("RunOptions", "RunResult", "run_pipeline"):
        from dsita.pipeline import runner

        return getattr(runner, name)
    if name == "STEP_NAMES":
        from dsita.pipeline.steps import STEP_NAMES

        return STEP_NAMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
