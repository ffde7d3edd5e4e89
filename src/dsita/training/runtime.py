"""Where training runs: the device and process rank, mixed precision, RNG state, and progress display.

Kept apart from the loop in train.py so that the loop reads top to bottom; nothing here knows about models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

log = logging.getLogger("dsita.training.loop")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def device_for(distributed: Distributed) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(distributed.local_rank)
        return torch.device("cuda", distributed.local_rank)
    return torch.device("cpu")


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    if not amp:
        return None
    if device.type != "cuda":
        log.warning("AMP=1 is ignored on the CPU; training in float32")
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def tensorboard_writer(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder / "tensorboard"))


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.2f}"),
        TextColumn("{task.fields[speed]:.0f} audio-s/s"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )
