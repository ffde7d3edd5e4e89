"""What training augmentation does: per-utterance probabilities and the ranges drawn from (torch-free).

`AugmentOptions` is the whole recipe: speed perturbation, noise, gain, reverberation and SpecAugment, with
the speaker variation (`SpeakerOptions`) and the channel variation and babble (`ChannelOptions`) it holds.
Every probability is 0 by default, so a default `AugmentOptions()` augments nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dsita.audio import SAMPLE_RATE

TELEPHONE_BAND = (300.0, 3400.0)
# Lossy codecs that libsndfile writes, and the bitrates (kb/s, 16 kHz mono) each is asked for between.
CODEC_KBPS = {"mp3": (8.0, 160.0), "opus": (6.0, 256.0), "vorbis": (23.0, 72.0)}


def parse_codec(spec: str) -> tuple[str, float]:
    """'mp3:16' -> ('mp3', 16.0): a codec of `CODEC_KBPS` and its bitrate in kb/s within the codec's range."""
    name, _, kbps = spec.partition(":")
    if name not in CODEC_KBPS:
        raise ValueError(f"codec {spec!r}: expected one of {', '.join(CODEC_KBPS)}, as name:kbps")
    try:
        rate = float(kbps)
    except ValueError:
        raise ValueError(f"codec {spec!r}: expected a bitrate in kb/s after the colon") from None
    low, high = CODEC_KBPS[name]
    if not low <= rate <= high:
        raise ValueError(f"codec {spec!r}: {name} bitrates run from {low:g} to {high:g} kb/s at 16 kHz")
    return name, rate


def _check_probabilities(options: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(options, name)
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


def _check_ranges(options: object, names: tuple[str, ...], positive: bool) -> None:
    for name in names:
        low, high = getattr(options, name)
        if not (0 < low <= high if positive else low <= high):
            condition = " with 0 < min" if positive else ""
            raise ValueError(f"{name} must be (min, max){condition}, got {(low, high)}")


SPEAKER_PROBABILITIES = ("vtlp", "pitch", "formant", "tempo")


@dataclass(frozen=True)
class SpeakerOptions:
    """Per-utterance probabilities (0: off) and the ranges that speaker variation draws from.

    Factors are drawn uniformly in log scale, so a range like (0.9, 1.1) is about symmetric around 1.
    """

    vtlp: float = 0.0
    pitch: float = 0.0
    formant: float = 0.0
    tempo: float = 0.0  # per clip, in the DataLoader workers
    vtlp_range: tuple[float, float] = (0.9, 1.1)  # factor on every frequency
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    formant_range: tuple[float, float] = (0.88, 1.14)  # factor on the spectral envelope's frequencies
    tempo_range: tuple[float, float] = (0.85, 1.15)  # speaking rate; durations divide by it

    def __post_init__(self) -> None:
        _check_probabilities(self, SPEAKER_PROBABILITIES)
        _check_ranges(self, ("vtlp_range", "formant_range", "tempo_range"), positive=True)
        _check_ranges(self, ("pitch_semitones",), positive=False)

    @property
    def batch(self) -> bool:
        """Whether any of the batch transforms (VTLP, pitch, formant) is on."""
        return self.vtlp > 0 or self.pitch > 0 or self.formant > 0


# The microphone-to-line chain of `channel_waveforms`; babble runs before the room, codecs per clip.
CHANNEL_LINE_PROBABILITIES = ("mic", "clipping", "compression", "eq", "band_limit", "narrowband", "mu_law")
CHANNEL_BATCH_PROBABILITIES = ("babble", *CHANNEL_LINE_PROBABILITIES)


@dataclass(frozen=True)
class ChannelOptions:
    """Per-utterance probabilities (0: off) and the ranges that channel variation and babble draw from.

    Frequencies and ratios are drawn log-uniformly, levels in dB uniformly.
    """

    babble: float = 0.0
    mic: float = 0.0
    clipping: float = 0.0
    compression: float = 0.0
    eq: float = 0.0
    band_limit: float = 0.0
    narrowband: float = 0.0  # 8 kHz round trip
    mu_law: float = 0.0
    codec: float = 0.0  # per clip, in the DataLoader workers
    babble_talkers: tuple[int, int] = (3, 7)  # at most the batch size minus one
    babble_snr_db: tuple[float, float] = (5.0, 20.0)
    clip_fraction: tuple[float, float] = (0.001, 0.03)  # share of an utterance's samples clipped
    compression_threshold_db: tuple[float, float] = (-30.0, -10.0)  # under the loudest 10 ms
    compression_ratio: tuple[float, float] = (2.0, 10.0)
    eq_bands: int = 3  # peaking filters, besides a low and a high shelf
    eq_gain_db: float = 8.0  # gains drawn in [-eq_gain_db, eq_gain_db]
    band_low_hz: tuple[float, float] = (50.0, TELEPHONE_BAND[0])
    band_high_hz: tuple[float, float] = (TELEPHONE_BAND[1], 7500.0)
    # Opus works too ("opus:6" to "opus:256") but costs 3-6 times MP3's CPU time (augment_speed.py), and a
    # benchmark may want one codec that training never used.
    codecs: tuple[str, ...] = ("mp3:8", "mp3:16", "mp3:24", "mp3:32", "vorbis:23", "vorbis:29")

    def __post_init__(self) -> None:
        _check_probabilities(self, (*CHANNEL_BATCH_PROBABILITIES, "codec"))
        _check_ranges(self, ("babble_snr_db", "compression_threshold_db"), positive=False)
        _check_ranges(self, ("clip_fraction", "compression_ratio", "band_low_hz", "band_high_hz"), True)
        if not 1 <= self.babble_talkers[0] <= self.babble_talkers[1]:
            raise ValueError(
                f"babble_talkers must be (min, max) with 1 <= min <= max, got {self.babble_talkers}"
            )
        if not self.band_low_hz[1] < self.band_high_hz[0] < SAMPLE_RATE / 2 or self.clip_fraction[1] >= 1:
            raise ValueError("band limits must leave a band below the Nyquist frequency, clip_fraction < 1")
        if self.eq_bands < 0 or self.eq_gain_db < 0:
            raise ValueError("eq_bands and eq_gain_db must be non-negative")
        if self.codec > 0 and not self.codecs:
            raise ValueError("codec augmentation needs at least one codec")
        for codec in self.codecs:
            parse_codec(codec)

    @property
    def line(self) -> bool:
        """Whether any transform of the microphone-to-line chain (`channel_waveforms`) is on."""
        return any(getattr(self, name) > 0 for name in CHANNEL_LINE_PROBABILITIES)

    @property
    def batch(self) -> bool:
        """Whether any of the batch transforms (all but the codecs) is on."""
        return self.babble > 0 or self.line


AUGMENT_PROBABILITIES = ("speed", "spec_augment", "noise", "gain", "reverb")


@dataclass(frozen=True)
class AugmentOptions:
    """Per-utterance probabilities (0: off) and the ranges the augmentations draw from.

    SpecAugment's time masks are `spec_time_ms` long at most (each at most a fifth of its utterance), so
    both featurizers (DeepSpeech's 20 ms frames, the conformer's 10 ms ones) hide the same stretches of
    speech; 0 keeps the widths of before, 5 % of each utterance.
    """

    speed: float = 0.0  # 0.9x or 1.1x, in the DataLoader workers
    spec_augment: float = 0.0
    noise: float = 0.0
    gain: float = 0.0
    reverb: float = 0.0
    noise_dir: Path | None = None  # noise recordings mixed in besides synthetic noise
    snr_db: tuple[float, float] = (5.0, 30.0)
    gain_db: float = 6.0  # gains are drawn from [-gain_db, gain_db]
    rt60: tuple[float, float] = (0.1, 0.6)  # seconds
    spec_time_masks: int = 2
    spec_time_ms: float = 0.0  # longest time mask; 0: 5 % of the utterance
    spec_freq_masks: int = 2
    spec_freq_share: float = 0.15  # widest frequency mask, as a share of the frame's coefficients
    speaker: SpeakerOptions = field(default_factory=SpeakerOptions)
    channel: ChannelOptions = field(default_factory=ChannelOptions)

    def __post_init__(self) -> None:
        _check_probabilities(self, AUGMENT_PROBABILITIES)
        _check_ranges(self, ("snr_db",), positive=False)
        _check_ranges(self, ("rt60",), positive=True)
        if not self.gain_db >= 0:
            raise ValueError(f"gain_db must be non-negative, got {self.gain_db}")
        if self.spec_time_masks < 0 or self.spec_freq_masks < 0 or self.spec_time_ms < 0:
            raise ValueError("SpecAugment's mask counts and spec_time_ms must be non-negative")
        if not 0 <= self.spec_freq_share <= 1:
            raise ValueError(f"spec_freq_share must be in [0, 1], got {self.spec_freq_share}")

    @property
    def room(self) -> bool:
        """Whether reverberation, noise or gain is on."""
        return self.noise > 0 or self.gain > 0 or self.reverb > 0

    @property
    def waveform(self) -> bool:
        """Whether any augmentation changes the batch's audio on the device (which a feature cache cannot
        hold): reverberation, noise, gain, and the speaker and channel batch transforms."""
        return self.room or self.speaker.batch or self.channel.batch

    @property
    def per_clip(self) -> bool:
        """Whether any augmentation runs per clip in the DataLoader workers: speed, tempo, codecs."""
        return self.speed > 0 or self.speaker.tempo > 0 or self.channel.codec > 0
