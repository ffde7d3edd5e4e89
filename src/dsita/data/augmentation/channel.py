"""Channel variation and babble, drawn per utterance: what microphones, phones and codecs do to speech.

On a zero-padded (B, samples) batch on any device, keeping every utterance's length and zero padding:
babble (the batch's other utterances mixed under each one, `babble_waveforms`), and in `channel_waveforms`
microphone colouration, clipping, dynamic range compression, random EQ (peaking and shelving biquads), band
limits down to the 300-3400 Hz telephone band, an 8 kHz round trip (down- and up-sampling through a
windowed-sinc filter) and mu-law, in the order of a real chain: the microphone, the converter's overload
(clipping), the device's automatic gain (compression), the line (EQ, band limit, 8 kHz) and its coding.

Filters (microphone, EQ, band limit) are magnitude responses applied at zero phase through one FFT per
utterance: the features only see magnitudes, and the padding stays silent.

Lossy codecs (MP3, Vorbis, Opus through libsndfile) only run on the CPU, one clip at a time, so they belong
in the DataLoader workers: `CodecRoundTrip` is a clip transform for `dsita.data.dataset.SpeechDataset`.

Draws follow `dsita.data.augmentation.common`.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor

from dsita.audio import SAMPLE_RATE
from dsita.data.augmentation.common import log_uniform, uniform, valid_mask
from dsita.data.augmentation.options import CODEC_KBPS, ChannelOptions, parse_codec

BAND_EDGE_SHARE = 0.1  # a band limit fades in over its low edge's 10 % above it and out below its high edge
RESPONSE_GRID = 2049  # points from 0 Hz to the Nyquist frequency on which filter responses are computed
FILTER_MARGIN = 2048  # zeros after the batch before the FFT filter, so the responses do not wrap around
ROUND_TRIP_TAPS = 64  # each side of the windowed-sinc filter of the 8 kHz round trip
ROUND_TRIP_PASSBAND = 0.94  # its cutoff, as a share of the low rate's Nyquist frequency
KAISER_BETA = 8.0  # about 80 dB stop-band rejection
MU = 255
# Dynamic range compression: peak levels of 10 ms frames every 5 ms; the gain reacts within 15 ms (a minimum
# over 3 frames) and relaxes over 55 ms (a mean over 11 frames).
COMPRESSOR_FRAME = 160
COMPRESSOR_HOP = 80
COMPRESSOR_ATTACK_FRAMES = 3
COMPRESSOR_RELEASE_FRAMES = 11
# libsndfile's codecs as (format, subtype, bitrate mode), and how a bitrate maps to its compression level at
# 16 kHz mono: MP3 (MPEG-2 layer III, constant bitrate) runs linearly from 160 kb/s at level 0 to 8 kb/s at
# level 1, rounded to the nearest MPEG-2 bitrate, and Opus from 256 kb/s to 6 kb/s; Vorbis has no bitrate
# setting, only quality, whose bitrates (measured on speech, 16 kHz mono) run from 72 to 23 kb/s.
CODECS = {
    "mp3": ("MP3", "MPEG_LAYER_III", "CONSTANT"),
    "vorbis": ("OGG", "VORBIS", None),
    "opus": ("OGG", "OPUS", None),
}
VORBIS_LEVEL_KBPS = ((1.0, 23.0), (0.9, 26.0), (0.8, 29.0), (0.6, 36.0), (0.5, 44.0), (0.0, 72.0))
MAX_MP3_LEVEL = 0.99
CODEC_DELAY_SEARCH = (-64, 4096)  # the probe looks for a delay in this range of samples (< 0: a lead)


def babble_waveforms(
    waveforms: Tensor, lengths: Tensor, options: ChannelOptions, generator: torch.Generator | None = None
) -> Tensor:
    """Babble under the utterances `options.babble` picks: `add_babble` with a talker count and an SNR drawn
    per utterance. With `options.babble` 0 the batch is returned as it is and nothing is drawn."""
    if options.babble == 0:
        return waveforms
    batch, device = waveforms.shape[0], waveforms.device
    picked = uniform((batch,), 0, 1, generator, device) < options.babble
    low, high = options.babble_talkers
    talkers = uniform((batch,), low, high + 1, generator, device).floor().long()
    snr = uniform((batch,), *options.babble_snr_db, generator, device)
    return torch.where(picked[:, None], add_babble(waveforms, lengths, talkers, snr, generator), waveforms)


def channel_waveforms(
    waveforms: Tensor, lengths: Tensor, options: ChannelOptions, generator: torch.Generator | None = None
) -> Tensor:
    """Microphone, clipping, compression, EQ and band limit, 8 kHz round trip and mu-law, each on the
    utterances its probability picks (babble is `babble_waveforms`, earlier in the chain). With every
    probability 0 the batch is returned as it is and nothing is drawn, so that the RNG stream stays that of
    an unaugmented run."""
    if not options.line:
        return waveforms
    device = waveforms.device
    batch = waveforms.shape[0]
    out = waveforms

    def draw(low: float, high: float) -> Tensor:
        return uniform((batch,), low, high, generator, device)

    def draw_log(low: float, high: float) -> Tensor:
        return log_uniform((batch,), low, high, generator, device)

    def pick(prob: float) -> Tensor:
        return draw(0, 1) < prob

    if options.mic > 0:
        picked = pick(options.mic)
        response = random_mic_response(batch, generator, device)
        out = _filter_rows(out, lengths, picked, response)
    if options.clipping > 0:
        picked = pick(options.clipping)
        fraction = draw_log(*options.clip_fraction)
        out = torch.where(picked[:, None], clip(out, lengths, fraction), out)
    if options.compression > 0:
        picked = pick(options.compression)
        threshold, ratio = draw(*options.compression_threshold_db), draw_log(*options.compression_ratio)
        out = torch.where(picked[:, None], compress(out, lengths, threshold, ratio), out)
    out = _line(out, lengths, options, generator)
    if options.mu_law > 0:
        out = torch.where(pick(options.mu_law)[:, None], mu_law(out), out)
    return out


def _line(
    waveforms: Tensor, lengths: Tensor, options: ChannelOptions, generator: torch.Generator | None
) -> Tensor:
    """Random EQ and band limit (one FFT filter for both), then the 8 kHz round trip."""
    device = waveforms.device
    batch = waveforms.shape[0]
    out = waveforms
    responses: list[Callable[[Tensor], Tensor]] = []
    picks = []
    if options.eq > 0:
        picks.append(uniform((batch,), 0, 1, generator, device) < options.eq)
        responses.append(random_eq_response(batch, options.eq_bands, options.eq_gain_db, generator, device))
    if options.band_limit > 0:
        picks.append(uniform((batch,), 0, 1, generator, device) < options.band_limit)
        low = log_uniform((batch,), *options.band_low_hz, generator, device)
        high = log_uniform((batch,), *options.band_high_hz, generator, device)
        responses.append(functools.partial(band_response, low=low, high=high))
    if responses:
        chosen = list(zip(picks, responses, strict=True))

        def combined(frequencies: Tensor) -> Tensor:
            total = torch.ones(batch, frequencies.numel(), device=device)
            for picked, response in chosen:
                total = torch.where(picked[:, None], total * response(frequencies), total)
            return total

        out = _filter_rows(out, lengths, torch.stack(picks).any(0), combined)
    if options.narrowband > 0:
        picked = uniform((batch,), 0, 1, generator, device) < options.narrowband
        rows = torch.nonzero(picked).squeeze(1)
        if rows.numel():
            out = out.index_copy(0, rows, resample_round_trip(out[rows], lengths[rows]))
    return out


# --- filters -----------------------------------------------------------------------------------------------

Response = Callable[[Tensor], Tensor]  # (F,) frequencies in Hz -> (B, F) magnitude


def apply_response(waveforms: Tensor, lengths: Tensor, response: Response) -> Tensor:
    """Filter each utterance at zero phase by its magnitude response, through one FFT of the batch."""
    n_fft = 1 << (waveforms.shape[1] + FILTER_MARGIN - 1).bit_length()
    # The responses are smooth (the narrowest feature is tens of Hz wide): evaluated on a 4 Hz grid and
    # interpolated, they cost little next to the FFTs.
    grid = torch.linspace(0, SAMPLE_RATE / 2, RESPONSE_GRID, device=waveforms.device)
    magnitude = F.interpolate(response(grid)[:, None], size=n_fft // 2 + 1, mode="linear", align_corners=True)
    spectrum = torch.fft.rfft(waveforms, n=n_fft) * magnitude[:, 0].to(waveforms.dtype)
    filtered: Tensor = torch.fft.irfft(spectrum, n=n_fft)[:, : waveforms.shape[1]]
    return filtered * valid_mask(waveforms, lengths)


def _filter_rows(waveforms: Tensor, lengths: Tensor, picked: Tensor, response: Response) -> Tensor:
    rows = torch.nonzero(picked).squeeze(1)
    if not rows.numel():
        return waveforms
    filtered = apply_response(waveforms[rows], lengths[rows], lambda f: response(f)[rows])
    return waveforms.index_copy(0, rows, filtered)


def _biquad_magnitude(
    b: tuple[Tensor, Tensor, Tensor], a: tuple[Tensor, Tensor, Tensor], w: Tensor
) -> Tensor:
    """|H(e^jw)| of b0 + b1 z^-1 + b2 z^-2 over a0 + a1 z^-1 + a2 z^-2; coefficients (..., 1), w (F,).

    Callers compute in float64: at low frequencies the squared sums cancel to 1e-7 of their terms, which is
    float32's resolution.
    """

    def power(c0: Tensor, c1: Tensor, c2: Tensor) -> Tensor:
        return c0**2 + c1**2 + c2**2 + 2 * (c0 * c1 + c1 * c2) * torch.cos(w) + 2 * c0 * c2 * torch.cos(2 * w)

    return torch.sqrt(power(*b).clamp_min(0) / power(*a).clamp_min(1e-30))


def peaking_response(frequencies: Tensor, centre: Tensor, gain_db: Tensor, q: Tensor) -> Tensor:
    """RBJ peaking biquad: parameters (B,) or (B, K) (K filters in series) -> (B, F) magnitude."""
    centre, gain_db, q = (x.double().reshape(x.shape[0], -1, 1) for x in (centre, gain_db, q))
    w0 = 2 * math.pi * centre / SAMPLE_RATE
    amplitude = 10 ** (gain_db / 40)
    alpha = torch.sin(w0) / (2 * q)
    cos = -2 * torch.cos(w0)
    b = (1 + alpha * amplitude, cos, 1 - alpha * amplitude)
    a = (1 + alpha / amplitude, cos, 1 - alpha / amplitude)
    return _biquad_magnitude(b, a, 2 * math.pi * frequencies.double() / SAMPLE_RATE).prod(dim=1).float()


def shelf_response(frequencies: Tensor, corner: Tensor, gain_db: Tensor, high: bool) -> Tensor:
    """RBJ low (or high) shelf of slope 1: (B,) corner and gain -> (B, F) magnitude."""
    corner, gain_db = corner.double()[:, None], gain_db.double()[:, None]
    w0 = 2 * math.pi * corner / SAMPLE_RATE
    amplitude = 10 ** (gain_db / 40)
    root_alpha = 2 * amplitude.sqrt() * torch.sin(w0) / math.sqrt(2)
    cos = torch.cos(w0)
    sign = -1 if high else 1
    plus, minus = amplitude + 1, amplitude - 1
    b = (
        amplitude * (plus - sign * minus * cos + root_alpha),
        sign * 2 * amplitude * (minus - sign * plus * cos),
        amplitude * (plus - sign * minus * cos - root_alpha),
    )
    a = (
        plus + sign * minus * cos + root_alpha,
        -sign * 2 * (minus + sign * plus * cos),
        plus + sign * minus * cos - root_alpha,
    )
    return _biquad_magnitude(b, a, 2 * math.pi * frequencies.double() / SAMPLE_RATE).float()


def band_response(frequencies: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """1 inside the band, 0 outside [low, high] (B,) Hz, raised-cosine edges just inside the band."""
    f = frequencies[None]
    low, high = low[:, None], high[:, None]

    def ramp(x: Tensor) -> Tensor:
        return 0.5 - 0.5 * torch.cos(math.pi * x.clamp(0, 1))

    rise = ramp((f - low) / (BAND_EDGE_SHARE * low))
    fall = ramp((high - f) / (BAND_EDGE_SHARE * high))
    return rise * fall


def butterworth_response(frequencies: Tensor, corner: Tensor, order: int, high_pass: bool) -> Tensor:
    """An analogue Butterworth magnitude: (B,) corners -> (B, F)."""
    ratio = frequencies[None].clamp_min(1e-3) / corner[:, None]
    ratio = 1 / ratio if high_pass else ratio
    return 1 / torch.sqrt(1 + ratio ** (2 * order))


def random_eq_response(
    batch: int, bands: int, gain_db: float, generator: torch.Generator | None, device: torch.device
) -> Response:
    """A response of `bands` peaking filters (60 Hz-7 kHz, Q 0.5-3), a low shelf (80-400 Hz) and a high
    shelf (2-6 kHz), each gain in [-gain_db, gain_db]."""

    def draw_log(low: float, high: float, shape: tuple[int, ...]) -> Tensor:
        return log_uniform(shape, low, high, generator, device)

    centres = draw_log(60, 7000, (batch, bands))
    qs = draw_log(0.5, 3, (batch, bands))
    gains = uniform((batch, bands + 2), -gain_db, gain_db, generator, device)
    low_corner, high_corner = draw_log(80, 400, (batch,)), draw_log(2000, 6000, (batch,))

    def response(frequencies: Tensor) -> Tensor:
        total = shelf_response(frequencies, low_corner, gains[:, -2], high=False)
        total = total * shelf_response(frequencies, high_corner, gains[:, -1], high=True)
        if bands:
            total = total * peaking_response(frequencies, centres, gains[:, :bands], qs)
        return total

    return response


@dataclass(frozen=True)
class MicResponse:
    """A small microphone's colouration: a low cut, a presence peak, a cavity resonance and a high cut."""

    low_cut_hz: float
    presence_hz: float
    presence_db: float
    resonance_hz: float
    resonance_db: float
    high_cut_hz: float

    def response(self, frequencies: Tensor) -> Tensor:
        """(1, F) magnitude."""
        return _mic_response(
            frequencies, *(torch.tensor([v], device=frequencies.device) for v in self.fields())
        )

    def fields(self) -> tuple[float, ...]:
        """The parameters in `_mic_response`'s order."""
        return (
            self.low_cut_hz,
            self.presence_hz,
            self.presence_db,
            self.resonance_hz,
            self.resonance_db,
            self.high_cut_hz,
        )


# Fixed microphones for test-time channels (a benchmark can hold these out of training's random ones).
MIC_PRESETS = {
    "laptop": MicResponse(250.0, 4500.0, 8.0, 1200.0, 4.0, 6500.0),
    "phone": MicResponse(180.0, 3000.0, 6.0, 6000.0, 5.0, 7000.0),
    "headset": MicResponse(120.0, 2500.0, 4.0, 800.0, -4.0, 5500.0),
    "webcam": MicResponse(300.0, 5000.0, 10.0, 2000.0, 6.0, 5000.0),
}


def _mic_response(
    frequencies: Tensor,
    low_cut: Tensor,
    presence: Tensor,
    presence_db: Tensor,
    resonance: Tensor,
    resonance_db: Tensor,
    high_cut: Tensor,
) -> Tensor:
    total = butterworth_response(frequencies, low_cut, 2, high_pass=True)
    total = total * butterworth_response(frequencies, high_cut, 2, high_pass=False)
    centres = torch.stack([presence, resonance], dim=1)
    gains = torch.stack([presence_db, resonance_db], dim=1)
    qs = torch.tensor([1.5, 4.0], device=frequencies.device).expand_as(centres)
    return total * peaking_response(frequencies, centres, gains, qs)


def random_mic_response(batch: int, generator: torch.Generator | None, device: torch.device) -> Response:
    """Small-microphone colourations: low cut 70-300 Hz, presence peak +3-10 dB at 2-6 kHz, a resonance of
    +-6 dB at 300 Hz-7 kHz, high cut 3.5-9 kHz (above 8 kHz: a gentle droop at the top of the band)."""

    def draw_log(low: float, high: float) -> Tensor:
        return log_uniform((batch,), low, high, generator, device)

    low_cut, presence = draw_log(70, 300), draw_log(2000, 6000)
    presence_db = uniform((batch,), 3, 10, generator, device)
    resonance, resonance_db = draw_log(300, 7000), uniform((batch,), -6, 6, generator, device)
    high_cut = draw_log(3500, 9000)
    return functools.partial(
        _mic_response,
        low_cut=low_cut,
        presence=presence,
        presence_db=presence_db,
        resonance=resonance,
        resonance_db=resonance_db,
        high_cut=high_cut,
    )


# --- sampling and coding -----------------------------------------------------------------------------------


def _lowpass_kernel(cutoff: float, taps: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A windowed-sinc low-pass of 2 taps + 1 coefficients, `cutoff` in cycles per sample, unit DC gain."""
    n = torch.arange(-taps, taps + 1, device=device, dtype=torch.float64)
    kernel = 2 * cutoff * torch.sinc(2 * cutoff * n)
    kernel *= torch.kaiser_window(2 * taps + 1, periodic=False, beta=KAISER_BETA, dtype=torch.float64).to(
        device
    )
    return (kernel / kernel.sum()).to(dtype)


def resample_round_trip(waveforms: Tensor, lengths: Tensor, rate: int = 8000) -> Tensor:
    """Down to `rate` (16 kHz divided by an integer) and back up, as a narrowband line would carry it.

    Both ways through a Kaiser-windowed sinc low-pass at 94 % of the low rate's Nyquist frequency.
    """
    if SAMPLE_RATE % rate:
        raise ValueError(f"the round-trip rate must divide {SAMPLE_RATE} Hz, got {rate}")
    factor = SAMPLE_RATE // rate
    kernel = _lowpass_kernel(
        ROUND_TRIP_PASSBAND / (2 * factor), ROUND_TRIP_TAPS * factor, waveforms.device, waveforms.dtype
    )
    taps = kernel.numel() // 2

    def low_pass(x: Tensor) -> Tensor:
        """Linear convolution with the centred kernel, through FFTs (a direct one costs 20 times more)."""
        n_fft = 1 << (x.shape[1] + 2 * taps).bit_length()
        spectrum = torch.fft.rfft(x, n=n_fft) * torch.fft.rfft(kernel, n=n_fft)
        filtered: Tensor = torch.fft.irfft(spectrum, n=n_fft)[:, taps : taps + x.shape[1]]
        return filtered

    narrow = low_pass(waveforms)[:, ::factor]
    wide = torch.zeros(
        waveforms.shape[0], narrow.shape[1] * factor, device=waveforms.device, dtype=waveforms.dtype
    )
    wide[:, ::factor] = narrow * factor
    return low_pass(wide)[:, : waveforms.shape[1]] * valid_mask(waveforms, lengths)


def mu_law(waveforms: Tensor, bits: int = 8) -> Tensor:
    """G.711-style mu-law (mu = 255) round trip: compand, quantize sign and magnitude to `bits` (so zero
    stays zero), expand. Clamps to [-1, 1]."""
    x = waveforms.clamp(-1, 1)
    steps = 2 ** (bits - 1) - 1
    companded = torch.round(torch.log1p(MU * x.abs()) / math.log1p(MU) * steps) / steps
    return torch.sign(x) * torch.expm1(companded * math.log1p(MU)) / MU


def compression_level(codec: str, kbps: float) -> float:
    """libsndfile's compression level (0: best) that gives about `kbps` kb/s at 16 kHz mono."""
    if codec == "vorbis":
        levels, rates = zip(*VORBIS_LEVEL_KBPS, strict=True)
        return float(np.interp(kbps, rates, levels))
    low, high = CODEC_KBPS[codec]
    level = 1 - (kbps - low) / (high - low)
    # libsndfile refuses level 1 for MP3; 0.99 gives the same lowest bitrate.
    return min(level, MAX_MP3_LEVEL) if codec == "mp3" else level


def _encode_decode(samples: np.ndarray, codec: str, kbps: float) -> np.ndarray:
    fmt, subtype, mode = CODECS[codec]
    extra = {"bitrate_mode": mode} if mode else {}
    buffer = io.BytesIO()
    sf.write(
        buffer,
        samples,
        SAMPLE_RATE,
        format=fmt,
        subtype=subtype,
        compression_level=compression_level(codec, kbps),
        **extra,
    )
    buffer.seek(0)
    decoded: np.ndarray
    decoded, _ = sf.read(buffer, dtype="float32")
    return decoded


@functools.cache
def codec_delay(codec: str, kbps: float) -> int:
    """Samples by which the codec's round trip lags its input (0 where libsndfile trims the delay itself, and
    below 0 for a lead): found once per setting on a fixed noise probe, at the cross-correlation's peak."""
    probe = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    decoded = _encode_decode(probe, codec, kbps)
    size = 1 << (len(probe) + len(decoded)).bit_length()
    correlation = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(probe, size)), size)
    lead, lag = CODEC_DELAY_SEARCH
    lags = np.arange(lead, lag)
    return int(lags[np.argmax(correlation[lags])])  # negative lags index the end: circular correlation


def codec_round_trip(audio: Tensor, codec: str, kbps: float) -> Tensor:
    """The 1-D float32 clip through `codec` at `kbps` kb/s and back: same length, delay removed."""
    samples = audio.detach().cpu().numpy().astype(np.float32).clip(-1, 1)
    decoded = _encode_decode(samples, codec, kbps)
    delay = codec_delay(codec, kbps)
    decoded = decoded[delay:] if delay >= 0 else np.concatenate([np.zeros(-delay, np.float32), decoded])
    out = np.zeros(samples.size, dtype=np.float32)
    out[: min(out.size, decoded.size)] = decoded[: out.size]
    return torch.from_numpy(out)


@dataclass(frozen=True)
class CodecRoundTrip:
    """A clip transform for the DataLoader workers: with probability `options.codec`, a round trip through
    one of `options.codecs`, drawn uniformly."""

    options: ChannelOptions

    def __call__(self, audio: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The 1-D clip, round-tripped through a codec when picked, else unchanged."""
        if self.options.codec == 0:
            return audio
        # Both draws always, so that the RNG stream does not depend on which clips were picked.
        picked = float(torch.rand((), generator=generator)) < self.options.codec
        choice = int(torch.randint(len(self.options.codecs), (), generator=generator))
        return codec_round_trip(audio, *parse_codec(self.options.codecs[choice])) if picked else audio


# --- levels ------------------------------------------------------------------------------------------------


def clip(waveforms: Tensor, lengths: Tensor, fraction: Tensor) -> Tensor:
    """Hard clipping of utterance b at the level that `fraction[b]` of its valid samples exceed."""
    magnitude = torch.where(valid_mask(waveforms, lengths) > 0, waveforms.abs(), -1.0)
    rank = (fraction * lengths).floor().long().clamp(min=0)
    rank = torch.minimum(rank, (lengths - 1).clamp_min(0))
    ordered = magnitude.topk(int(rank.max()) + 1, dim=1).values  # the loudest samples, in order
    level = ordered.gather(1, rank[:, None]).clamp_min(0)
    return torch.maximum(torch.minimum(waveforms, level), -level)


def compress(waveforms: Tensor, lengths: Tensor, threshold_db: Tensor, ratio: Tensor) -> Tensor:
    """Feed-forward dynamic range compression, level restored: above `threshold_db[b]` (dB under the peak of
    utterance b) its level grows 1 / `ratio[b]` dB per dB. The output keeps each utterance's RMS.

    The level is each 10 ms frame's peak, so the loudest peaks are the ones turned down, as a limiter's are.
    """
    valid = valid_mask(waveforms, lengths)
    peak = F.max_pool1d(waveforms.abs()[:, None], COMPRESSOR_FRAME, COMPRESSOR_HOP, ceil_mode=True)[:, 0]
    level = 20 * torch.log10(peak.clamp_min(1e-5))
    threshold = level.max(dim=1, keepdim=True).values + threshold_db[:, None]
    gain_db = -(1 - 1 / ratio[:, None]) * (level - threshold).clamp_min(0)
    # Fast attack: the lowest gain of the neighbouring frames; slow release: a moving mean of that, which may
    # spread a reduction to the frames around it but never weakens one (so lone peaks are caught too).
    attack = -F.max_pool1d(-gain_db[:, None], COMPRESSOR_ATTACK_FRAMES, 1, COMPRESSOR_ATTACK_FRAMES // 2)
    release = F.avg_pool1d(
        attack, COMPRESSOR_RELEASE_FRAMES, 1, COMPRESSOR_RELEASE_FRAMES // 2, count_include_pad=False
    )
    smooth = torch.minimum(attack, release)
    gain = F.interpolate(10 ** (smooth / 20), scale_factor=COMPRESSOR_HOP, mode="linear", align_corners=False)
    # Interpolated gain j sits at frame (j + 0.5) / hop - 0.5, and frame i is centred on hop * i + frame / 2.
    delay = (COMPRESSOR_FRAME - COMPRESSOR_HOP) // 2
    gain = F.pad(gain, (delay, 0), mode="replicate")[:, 0, : waveforms.shape[1]]
    gain = F.pad(gain, (0, waveforms.shape[1] - gain.shape[1]), mode="replicate")
    out = waveforms * gain * valid
    return out * torch.sqrt(waveforms.square().sum(1) / out.square().sum(1).clamp_min(1e-20))[:, None]


# --- babble ------------------------------------------------------------------------------------------------


def add_babble(
    waveforms: Tensor,
    lengths: Tensor,
    talkers: Tensor,
    snr_db: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mix `talkers[b]` other utterances of the batch under utterance b at `snr_db[b]`.

    Each talker is another row of the batch (distinct rows, never b itself; at most B - 1 of them), at unit
    RMS, looped from a random offset to cover b's valid samples. Powers are measured over b's valid samples,
    and b's padding stays zero. A batch of one utterance has no one to babble and is returned as it is.
    """
    batch, width = waveforms.shape
    device = waveforms.device
    if batch < 2:
        return waveforms
    count = talkers.clamp(1, batch - 1)
    # Distinct non-zero row shifts per utterance, from a random permutation of 1 .. B-1.
    shifts = uniform((batch, batch - 1), 0, 1, generator, device).argsort(dim=1) + 1
    offsets = uniform((batch, batch - 1), 0, 1, generator, device)
    valid = valid_mask(waveforms, lengths)
    level = torch.sqrt(waveforms.square().sum(1) / lengths.clamp_min(1))
    rows = torch.arange(batch, device=device)
    time = torch.arange(width, device=device)
    babble = torch.zeros_like(waveforms)
    for k in range(int(count.max())):
        source = (rows + shifts[:, k]) % batch
        size = lengths[source].clamp_min(1)
        start = (offsets[:, k] * size).long()
        steps = (start[:, None] + time[None]) % size[:, None]
        segment = waveforms[source[:, None], steps] / level[source].clamp_min(1e-10)[:, None]
        babble = babble + segment * (k < count)[:, None]
    babble = babble * valid
    signal_power = (waveforms.square() * valid).sum(1)
    noise_power = babble.square().sum(1).clamp_min(1e-20)
    scale = torch.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return waveforms + babble * scale[:, None]
