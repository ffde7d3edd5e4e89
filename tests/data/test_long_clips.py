"""MAX_SECS is checked from a clip's header, before it is decoded: a long clip costs no memory to refuse."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsita.audio import SAMPLE_RATE
from dsita.data.clips import TOO_LONG, ClipJob, convert_batch

MINUTES = 10
BOUND = 4 << 20  # bytes: a 10 s clip decodes to 0.6 MB; the whole 10 minutes would be 38 MB of float32


@pytest.fixture(scope="module")
def long_audio() -> np.ndarray:
    t = np.arange(MINUTES * 60 * SAMPLE_RATE) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def peak_allocation(jobs: list[ClipJob]) -> tuple[list, int]:
    tracemalloc.start()
    try:
        outcomes = convert_batch(jobs)
        return outcomes, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("form", ["wav file", "mp3 bytes"])
def test_a_ten_minute_clip_is_too_long_without_being_decoded(
    form: str, long_audio: np.ndarray, tmp_path: Path
) -> None:
    if form == "wav file":
        source: Path | bytes = tmp_path / "long.wav"
        sf.write(source, long_audio, SAMPLE_RATE, subtype="PCM_16")
    else:  # as the archive importer hands a member to its worker
        buffer = io.BytesIO()
        sf.write(buffer, long_audio, SAMPLE_RATE, format="MP3")
        source = buffer.getvalue()
    outcomes, peak = peak_allocation([ClipJob(source, tmp_path / "long-out.wav", 10.0)])
    assert outcomes[0].reason == TOO_LONG and f"{MINUTES * 60:.2f} s > 10 s" in outcomes[0].detail
    assert peak < BOUND, f"{peak / 2**20:.1f} MB allocated to refuse a {MINUTES}-minute clip"
    assert not (tmp_path / "long-out.wav").exists()


def test_clips_up_to_max_secs_convert_whole(long_audio: np.ndarray, tmp_path: Path) -> None:
    sf.write(tmp_path / "nine.wav", long_audio[: 9 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    sf.write(tmp_path / "eleven.wav", long_audio[: 11 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    jobs = [
        ClipJob(tmp_path / f"{name}.wav", tmp_path / f"{name}-out.wav", 10.0) for name in ("nine", "eleven")
    ]
    nine, eleven = convert_batch(jobs)
    assert nine.status == "converted" and nine.samples == 9 * SAMPLE_RATE
    assert sf.info(tmp_path / "nine-out.wav").frames == 9 * SAMPLE_RATE
    assert eleven.reason == TOO_LONG and "11.00 s > 10 s" in eleven.detail
