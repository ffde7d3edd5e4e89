"""`dsita import csv`: a user's own corpus, from any CSV/TSV that lists audio files and their transcripts.

Audio paths are relative to the table (or absolute), in any format soundfile reads. Output, with the same
conversion and filters as Common Voice: OUT/<split>.csv, OUT/clips/<split>/<audio path>.wav and
OUT/<split>.skipped.csv (named after the split, so that importing several tables, or Common Voice, into one
folder keeps every skipped list). The split defaults to the table's file name without its extension.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
from functools import partial
from pathlib import Path, PurePosixPath

from dsita.data.clips import (
    DUPLICATE,
    MALFORMED_ROW,
    ClipJob,
    ClipPool,
    Entry,
    ImportOptions,
    ImportReport,
    Quoting,
    Skip,
    check_transcript,
    finish_import,
    read_table,
    wav_size,
)
from dsita.errors import DsitaError
from dsita.progress import Progress
from dsita.system import disk_errors

log = logging.getLogger("dsita.data")

AUDIO_COLUMNS = (
    "wav_filename",
    "path",
    "file",
    "filename",
    "file_name",
    "audio",
    "audio_path",
    "audio_file",
    "wav",
)
TEXT_COLUMNS = ("transcript", "sentence", "text", "transcription", "normalized_text")
DELIMITERS = ",\t;|"
SAFE_SPLIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
SAMPLED_CLIPS = 200  # clips whose headers measure the WAV size per source byte


def import_own_csv(
    table: str | Path,
    out_dir: str | Path,
    options: ImportOptions,
    audio_column: str | None = None,
    text_column: str | None = None,
    split: str | None = None,
) -> ImportReport:
    """Import the clips a table lists; columns are auto-detected unless named.

    Every line of the table ends in OUT/<split>.csv or OUT/<split>.skipped.csv. A full or read-only output
    disk is one DsitaError naming the folder and about what the import needs.
    """
    table, out_dir = Path(table), Path(out_dir)
    split = split or table.stem
    if not SAFE_SPLIT.fullmatch(split):
        raise DsitaError(f"split name {split!r}: use letters, digits, '.', '_' and '-' only")
    header, rows, skips = _read(table, split)
    audio = _column(table, header, audio_column, AUDIO_COLUMNS, "audio")
    text = _column(table, header, text_column, TEXT_COLUMNS, "transcript")
    needed = partial(_disk_bytes, table, [fields[audio].strip() for _, fields in rows])
    with disk_errors(out_dir, needed, "the import"):
        return _import(table, out_dir, options, split, rows, skips, audio, text)


def import_disk_bytes(table: Path, audio_column: str | None = None) -> int:
    """About what importing `table` writes: the clips it lists as 16 kHz 16-bit WAVs, measured on the first
    ones' headers and scaled to the size of them all."""
    header, rows, _ = _read(table, table.stem)
    audio = _column(table, header, audio_column, AUDIO_COLUMNS, "audio")
    return _disk_bytes(table, [fields[audio].strip() for _, fields in rows])


def _disk_bytes(table: Path, names: list[str]) -> int:
    files = [table.parent / name for name in names if name and (table.parent / name).is_file()]
    total = sum(p.stat().st_size for p in files)
    sampled = [(p.stat().st_size, wav_size(p)) for p in files[:SAMPLED_CLIPS]]
    source, wav = sum(s for s, w in sampled if w), sum(w for _, w in sampled if w)
    return int(total * wav / source) if source and wav else total


def _read(table: Path, split: str) -> tuple[list[str], list[tuple[int, dict[str, str]]], list[Skip]]:
    if not table.is_file():
        raise DsitaError(f"{table}: file not found; expected a CSV or TSV of audio paths and transcripts")
    data = table.read_bytes()
    delimiter = _sniff_delimiter(data)
    # Tab-separated exports (Common Voice style) do not quote, and their sentences contain stray quotes.
    quoting: Quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return read_table(data, table.name, split, delimiter, quoting)


def _import(
    table: Path,
    out_dir: Path,
    options: ImportOptions,
    split: str,
    rows: list[tuple[int, dict[str, str]]],
    skips: list[Skip],
    audio: str,
    text: str,
) -> ImportReport:
    entries: list[Entry] = []
    sources: dict[str, Path] = {}
    first_row: dict[str, int] = {}
    for row, fields in rows:
        raw = fields[audio].strip()
        if not raw:
            skips.append(Skip(split, table.name, row, MALFORMED_ROW, f"empty {audio}"))
            continue
        wav = out_dir / "clips" / split / _wav_name(raw)
        key = str(wav)
        if key in first_row:
            skips.append(Skip(split, table.name, row, DUPLICATE, f"{raw} is already on row {first_row[key]}"))
            continue
        first_row[key] = row
        transcript = check_transcript(
            fields[text], options.alphabet, split, table.name, row, options.max_secs
        )
        if isinstance(transcript, Skip):
            skips.append(transcript)
            continue
        entries.append(Entry(split, table.name, row, key, wav, transcript))
        sources[key] = table.parent / raw  # an absolute `raw` replaces the folder

    progress = Progress(options.progress, log)
    with ClipPool(options, progress) as pool, progress:
        for entry in entries:
            pool.submit(entry.key, ClipJob(sources[entry.key], entry.wav, options.max_secs))
        outcomes = pool.finish()
    report = ImportReport(out_dir, {split: out_dir / f"{split}.csv"}, out_dir / f"{split}.skipped.csv")
    return finish_import(report, entries, outcomes, skips)


def _sniff_delimiter(data: bytes) -> str:
    """The candidate that occurs most in the header line, which (unlike transcripts) has no stray commas."""
    header = data[:65536].decode("utf-8", errors="replace").lstrip("\ufeff").partition("\n")[0]
    return max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","


def _column(
    table: Path, header: list[str], chosen: str | None, candidates: tuple[str, ...], kind: str
) -> str:
    by_name = {h.strip().lower(): h for h in header}
    found = ", ".join(header) or "none"
    if chosen is not None:
        if chosen.strip().lower() not in by_name:
            raise DsitaError(f"{table}: no column {chosen!r}; columns found: {found}")
        return by_name[chosen.strip().lower()]
    for name in candidates:
        if name in by_name:
            return by_name[name]
    raise DsitaError(
        f"{table}: no {kind} column (looked for {', '.join(candidates)}); columns found: {found}"
    )


def _wav_name(raw: str) -> Path:
    """The WAV's path under clips/<split>/: the audio path itself when it stays inside the table's folder."""
    path = PurePosixPath(raw)
    name = path.name if path.suffix.lower() == ".wav" else f"{path.name}.wav"  # a.flac and a.ogg stay apart
    if not path.is_absolute() and ".." not in path.parts:
        return Path(*path.parts[:-1], name)
    # Outside the table's folder: a flat name, made unique by the full path.
    return Path("external", f"{hashlib.sha1(raw.encode()).hexdigest()[:8]}-{name}")
