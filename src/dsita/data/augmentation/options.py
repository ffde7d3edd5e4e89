"""What training augmentation does: per-utterance probabilities and the ranges drawn from (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AugmentOptions:
    """Per-utterance probabilities (0: off) and the ranges the augmentations draw from."""

    speed: float = 0.0  # 0.9x or 1.1x, in the DataLoader workers
    spec_augment: float = 0.0
    noise: float = 0.0
    gain: float = 0.0
    reverb: float = 0.0
    noise_dir: Path | None = None  # noise recordings mixed in besides synthetic noise
    snr_db: tuple[float, float] = (5.0, 30.0)
    gain_db: float = 6.0  # gains are drawn from [-gain_db, gain_db]
    rt60: tuple[float, float] = (0.1, 0.6)  # seconds

    def __post_init__(self) -> None:
        for name in ("speed", "spec_augment", "noise", "gain", "reverb"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not self.snr_db[0] <= self.snr_db[1]:
            raise ValueError(f"snr_db must be (min, max), got {self.snr_db}")
        if not 0 < self.rt60[0] <= self.rt60[1]:
            raise ValueError(f"rt60 must be (min, max) with 0 < min, got {self.rt60}")
        if not self.gain_db >= 0:
            raise ValueError(f"gain_db must be non-negative, got {self.gain_db}")

    @property
    def waveform(self) -> bool:
        """Whether any augmentation changes the audio after loading (which a feature cache cannot hold)."""
        return self.noise > 0 or self.gain > 0 or self.reverb > 0
