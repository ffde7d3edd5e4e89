"""Model input features in numpy, for inference without torch: DeepSpeech 0.9's MFCCs (whole or streamed)
and the conformer's normalised log-mels (whole segments).

The same pipelines as `dsita.model.features` (which documents them and builds its matrices from here).
MFCCs: full 512-sample windows every 320 samples, periodic Hann, |FFT|², TF's mel filterbank on the
magnitude, log with a floor, TF's DCT, then `n_context` frames of context each side. Computed in float64 and
returned as float32, as TF did; this differs from the torch float32 features by float32 rounding only.
Log-mels: see `LogMelNumpy`.
"""

from __future__ import annotations

import numpy as np

from dsita.audio import (
    LOG_MEL_HIGH_HZ,
    LOG_MEL_LOW_HZ,
    LOG_MEL_STEP_SAMPLES,
    LOG_MEL_WINDOW_SAMPLES,
    MEL_HIGH_HZ,
    MEL_LOW_HZ,
    N_CONTEXT,
    N_LOG_MEL,
    N_MEL,
    N_MFCC,
    SAMPLE_RATE,
    STEP_SAMPLES,
    WINDOW_SAMPLES,
)

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
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def periodic_hann(size: int = WINDOW_SAMPLES) -> np.ndarray:
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
    return np.sqrt(2.0 / n_mel) * np.cos(np.pi / n_mel * i * (j + 0.5))


class MfccNumpy:
    """Mono 16 kHz samples -> (T, n_mfcc) float32 MFCCs of every full window, T = 1 + (n - 512) // 320."""

    def __init__(self, n_mfcc: int = N_MFCC) -> None:
        self.n_mfcc = n_mfcc
        self.window = periodic_hann()
        self.mel_matrix = mel_filterbank_matrix()
        self.dct_matrix = dct_matrix(n_mfcc=n_mfcc)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {samples.shape}")
        if samples.shape[0] < WINDOW_SAMPLES:
            return np.zeros((0, self.n_mfcc), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW_SAMPLES)[::STEP_SAMPLES]
        spectrum = np.fft.rfft(frames * self.window, n=FFT_SIZE)
        magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2)
        mel = np.maximum(magnitude @ self.mel_matrix, LOG_FLOOR)
        return (np.log(mel) @ self.dct_matrix).astype(np.float32)


def _stack_context(padded: np.ndarray, n_context: int) -> np.ndarray:
    """(n + 2 n_context, C) frames -> (n, (2 n_context + 1) C): row t is frames t .. t + 2 n_context."""
    span = 2 * n_context + 1
    steps = padded.shape[0] - span + 1
    if steps <= 0:
        return np.zeros((0, span * padded.shape[1]), dtype=padded.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=0)  # (steps, C, span)
    return np.ascontiguousarray(windows.transpose(0, 2, 1)).reshape(steps, -1)


def context_windows(frames: np.ndarray, n_context: int = N_CONTEXT) -> np.ndarray:
    """(T, C) -> (T, (2 n_context + 1) C): step t holds frames t - n_context .. t + n_context, zeros beyond
    either end (DeepSpeech's `create_overlapping_windows`)."""
    pad = np.zeros((n_context, frames.shape[1]), dtype=frames.dtype)
    return _stack_context(np.concatenate([pad, frames, pad]), n_context)


class Featurizer:
    """The model input of a whole utterance, or of a stream fed in pieces of any size.

    `features(samples)` is the whole-utterance path. For a stream, `feed` returns the steps whose right
    context is complete and `flush` the rest; together they equal `features` of all the samples fed.
    """

    def __init__(self, n_mfcc: int = N_MFCC, n_context: int = N_CONTEXT) -> None:
        self.mfcc = MfccNumpy(n_mfcc)
        self.n_context = n_context
        self.n_features = (2 * n_context + 1) * n_mfcc
        self.reset()

    def features(self, samples: np.ndarray) -> np.ndarray:
        return context_windows(self.mfcc(samples), self.n_context)

    def reset(self) -> None:
        self._samples = np.zeros(0, dtype=np.float32)  # samples after the last full window's start
        self._frames = np.zeros((self.n_context, self.mfcc.n_mfcc), dtype=np.float32)  # zero left pad

    def feed(self, samples: np.ndarray) -> np.ndarray:
        self._samples = np.concatenate([self._samples, np.asarray(samples, dtype=np.float32)])
        frames = self.mfcc(self._samples)
        self._samples = self._samples[frames.shape[0] * STEP_SAMPLES :]
        self._frames = np.concatenate([self._frames, frames])
        steps = _stack_context(self._frames, self.n_context)
        self._frames = self._frames[steps.shape[0] :]
        return steps

    def flush(self) -> np.ndarray:
        """The last steps, with zeros as right context; the featurizer is then ready for a new stream."""
        pad = np.zeros((self.n_context, self.mfcc.n_mfcc), dtype=np.float32)
        steps = _stack_context(np.concatenate([self._frames, pad]), self.n_context)
        self.reset()
        return steps


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
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_frames(n_samples: int) -> int:
    """Full 400-sample windows every 160 samples: 1 + (n - 400) // 160, never below 0."""
    return max(0, (n_samples - LOG_MEL_WINDOW_SAMPLES) // LOG_MEL_STEP_SAMPLES + 1)


class LogMelNumpy:
    """Mono 16 kHz samples -> (T, n_mels) float32 normalised log-mels of every full window (the conformer's
    input, `dsita.model.features.LogMel`).

    Full 400-sample windows every 160, periodic Hann, zero-padded to 512 and FFT'd; the power spectrum through
    `log_mel_filterbank_matrix`; natural log with a floor; then each channel shifted and scaled to zero mean
    and unit variance over the utterance. Computed in float64, returned as float32.
    """

    def __init__(self, n_mels: int = N_LOG_MEL) -> None:
        self.n_features = n_mels
        self.window = periodic_hann(LOG_MEL_WINDOW_SAMPLES)
        self.mel_matrix = log_mel_filterbank_matrix(n_mels)

    def features(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {samples.shape}")
        if log_mel_frames(samples.shape[0]) == 0:
            return np.zeros((0, self.n_features), dtype=np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(samples, LOG_MEL_WINDOW_SAMPLES)
        spectrum = np.fft.rfft(windows[::LOG_MEL_STEP_SAMPLES] * self.window, n=LOG_MEL_FFT_SIZE)
        power = spectrum.real**2 + spectrum.imag**2
        log_mel = np.log(np.maximum(power @ self.mel_matrix, LOG_MEL_FLOOR))
        mean = log_mel.mean(axis=0)
        std = np.sqrt(np.square(log_mel - mean).mean(axis=0))
        return ((log_mel - mean) / (std + NORM_EPSILON)).astype(np.float32)
