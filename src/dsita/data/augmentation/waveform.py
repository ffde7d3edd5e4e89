"""The room: reverberation, additive noise (synthetic or from a noise folder) and gain, drawn per utterance.

They run on the training device, on the whole zero-padded (B, samples) batch, and keep every utterance's
length and padding. Draws follow `dsita.data.augmentation.common`, so a resumed run augments exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.data.augmentation.common import normal, uniform, valid_mask
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
        """The same bank with its tensors on `device`."""
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
    masks: bool | None = None,
) -> Tensor:
    """Reverberation, then additive noise, then gain, each on the utterances its probability picks.

    `waveforms` is a (B, samples) zero-padded batch and `lengths` its valid samples; the result has the same
    shape and zero padding. Each utterance draws its own parameters. With every probability 0 the batch is
    returned as it is, with nothing drawn, so the RNG stream stays that of an unaugmented run.

    On the CPU the picked rows are gathered and only they are transformed. On a GPU (`masks`; None: off the
    CPU) every row is transformed and `torch.where` keeps the picked ones, since knowing which rows were
    picked would make the host wait for the device at every step. The two ways draw different amounts, each
    the same from the same RNG state, so a resumed run still augments as an uninterrupted one.
    """
    out = waveforms
    device = waveforms.device
    batch = waveforms.shape[0]
    whole = device.type != "cpu" if masks is None else masks

    def pick(prob: float) -> Tensor:
        return uniform((batch,), 0, 1, generator, device) < prob

    if options.reverb > 0:
        picked = pick(options.reverb)
        rt60 = uniform((batch,), *options.rt60, generator, device)
        # The longest response the range allows: the longest drawn one would be read back from the device.
        longest = options.rt60[1] if whole else None
        out = _on_rows(
            out, picked, whole, lambda r: add_reverb(out[r], lengths[r], rt60[r], generator, longest)
        )
    if options.noise > 0:
        picked = pick(options.noise)
        snr_db = uniform((batch,), *options.snr_db, generator, device)

        def noisy(rows: Tensor | slice) -> Tensor:
            noise = draw_noise(len(out[rows]), out.shape[1], noise_bank, generator, device)
            return add_noise(out[rows], lengths[rows], noise, snr_db[rows])

        out = _on_rows(out, picked, whole, noisy)
    if options.gain > 0:
        picked = pick(options.gain)
        gain_db = uniform((batch,), -options.gain_db, options.gain_db, generator, device)
        # Features come from float audio, so a gain above 0 dB has no clipping to model.
        out = _on_rows(out, picked, whole, lambda r: apply_gain(out[r], gain_db[r]))
    return out


def _on_rows(
    out: Tensor, picked: Tensor, whole: bool, transform: Callable[[Tensor | slice], Tensor]
) -> Tensor:
    """`out` with `transform(rows)` in the rows `picked` marks: computed for every row and kept where picked
    (`whole`: no host sync), or computed for the picked rows only, and not at all when none is."""
    if whole:
        return torch.where(picked[:, None], transform(slice(None)), out)
    rows = torch.nonzero(picked).squeeze(1)
    if not rows.numel():
        return out
    return out.index_copy(0, rows, transform(rows))


def apply_gain(waveforms: Tensor, gain_db: Tensor) -> Tensor:
    """(B, samples) waveforms each scaled by its `gain_db[b]` decibels (amplitude, 20 dB per decade)."""
    return waveforms * (10 ** (gain_db / 20))[:, None]


def add_noise(waveforms: Tensor, lengths: Tensor, noise: Tensor, snr_db: Tensor) -> Tensor:
    """Mix (B, samples) noise in at `snr_db` per utterance, powers measured over the valid samples only."""
    valid = valid_mask(waveforms, lengths)
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
    white = normal((count, length), generator, device)
    slope = uniform((count,), 0, NOISE_COLOURS, generator, device).floor()
    # Amplitude ~ f ** (-slope / 2) gives power ~ 1 / f ** slope; the DC term is dropped.
    frequency = torch.fft.rfftfreq(length, device=device).clamp_min(1.0 / length)
    shape = frequency[None] ** (-slope[:, None] / 2)
    shape[:, 0] = 0
    noise: Tensor = torch.fft.irfft(torch.fft.rfft(white) * shape, n=length)
    if noise_bank is not None:
        use_file = uniform((count,), 0, 1, generator, device) < FILE_NOISE_SHARE
        clips = uniform((count,), 0, len(noise_bank.sizes), generator, device).long()
        bank = noise_bank.to(device)
        offsets = (uniform((count,), 0, 1, generator, device) * bank.sizes[clips]).long()
        noise = torch.where(use_file[:, None], bank.segments(clips, offsets, length), noise)
    return noise


def add_reverb(
    waveforms: Tensor,
    lengths: Tensor,
    rt60: Tensor,
    generator: torch.Generator | None,
    longest: float | None = None,
) -> Tensor:
    """Convolve each utterance with a synthetic room response of its RT60 (seconds), cut to its length.

    The response is the direct sound (a unit impulse) followed by exponentially decaying Gaussian noise, the
    usual model of a diffuse reverberant tail. The output keeps each utterance's RMS over its valid samples.
    The responses last `longest` seconds (None: the largest `rt60`, read back from its device).
    """
    count, length = waveforms.shape
    device = waveforms.device
    seconds = float(rt60.max()) if longest is None else longest
    ir_length = min(length, math.ceil(seconds * SAMPLE_RATE))
    time = torch.arange(ir_length, device=device) / SAMPLE_RATE
    response = normal((count, ir_length), generator, device) * torch.exp(-DECAY_60_DB * time / rt60[:, None])
    response[:, 0] = 0
    tail_energy = rt60 / EQUAL_ENERGY_RT60
    response = response * torch.sqrt(tail_energy / response.square().sum(1).clamp_min(1e-20))[:, None]
    response[:, 0] = 1  # the direct sound, ahead of the tail
    n_fft = 1 << (length + ir_length - 2).bit_length()  # linear, not circular, convolution
    spectrum = torch.fft.rfft(waveforms, n=n_fft) * torch.fft.rfft(response, n=n_fft)
    valid = valid_mask(waveforms, lengths)
    wet: Tensor = torch.fft.irfft(spectrum, n=n_fft)[:, :length] * valid
    level = torch.sqrt(waveforms.square().sum(1) / wet.square().sum(1).clamp_min(1e-20))
    return wet * level[:, None]
