"""SpecAugment: frequency and time masks on a (B, T, F) feature batch, drawn per utterance."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dsita.model.base import host_to_device

# With widths in time, a mask still covers at most this share of its utterance (SpecAugment's p = 0.2), so a
# short utterance keeps most of its frames.
MAX_TIME_SHARE = 0.2


@dataclass(frozen=True)
class SpecAugment:
    """SpecAugment-style frequency and time masking on a (B, T, F) feature batch, each utterance with `prob`.

    Features may be stacked context windows (DeepSpeech: 19 frames of 26 MFCCs per step). Masks then act on
    the underlying frames: a frequency mask hides the same coefficients in every stacked frame, and a time
    mask hides source frames wherever they appear in a neighbour's context, so nothing leaks around a mask.
    With `frame_size == F` (one frame per step, e.g. log-mels) this is plain SpecAugment.

    A time mask is at most `max_time_fraction` of its utterance, and at most `max_time_frames` frames when
    that is given (`for_featurizer` sets it from milliseconds and the featurizer's frame step).
    """

    frame_size: int
    freq_masks: int = 2
    max_freq_fraction: float = 0.15  # share of the frame per mask at most: 4 of 26 MFCCs, 12 of 80 mels
    time_masks: int = 2
    max_time_fraction: float = 0.05  # each time mask covers at most this share of the utterance
    prob: float = 1.0
    max_time_frames: int | None = None

    @classmethod
    def for_featurizer(
        cls,
        frame_size: int,
        step_samples: int,
        prob: float,
        time_masks: int,
        time_ms: float,
        freq_masks: int,
        freq_share: float,
        sample_rate: int,
    ) -> SpecAugment:
        """Masks whose widths are given in time (`time_ms`; 0: 5 % of each utterance, the share of before)
        and as a share of the frame, for a featurizer with one frame every `step_samples` samples."""
        if not time_ms:
            return cls(frame_size, freq_masks, freq_share, time_masks, prob=prob)
        frames = max(1, round(time_ms / 1000 * sample_rate / step_samples))
        return cls(frame_size, freq_masks, freq_share, time_masks, MAX_TIME_SHARE, prob, frames)

    @property
    def max_freq_width(self) -> int:
        """The widest frequency mask, in coefficients of one frame (at least 1)."""
        return max(1, round(self.frame_size * self.max_freq_fraction))

    def __call__(self, features: Tensor, lengths: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """`features` (B, T, F) with frequency and time masks zeroed, each utterance with chance `prob`.

        `lengths` are the valid steps of each utterance: time masks stay inside them. Draws come from
        `generator` on the CPU whatever the features' device.
        """
        batch, steps, size = features.shape
        if size % self.frame_size:
            raise ValueError(f"feature size {size} is not a multiple of the frame size {self.frame_size}")
        stacked = size // self.frame_size
        context = (stacked - 1) // 2
        device = features.device

        def draw(high: Tensor | int, shape: tuple[int, ...]) -> Tensor:
            """Uniform integers in [0, high) per element, on the CPU generator (kept on the CPU: the next
            draw's bound reads them, which on a GPU would wait for the device)."""
            u = torch.rand(shape, generator=generator)
            return (u * torch.as_tensor(high, dtype=torch.float32)).long()

        keep = torch.ones(batch, steps, stacked, self.frame_size, dtype=torch.bool, device=device)
        coeff = torch.arange(self.frame_size, device=device)
        for _ in range(self.freq_masks):
            width = draw(self.max_freq_width + 1, (batch,))
            start = draw(torch.clamp(self.frame_size - width, min=1), (batch,))
            start, width = host_to_device(start, device), host_to_device(width, device)
            hidden = (coeff[None] >= start[:, None]) & (coeff[None] < (start + width)[:, None])  # (B, frame)
            keep &= ~hidden[:, None, None, :]
        # Source frame seen at step t, stacked position g: t + g - context.
        source = (
            torch.arange(steps, device=device)[:, None] + torch.arange(stacked, device=device)[None] - context
        )
        lengths = lengths.cpu()  # the trainer passes CPU frame lengths: no copy then
        max_width = (lengths.float() * self.max_time_fraction).long()
        if self.max_time_frames is not None:
            max_width = max_width.clamp(max=self.max_time_frames)
        for _ in range(self.time_masks):
            width = draw(max_width + 1, (batch,))
            start = draw(torch.clamp(lengths - width, min=1), (batch,))
            lo, hi = (
                host_to_device(start, device)[:, None, None],
                host_to_device(start + width, device)[:, None, None],
            )
            hidden = (source[None] >= lo) & (source[None] < hi)  # (B, T, stacked)
            keep &= ~hidden[..., None]
        if self.prob < 1:
            spared = host_to_device(torch.rand(batch, generator=generator) >= self.prob, device)
            keep |= spared[:, None, None, None]
        return features * keep.reshape(batch, steps, size).to(features.dtype)
