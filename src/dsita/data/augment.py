"""Training augmentation, drawn per utterance and applied on the fly (never to dev or test).

Speed perturbation runs in the DataLoader workers (`dsita.data.dataset`), since it changes a clip's length.
Reverberation, additive noise and gain run here on the training device, on the whole padded batch; SpecAugment
runs on the features. Every draw comes from torch's RNG (or a given generator), whose state the trainer saves,
so a resumed run augments exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.data.augmentation.options import AugmentOptions
from dsita.errors import DsitaError

NOISE_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
# With a noise folder, this share of the noisy utterances takes a file and the rest synthetic noise, so a
# small folder does not make the model learn its few recordings.
FILE_NOISE_SHARE = 0.5
# Spectral slopes of the synthetic noises: power ~ 1 / f**k for white (0), pink (1) and brown (2) noise.
NOISE_COLOURS = 3
# The reverberant tail carries as much energy as the direct sound at this RT60, more in livelier rooms
# (a room's reverberant field grows with its RT60), roughly a talker a metre away in a furnished room.
EQUAL_ENERGY_RT60 = 0.3
DECAY_60_DB = 3 * math.log(10)  # amplitude falls by 60 dB when exp(-DECAY_60_DB * t / rt60) reaches 1e-3


@dataclass(frozen=True)
class NoiseBank:
    """Noise recordings at 16 kHz mono, end to end in one tensor, so a batch's segments are one gather."""

    samples: Tensor  # (total samples,) float32
    starts: Tensor  # (clips,) int64 offset of each clip in `samples`
    sizes: Tensor  # (clips,) int64

    def to(self, device: torch.device) -> NoiseBank:
        return NoiseBank(self.samples.to(device), self.starts.to(device), self.sizes.to(device))

    def segments(self, clips: Tensor, offsets: Tensor, length: int) -> Tensor:
        """(B, length) noise: clip `clips[b]` from sample `offsets[b]` on, looping round a short clip."""
        steps = (offsets[:, None] + torch.arange(length, device=clips.device)) % self.sizes[clips, None]
        return self.samples[self.starts[clips, None] + steps]


def load_noise_bank(folder: Path) -> NoiseBank:
    """Every WAV, FLAC, MP3 or OGG file under `folder`, read once, resampled to 16 kHz mono."""
    if not folder.is_dir():
        raise DsitaError(f"{folder}: noise folder not found")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in NOISE_SUFFIXES and p.is_file())
    if not paths:
        raise DsitaError(f"{folder}: no noise files ({', '.join(NOISE_SUFFIXES)}) in the noise folder")
    clips = []
    for path in paths:
        audio = torch.from_numpy(load_audio(path))  # names the file when it cannot be read
        if not audio.any():
            raise DsitaError(f"{path}: noise file is silent")
        clips.append(audio)
    sizes = torch.tensor([c.numel() for c in clips], dtype=torch.long)
    return NoiseBank(torch.cat(clips), torch.cumsum(sizes, 0) - sizes, sizes)


def augment_waveforms(
    waveforms: Tensor,
    lengths: Tensor,
    options: AugmentOptions,
    noise_bank: NoiseBank | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Reverberation, then additive noise, then gain, each on the utterances its probability picks.

    `waveforms` is a (B, samples) zero-padded batch and `lengths` its valid samples; the result has the same
    shape and zero padding. Each utterance draws its own parameters. With every probability 0 the batch is
    returned as it is, with nothing drawn, so the RNG stream stays that of an unaugmented run.
    """
    out = waveforms
    device = waveforms.device
    batch = waveforms.shape[0]

    def pick(prob: float) -> Tensor:
        return torch.nonzero(_uniform((batch,), 0, 1, generator, device) < prob).squeeze(1)

    if options.reverb > 0:
        rows = pick(options.reverb)
        rt60 = _uniform((batch,), *options.rt60, generator, device)
        if rows.numel():
            reverberant = add_reverb(out[rows], lengths[rows], rt60[rows], generator)
            out = out.index_copy(0, rows, reverberant)
    if options.noise > 0:
        rows = pick(options.noise)
        snr_db = _uniform((batch,), *options.snr_db, generator, device)
        if rows.numel():
            noise = draw_noise(len(rows), out.shape[1], noise_bank, generator, device)
            out = out.index_copy(0, rows, add_noise(out[rows], lengths[rows], noise, snr_db[rows]))
    if options.gain > 0:
        rows = pick(options.gain)
        gain_db = _uniform((batch,), -options.gain_db, options.gain_db, generator, device)
        # Features come from float audio, so a gain above 0 dB has no clipping to model.
        out = out.index_copy(0, rows, apply_gain(out[rows], gain_db[rows]))
    return out


def apply_gain(waveforms: Tensor, gain_db: Tensor) -> Tensor:
    return waveforms * (10 ** (gain_db / 20))[:, None]


def add_noise(waveforms: Tensor, lengths: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """Mix (B, samples) noise in at `snr_db` per utterance, powers measured over the valid samples only."""
    valid = _valid(waveforms, lengths)
    signal_power = (waveforms.square() * valid).sum(1)
    noise_power = (noise.square() * valid).sum(1)
    scale = torch.sqrt(signal_power / (noise_power.clamp_min(1e-20) * 10 ** (snr_db / 10)))
    return waveforms + noise * valid * scale[:, None]


def draw_noise(
    count: int,
    length: int,
    noise_bank: NoiseBank | None,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """(count, length) noise, at any level: white, pink or brown, or segments of the noise bank's files."""
    white = _normal((count, length), generator, device)
    slope = _uniform((count,), 0, NOISE_COLOURS, generator, device).floor()
    # Amplitude ~ f ** (-slope / 2) gives power ~ 1 / f ** slope; the DC term is dropped.
    frequency = torch.fft.rfftfreq(length, device=device).clamp_min(1.0 / length)
    shape = frequency[None] ** (-slope[:, None] / 2)
    shape[:, 0] = 0
    noise = torch.fft.irfft(torch.fft.rfft(white) * shape, n=length)
    if noise_bank is not None:
        use_file = _uniform((count,), 0, 1, generator, device) < FILE_NOISE_SHARE
        clips = _uniform((count,), 0, len(noise_bank.sizes), generator, device).long()
        bank = noise_bank.to(device)
        offsets = (_uniform((count,), 0, 1, generator, device) * bank.sizes[clips]).long()
        noise = torch.where(use_file[:, None], bank.segments(clips, offsets, length), noise)
    return noise


def add_reverb(waveforms: Tensor, lengths: Tensor, rt60: Tensor, generator: torch.Generator | None) -> Tensor:
    """Convolve each utterance with a synthetic room response of its RT60 (seconds), cut to its length.

    The response is the direct sound (a unit impulse) followed by exponentially decaying Gaussian noise, the
    usual model of a diffuse reverberant tail. The output keeps each utterance's RMS over its valid samples.
    """
    count, length = waveforms.shape
    device = waveforms.device
    ir_length = min(length, math.ceil(float(rt60.max()) * SAMPLE_RATE))
    time = torch.arange(ir_length, device=device) / SAMPLE_RATE
    response = _normal((count, ir_length), generator, device) * torch.exp(-DECAY_60_DB * time / rt60[:, None])
    response[:, 0] = 0
    tail_energy = rt60 / EQUAL_ENERGY_RT60
    response = response * torch.sqrt(tail_energy / response.square().sum(1).clamp_min(1e-20))[:, None]
    response[:, 0] = 1  # the direct sound, ahead of the tail
    n_fft = 1 << (length + ir_length - 2).bit_length()  # linear, not circular, convolution
    spectrum = torch.fft.rfft(waveforms, n=n_fft) * torch.fft.rfft(response, n=n_fft)
    valid = _valid(waveforms, lengths)
    wet = torch.fft.irfft(spectrum, n=n_fft)[:, :length] * valid
    level = torch.sqrt(waveforms.square().sum(1) / wet.square().sum(1).clamp_min(1e-20))
    return wet * level[:, None]


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment-style frequency and time masking on a (B, T, F) feature batch, each utterance with `prob`.

    Features may be stacked context windows (DeepSpeech: 19 frames of 26 MFCCs per step). Masks then act on
    the underlying frames: a frequency mask hides the same coefficients in every stacked frame, and a time
    mask hides source frames wherever they appear in a neighbour's context, so nothing leaks around a mask.
    With `frame_size == F` (one frame per step, e.g. log-mels) this is plain SpecAugment.
    """

    frame_size: int
    freq_masks: int = 2
    max_freq_fraction: float = 0.15  # share of the frame per mask at most: 4 of 26 MFCCs, 12 of 80 mels
    time_masks: int = 2
    max_time_fraction: float = 0.05  # each time mask covers at most this share of the utterance
    prob: float = 1.0

    @property
    def max_freq_width(self) -> int:
        return max(1, round(self.frame_size * self.max_freq_fraction))

    def __call__(self, features: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch, steps, size = features.shape
        if size % self.frame_size:
            raise ValueError(f"feature size {size} is not a multiple of the frame size {self.frame_size}")
        stacked = size // self.frame_size
        context = (stacked - 1) // 2
        device = features.device

        def draw(high: Tensor | int, shape: tuple[int, ...]) -> Tensor:
            """Uniform integers in [0, high) per element, on the CPU generator, moved to the device."""
            u = torch.rand(shape, generator=generator)
            return (u * torch.as_tensor(high, dtype=torch.float32)).long().to(device)

        keep = torch.ones(batch, steps, stacked, self.frame_size, dtype=torch.bool, device=device)
        coeff = torch.arange(self.frame_size, device=device)
        for _ in range(self.freq_masks):
            width = draw(self.max_freq_width + 1, (batch,))
            start = draw(torch.clamp(self.frame_size - width.cpu(), min=1), (batch,))
            hidden = (coeff[None] >= start[:, None]) & (coeff[None] < (start + width)[:, None])  # (B, frame)
            keep &= ~hidden[:, None, None, :]
        # Source frame seen at step t, stacked position g: t + g - context.
        source = (
            torch.arange(steps, device=device)[:, None] + torch.arange(stacked, device=device)[None] - context
        )
        max_width = (lengths.float().cpu() * self.max_time_fraction).long()
        for _ in range(self.time_masks):
            width = draw(max_width + 1, (batch,))
            start = draw(torch.clamp(lengths.cpu() - width.cpu(), min=1), (batch,))
            lo, hi = start[:, None, None], (start + width)[:, None, None]
            hidden = (source[None] >= lo) & (source[None] < hi)  # (B, T, stacked)
            keep &= ~hidden[..., None]
        if self.prob < 1:
            spared = (torch.rand(batch, generator=generator) >= self.prob).to(device)
            keep |= spared[:, None, None, None]
        return features * keep.reshape(batch, steps, size).to(features.dtype)


def _valid(waveforms: Tensor, lengths: Tensor) -> Tensor:
    """(B, samples) float mask: 1 on each utterance's valid samples, 0 on its padding."""
    return (torch.arange(waveforms.shape[1], device=waveforms.device)[None] < lengths[:, None]).float()


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Uniform in [low, high): from `generator` on its own device, else from the global RNG of `device`."""
    where = generator.device if generator is not None else device
    return (low + (high - low) * torch.rand(shape, generator=generator, device=where)).to(device)


def _normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)
