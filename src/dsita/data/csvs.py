"""The DeepSpeech CSV format: `wav_filename,wav_filesize,transcript[,duration]`, paths relative to the CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
    """Read a DeepSpeech CSV; relative paths resolve against the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise DsitaError(f"{path}: CSV file not found")
    samples = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DsitaError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}")
        for row_number, row in enumerate(reader, start=2):
            try:
                size = int(row["wav_filesize"])
                duration = float(row["duration"]) if row.get("duration") else None
            except ValueError:
                raise DsitaError(
                    f"{path}, row {row_number}: wav_filesize must be an integer and duration a number"
                ) from None
            wav = Path(row["wav_filename"])
            samples.append(
                Sample(Path(os.path.normpath(path.parent / wav)), size, row["transcript"], duration)
            )
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
