"""Where training runs: the process group and device, mixed precision, RNG state, the learning rate schedule.

Kept apart from the loop in `loop.py` so that the loop reads top to bottom; nothing here knows about models.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger("dsita.training")


@dataclass(frozen=True)
class Distributed:
    """This process's place in a DDP run: its rank among `world_size`, and on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and logs (rank 0)."""
        return self.rank == 0


def pick_device(distributed: Distributed, wanted: str | None = None) -> torch.device:
    """The training device: `wanted` if given ("cpu" keeps a GPU machine's tests on the CPU), else this
    process's GPU (by local rank) when there is one, else the CPU."""
    if wanted is not None:
        device = torch.device(wanted)
    elif torch.cuda.is_available():
        device = torch.device("cuda", distributed.local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # TF32 tensor cores for the float32 matrix products that AMP leaves (or all of them with AMP=0).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def join_process_group(distributed: Distributed, device: torch.device) -> None:
    """Start the DDP process group once: NCCL between GPUs, gloo on the CPU."""
    if distributed.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=distributed.rank, world_size=distributed.world_size)


def default_workers(device: torch.device, distributed: Distributed) -> int:
    """DataLoader processes for one training process: its share of the CPUs, one kept for itself."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cpus // max(1, distributed.local_world_size))
    if device.type == "cuda":
        return max(1, min(8, share - 1))
    return max(1, min(2, share // 2))  # on the CPU the model's own threads need the cores


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it natively, else fp16 (with a GradScaler); None: float32."""
    if not amp:
        return None
    if device.type != "cuda":
        log.warning("AMP=1 is ignored on the CPU; training in float32")
        return None
    # Emulated bf16 (V100, T4) is slow: those GPUs take fp16 with loss scaling instead.
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for a forward pass, or nothing when `dtype` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def rank_seed(seed: int, *parts: int) -> int:
    """A seed for one rank (and, after a resume, one step): ranks draw different dropout and augmentation."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The CPU generator's state and, on a GPU, this device's only: a resume may see fewer GPUs."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Put back what `rng_state` saved; a CUDA state saved by other dsita versions is a list per GPU."""
    torch.set_rng_state(state["torch"])
    saved = state.get("cuda")
    if device.type == "cuda" and saved is not None:
        torch.cuda.set_rng_state(saved[0] if isinstance(saved, list | tuple) else saved, device)


def learning_rate(base: float, schedule: str, warmup_steps: int, step: int) -> float:
    """The rate for optimizer step `step` (0-based): constant, or linear warmup over `warmup_steps` then
    inverse square-root decay (the Transformer and Conformer recipes' Noam schedule, peaking at `base`)."""
    if schedule == "constant" or warmup_steps <= 0:
        return base
    done = step + 1
    return base * min(done / warmup_steps, math.sqrt(warmup_steps / done))


def tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard writer when tensorboard is installed (it is optional), else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder / "tensorboard"))


@contextlib.contextmanager
def quiet_unless_main(distributed: Distributed, logger: logging.Logger) -> Iterator[None]:
    """Ranks other than 0 log warnings only, so that one run logs once."""
    level = logger.level
    if not distributed.is_main:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
