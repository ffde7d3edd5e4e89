"""Shared by the importers: options, clip conversion in worker processes, filters, skipped list, report.

Every row that does not reach a CSV becomes a `Skip` with a reason from the constants below, is written to
the skipped list and counted in the report: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from rich.table import Table

from dsita.audio import SAMPLE_RATE, STEP_SAMPLES, to_mono_16k, write_wav
from dsita.data.csvs import WAV_HEADER_BYTES, Sample, write_csv
from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.progress import Progress
from dsita.system import ParentWatch
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import Rejection, normalize

# Skip reasons: one counter each in the report.
NOT_FOUND = "clip not found"
UNDECODABLE = "cannot be decoded"
SILENT = "silent or empty"
TOO_LONG = "too long"
TOO_SHORT = "too short"
TRANSCRIPT_REJECTED = "transcript rejected"
INVALID_UTF8 = "invalid UTF-8"
MALFORMED_ROW = "malformed row"
BLANK_LINE = "blank line"
TEXT_TOO_LONG = "transcript too long"
UNSAFE_PATH = "unsafe clip path"
DUPLICATE = "duplicate clip"
UNSAFE_MEMBER = "unsafe archive member"
LINK_MEMBER = "link or special member"
BEYOND_LIMIT = "beyond IMPORT_MAX_CLIPS"

BATCH = 4  # clips per worker task: fewer round trips between processes, still balanced at the end
UNKNOWN_FRAMES = 1 << 62  # libsndfile's frame count for a stream of unknown length (SF_COUNT_MAX)
# A transcript this many times longer than the most characters a MAX_SECS clip can carry is not
# normalized at all (200 kB of text takes a second to normalize, and can only be skipped).
RAW_TEXT_FACTOR = 10
SILENCE_PEAK = 1e-4  # below about -80 dBFS nothing is audible once written as 16-bit PCM
SKIPPED_COLUMNS = ("split", "source", "row", "reason", "detail")
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the line breaks the csv module knows
Quoting = Literal[0, 1, 2, 3]  # a csv.QUOTE_* constant, as typeshed types csv.reader's `quoting`


@dataclass(frozen=True)
class ImportOptions:
    """How to import: transcripts must encode in `alphabet`; `sha256`/`sha1` (hex, optional) are the archive's
    expected digests; `max_clips` keeps only the first rows of each split (the rest are listed as skipped)."""

    alphabet: Alphabet
    max_secs: float = 10.0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    sha256: str = ""
    sha1: str = ""
    max_clips: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class Skip:
    """A source row (or archive member) left out of the import, and why: a row of the skipped-rows CSV."""

    split: str  # a split name, or "archive" for archive members
    source: str  # the table or archive member the row came from
    row: int | None  # line number in `source`, header = 1
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class Entry:
    """A row that passed the text checks and waits for its clip."""

    split: str
    source: str
    row: int
    key: str  # identifies the clip among the outcomes
    wav: Path
    transcript: str  # normalized


@dataclass(frozen=True)
class ClipJob:
    """One clip to convert in a worker: its source audio, the WAV to write, the longest clip allowed."""

    src: Path | bytes  # an audio file, or the bytes of an archive member
    wav: Path
    max_secs: float


@dataclass(frozen=True)
class ClipOutcome:
    """What became of one clip: converted, reused from an earlier run, or failed (with a reason).

    `samples` and `size` are the WAV's length in samples and in bytes; both 0 for a failure.
    """

    status: Literal["converted", "reused", "failed"]
    samples: int = 0
    size: int = 0
    reason: str = ""
    detail: str = ""


def existing_wav(wav: Path) -> ClipOutcome | None:
    """The resume rule: a WAV that exists as 16 kHz mono 16-bit PCM with samples is not converted again."""
    if not wav.is_file():
        return None
    try:
        info = sf.info(wav)
    except (sf.LibsndfileError, RuntimeError, ValueError):  # unreadable: convert it again
        return None
    if (info.format, info.subtype, info.samplerate, info.channels) != ("WAV", "PCM_16", SAMPLE_RATE, 1):
        return None
    if info.frames <= 0:
        return None
    return ClipOutcome("reused", info.frames, wav.stat().st_size)


def _prepare(job: ClipJob) -> ClipOutcome | np.ndarray:
    """A clip's mono 16 kHz audio ready to write, or the outcome that makes writing unnecessary."""
    reused = existing_wav(job.wav)
    if reused is not None:
        return reused
    if isinstance(job.src, Path) and not job.src.is_file():
        return ClipOutcome("failed", reason=NOT_FOUND, detail=job.src.name)
    name = job.src.name if isinstance(job.src, Path) else job.wav.stem
    try:
        decoded = _decode(job)
        if isinstance(decoded, ClipOutcome):
            return decoded
        audio = to_mono_16k(*decoded)
    except sf.LibsndfileError as exc:
        return ClipOutcome("failed", reason=UNDECODABLE, detail=f"{name}: {exc.error_string}")
    except (RuntimeError, ValueError, EOFError) as exc:
        return ClipOutcome("failed", reason=UNDECODABLE, detail=f"{name}: {exc}")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if not np.isfinite(peak):
        return ClipOutcome("failed", audio.size, reason=UNDECODABLE, detail=f"{name}: NaN or infinite values")
    if peak < SILENCE_PEAK:
        return ClipOutcome(
            "failed", audio.size, reason=SILENT, detail=f"{audio.size} samples, peak {peak:.1e}"
        )
    return audio


def _decode(job: ClipJob) -> tuple[np.ndarray, int] | ClipOutcome:
    """(frames, channels) float32 audio and its rate. A clip over MAX_SECS is refused by its header's
    length, before anything is decoded, and one whose header gives no length is decoded up to MAX_SECS
    only: an hour-long clip never sits in memory.

    One read call: soundfile seeks after every read, and libsndfile's MP3 seeks are inexact, so that MP3s
    read block by block come out garbled (measured with libsndfile 1.2.2).
    """
    source = job.src if isinstance(job.src, Path) else io.BytesIO(job.src)
    with sf.SoundFile(source) as f:
        rate, most = f.samplerate, int(job.max_secs * f.samplerate)
        known = 0 <= f.frames < UNKNOWN_FRAMES
        if known and f.frames > most:
            return _too_long(f.frames / rate, job.max_secs)
        audio = f.read(most + 1, dtype="float32", always_2d=True)
    if len(audio) > most:
        return _too_long(None, job.max_secs)
    return audio, rate


def _too_long(seconds: float | None, max_secs: float) -> ClipOutcome:
    length = f"{seconds:.2f} s" if seconds is not None else "longer"
    return ClipOutcome("failed", reason=TOO_LONG, detail=f"{length} > {max_secs:g} s (MAX_SECS)")


def wav_size(src: Path | bytes) -> int | None:
    """The bytes of the WAV the importer writes for a clip, from its header only (None: unreadable)."""
    try:
        info = sf.info(src if isinstance(src, Path) else io.BytesIO(src))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return None
    duration: float = info.duration
    return WAV_HEADER_BYTES + 2 * round(duration * SAMPLE_RATE)


def convert_batch(jobs: list[ClipJob]) -> list[ClipOutcome]:
    """Decode, downmix, resample and write clips in order (in a worker process)."""
    outcomes = []
    for job in jobs:
        prepared = _prepare(job)
        if not isinstance(prepared, ClipOutcome):
            # No fsync per clip: the resume rule validates every WAV, and a rename survives a killed process.
            write_wav(job.wav, prepared, durable=False)
            prepared = ClipOutcome("converted", prepared.size, job.wav.stat().st_size)
        outcomes.append(prepared)
    return outcomes


class ClipPool:
    """Runs `convert_batch` in worker processes, BATCH clips a task, with a bounded number of tasks in flight.

    Enter it before starting `progress`: the workers are forked on entry, before rich's refresh thread runs.
    """

    def __init__(self, options: ImportOptions, progress: Progress) -> None:
        self.outcomes: dict[str, ClipOutcome] = {}
        self._task = progress.task("converting clips", 0, "clips")
        self._submitted = 0
        self._batch: list[tuple[str, ClipJob]] = []
        self._pending: dict[Future[list[ClipOutcome]], list[str]] = {}
        self._limit = 4 * options.workers  # bounds the memory held by queued jobs and results
        self._executor: ProcessPoolExecutor | None = None
        if options.workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            # Workers die with this process: an orphan would go on writing into the output folder.
            self._executor = ProcessPoolExecutor(
                options.workers, mp_context=context, initializer=ParentWatch()
            )

    def __enter__(self) -> ClipPool:
        if self._executor is not None:
            self._executor.submit(int).result()  # with fork, the first submit starts every worker
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)

    def record(self, key: str, outcome: ClipOutcome) -> None:
        """Count a clip whose outcome is already known (nothing to convert)."""
        self._count_one()
        self._store([key], [outcome])

    def submit(self, key: str, job: ClipJob) -> None:
        """Queue `job` under `key`; a full batch of BATCH jobs goes to the workers at once."""
        self._count_one()
        self._batch.append((key, job))
        if len(self._batch) >= BATCH:
            self._flush()

    def finish(self) -> dict[str, ClipOutcome]:
        """Send the last partial batch, wait for every task, and return the outcomes by key."""
        self._flush()
        while self._pending:
            self._collect(ALL_COMPLETED)
        return self.outcomes

    def _count_one(self) -> None:
        self._submitted += 1
        self._task.set_total(self._submitted)

    def _flush(self) -> None:
        if not self._batch:
            return
        keys = [key for key, _ in self._batch]
        jobs = [job for _, job in self._batch]
        self._batch = []
        if self._executor is None:
            self._store(keys, convert_batch(jobs))
            return
        while len(self._pending) >= self._limit:
            self._collect(FIRST_COMPLETED)
        self._pending[self._executor.submit(convert_batch, jobs)] = keys

    def _collect(self, return_when: str) -> None:
        done, _ = wait(self._pending, return_when=return_when)
        for future in done:
            self._store(self._pending.pop(future), future.result())

    def _store(self, keys: list[str], outcomes: list[ClipOutcome]) -> None:
        self.outcomes.update(zip(keys, outcomes, strict=True))
        self._task.advance(len(keys))


def read_table(
    data: bytes, source: str, split: str, delimiter: str, quoting: Quoting
) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[Skip]]:
    """Parse a CSV/TSV into (header, [(line number, fields)], skips), line by line: one line is one row.

    Every line after the header ends in the rows or in the skips, never merged into another: a quoted field
    that does not close on its line (which the csv module would run on into the lines after it), a wrong
    number of fields, a blank line or invalid UTF-8 skips that line only. Fields have no size limit: what a
    huge field means is for its reader to say (a huge transcript is skipped, see `check_transcript`).
    Bytes are decoded with surrogateescape so that one line of invalid UTF-8 skips that row only.
    """
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    lines = LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()  # the last line's own line break starts no line
    if not lines:
        return [], [], []
    header = _parse_line(lines[0], delimiter, quoting)
    if isinstance(header, str):
        raise DsitaError(f"{source}, line 1: cannot read the header ({header})")
    if not _valid_utf8(header):
        raise DsitaError(f"{source}: the header line is not valid UTF-8")
    rows: list[tuple[int, dict[str, str]]] = []
    skips: list[Skip] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = _parse_line(line, delimiter, quoting) if line.strip() else None
        if fields is None:
            skips.append(Skip(split, source, number, BLANK_LINE, ""))
        elif not _valid_utf8([line]):
            skips.append(Skip(split, source, number, INVALID_UTF8, _escaped([line])))
        elif isinstance(fields, str):
            skips.append(Skip(split, source, number, MALFORMED_ROW, fields))
        elif len(fields) != len(header):
            skips.append(Skip(split, source, number, MALFORMED_ROW, f"{len(fields)} of {len(header)} fields"))
        else:
            rows.append((number, dict(zip(header, fields, strict=True))))
    return header, rows, skips


def _parse_line(line: str, delimiter: str, quoting: Quoting) -> list[str] | str:
    """One line's fields, or why they cannot be read (an unclosed quote). No field size limit applies."""
    if quoting == csv.QUOTE_NONE:
        return line.split(delimiter)
    limit = csv.field_size_limit(sys.maxsize)
    try:
        return next(csv.reader([line], delimiter=delimiter, quoting=quoting, strict=True), [])
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            return "unbalanced quote: a quoted field does not close on its line"
        return f"unreadable quoting ({exc})"
    finally:
        csv.field_size_limit(limit)


def _valid_utf8(values: Iterable[str]) -> bool:
    try:
        for value in values:
            value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(values: list[str]) -> str:
    raw = "\t".join(values).encode("utf-8", errors="surrogateescape")
    return raw.decode("utf-8", errors="backslashreplace")[:200]


def max_transcript_chars(max_secs: float) -> int:
    """The most characters a clip of `max_secs` can carry: CTC needs a 20 ms frame per character."""
    return int(max_secs * SAMPLE_RATE) // STEP_SAMPLES


def check_transcript(
    text: str, alphabet: Alphabet, split: str, source: str, row: int, max_secs: float | None = None
) -> str | Skip:
    """The normalized transcript, or the skip of a row whose transcript is rejected or, given `max_secs`,
    longer than any clip that short could carry."""
    most = max_transcript_chars(max_secs) if max_secs is not None else None
    if most is not None and len(text) > RAW_TEXT_FACTOR * most:
        detail = f"{len(text)} characters before normalization; a {max_secs:g} s clip carries at most {most}"
        return Skip(split, source, row, TEXT_TOO_LONG, detail)
    result = normalize(text, alphabet)
    if isinstance(result, Rejection):
        return Skip(split, source, row, TRANSCRIPT_REJECTED, f"{result.reason}: {text[:200]}")
    if most is not None and len(result) > most:
        detail = f"{len(result)} characters; a {max_secs:g} s clip (MAX_SECS) carries at most {most}"
        return Skip(split, source, row, TEXT_TOO_LONG, detail)
    return result


@dataclass
class ImportReport:
    """What an import kept, skipped and wrote, per split: the summary the import commands print."""

    out_dir: Path
    csv_files: dict[str, Path]  # split -> CSV
    skipped_csv: Path
    kept: Counter[str] = field(default_factory=Counter)  # split -> clips
    seconds: Counter[str] = field(default_factory=Counter)  # split -> audio seconds
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (split, reason) -> rows
    converted: int = 0  # WAVs written by this run
    reused: int = 0  # WAVs found valid from an earlier run
    notes: list[str] = field(default_factory=list)

    @property
    def total_kept(self) -> int:
        """Clips kept over all splits."""
        return sum(self.kept.values())

    @property
    def total_hours(self) -> float:
        """Hours of audio kept over all splits."""
        return sum(self.seconds.values()) / 3600


def finish_import(
    report: ImportReport, entries: list[Entry], outcomes: dict[str, ClipOutcome], skips: list[Skip]
) -> ImportReport:
    """Apply the audio filters, write one CSV per split and the skipped list, and fill in the report."""
    samples: dict[str, list[Sample]] = {split: [] for split in report.csv_files}
    skips = list(skips)
    for entry in entries:
        outcome = outcomes.get(entry.key, ClipOutcome("failed", reason=NOT_FOUND, detail=entry.key))
        frames = outcome.samples // STEP_SAMPLES
        if outcome.status == "failed":
            skips.append(Skip(entry.split, entry.source, entry.row, outcome.reason, outcome.detail))
        elif frames < len(entry.transcript):  # DeepSpeech's rule: CTC needs a frame per character
            detail = f"{frames} frames < {len(entry.transcript)} characters"
            skips.append(Skip(entry.split, entry.source, entry.row, TOO_SHORT, detail))
        else:
            seconds = outcome.samples / SAMPLE_RATE
            samples[entry.split].append(Sample(entry.wav, outcome.size, entry.transcript, seconds))
            report.kept[entry.split] += 1
            report.seconds[entry.split] += seconds  # type: ignore[assignment]  # typeshed's Counter counts int
    report.converted = sum(o.status == "converted" for o in outcomes.values())
    report.reused = sum(o.status == "reused" for o in outcomes.values())
    for split, path in report.csv_files.items():
        write_csv(path, samples[split])
    with atomic_write(report.skipped_csv, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(SKIPPED_COLUMNS)
        order = {split: i for i, split in enumerate(["archive", *report.csv_files])}
        for s in sorted(skips, key=lambda s: (order.get(s.split, len(order)), s.source, s.row or 0)):
            writer.writerow([s.split, s.source, "" if s.row is None else s.row, s.reason, s.detail])
            report.skipped[s.split, s.reason] += 1
    return report


def report_tables(report: ImportReport) -> list[Table | str]:
    """What the CLI prints: kept clips and hours per split, skipped rows per split and reason, a summary."""
    kept = Table("split", "clips", "hours", title="kept")
    for split in report.csv_files:
        kept.add_row(split, str(report.kept[split]), f"{report.seconds[split] / 3600:.3f}")
    kept.add_row("total", str(report.total_kept), f"{report.total_hours:.3f}", style="bold")
    skipped = Table("split", "reason", "rows", title="skipped")
    for (split, reason), count in sorted(report.skipped.items()):
        skipped.add_row(split, reason, str(count))
    skipped.add_row("total", "", str(sum(report.skipped.values())), style="bold")
    files = ", ".join(str(p) for p in report.csv_files.values())
    summary = (
        f"{report.converted} clips converted, {report.reused} reused. Wrote {files}; "
        f"skipped rows are listed in {report.skipped_csv}"
    )
    return [kept, skipped, summary]
