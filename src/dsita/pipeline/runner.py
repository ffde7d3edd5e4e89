"""`dsita run`: every step in order under DATA_DIR's lock, skipping those that are up to date.

A step is up to date when the manifest records it finished with the same key (its settings, outside inputs
and the content of the products it uses) and its own products are still there. A killed run leaves no
record for the step it was in, so the next run starts there; each step resumes its own work (the importer
keeps converted clips, training resumes from last.pt, the alpha/beta study from its database).

Under torchrun, rank 0 runs the pipeline and the other ranks wait for it at the training step, train with
it, and exit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from rich.table import Table

from dsita.errors import DsitaError, PrintableLog
from dsita.fileio import atomic_write_text
from dsita.pipeline.checks import LOG_BYTES, disk_needs, prepare_data_dir
from dsita.pipeline.context import Context, Step
from dsita.pipeline.state import Layout, Manifest, make_key, run_lock
from dsita.pipeline.steps import BY_NAME, STEP_NAMES, STEPS
from dsita.pipeline.summary import Outcome, render_text, summary_tables
from dsita.settings import Settings
from dsita.system import DISK_ERRNOS, disk_error, disk_errors, disk_message
from dsita.training.runtime import Distributed

log = logging.getLogger(__name__)
# A failing step's error goes to the log files only: the command line prints it once, on one line.
failures = logging.getLogger("dsita.pipeline.failures")
failures.propagate = False

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class RunOptions:
    """What `dsita run` was asked for: the steps to run, those to force, workers and progress bars."""

    steps: tuple[str, ...] = STEP_NAMES  # checks and alphabet run in any case
    force: tuple[str, ...] = ()  # run these even when up to date
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = False

    @classmethod
    def parse(cls, steps: str | None, force: Sequence[str], progress: bool) -> RunOptions:
        """Options from `--steps a,b` and `--force STEP`; an unknown step name is an error."""
        chosen = tuple(s.strip() for s in steps.split(",") if s.strip()) if steps else STEP_NAMES
        for name in (*chosen, *force):
            if name not in BY_NAME:
                raise DsitaError(f"unknown step {name!r}; the steps are: {', '.join(STEP_NAMES)}")
        for name in force:
            if name not in chosen and not BY_NAME[name].always:
                raise DsitaError(f"--force {name}: {name} is not among --steps {','.join(chosen)}")
        return cls(chosen, tuple(force), progress=progress)


@dataclass(frozen=True)
class RunResult:
    """What a `dsita run` did: each step's outcome, the summary tables, and where they were written."""

    outcomes: list[Outcome]
    tables: list[Table]
    summary_path: Path


class TrainGate:
    """Under torchrun: rank 0 tells the others, when it reaches the training step, whether to train."""

    def __init__(self, distributed: Distributed) -> None:
        import torch
        import torch.distributed as dist

        self.distributed, self.sent = distributed, False
        if not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(distributed.local_rank)
            dist.init_process_group(
                "nccl" if cuda else "gloo", rank=distributed.rank, world_size=distributed.world_size
            )
        # The others wait while rank 0 imports and builds the LM, for hours on Common Voice: a CPU group
        # with a long timeout, so that no GPU collective sits waiting.
        self.group = dist.new_group(backend="gloo", timeout=timedelta(days=30))

    def decide(self, train: bool) -> bool:
        """Whether to train: rank 0's `train`, broadcast to the other ranks on the first call only;
        later calls, and single-process runs, return `train` unchanged.
        """
        import torch.distributed as dist

        if self.distributed.world_size == 1 or self.sent:
            return train
        box = [train]
        dist.broadcast_object_list(box, src=0, group=self.group)
        self.sent = True
        return bool(box[0])


def run_pipeline(
    settings: Settings, options: RunOptions, distributed: Distributed | None = None
) -> RunResult | None:
    """Run the selected steps; returns the summary on rank 0, None on the other ranks."""
    distributed = distributed or Distributed()
    layout = Layout(settings.data_dir)
    gate = TrainGate(distributed) if distributed.world_size > 1 else None
    if not distributed.is_main:
        assert gate is not None
        if gate.decide(False):  # the value is rank 0's
            ctx = Context(
                settings, layout, Manifest(layout), frozenset(), frozenset(), distributed, options.workers
            )
            BY_NAME["train"].action(ctx)
        return None
    prepare_data_dir(layout.root)
    logging.getLogger("dsita").setLevel(min(logging.getLogger("dsita").getEffectiveLevel(), logging.INFO))
    # A full or read-only disk outside any step (the lock, the manifest, the summary) is one line too.
    with disk_errors(layout.root, None, "dsita run"), _log_to(layout.logs / "run.log"), run_lock(layout.root):
        try:
            return _run_steps(settings, layout, options, distributed, gate)
        finally:
            if gate is not None:
                gate.decide(False)  # releases the other ranks when training was not reached


def _run_steps(
    settings: Settings, layout: Layout, options: RunOptions, distributed: Distributed, gate: TrainGate | None
) -> RunResult:
    _remove_leftovers(layout)
    manifest = Manifest(layout)
    selected = frozenset(options.steps) | {s.name for s in STEPS if s.always}
    pending = frozenset(s for s in selected if s in options.force or manifest.record(s) is None)
    ctx = Context(
        settings, layout, manifest, selected, pending, distributed, options.workers, options.progress
    )
    log.info(
        "dsita run in %s: steps %s", layout.root.resolve(), ", ".join(s for s in STEP_NAMES if s in selected)
    )
    outcomes = []
    for number, step in enumerate(STEPS, start=1):
        if step.name not in selected:
            outcomes.append(Outcome(step.name, "not selected"))
            continue
        with _log_to(layout.logs / f"{number:02d}-{step.name}.log") as log_path:
            outcomes.append(_run_step(ctx, step, options.force, log_path, gate))
    tables = summary_tables(layout, manifest, outcomes)
    summary_path = layout.logs / "summary.txt"
    atomic_write_text(summary_path, "\n\n".join(render_text(t) for t in tables) + "\n")
    return RunResult(outcomes, tables, summary_path)


def _run_step(
    ctx: Context, step: Step, force: Sequence[str], log_path: Path, gate: TrainGate | None
) -> Outcome:
    """Run one step unless it is skipped or up to date; a failure names the step and its log.

    A full or read-only disk that the step's own code did not name (an export's graph, a log line) is named
    here, with what the checks estimated the step needs.
    """
    try:
        return _decide_and_run(ctx, step, force, gate)
    except DsitaError as exc:
        failures.error("%s failed: %s", step.name, exc)
        raise DsitaError(f"step {step.name}: {exc} (log: {log_path})") from None
    except (OSError, RuntimeError) as exc:
        needed = partial(_step_needs, ctx, step.name)
        translated = disk_error(exc, ctx.layout.root, needed, f"the {step.name} step")
        if translated is None:
            failures.exception("%s failed", step.name)
            raise
        failures.error("%s failed: %s", step.name, translated)
        raise DsitaError(f"step {step.name}: {translated} (log: {log_path})") from None
    except BaseException:
        failures.exception("%s failed", step.name)
        raise


def _step_needs(ctx: Context, step: str) -> int:
    return disk_needs(ctx.settings, ctx.layout, [step]).get(step, 0)


def _decide_and_run(ctx: Context, step: Step, force: Sequence[str], gate: TrainGate | None) -> Outcome:
    def tell_others(train: bool) -> None:
        if gate is not None and step.name == "train":
            gate.decide(train)

    reason = step.skip(ctx)
    if reason:
        log.info("%s: skipped (%s)", step.name, reason)
        tell_others(False)
        return Outcome(step.name, "skipped", reason)
    key = None if step.always else step_key(ctx, step)
    why = "runs every time" if key is None else _why(ctx, step, key, force)
    if why is None:
        finished = ctx.manifest.steps[step.name]["finished"]
        log.info("%s: up to date (finished %s)", step.name, finished)
        tell_others(False)
        return Outcome(step.name, "up to date", f"finished {finished}")
    tell_others(True)
    ctx.manifest.forget(step.name)  # until it finishes again: a killed step runs again next time
    log.info("%s: running (%s)", step.name, why)
    started = time.monotonic()
    report = step.action(ctx)
    seconds = time.monotonic() - started
    log.info("%s: done in %.1f s", step.name, seconds)
    if key is not None:
        ctx.manifest.finish(step.name, key, report, seconds)
    return Outcome(step.name, "ran", why, seconds)


def step_key(ctx: Context, step: Step) -> str:
    """What the step's result depends on: its settings, outside inputs, and the products it uses."""
    return make_key(
        {
            "step": step.name,
            "settings": {name: ctx.settings.env_value(name) for name in step.settings},
            "inputs": step.inputs(ctx),
            "uses": {used: ctx.manifest.digests_of(BY_NAME[used].products(ctx)) for used in step.uses},
        }
    )


def _why(ctx: Context, step: Step, key: str, force: Sequence[str]) -> str | None:
    """Why the step must run, or None when it is up to date."""
    record = ctx.manifest.record(step.name)
    if step.name in force:
        return "forced"
    if record is None:
        return "not run before"
    if record["key"] != key:
        return "settings or inputs changed"
    if not all(p.exists() for p in step.products(ctx)):
        return "products missing"
    return None


class _LogFile(logging.FileHandler):
    """A log file that, on a full or read-only disk, stops writing and keeps the error for the run to report
    (the logging module would print a traceback for every record instead)."""

    failure: OSError | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            self.failure = self.failure or exc
            self.setLevel(logging.CRITICAL + 1)
            return
        super().handleError(record)


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[Path]:
    """Copy every log record to `path` (appended: the logs of earlier runs stay) while the block runs."""
    with disk_errors(path.parent, LOG_BYTES, "the logs"):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    handler.addFilter(PrintableLog())
    loggers = (logging.getLogger(), failures)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
    if handler.failure is not None:
        raise DsitaError(
            disk_message(path.parent, handler.failure.errno or errno.ENOSPC, LOG_BYTES, "the logs")
        )


def _remove_leftovers(layout: Layout) -> None:
    """Temporary files and folders of a killed run (atomic writes, LM build, export): ours under the lock."""
    folders = (
        *(layout.root, layout.extracted, layout.extracted / "clips", layout.lm, layout.scorer),
        *(layout.checkpoints, layout.models),
    )
    patterns = (".*.tmp", f".{layout.scorer.name}.build-*", f".{layout.scorer.name}.old-*", ".export-*")
    for folder in folders:
        for pattern in patterns:
            for path in folder.glob(pattern):
                log.info("Removing %s, left by an interrupted run", path)
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
