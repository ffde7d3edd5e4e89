"""Model input features in plain torch: DeepSpeech 0.9's MFCCs with context windows, and the conformer's
log-mels (`LogMel`, documented there).

DeepSpeech 0.9: TF's spectrogram and MFCC ops, then context windows.

Pipeline per 16 kHz waveform (DeepSpeech's `samples_to_mfccs`):
  1. frames of 512 samples every 320 (only full windows), times a *periodic* Hann window (TF's
     `GetPeriodicHann`), zero-padded to the next power of two (512) and FFT'd; power = re² + im²
     (`magnitude_squared=True`), 257 bins;
  2. TF's `MfccMelFilterbank`: the filterbank runs on the *magnitude* (sqrt of the power), 40 triangular
     channels equally spaced on the mel scale `1127 ln(1 + f/700)` between 20 Hz and 8000 Hz, with TF's
     own bin range (first bin int(1.5 + 20/31.25) = 2, last bin int(8000/31.25) = 256) and weights;
  3. natural log with a floor of 1e-12, then TF's DCT-II `sqrt(2/40) cos(pi i (j + 0.5) / 40)` for
     i < 26 (no extra 1/sqrt(2) on the first coefficient: TF's scaling, not the orthonormal one).
No pre-emphasis, no dither, no normalisation: DeepSpeech 0.9 fed the raw MFCCs to the network.

Where this is not bit-exact with TF: TF computes the FFT, filterbank, log and DCT in double and rounds
the spectrogram (between the two ops) and the MFCCs to float32; here everything runs in the input's dtype
(float32, or float64 for float64 input), so float32 results differ from TF's by float32 rounding only
(~1e-6 relative). Window, filterbank and DCT matrices are built in float64 exactly as TF builds them, by
`dsita.audio`;
`dsita.inference.features` is the torch-free copy of this pipeline that inference uses.
"""

from __future__ import annotations

from typing import overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsita.audio import (
    FFT_SIZE,
    LOG_FLOOR,
    LOG_MEL_FFT_SIZE,
    LOG_MEL_FLOOR,
    LOG_MEL_STEP_SAMPLES,
    LOG_MEL_WINDOW_SAMPLES,
    N_BINS,
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
from dsita.model.base import Featurizer


@overload
def n_frames(n_samples: int) -> int: ...
@overload
def n_frames(n_samples: Tensor) -> Tensor: ...
def n_frames(n_samples: int | Tensor) -> int | Tensor:
    """Full 512-sample windows every 320 samples: 1 + (n - 512) // 320, never below 0."""
    count = (n_samples - WINDOW_SAMPLES) // STEP_SAMPLES + 1
    return count.clamp_min(0) if isinstance(count, Tensor) else max(0, count)


def _compute_dtype(waveforms: Tensor) -> torch.dtype:
    return torch.float64 if waveforms.dtype == torch.float64 else torch.float32


class Mfcc(nn.Module):
    """(B, samples) waveforms + (B,) lengths -> (B, T, n_mfcc) TF-style MFCCs + (B,) frame counts.

    T = n_frames(samples); frames past an item's count are set to 0, which is what DeepSpeech's padded
    batches held, so an item's features do not depend on what it was batched with.
    """

    # Registered buffers, declared for the type checker (nn.Module's __getattr__ returns Tensor | Module).
    window: Tensor
    mel_matrix: Tensor
    dct_matrix: Tensor

    def __init__(self, n_mfcc: int = N_MFCC) -> None:
        super().__init__()
        self.n_mfcc = n_mfcc
        # float64 and not persistent: rebuilt identically on load, cast to the input's dtype when used.
        self.register_buffer("window", torch.from_numpy(periodic_hann()), persistent=False)
        self.register_buffer("mel_matrix", torch.from_numpy(mel_filterbank_matrix()), persistent=False)
        self.register_buffer("dct_matrix", torch.from_numpy(dct_matrix(n_mfcc=n_mfcc)), persistent=False)

    def power_spectrogram(self, waveforms: Tensor) -> Tensor:
        """(B, samples) -> (B, T, 257) |FFT|² of each full window, as TF's `audio_spectrogram`."""
        if waveforms.dim() != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(waveforms.shape)}")
        dtype = _compute_dtype(waveforms)
        x = waveforms.to(dtype)
        if x.shape[1] < WINDOW_SAMPLES:
            return x.new_zeros(x.shape[0], 0, N_BINS)
        frames = x.unfold(1, WINDOW_SAMPLES, STEP_SAMPLES) * self.window.to(dtype)
        spectrum = torch.fft.rfft(frames, n=FFT_SIZE)
        power: Tensor = spectrum.real.square() + spectrum.imag.square()
        return power

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """MFCCs and frame counts of a padded batch, computed with autocast off (float32 or float64)."""
        # Never in reduced precision under a training loop's autocast: the log of small mel energies needs
        # float32 at least.
        with torch.autocast(waveforms.device.type, enabled=False):
            return self._mfcc(waveforms, lengths)

    def _mfcc(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        power = self.power_spectrogram(waveforms)
        batch, steps = power.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), waveforms.shape[1], dtype=torch.long, device=waveforms.device)
        frame_lengths = n_frames(lengths.to(device=power.device, dtype=torch.long))
        mel = power.sqrt() @ self.mel_matrix.to(power.dtype)
        mfcc = mel.clamp_min(LOG_FLOOR).log() @ self.dct_matrix.to(power.dtype)
        valid = torch.arange(steps, device=power.device) < frame_lengths[:, None]
        return mfcc * valid.unsqueeze(-1).to(mfcc.dtype), frame_lengths


def context_windows(features: Tensor, n_context: int = N_CONTEXT) -> Tensor:
    """(B, T, C) -> (B, T, (2 n_context + 1) C): step t holds frames t - n_context .. t + n_context in
    order, each C values, zeros beyond either end (DeepSpeech's `create_overlapping_windows`).

    Slices and a concat rather than `unfold`, so it exports to ONNX with a dynamic T.
    """
    steps = features.shape[1]
    padded = F.pad(features, (0, 0, n_context, n_context))
    return torch.cat([padded[:, k : k + steps] for k in range(2 * n_context + 1)], dim=-1)


class ContextMfcc(Featurizer):
    """DeepSpeech's model input: MFCCs with `n_context` frames of context each side (494 values a step).

    For streaming from raw audio, a caller must buffer `n_context` future frames before a step's window is
    complete; this module only handles whole (padded) utterances.
    """

    def __init__(self, n_mfcc: int = N_MFCC, n_context: int = N_CONTEXT) -> None:
        super().__init__()
        self.mfcc = Mfcc(n_mfcc)
        self.n_context = n_context
        self.n_features = (2 * n_context + 1) * n_mfcc
        self.frame_size = n_mfcc
        self.step_samples = STEP_SAMPLES

    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Full 512-sample windows every 320 samples in each item (`n_frames`)."""
        return n_frames(sample_lengths)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, samples) waveforms -> (B, T, n_features) context-stacked MFCCs and (B,) frame counts."""
        mfcc, frame_lengths = self.mfcc(waveforms, lengths)
        return context_windows(mfcc, self.n_context), frame_lengths


class LogMel(Featurizer):
    """(B, samples) waveforms + (B,) lengths -> (B, T, n_mels) normalised log-mels + (B,) frame counts.

    Full 400-sample (25 ms) windows every 160 samples (10 ms), periodic Hann, zero-padded to 512, power
    spectrum, `n_mels` triangular mel filters from 0 to 8 kHz, natural log with a floor, then per-utterance
    mean and variance normalisation of each channel over the item's own frames. Frames past an item's count
    are 0 (the normalised mean), so padding changes neither an item's statistics nor its features.

    The spectrum and log run in float64 whatever the input: in float32, FFT rounding in the quietest bins of
    a loud frame reaches 2e-3 after the log (6e-4 after normalisation on the sample corpus), where in float64
    these features equal `LogMelNumpy`'s (inference) to 1e-6. It costs little next to the conformer itself.
    The result is float32 (float64 for float64 input).
    """

    # Registered buffers, declared for the type checker (nn.Module's __getattr__ returns Tensor | Module).
    window: Tensor
    mel_matrix: Tensor

    def __init__(self, n_mels: int = N_LOG_MEL) -> None:
        super().__init__()
        self.n_features = self.frame_size = n_mels
        self.step_samples = LOG_MEL_STEP_SAMPLES
        # float64 and not persistent, as Mfcc's.
        window, mel_matrix = periodic_hann(LOG_MEL_WINDOW_SAMPLES), log_mel_filterbank_matrix(n_mels)
        self.register_buffer("window", torch.from_numpy(window), persistent=False)
        self.register_buffer("mel_matrix", torch.from_numpy(mel_matrix), persistent=False)

    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Full 400-sample windows every 160 samples in each item, never below 0."""
        return ((sample_lengths - LOG_MEL_WINDOW_SAMPLES) // LOG_MEL_STEP_SAMPLES + 1).clamp_min(0)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalised log-mels and frame counts of a padded batch, computed with autocast off."""
        with torch.autocast(waveforms.device.type, enabled=False):
            return self._log_mel(waveforms, lengths)

    def _log_mel(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        if waveforms.dim() != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(waveforms.shape)}")
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=waveforms.device)
        frame_lengths = self.frame_lengths(lengths.to(device=waveforms.device, dtype=torch.long))
        out_dtype = _compute_dtype(waveforms)
        if samples < LOG_MEL_WINDOW_SAMPLES:
            return waveforms.new_zeros(batch, 0, self.n_features, dtype=out_dtype), frame_lengths
        # .double() on the matrices too: a model cast with .half() or .to(dtype) casts its buffers.
        frames = waveforms.double().unfold(1, LOG_MEL_WINDOW_SAMPLES, LOG_MEL_STEP_SAMPLES)
        spectrum = torch.fft.rfft(frames * self.window.double(), n=LOG_MEL_FFT_SIZE)
        power = spectrum.real.square() + spectrum.imag.square()
        log_mel = (power @ self.mel_matrix.double()).clamp_min(LOG_MEL_FLOOR).log()
        valid = (torch.arange(log_mel.shape[1], device=log_mel.device) < frame_lengths[:, None]).unsqueeze(-1)
        count = frame_lengths.clamp_min(1).view(-1, 1, 1)
        mean = (log_mel * valid).sum(1, keepdim=True) / count
        centred = (log_mel - mean) * valid
        std = (centred.square().sum(1, keepdim=True) / count).sqrt()
        return (centred / (std + NORM_EPSILON)).to(out_dtype), frame_lengths
