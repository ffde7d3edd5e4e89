"""Speaker variation: vocal tract length, pitch, formants and tempo, drawn per utterance.

Vocal tract length perturbation (VTLP), pitch shift and formant shift run on a zero-padded (B, samples) batch
on any device and keep every utterance's length and zero padding:

- `vtlp` scales every frequency by a factor (pitch and formants together, as a shorter or longer vocal tract
  with the same tension would): band-limited resampling, then a phase-vocoder time stretch back to the
  original duration. Unlike a warp of the filterbank it acts on the audio, so it serves both featurizers.
- `formant_shift` moves the spectral envelope by a factor and keeps the harmonics, hence the pitch: each STFT
  frame is divided by its envelope (a cepstral "true envelope") and multiplied by the envelope rescaled.
- `pitch_shift` moves the pitch and keeps the envelope: `vtlp` by the pitch factor, then the envelope moved
  back by its inverse.

Tempo changes the length, so `change_tempo` (WSOLA, pitch kept) runs per clip in the DataLoader workers,
as speed perturbation does (`TempoPerturbation`, a clip transform for `dsita.data.dataset.SpeechDataset`).

Draws follow `dsita.data.augmentation.common`, so that a resumed run augments as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from dsita.data.augmentation.common import log_uniform, uniform, valid_mask
from dsita.data.augmentation.options import SpeakerOptions

# Phase vocoder and envelope STFT: 32 ms frames every 8 ms at 16 kHz (75 % overlap keeps the phase
# vocoder's smearing low).
STFT_SIZE = 512
STFT_HOP = 128
# Cepstral lifter of the envelope: 2.2 ms, below the pitch period of voices up to about 450 Hz, so the
# envelope follows the formants and not the harmonics.
LIFTER_SAMPLES = 35
ENVELOPE_ITERATIONS = 2  # "true envelope" refinements: the envelope rides on the harmonic peaks
MAX_ENVELOPE_GAIN = math.log(10 ** (30 / 20))  # a formant move never boosts or cuts a bin by more than 30 dB
RESAMPLE_PAD = 1024  # zeros (at least) after each utterance before the FFT resampler: a silent wrap-around
RESAMPLE_TAPER = 0.03  # share of the kept band faded out at its top, against the brick wall's ringing
# WSOLA (tempo): 32 ms Hann frames at 50 % overlap, each placed within +-10 ms of its nominal position where
# it best continues the previous one (10 ms covers a pitch period down to 100 Hz each side).
WSOLA_FRAME = 512
WSOLA_HOP = WSOLA_FRAME // 2
WSOLA_TOLERANCE = 160

# (waveforms, lengths, per-row factors) -> waveforms of the same shape
RowTransform = Callable[[Tensor, Tensor, Tensor], Tensor]


def speaker_waveforms(
    waveforms: Tensor, lengths: Tensor, options: SpeakerOptions, generator: torch.Generator | None = None
) -> Tensor:
    """VTLP, pitch shift and formant shift, each on the utterances its probability picks.

    The three combine into one resampling factor (VTLP times pitch) and one envelope factor (formant over
    pitch), so an utterance goes through at most one phase vocoder and one envelope pass. With every
    probability 0 the batch is returned as it is and nothing is drawn.
    """
    if not options.batch:
        return waveforms
    device = waveforms.device
    batch = waveforms.shape[0]
    ones = torch.ones(batch, device=device)

    def draw(prob: float, low: float, high: float) -> Tensor:
        """Per-utterance log-uniform factor where picked, 1 elsewhere; draws nothing for a 0 probability."""
        if prob == 0:
            return ones
        picked = uniform((batch,), 0, 1, generator, device) < prob
        factor = log_uniform((batch,), low, high, generator, device)
        return torch.where(picked, factor, ones)

    tract = draw(options.vtlp, *options.vtlp_range)
    low, high = (2 ** (s / 12) for s in options.pitch_semitones)
    pitch = draw(options.pitch, low, high)
    envelope = draw(options.formant, *options.formant_range)
    out = _on_rows(waveforms, lengths, tract * pitch, vtlp)
    return _on_rows(out, lengths, envelope / pitch, formant_shift)


def _on_rows(waveforms: Tensor, lengths: Tensor, factors: Tensor, transform: RowTransform) -> Tensor:
    """`transform(waveforms, lengths, factors)` on the rows whose factor is not 1, the others untouched."""
    rows = torch.nonzero(factors != 1).squeeze(1)
    if not rows.numel():
        return waveforms
    return waveforms.index_copy(0, rows, transform(waveforms[rows], lengths[rows], factors[rows]))


def vtlp(waveforms: Tensor, lengths: Tensor, factors: Tensor) -> Tensor:
    """Every frequency of utterance b times `factors[b]` (pitch and formants), its duration and RMS kept."""
    resampled, resampled_lengths = resample(waveforms, lengths, factors)
    out = time_stretch(resampled, resampled_lengths, resampled_lengths / lengths, lengths)
    out = torch.nn.functional.pad(out, (0, waveforms.shape[1] - out.shape[1]))
    return out * _rms_ratio(waveforms, out)[:, None]


def pitch_shift(waveforms: Tensor, lengths: Tensor, semitones: Tensor) -> Tensor:
    """Pitch moved by `semitones[b]`, spectral envelope and duration kept."""
    factors = 2 ** (semitones.to(waveforms.dtype) / 12)
    return formant_shift(vtlp(waveforms, lengths, factors), lengths, 1 / factors)


def resample(waveforms: Tensor, lengths: Tensor, factors: Tensor) -> tuple[Tensor, Tensor]:
    """Band-limited resampling that plays utterance b `factors[b]` times faster: frequencies times the
    factor, duration divided by it. Returns the zero-padded batch and its new lengths.

    Each utterance is resampled over its own valid samples (plus silence) by an FFT, so rows run one by one.
    """
    outputs = []
    new_lengths = []
    for row in range(waveforms.shape[0]):
        length = int(lengths[row])
        n_in = _smooth_size(length + RESAMPLE_PAD)
        signal = torch.nn.functional.pad(waveforms[row, :length], (0, n_in - length))
        n_out = max(1, round(n_in / float(factors[row])))
        spectrum = torch.fft.rfft(signal)
        kept = min(spectrum.numel(), n_out // 2 + 1)
        taper = torch.ones(kept, device=signal.device)
        fade = max(1, int(kept * RESAMPLE_TAPER))
        taper[-fade:] = 0.5 * (1 + torch.cos(torch.linspace(0, math.pi, fade, device=signal.device)))
        spectrum = spectrum[:kept] * taper
        out = torch.fft.irfft(spectrum, n=n_out) * (n_out / n_in)
        new_length = min(n_out, round(length * n_out / n_in))
        outputs.append(out[:new_length])
        new_lengths.append(new_length)
    padded = waveforms.new_zeros(len(outputs), max(new_lengths))
    for row, out in enumerate(outputs):
        padded[row, : out.numel()] = out
    return padded, torch.tensor(new_lengths, device=lengths.device)


def _smooth_size(n: int) -> int:
    """The least size >= n with no prime factor above 5, which FFTs handle several times faster."""
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


def _stft(waveforms: Tensor) -> Tensor:
    window = torch.hann_window(STFT_SIZE, device=waveforms.device, dtype=waveforms.dtype)
    # Zeros, not reflections, around the batch: like the padding, and defined for any length.
    return torch.stft(
        waveforms, STFT_SIZE, STFT_HOP, window=window, center=True, pad_mode="constant", return_complex=True
    )


def _istft(spectrum: Tensor, length: int) -> Tensor:
    window = torch.hann_window(STFT_SIZE, device=spectrum.device, dtype=spectrum.real.dtype)
    return torch.istft(spectrum, STFT_SIZE, STFT_HOP, window=window, center=True, length=length)


def _wrap(phase: Tensor) -> Tensor:
    """Phase in [-pi, pi)."""
    return torch.remainder(phase + math.pi, 2 * math.pi) - math.pi


def time_stretch(
    waveforms: Tensor, lengths: Tensor, rates: Tensor, out_lengths: Tensor | None = None
) -> Tensor:
    """Phase-vocoder time stretch: utterance b plays `rates[b]` times faster, its pitch kept.

    The result has `out_lengths` valid samples (by default round(lengths / rates)) and zero padding. Phases
    advance by each bin's instantaneous frequency, and bins around a spectral peak keep their phase relative
    to the peak (identity phase locking), which keeps the phase vocoder's "phasiness" low on speech.
    """
    if out_lengths is None:
        out_lengths = torch.round(lengths / rates).long()
    spectrum = _stft(waveforms).transpose(1, 2).contiguous()  # (B, T, F): frames as rows, bins contiguous
    batch, frames, bins = spectrum.shape
    device = waveforms.device
    dtype = spectrum.real.dtype
    out_samples = int(out_lengths.max())
    out_frames = -(-out_samples // STFT_HOP) + 1
    steps = torch.arange(out_frames, device=device, dtype=dtype)[None]
    position = (steps * rates[:, None].to(dtype)).clamp(max=frames - 1)
    first = position.floor().long().clamp(max=max(frames - 2, 0))
    second = (first + 1).clamp(max=frames - 1)
    fraction = (position - first)[:, :, None]

    def frames_at(index: Tensor) -> Tensor:
        return spectrum.gather(1, index[:, :, None].expand(batch, out_frames, bins))

    before, after = frames_at(first), frames_at(second)
    magnitude = (1 - fraction) * before.abs() + fraction * after.abs()
    analysis_phase = before.angle()
    # Each bin's phase advance over a hop, wrapped in float64: unwrapped it reaches 400 rad, where float32's
    # rounding would drift the phases by 1e-5 rad a frame.
    expected = 2 * math.pi * STFT_HOP * torch.arange(bins, device=device, dtype=torch.float64) / STFT_SIZE
    expected = _wrap(expected).to(dtype)
    advance = expected + _wrap(after.angle() - analysis_phase - expected)
    # Exclusive cumulative sum: frame j's phase is the first frame's plus the advances of frames before j. In
    # float64: over thousands of frames float32 rounding would drift the phases audibly.
    total = torch.cumsum(advance.double(), dim=1) - advance
    phase = _wrap(spectrum[:, :1].angle() + total).to(dtype)
    phase = _lock_to_peaks(magnitude, phase, analysis_phase)
    out = _istft(torch.polar(magnitude, phase).transpose(1, 2), out_samples)
    return out * valid_mask(out, out_lengths)


def _lock_to_peaks(magnitude: Tensor, phase: Tensor, analysis_phase: Tensor) -> Tensor:
    """Identity phase locking on (B, T, F) frames: each bin takes its nearest peak's synthesis phase plus the
    phase difference to that peak in the analysis frame (Laroche and Dolson, 1999)."""
    bins = magnitude.shape[-1]
    padded = torch.nn.functional.pad(magnitude, (1, 1))
    peak = (magnitude >= padded[..., :-2]) & (magnitude > padded[..., 2:])
    index = torch.arange(bins, device=magnitude.device, dtype=torch.int32).expand_as(magnitude)
    below = torch.where(peak, index, -bins).cummax(dim=-1).values
    above = torch.where(peak, index, 2 * bins).flip(-1).cummin(dim=-1).values.flip(-1)
    nearest = torch.where(index - below <= above - index, below, above).clamp(0, bins - 1).long()
    locked = phase.gather(-1, nearest) - analysis_phase.gather(-1, nearest) + analysis_phase
    return torch.where(peak.any(dim=-1, keepdim=True), locked, phase)


def spectral_envelope(log_magnitude: Tensor) -> Tensor:
    """(B, T, F) natural-log magnitudes -> their envelope: cepstrally smoothed, raised onto the peaks.

    Plain cepstral smoothing runs through the middle between harmonics; each "true envelope" iteration
    lifts the log spectrum to at least the current envelope and smooths again, so the envelope follows the
    harmonic peaks, whose heights are the formants.
    """
    quefrency = torch.arange(STFT_SIZE, device=log_magnitude.device)
    distance = torch.minimum(quefrency, STFT_SIZE - quefrency).to(log_magnitude.dtype)
    lifter = torch.where(
        distance < LIFTER_SAMPLES, 0.5 * (1 + torch.cos(math.pi * distance / LIFTER_SAMPLES)), 0.0
    )

    def smooth(values: Tensor) -> Tensor:
        smoothed: Tensor = torch.fft.rfft(torch.fft.irfft(values, n=STFT_SIZE) * lifter).real
        return smoothed

    envelope = smooth(log_magnitude)
    for _ in range(ENVELOPE_ITERATIONS):
        envelope = smooth(torch.maximum(log_magnitude, envelope))
    return envelope


def formant_shift(waveforms: Tensor, lengths: Tensor, factors: Tensor) -> Tensor:
    """Spectral envelope of utterance b moved up by `factors[b]` (down below 1), harmonics kept.

    Each frame's bins are multiplied by envelope(f / factor) / envelope(f), capped at +-30 dB. The output
    keeps each utterance's RMS over its valid samples.
    """
    spectrum = _stft(waveforms).transpose(1, 2)  # (B, T, F): the cepstral FFTs run along contiguous bins
    batch, frames, bins = spectrum.shape
    envelope = spectral_envelope(torch.log(spectrum.abs().clamp_min(1e-7)))
    source = (torch.arange(bins, device=waveforms.device)[None] / factors[:, None]).clamp(max=bins - 1)
    low = source.floor().long().clamp(max=bins - 2)
    weight = (source - low)[:, None, :]

    def at(index: Tensor) -> Tensor:
        return envelope.gather(2, index[:, None, :].expand(batch, frames, bins))

    moved = (1 - weight) * at(low) + weight * at(low + 1)
    gain = torch.exp((moved - envelope).clamp(-MAX_ENVELOPE_GAIN, MAX_ENVELOPE_GAIN))
    out = _istft((spectrum * gain).transpose(1, 2), waveforms.shape[1]) * valid_mask(waveforms, lengths)
    return out * _rms_ratio(waveforms, out)[:, None]


def _rms_ratio(reference: Tensor, changed: Tensor) -> Tensor:
    """Per row, the factor that gives `changed` the energy of `reference` (padding is zero in both)."""
    return torch.sqrt(reference.square().sum(1) / changed.square().sum(1).clamp_min(1e-20))


def change_tempo(audio: Tensor, factor: float) -> Tensor:
    """The 1-D clip spoken `factor` times faster, its pitch kept: WSOLA, round(len / factor) samples.

    Output frame j (Hann, 50 % overlap) is cut from the input near j * hop * factor, at the offset within
    the tolerance whose samples best continue the previous frame (highest cross-correlation), so periods
    join without phase jumps. Runs on the CPU, per clip.
    """
    if factor == 1.0:
        return audio
    samples = audio.detach().cpu().numpy().astype(np.float64)
    n_out = max(1, round(samples.size / factor))
    margin = WSOLA_TOLERANCE + WSOLA_FRAME
    padded = np.pad(samples, (margin, margin + WSOLA_FRAME + math.ceil(WSOLA_HOP * factor)))
    window = np.sin(np.pi * np.arange(WSOLA_FRAME) / WSOLA_FRAME) ** 2  # periodic Hann: sums to 1 at 50 %
    n_frames = n_out // WSOLA_HOP + 2
    out = np.zeros(n_frames * WSOLA_HOP + WSOLA_FRAME)
    previous = -1
    for frame in range(n_frames):
        # Frame `frame` is centred on output sample frame * hop, so on input sample frame * hop * factor.
        nominal = margin + round(frame * WSOLA_HOP * factor) - WSOLA_FRAME // 2
        start = nominal
        if previous >= 0:
            template = padded[previous + WSOLA_HOP : previous + WSOLA_HOP + WSOLA_FRAME] * window
            region = padded[nominal - WSOLA_TOLERANCE : nominal + WSOLA_TOLERANCE + WSOLA_FRAME]
            correlation = np.correlate(region, template, mode="valid")
            if correlation.any():
                start = nominal - WSOLA_TOLERANCE + int(np.argmax(correlation))
        out[frame * WSOLA_HOP : frame * WSOLA_HOP + WSOLA_FRAME] += (
            window * padded[start : start + WSOLA_FRAME]
        )
        previous = start
    result = out[WSOLA_FRAME // 2 : WSOLA_FRAME // 2 + n_out]
    return torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32))


@dataclass(frozen=True)
class TempoPerturbation:
    """A clip transform for the DataLoader workers: with probability `options.tempo`, `change_tempo` by a
    factor drawn log-uniformly in `options.tempo_range`."""

    options: SpeakerOptions

    def __call__(self, audio: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The 1-D clip at a drawn tempo (pitch kept) when picked, else unchanged."""
        if self.options.tempo == 0:
            return audio
        # One draw each, always, so that the RNG stream does not depend on which clips were picked.
        picked = float(torch.rand((), generator=generator)) < self.options.tempo
        low, high = (math.log(x) for x in self.options.tempo_range)
        factor = math.exp(low + (high - low) * float(torch.rand((), generator=generator)))
        return change_tempo(audio, factor) if picked else audio
