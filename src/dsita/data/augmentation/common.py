"""What every augmentation shares: random draws from torch's RNG or a given generator, and the batch mask.

A draw comes from `generator` on the generator's own device when one is given (tests, reproducible tools),
else from the global RNG of the batch's device, whose state the trainer saves in every checkpoint: a resumed
run then draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Uniform in [low, high): from `generator` on its own device, else from the global RNG of `device`."""
    where = generator.device if generator is not None else device
    return (low + (high - low) * torch.rand(shape, generator=generator, device=where)).to(device)


def log_uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Uniform in log scale in [low, high), 0 < low: factors and frequencies."""
    return torch.exp(uniform(shape, math.log(low), math.log(high), generator, device))


def normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal, drawn as `uniform` is."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)


def valid_mask(waveforms: Tensor, lengths: Tensor) -> Tensor:
    """(B, samples) float mask: 1 on each utterance's valid samples, 0 on its padding."""
    return (torch.arange(waveforms.shape[1], device=waveforms.device)[None] < lengths[:, None]).float()
