"""The DeepSpeech CSV format: `wav_filename,wav_filesize,transcript[,duration]`, paths relative to the CSV."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsita.audio import SAMPLE_RATE
from dsita.errors import DsitaError
from dsita.fileio import atomic_write

COLUMNS = ("wav_filename", "wav_filesize", "transcript")
WAV_HEADER_BYTES = 44


@dataclass(frozen=True)
class Sample:
    """One clip: an absolute WAV path, its size in bytes, its normalized transcript and duration."""

    wav_path: Path
    wav_filesize: int
    transcript: str
    duration: float | None = None


def sample_duration(sample: Sample) -> float:
    """Seconds of audio: the CSV's duration column, else estimated from a 16 kHz 16-bit mono WAV's size."""
    if sample.duration is not None:
        return sample.duration
    return max(sample.wav_filesize - WAV_HEADER_BYTES, 0) / (2 * SAMPLE_RATE)


def read_csv(path: str | Path) -> list[Sample]:
    """Read a DeepSpeech CSV; relative paths resolve against the CSV's folder.

    Anything but a well-formed table (not UTF-8, a quote that never closes, a row of the wrong width, a
    size or duration that is not a number) is a DsitaError naming the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DsitaError(f"{path}: CSV file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DsitaError(f"{path}, line {line}: not UTF-8 text") from None
    limit = csv.field_size_limit(sys.maxsize)  # a transcript has no size limit here
    try:
        return _samples(path, csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise DsitaError(f"{path}: not a readable CSV ({exc})") from None
    finally:
        csv.field_size_limit(limit)


def _samples(path: Path, reader: Any) -> list[Sample]:
    header: list[str] = next(reader, [])
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DsitaError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
    columns = {name: header.index(name) for name in (*COLUMNS, "duration") if name in header}
    samples = []
    for fields in reader:
        where = f"{path}, line {reader.line_num}"
        if not fields:
            continue
        if len(fields) != len(header):
            raise DsitaError(f"{where}: {len(fields)} fields, but the header has {len(header)}")
        wav = fields[columns["wav_filename"]]
        if not wav or "\0" in wav:
            raise DsitaError(f"{where}: wav_filename must be a file path, got {wav!r}")
        try:
            size = int(fields[columns["wav_filesize"]])
            seconds = fields[columns["duration"]] if "duration" in columns else ""
            duration = float(seconds) if seconds else None
        except ValueError:
            raise DsitaError(f"{where}: wav_filesize must be an integer and duration a number") from None
        if size < 0 or (duration is not None and not 0 <= duration < math.inf):
            raise DsitaError(f"{where}: wav_filesize and duration must not be negative (or not a number)")
        transcript = fields[columns["transcript"]]
        samples.append(Sample(Path(os.path.normpath(path.parent / wav)), size, transcript, duration))
    return samples


def write_csv(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples atomically, with paths relative to the CSV's folder. Returns the row count."""
    path = Path(path)
    count = 0
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*COLUMNS, "duration"])
        for s in samples:
            rel = os.path.relpath(s.wav_path, path.parent)
            writer.writerow(
                [rel, s.wav_filesize, s.transcript, "" if s.duration is None else f"{s.duration:.3f}"]
            )
            count += 1
    return count
