"""Audio I/O and the signal constants everything else derives from.

DeepSpeech 0.9 features: 16 kHz audio, a 32 ms window with a 20 ms step, 26 MFCCs, 9 frames of context.
The conformer's log-mel features: a 25 ms window with a 10 ms step (the usual choice for attention models,
which subsample by 4 afterwards), mel channels from 0 Hz to the Nyquist frequency.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dsita.errors import AudioLoadingError
from dsita.fileio import atomic_write


def exact_div(x: int, y: int) -> int:
    if x % y != 0:
        raise ValueError(f"{x} is not divisible by {y}")
    return x // y


SAMPLE_RATE = 16000
WINDOW_MS = 32
STEP_MS = 20
WINDOW_SAMPLES = exact_div(SAMPLE_RATE * WINDOW_MS, 1000)  # 512
STEP_SAMPLES = exact_div(SAMPLE_RATE * STEP_MS, 1000)  # 320
N_MFCC = 26
N_MEL = 40
MEL_LOW_HZ = 20.0
MEL_HIGH_HZ = 8000.0
N_CONTEXT = 9
N_INPUT = (2 * N_CONTEXT + 1) * N_MFCC  # 494
LOG_MEL_WINDOW_MS = 25
LOG_MEL_STEP_MS = 10
LOG_MEL_WINDOW_SAMPLES = exact_div(SAMPLE_RATE * LOG_MEL_WINDOW_MS, 1000)  # 400
LOG_MEL_STEP_SAMPLES = exact_div(SAMPLE_RATE * LOG_MEL_STEP_MS, 1000)  # 160
N_LOG_MEL = 80
LOG_MEL_LOW_HZ = 0.0
LOG_MEL_HIGH_HZ = SAMPLE_RATE / 2


def downmix(audio: np.ndarray) -> np.ndarray:
    """(frames, channels) float32 to (frames,) by averaging the channels."""
    if audio.shape[1] == 1:
        return audio[:, 0]
    # A matrix product: mean(axis=1) over interleaved (frames, channels) data is about 8x slower.
    return audio @ np.full(audio.shape[1], 1.0 / audio.shape[1], dtype=np.float32)


def to_mono_16k(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Downmix (frames, channels) or (frames,) audio to mono float32 and resample with soxr."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = downmix(audio)
    if sample_rate != target_rate:
        audio = soxr.resample(audio, sample_rate, target_rate).astype(np.float32, copy=False)
    return audio


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any file soundfile decodes (WAV, FLAC, OGG, MP3) as mono float32 in [-1, 1] at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AudioLoadingError(f"{path}: audio file not found")
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioLoadingError(f"{path}: cannot decode audio ({exc})") from None
    if audio.shape[0] == 0:
        raise AudioLoadingError(f"{path}: audio has no samples")
    return to_mono_16k(audio, file_rate, sample_rate)


def iter_audio(
    path: str | Path, block_seconds: float = 10.0, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """`load_audio` in blocks of about `block_seconds`, so that a long file never sits in memory whole."""
    path = Path(path)
    if not path.is_file():
        raise AudioLoadingError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise AudioLoadingError(f"{path}: the file is empty")
    try:
        with sf.SoundFile(path) as f:
            if f.frames == 0:
                raise AudioLoadingError(f"{path}: audio has no samples")
            resampler = None
            if f.samplerate != sample_rate:
                resampler = soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32")
            block = max(1, int(block_seconds * f.samplerate))
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                last = data.shape[0] < block
                mono = downmix(data)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if mono.size:
                    yield mono
                if last:
                    return
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioLoadingError(f"{path}: cannot decode audio ({exc})") from None


def write_wav(
    path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, durable: bool = True
) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, atomically.

    `durable=False` skips the fsync: for files whose readers validate them anyway (the importer's clips are
    checked by its resume rule), a rename is enough to survive a killed process.
    """
    # Quantizing in numpy is twice as fast as letting libsndfile convert float32.
    pcm = np.clip(np.rint(np.asarray(audio, dtype=np.float32) * 32767.0), -32768, 32767).astype(np.int16)
    with atomic_write(path, "wb", durable=durable) as f:
        sf.write(f, pcm, sample_rate, subtype="PCM_16", format="WAV")
