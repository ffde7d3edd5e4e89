"""Progress of long work: rich bars with an ETA in a terminal, and a log line at least every 30 seconds.

The log lines reach wherever logging goes (the console, and `dsita run`'s per-step log files), so Docker logs,
CI and `nohup` show progress too; in a terminal the bars come on top of them. DSITA_PROGRESS_INTERVAL_S sets
the seconds between log lines (0: one per step of work, as the tests read them).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

LOG_INTERVAL_S = 30.0
INTERVAL_VARIABLE = "DSITA_PROGRESS_INTERVAL_S"


def log_interval_s() -> float:
    """Seconds between progress log lines: DSITA_PROGRESS_INTERVAL_S, else (or when it is not a number of
    seconds, with a warning) LOG_INTERVAL_S."""
    text = os.environ.get(INTERVAL_VARIABLE, "").strip()
    if not text:
        return LOG_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        logging.getLogger(__name__).warning(
            "%s=%r is not a number of seconds (0 or more): progress lines every %g s",
            *(INTERVAL_VARIABLE, text, LOG_INTERVAL_S),
        )
        return LOG_INTERVAL_S
    return value


class Task:
    """One counter of a `Progress`: advance it as work is done; every `interval_s` it writes a log line."""

    def __init__(
        self, owner: Progress, description: str, total: float | None, unit: str, interval_s: float
    ) -> None:
        self._owner = owner
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.status = ""
        self._interval_s = interval_s
        self._started = self._logged = time.monotonic()
        self._id = owner.bars.add_task(description, total=total, status="") if owner.bars else None

    def advance(self, amount: float = 1.0, status: str | None = None) -> None:
        """Count `amount` more units done; `status` replaces the short text shown after the counter."""
        self.completed += amount
        if status is not None:
            self.status = status
        if self._id is not None and self._owner.bars is not None:
            self._owner.bars.update(self._id, advance=amount, status=self.status)
        now = time.monotonic()
        if now - self._logged >= self._interval_s:
            self._logged = now
            self._owner.logger.info("%s", self.line())

    @contextlib.contextmanager
    def ticking(self, status: str) -> Iterator[None]:
        """While the block runs work that reports nothing (an external program), the log line still comes
        every interval, with `status` and how long it has run."""
        stop, started = threading.Event(), time.monotonic()

        def beat() -> None:
            while not stop.wait(min(1.0, max(self._interval_s, 0.2))):
                self.advance(0, f"{status}, {_duration(time.monotonic() - started)}")

        thread = threading.Thread(target=beat, name="progress-ticker", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.status = ""  # the program is done: its status would mislead the next lines
            if self._id is not None and self._owner.bars is not None:
                self._owner.bars.update(self._id, status="")

    def set_total(self, total: float) -> None:
        """The amount of work became known, or grew."""
        self.total = total
        if self._id is not None and self._owner.bars is not None:
            self._owner.bars.update(self._id, total=total)

    def line(self) -> str:
        """The progress in words: '`description`: 120/400 clips (30 %), 2 min left, loss 1.2'."""
        done = f"{self.completed:,.0f}"
        if self.total:
            share = self.completed / self.total
            done += f"/{self.total:,.0f} {self.unit} ({share:.0%})".rstrip()
            elapsed = time.monotonic() - self._started
            if 0 < share < 1:
                done += f", {_duration(elapsed * (1 - share) / share)} left"
        else:
            done += f" {self.unit}".rstrip()
        return f"{self.description}: {done}" + (f", {self.status}" if self.status else "")


class Progress:
    """Bars (when `show_bars`, i.e. in a terminal) and periodic log lines for one or more tasks."""

    def __init__(self, show_bars: bool, logger: logging.Logger, interval_s: float | None = None) -> None:
        self.logger = logger
        self.interval_s = log_interval_s() if interval_s is None else interval_s
        self.bars: RichProgress | None = None
        if show_bars:
            self.bars = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
                transient=False,
            )

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        """A new counter shown in this display."""
        return Task(self, description, total, unit, self.interval_s)

    def __enter__(self) -> Progress:
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.bars is not None:
            self.bars.stop()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
