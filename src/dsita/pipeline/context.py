"""What every step of `dsita run` gets (`Context`) and how a step is declared (`Step`).

Every step declares what decides whether it must run again: the settings it reads, the outside files it
reads (identified by size and modification time), and the earlier steps whose products it uses (identified
by content). Its own products are what later steps use; a step whose products are missing runs again.
Each step returns a small JSON report that the manifest keeps for the summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsita.errors import DsitaError
from dsita.pipeline.state import Layout, Manifest
from dsita.settings import Settings
from dsita.text.alphabet import Alphabet
from dsita.training.runtime import Distributed


@dataclass(frozen=True)
class Context:
    """What every step gets: the settings, DATA_DIR's layout and manifest, the selected and pending
    steps, the distributed ranks, the worker count and whether to show progress bars.
    """

    settings: Settings
    layout: Layout
    manifest: Manifest
    selected: frozenset[str]
    pending: frozenset[str]  # selected steps that never finished, or are forced
    distributed: Distributed = field(default_factory=Distributed)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = False

    def alphabet(self) -> Alphabet:
        """The alphabet the alphabet step wrote; DsitaError when the file is missing."""
        if not self.layout.alphabet.is_file():
            raise DsitaError(f"{self.layout.alphabet} is missing: the alphabet step writes it")
        return Alphabet.load(self.layout.alphabet)

    def extra_csvs(self) -> list[Path]:
        """The CSVs the import step writes for EXTRA_CORPORA, one folder each."""
        return [self.layout.extracted / "extra" / name / f"{name}.csv" for name in extra_names(self.settings)]

    def train_csvs(self) -> list[Path]:
        """The training CSVs: the imported train split, then the extra corpora."""
        return [self.layout.split_csv("train"), *self.extra_csvs()]

    def scorer(self) -> Path | None:
        """The scorer folder when the lm step has built one (its manifest exists), else None."""
        from dsita.lm.scorer import MANIFEST

        return self.layout.scorer if (self.layout.scorer / MANIFEST).is_file() else None


def extra_names(settings: Settings) -> list[str]:
    """A folder name per EXTRA_CORPORA table: its position and file stem, other characters as `_`."""
    return [f"{i}-{re.sub(r'[^A-Za-z0-9_.-]', '_', p.stem)}" for i, p in enumerate(settings.extra_corpora, 1)]


Report = dict[str, Any]


def _none(ctx: Context) -> list[Path]:
    return []


def _no_reason(ctx: Context) -> str | None:
    return None


@dataclass(frozen=True)
class Step:
    """One step of `dsita run`: its action, and what decides whether it must run again (the settings
    it reads, the steps whose products it uses, its outside inputs, its products), and when it is skipped.
    """

    name: str
    action: Callable[[Context], Report]
    settings: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    inputs: Callable[[Context], list[Any]] = _none  # identities of outside files
    products: Callable[[Context], list[Path]] = _none
    skip: Callable[[Context], str | None] = _no_reason  # why the settings leave this step out, if they do
    always: bool = False  # runs on every `dsita run`: instant, and the other steps need it
