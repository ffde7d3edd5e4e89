"""What a training run does: the options of `dsita.training.loop.train`, each with its one default.

Torch-free, so that the settings and the CLI can read the defaults without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dsita.data.augmentation.options import AugmentOptions

LrSchedule = Literal["auto", "constant", "warmup-decay"]
LR_SCHEDULES: tuple[LrSchedule, ...] = ("auto", "constant", "warmup-decay")


@dataclass(frozen=True)
class TrainOptions:
    """One training run. Defaults are those of the original DeepSpeech Italian image where it had one."""

    train_csvs: tuple[Path, ...]
    dev_csvs: tuple[Path, ...]
    checkpoint_dir: Path
    load_checkpoint_dir: Path | None = None  # transfer learning: start from this run's weights
    # The model: an architecture registered in `dsita.model`, its size preset (None: its first) and the config
    # fields to set over the preset (only those its config's OPTION_FIELDS lists are used; None: the
    # preset's).
    architecture: str = "deepspeech"
    model_size: str | None = None
    model_fields: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    batch_seconds: float | None = None  # batches of at most this much audio instead of batch_size clips
    epochs: int = 30
    learning_rate: float = 1e-4
    # "auto": the architecture's (DeepSpeech: constant, as the original; the conformer: warmup then decay).
    lr_schedule: LrSchedule = "auto"
    lr_warmup_steps: int = 1000  # for warmup-decay: linear warmup, then inverse square-root decay
    grad_clip: float = 400.0
    early_stop: bool = True
    es_epochs: int = 10
    es_min_delta: float = 0.0
    reduce_lr_on_plateau: bool = False
    plateau_epochs: int = 1
    plateau_factor: float = 0.1
    max_to_keep: int = 2
    # At the end of training, the weights of the last N epochs averaged (0 or 1: off); the average becomes
    # best_dev.pt when its dev loss is lower than the best epoch's.
    average_checkpoints: int = 0
    checkpoint_secs: float = 600.0
    amp: bool = True
    seed: int = 4568
    drop_source_layers: int = 1
    sort_by_size: bool = False
    feature_cache: Path | None = None
    workers: int | None = None  # DataLoader processes; None: from the CPUs each training process has
    device: str | None = None  # None: this process's GPU when there is one, else the CPU
    augment: AugmentOptions = field(default_factory=AugmentOptions)  # off, as in DeepSpeech
    max_steps_per_epoch: int | None = None  # FAST_TRAIN caps the work per epoch
    max_train_clips: int | None = None
    max_dev_clips: int | None = None
    settings_env: str = ""  # the settings used, saved next to the checkpoints
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.average_checkpoints < 0:
            raise ValueError(f"average_checkpoints must be non-negative, got {self.average_checkpoints}")
        if self.batch_seconds is not None and not self.batch_seconds > 0:
            raise ValueError(f"batch_seconds must be positive, got {self.batch_seconds}")
