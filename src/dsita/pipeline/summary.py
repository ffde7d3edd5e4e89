"""The table `dsita run` ends with: what each step did and took, hours per split, test WER/CER greedy and with
the LM, alpha/beta, and the artifacts with their sizes. Built from the manifest and the files, so that it is
complete when every step was already up to date."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dsita.errors import DsitaError
from dsita.export.card import RELEASE_TENSORFLOW, evaluation_metrics
from dsita.export.release import RELEASE_FILES
from dsita.lm.scorer import Scorer, load_scorer
from dsita.pipeline.state import Layout, Manifest
from dsita.training.checkpoint import BEST_DEV

MB = 1e6


@dataclass(frozen=True)
class Outcome:
    """What one step did in this run: ran, up to date, skipped or not selected, why, and its seconds."""

    step: str
    status: str  # "ran", "up to date", "skipped", "not selected"
    detail: str = ""
    seconds: float = 0.0


def render_text(item: Any, width: int = 110) -> str:
    """A rich table or text as plain text, for the log files."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, soft_wrap=True).print(item)
    return buffer.getvalue().rstrip()


def _pct(value: object) -> str:
    return f"{value:.2%}" if isinstance(value, float) else str(value)


def _size(path: Path) -> str:
    if path.is_dir():
        return f"{sum(p.stat().st_size for p in path.rglob('*') if p.is_file()) / MB:.1f} MB"
    return f"{path.stat().st_size / MB:.1f} MB" if path.is_file() else "missing"


def summary_tables(layout: Layout, manifest: Manifest, outcomes: list[Outcome]) -> list[Table]:
    """The summary: steps of this run, data imported, test results with alpha and beta, artifacts."""
    steps = Table("step", "status", "seconds", "", title="steps (this run)")
    for o in outcomes:
        steps.add_row(o.step, o.status, f"{o.seconds:.1f}" if o.status == "ran" else "", o.detail)
    steps.add_row("total", "", f"{sum(o.seconds for o in outcomes):.1f}", "", style="bold")

    imported = (manifest.record("import") or {}).get("report", {})
    data = Table(
        "split",
        "clips",
        "hours",
        title="data imported",
        caption=f"from {Path(imported.get('source', 'nowhere')).name}",
    )
    for split, hours in imported.get("hours", {}).items():
        data.add_row(split, str(imported["clips"][split]), f"{hours:.3f}")

    results = Table("measure", "greedy", "with the LM", title="test results")
    metrics = evaluation_metrics(layout.checkpoints) if layout.checkpoints.is_dir() else {}
    for measure in ("wer", "cer"):
        results.add_row(
            measure.upper(),
            _pct(metrics.get(f"test_{measure}_greedy", "not measured")),
            _pct(metrics.get(f"test_{measure}_lm", "not measured")),
        )
    try:
        scorer = load_scorer(layout.scorer)
        results.add_row("alpha / beta", "", f"{scorer.alpha:.3f} / {scorer.beta:.3f} ({_tuned_by(scorer)})")
    except DsitaError:
        results.add_row("alpha / beta", "", "no scorer")

    artifacts = Table("artifact", "size", title="artifacts")
    for path in (
        *(layout.root / name for name in RELEASE_FILES),
        layout.scorer,
        layout.checkpoints / BEST_DEV,
        layout.logs,
    ):
        artifacts.add_row(str(path), _size(path) if path.exists() else _why_missing(path, manifest))
    return [steps, data, results, artifacts]


def _why_missing(path: Path, manifest: Manifest) -> str:
    """The word "missing", or why the export wrote no such file (a conformer has no TensorFlow model)."""
    for step in ("lm-optimize", "export"):
        reason = ((manifest.record(step) or {}).get("report") or {}).get("no_client_files")
        if reason and path.name == RELEASE_TENSORFLOW:
            return f"not written: {reason}"
    return "missing"


def _tuned_by(scorer: Scorer) -> str:
    """Where the scorer's alpha and beta came from, in words."""
    from dsita.evaluation.tune import SHORT_SEARCH

    tuning = scorer.tuning or {}
    if not tuning:
        return "LM_ALPHA / LM_BETA, not tuned"
    where = "short search" if tuning.get("search") == SHORT_SEARCH else "LM_EVALUATE_RANGE search"
    return f"{where} on dev, {tuning.get('trials', '?')} trials"
