"""Audio I/O and the signal constants everything else derives from.

DeepSpeech 0.9 features: 16 kHz audio, a 32 ms window with a 20 ms step, 26 MFCCs, 9 frames of context.
The conformer's log-mel features: a 25 ms window with a 10 ms step (the usual choice for attention models,
which subsample by 4 afterwards), mel channels from 0 Hz to the Nyquist frequency.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from dsita.errors import AudioLoadingError
from dsita.fileio import atomic_write


def exact_div(x: int, y: int) -> int:
    """`x // y`, raising ValueError when `y` does not divide `x` (the constants below must be whole)."""
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


# The feature pipelines' fixed matrices, built in float64 exactly as TF (MFCCs) or HTK (log-mels) build them;
# `dsita.model.features` (torch) and `dsita.inference.features` (numpy) both compute from these.
FFT_SIZE = 1 << (WINDOW_SAMPLES - 1).bit_length()  # next power of two >= the window: 512
N_BINS = FFT_SIZE // 2 + 1  # 257
LOG_FLOOR = 1e-12
LOG_MEL_FFT_SIZE = 1 << (LOG_MEL_WINDOW_SAMPLES - 1).bit_length()  # 512 for the 400-sample window
# The power floor before the log: 100 dB below a full-scale sine's peak bin, above 16-bit quantisation noise
# (about 1e-8 a channel), so digital silence and dither sit at one value instead of stretching the
# per-utterance statistics.
LOG_MEL_FLOOR = 1e-6
NORM_EPSILON = 1e-5  # added to each channel's standard deviation: a constant channel normalises to 0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Hertz to mel on the HTK scale (1127 ln(1 + f / 700)), as float64."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Mel to hertz: the inverse of `hz_to_mel`."""
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def periodic_hann(size: int = WINDOW_SAMPLES) -> np.ndarray:
    """The periodic Hann window of `size` samples (the DFT-even one TF and torch use, not `np.hanning`)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / size)


def mel_filterbank_matrix(
    n_bins: int = N_BINS,
    sample_rate: int = SAMPLE_RATE,
    n_mel: int = N_MEL,
    low_hz: float = MEL_LOW_HZ,
    high_hz: float = MEL_HIGH_HZ,
) -> np.ndarray:
    """(n_bins, n_mel) float64 matrix M with `magnitude @ M` equal to TF's `MfccMelFilterbank::Compute`.

    TF maps each bin in [start, end] to the channel whose centre is just below it (-1 below the first
    centre) and splits the bin between that channel (weight w) and the next one (1 - w).
    """
    mel_low, mel_high = hz_to_mel(low_hz), hz_to_mel(high_hz)
    # n_mel + 1 points: channel k peaks at centres[k] and ends at centres[k + 1] (centres[n_mel] = mel_high).
    centres = mel_low + (mel_high - mel_low) / (n_mel + 1) * np.arange(1, n_mel + 2)
    hz_per_bin = 0.5 * sample_rate / (n_bins - 1)
    start, end = int(1.5 + low_hz / hz_per_bin), int(high_hz / hz_per_bin)

    bins = np.arange(start, end + 1)
    mel = hz_to_mel(bins * hz_per_bin)
    band = np.searchsorted(centres[:n_mel], mel, side="left") - 1  # TF's band_mapper_, in -1 .. n_mel - 1
    upper = centres[band + 1]
    lower = np.where(band >= 0, centres[np.maximum(band, 0)], mel_low)
    weight = (upper - mel) / (upper - lower)

    matrix = np.zeros((n_bins, n_mel), dtype=np.float64)
    falling = band >= 0
    matrix[bins[falling], band[falling]] += weight[falling]
    rising = band + 1 < n_mel
    matrix[bins[rising], band[rising] + 1] += 1.0 - weight[rising]
    return matrix


def dct_matrix(n_mel: int = N_MEL, n_mfcc: int = N_MFCC) -> np.ndarray:
    """(n_mel, n_mfcc) float64 matrix of TF's `MfccDct`: sqrt(2/n) cos(pi i (j + 0.5) / n)."""
    j, i = np.meshgrid(np.arange(n_mel), np.arange(n_mfcc), indexing="ij")
    matrix: np.ndarray = np.sqrt(2.0 / n_mel) * np.cos(np.pi / n_mel * i * (j + 0.5))
    return matrix


def log_mel_filterbank_matrix(
    n_mels: int = N_LOG_MEL,
    n_fft: int = LOG_MEL_FFT_SIZE,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = LOG_MEL_LOW_HZ,
    high_hz: float = LOG_MEL_HIGH_HZ,
) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) float64 matrix of triangular filters on the power spectrum.

    Channel k rises from edge k to its peak at edge k + 1 and falls to zero at edge k + 2, the n_mels + 2
    edges equally spaced on the mel scale between `low_hz` and `high_hz` (HTK's layout, unnormalised).
    """
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), n_mels + 2))
    lower, peak, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower) / (peak - lower)
    falling = (upper - bin_hz[:, None]) / (upper - peak)
    matrix: np.ndarray = np.maximum(0.0, np.minimum(rising, falling))
    return matrix


# The input features a graph was trained on (metadata key "features").
MFCC_FEATURES = "context_mfcc"  # DeepSpeech 0.9's
LOG_MEL_FEATURES = "log_mel"  # the conformer's normalised log-mels; n_mels is the graph input's width


def feature_metadata(features: str = MFCC_FEATURES) -> dict[str, str | int | float]:
    """The parameters of the features this dsita computes; a model made for others is refused."""
    if features == LOG_MEL_FEATURES:
        return {
            "features": LOG_MEL_FEATURES,
            "sample_rate": SAMPLE_RATE,
            "window_ms": LOG_MEL_WINDOW_MS,
            "step_ms": LOG_MEL_STEP_MS,
            "mel_low_hz": LOG_MEL_LOW_HZ,
            "mel_high_hz": LOG_MEL_HIGH_HZ,
            "log_floor": LOG_MEL_FLOOR,
            "normalization": "utterance",
        }
    if features != MFCC_FEATURES:
        raise ValueError(f"unknown input features {features!r} (known: {MFCC_FEATURES}, {LOG_MEL_FEATURES})")
    return {
        "features": MFCC_FEATURES,
        "sample_rate": SAMPLE_RATE,
        "window_ms": WINDOW_MS,
        "step_ms": STEP_MS,
        "n_mfcc": N_MFCC,
        "n_mel": N_MEL,
        "mel_low_hz": MEL_LOW_HZ,
        "mel_high_hz": MEL_HIGH_HZ,
        "n_context": N_CONTEXT,
    }


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
    # Encoded in memory, then written by Python: libsndfile writing to a Python file loses the OSError of a
    # full disk inside its callback (and soundfile then fails a bare assert).
    encoded = io.BytesIO()
    sf.write(encoded, pcm, sample_rate, subtype="PCM_16", format="WAV")
    with atomic_write(path, "wb", durable=durable) as f:
        f.write(encoded.getbuffer())
