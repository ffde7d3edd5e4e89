"""Model input features in numpy, for inference without torch: DeepSpeech 0.9's MFCCs (whole or streamed)
and the conformer's normalised log-mels (whole segments).

The same pipelines as `dsita.model.features` (which documents them); both build on `dsita.audio`'s matrices.
MFCCs: full 512-sample windows every 320 samples, periodic Hann, |FFT|², TF's mel filterbank on the
magnitude, log with a floor, TF's DCT, then `n_context` frames of context each side. Computed in float64 and
returned as float32, as TF did; this differs from the torch float32 features by float32 rounding only.
Log-mels: see `NumpyLogMel`.
"""

from __future__ import annotations

import numpy as np

from dsita.audio import (
    FFT_SIZE,
    LOG_FLOOR,
    LOG_MEL_FFT_SIZE,
    LOG_MEL_FLOOR,
    LOG_MEL_STEP_SAMPLES,
    LOG_MEL_WINDOW_SAMPLES,
    N_CONTEXT,
    N_LOG_MEL,
    N_MFCC,
    NORM_EPSILON,
    STEP_SAMPLES,
    WINDOW_SAMPLES,
    dct_matrix,
    log_mel_filterbank_matrix,
    mel_filterbank_matrix,
    periodic_hann,
)


class NumpyMfcc:
    """Mono 16 kHz samples -> (T, n_mfcc) float32 MFCCs of every full window, T = 1 + (n - 512) // 320."""

    def __init__(self, n_mfcc: int = N_MFCC) -> None:
        self.n_mfcc = n_mfcc
        self.window = periodic_hann()
        self.mel_matrix = mel_filterbank_matrix()
        self.dct_matrix = dct_matrix(n_mfcc=n_mfcc)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """The MFCCs of every full window of mono `samples`: none (0 rows) below one window;
        ValueError for anything but 1-D samples.
        """
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {samples.shape}")
        if samples.shape[0] < WINDOW_SAMPLES:
            return np.zeros((0, self.n_mfcc), dtype=np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW_SAMPLES)[::STEP_SAMPLES]
        spectrum = np.fft.rfft(frames * self.window, n=FFT_SIZE)
        magnitude = np.sqrt(spectrum.real**2 + spectrum.imag**2)
        mel = np.maximum(magnitude @ self.mel_matrix, LOG_FLOOR)
        mfcc: np.ndarray = (np.log(mel) @ self.dct_matrix).astype(np.float32)
        return mfcc


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


class NumpyContextMfcc:
    """The model input of a whole utterance, or of a stream fed in pieces of any size.

    `features(samples)` is the whole-utterance path. For a stream, `feed` returns the steps whose right
    context is complete and `flush` the rest; together they equal `features` of all the samples fed.
    """

    def __init__(self, n_mfcc: int = N_MFCC, n_context: int = N_CONTEXT) -> None:
        self.mfcc = NumpyMfcc(n_mfcc)
        self.n_context = n_context
        self.n_features = (2 * n_context + 1) * n_mfcc
        self.reset()

    def features(self, samples: np.ndarray) -> np.ndarray:
        """The (T, n_features) model input of a whole utterance: MFCCs with zero-padded context."""
        return context_windows(self.mfcc(samples), self.n_context)

    def reset(self) -> None:
        """Forget the stream fed so far: the next `feed` starts a new stream."""
        self._samples = np.zeros(0, dtype=np.float32)  # samples after the last full window's start
        self._frames = np.zeros((self.n_context, self.mfcc.n_mfcc), dtype=np.float32)  # zero left pad

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Add samples to the stream; the new steps whose right context is now complete (maybe none)."""
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


def log_mel_frames(n_samples: int) -> int:
    """Full 400-sample windows every 160 samples: 1 + (n - 400) // 160, never below 0."""
    return max(0, (n_samples - LOG_MEL_WINDOW_SAMPLES) // LOG_MEL_STEP_SAMPLES + 1)


class NumpyLogMel:
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
        """The (T, n_mels) normalised log-mels of mono `samples` (0 rows below one window)."""
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
        normalised: np.ndarray = ((log_mel - mean) / (std + NORM_EPSILON)).astype(np.float32)
        return normalised
