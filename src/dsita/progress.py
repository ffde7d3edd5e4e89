"""Progress of long work: rich bars with an ETA in a terminal, and a log line at least every 30 seconds.

The log lines reach wherever logging goes (the console, and `dsita run`'s per-step log files), so Docker logs,
CI and `nohup` show progress too; in a terminal the bars come on top of them.
"""

from __future__ import annotations

import logging
import math
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

LOG_INTERVAL_S = 30.0


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

    def __init__(self, show_bars: bool, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
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
