"""Checkpoint averaging: the mean of the weights of a run's last epochs, a cheap ensemble in one model.

Averaging the last few epochs' weights (as the Transformer, ESPnet and NeMo recipes do) smooths the noise
of the final steps; the trainer keeps the average as `best_dev.pt` only when its dev loss is lower than the
best epoch's (`dsita.training.loop.average_last_epochs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from dsita.errors import DsitaError
from dsita.training.checkpoint import EPOCH_PATTERN


def last_epoch_checkpoints(folder: Path, count: int) -> list[Path]:
    """The newest `count` epoch checkpoints in `folder` (fewer when fewer exist), oldest first."""
    if not folder.is_dir():
        return []
    epochs = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := EPOCH_PATTERN.match(p.name)))
    return [path for _, path in epochs[-count:]] if count > 0 else []


def average_state_dicts(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of model state dicts with the same keys and shapes, computed in float64 and
    stored in each tensor's own dtype; integer buffers (counters) are the newest state's."""
    if not states:
        raise ValueError("nothing to average")
    newest = states[-1]
    averaged: dict[str, Tensor] = {}
    for key, value in newest.items():
        tensors = [t for state in states if (t := state.get(key)) is not None and t.shape == value.shape]
        if len(tensors) != len(states):
            raise DsitaError(f"cannot average checkpoints: {key!r} is missing or differs in shape")
        if not value.is_floating_point():
            averaged[key] = value.clone()
            continue
        total = torch.zeros(value.shape, dtype=torch.float64)
        for tensor in tensors:
            total += tensor.to(torch.float64)
        averaged[key] = (total / len(tensors)).to(value.dtype)
    return averaged
