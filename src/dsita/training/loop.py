"""The training loop, readable top to bottom: data, model, resume or transfer, epochs, checkpoints, stopping.

Runs on the CPU, one GPU, or N processes under `torchrun` (DistributedDataParallel: NCCL on GPUs, gloo on the
CPU). Only rank 0 writes checkpoints and logs. Every checkpoint holds what a restart needs, so a run killed
at any point resumes from its newest state and loses at most the batches since that state was written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dsita.audio import SAMPLE_RATE
from dsita.data.augment import AugmentOptions, SpecAugment, augment_waveforms, load_noise_bank
from dsita.data.csvs import Sample
from dsita.data.dataset import (
    Batch,
    BucketBatchSampler,
    FeatureCache,
    SpeechDataset,
    collate,
    load_samples,
    sample_duration,
)
from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text
from dsita.model.base import (
    AcousticModel,
    ModelConfig,
    build_model,
    model_config_class,
    model_config_to_dict,
    new_model_config,
)
from dsita.settings import Settings
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import (
    BEST_DEV,
    LAST,
    epoch_checkpoint_name,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
    rotate_epoch_checkpoints,
    save_checkpoint,
    transfer_weights,
)
from dsita.training.runtime import (
    Distributed,
    autocast_dtype,
    device_for,
    progress_bar,
    restore_rng,
    rng_state,
    tensorboard_writer,
)

log = logging.getLogger("dsita.training.loop")


@dataclass(frozen=True)
class TrainOptions:
    train_csvs: tuple[Path, ...]
    dev_csvs: tuple[Path, ...]
    checkpoint_dir: Path
    load_checkpoint_dir: Path | None = None
    architecture: str = "deepspeech"
    batch_size: int = 64
    epochs: int = 30
    learning_rate: float = 1e-4
    # The model's size: the architecture's preset (None: its first), then those of these fields that its
    # config lets training options set (`ModelConfig.OPTION_FIELDS`); None leaves a field to the preset.
    model_size: str | None = None
    n_hidden: int = 2048
    dropout: float = 0.4
    n_layers: int | None = None
    d_model: int | None = None
    n_heads: int | None = None
    grad_clip: float = 400.0
    early_stop: bool = True
    es_epochs: int = 10
    es_min_delta: float = 0.0
    reduce_lr_on_plateau: bool = False
    plateau_epochs: int = 1
    plateau_factor: float = 0.1
    max_to_keep: int = 2
    checkpoint_secs: float = 600.0
    amp: bool = True
    seed: int = 4568
    drop_source_layers: int = 1
    sort_by_size: bool = False
    feature_cache: Path | None = None
    workers: int = 2
    augment: AugmentOptions = dataclasses.field(default_factory=AugmentOptions)  # off, as in DeepSpeech
    max_steps_per_epoch: int | None = None  # FAST_TRAIN caps the work per epoch
    max_train_clips: int | None = None
    max_dev_clips: int | None = None
    settings_env: str = ""  # the settings used, saved next to the checkpoints
    show_progress: bool = True


# FAST_TRAIN=1: a tiny model, a few steps on a few clips; a smoke test of every step in well under a minute.
FAST_TRAIN_LIMITS = {
    "n_hidden": 64,
    "model_size": "tiny",
    "n_layers": None,
    "d_model": None,
    "n_heads": None,
    "max_steps_per_epoch": 8,
    "max_train_clips": 64,
    "max_dev_clips": 16,
}


def options_from_settings(
    settings: Settings,
    train_csvs: Sequence[Path],
    dev_csvs: Sequence[Path],
    checkpoint_dir: Path,
    **extra: Any,
) -> TrainOptions:
    """TrainOptions from the settings object; `extra` holds command-line-only options."""
    fields = {
        "train_csvs": tuple(train_csvs),
        "dev_csvs": tuple(dev_csvs),
        "checkpoint_dir": checkpoint_dir,
        "batch_size": settings.batch_size,
        "epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        "architecture": settings.model,
        "model_size": settings.model_size,
        "n_hidden": settings.n_hidden,
        "dropout": settings.dropout,
        "n_layers": settings.conformer_layers or None,
        "d_model": settings.conformer_dim or None,
        "n_heads": settings.conformer_heads or None,
        "early_stop": settings.early_stop,
        "es_epochs": settings.es_epochs,
        "max_to_keep": settings.max_to_keep,
        "checkpoint_secs": settings.checkpoint_secs,
        "amp": settings.amp,
        "seed": settings.seed,
        "drop_source_layers": settings.drop_source_layers,
        "augment": AugmentOptions(
            speed=settings.aug_speed,
            spec_augment=settings.aug_specaugment,
            noise=settings.aug_noise,
            gain=settings.aug_gain,
            reverb=settings.aug_reverb,
            noise_dir=settings.aug_noise_dir,
            snr_db=settings.aug_snr_db,
            gain_db=settings.aug_gain_db,
            rt60=settings.aug_rt60,
        ),
        "settings_env": settings.to_env_text(),
    }
    if settings.fast_train:
        fields.update(FAST_TRAIN_LIMITS)
    return TrainOptions(**{**fields, **extra})


def model_config(options: TrainOptions, n_outputs: int) -> ModelConfig:
    """The config of the model `options` train, for `n_outputs` (alphabet + blank)."""
    settable = model_config_class(options.architecture).OPTION_FIELDS
    given = {name: getattr(options, name) for name in settable}
    fields = {name: value for name, value in given.items() if value is not None}
    return new_model_config(options.architecture, n_outputs, options.model_size, **fields)


@dataclass(frozen=True)
class TrainResult:
    best_checkpoint: Path
    best_dev_loss: float
    epochs_completed: int
    stopped_early: bool
    model: AcousticModel  # the trained weights as they ended (rank-local under DDP)


@dataclass
class TrainState:
    """Counters a resumed run restores, besides model/optimizer/scaler/scheduler/RNG states."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    step: int = 0
    best_dev_loss: float = math.inf
    epochs_without_improvement: int = 0


def train(options: TrainOptions, alphabet: Alphabet, distributed: Distributed | None = None) -> TrainResult:
    distributed = distributed or Distributed()
    device = device_for(distributed)
    if distributed.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=distributed.rank, world_size=distributed.world_size)
    if not distributed.is_main:
        log.setLevel(logging.WARNING)
    torch.manual_seed(options.seed)
    checkpoint_dir = options.checkpoint_dir
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    # Model: resume our own run, else start fresh (optionally from another run's weights).
    state = TrainState()
    resume = load_checkpoint(checkpoint_dir / LAST) if (checkpoint_dir / LAST).is_file() else None
    if resume is not None:
        model, saved_alphabet = model_from_checkpoint(resume)
        if saved_alphabet != alphabet:
            raise DsitaError(f"{checkpoint_dir / LAST}: saved with a different alphabet than this run's")
        state = TrainState(**resume["train_state"])
        log.info(
            "Resuming from %s: epoch %d, batch %d",
            checkpoint_dir / LAST,
            state.epoch + 1,
            state.batch_in_epoch,
        )
    else:
        model = build_model(model_config(options, len(alphabet) + 1))
        if options.load_checkpoint_dir is not None:
            # Transfer happens only on a fresh start, so a resumed run never re-initialises layers again.
            transfer_weights(
                model, resolve_checkpoint(options.load_checkpoint_dir), options.drop_source_layers
            )
    model.to(device)

    # Data: clips are read lazily by workers; durations come from the CSVs.
    train_samples, dev_samples = _load_splits(options, alphabet)
    cache = FeatureCache(options.feature_cache, model.featurizer) if options.feature_cache else None
    augment = options.augment
    if cache is not None and augment.waveform:
        raise DsitaError(
            "noise, gain and reverberation change the audio each epoch and cannot use a feature cache"
        )
    noise_bank = None
    if augment.noise > 0 and augment.noise_dir is not None:
        noise_bank = load_noise_bank(augment.noise_dir).to(device)  # read once, before the first batch
    train_set = SpeechDataset(train_samples, alphabet, cache, augment.speed)
    dev_set = SpeechDataset(dev_samples, alphabet, cache)
    train_sampler = BucketBatchSampler(
        [sample_duration(s) for s in train_samples],
        options.batch_size,
        options.seed,
        options.sort_by_size,
        distributed.world_size,
        distributed.rank,
    )
    dev_sampler = BucketBatchSampler(
        [sample_duration(s) for s in dev_samples],
        options.batch_size,
        options.seed,
        True,
        distributed.world_size,
        distributed.rank,
    )
    spec_augment = (
        SpecAugment(model.featurizer.frame_size, prob=augment.spec_augment) if augment.spec_augment else None
    )

    # Optimisation: Adam at the configured rate (never the source checkpoint's), AMP on CUDA only.
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=options.plateau_factor, patience=options.plateau_epochs - 1
    )
    amp_dtype = autocast_dtype(options.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        restore_rng(resume["rng"])
    trained = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if distributed.world_size > 1
        else model
    )

    if distributed.is_main:
        atomic_write_text(checkpoint_dir / "settings.env", options.settings_env)

    def snapshot() -> dict[str, Any]:
        return {
            "model_config": model_config_to_dict(model.config),
            "model": model.state_dict(),
            "alphabet": list(alphabet.labels),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng_state(),
            "train_state": dataclasses.asdict(state),
            "settings_env": options.settings_env,
        }

    stopped_early = False
    metrics_path = checkpoint_dir / "metrics.jsonl"
    board = tensorboard_writer(checkpoint_dir) if distributed.is_main else None
    while state.epoch < options.epochs:
        epoch_start = time.monotonic()
        train_sampler.set_epoch(state.epoch, state.batch_in_epoch)
        loader = DataLoader(
            train_set,
            batch_sampler=train_sampler,
            collate_fn=collate,
            num_workers=options.workers,
            pin_memory=device.type == "cuda",
        )
        trained.train()
        loss_sum, loss_batches, skipped, audio_seconds = 0.0, 0, 0, 0.0
        last_save = time.monotonic()
        total = len(train_sampler)
        if options.max_steps_per_epoch is not None:
            total = min(total, max(options.max_steps_per_epoch - state.batch_in_epoch, 0))
        with progress_bar(options.show_progress and distributed.is_main) as progress:
            task = progress.add_task(
                f"epoch {state.epoch + 1}/{options.epochs}", total=total, loss=math.nan, speed=0
            )
            for batch_number, cpu_batch in enumerate(loader):
                if batch_number >= total:
                    break
                batch = cpu_batch.to(device)
                waveforms = augment_waveforms(batch.inputs, batch.input_lengths, augment, noise_bank)
                batch = dataclasses.replace(batch, inputs=waveforms)
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    features, lengths = _features(model, batch)
                    if spec_augment is not None:
                        features = spec_augment(features, lengths)
                    output = trained(features, lengths)
                loss = _ctc_loss(output.logits, output.lengths, batch, model.blank)
                if not _all_finite(loss, distributed):
                    skipped += 1
                    files = ", ".join(str(train_samples[i].wav_path) for i in batch.indices)
                    log.warning("Skipped a batch with a non-finite loss: %s", files)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += float(loss.detach())
                    loss_batches += 1
                state.step += 1
                state.batch_in_epoch += 1
                audio_seconds += float(batch.input_lengths.sum()) / _input_rate(batch, model)
                speed = audio_seconds * distributed.world_size / max(time.monotonic() - epoch_start, 1e-9)
                progress.update(task, advance=1, loss=loss_sum / max(loss_batches, 1), speed=speed)
                if time.monotonic() - last_save >= options.checkpoint_secs:
                    if distributed.is_main:
                        save_checkpoint(checkpoint_dir / LAST, snapshot())
                    last_save = time.monotonic()
        if skipped and not loss_batches:
            raise DsitaError(f"every batch of epoch {state.epoch + 1} gave a non-finite loss; check the data")

        # End of epoch: dev loss, checkpoints, LR schedule, early stopping.
        dev_loss = dataset_loss(model, dev_set, dev_sampler, device, amp_dtype, distributed)
        train_loss = loss_sum / max(loss_batches, 1)
        if options.reduce_lr_on_plateau:
            scheduler.step(dev_loss)
        improved = dev_loss < state.best_dev_loss - options.es_min_delta
        state.best_dev_loss = min(state.best_dev_loss, dev_loss)
        state.epochs_without_improvement = 0 if improved else state.epochs_without_improvement + 1
        finished_epoch = state.epoch
        state.epoch += 1
        state.batch_in_epoch = 0
        seconds = time.monotonic() - epoch_start
        if distributed.is_main:
            checkpoint = snapshot()
            save_checkpoint(checkpoint_dir / epoch_checkpoint_name(finished_epoch + 1), checkpoint)
            if improved:
                save_checkpoint(checkpoint_dir / BEST_DEV, checkpoint)
            save_checkpoint(checkpoint_dir / LAST, checkpoint)
            rotate_epoch_checkpoints(checkpoint_dir, options.max_to_keep)
            record = {
                "epoch": finished_epoch + 1,
                "step": state.step,
                "train_loss": train_loss,
                "dev_loss": dev_loss,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(seconds, 3),
                "audio_seconds_per_second": round(audio_seconds * distributed.world_size / seconds, 2),
                "skipped_batches": skipped,
            }
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if board is not None:
                for key in ("train_loss", "dev_loss", "lr", "audio_seconds_per_second"):
                    board.add_scalar(key, record[key], finished_epoch + 1)
        log.info(
            "Epoch %d: train loss %.3f, dev loss %.3f%s, %.1f s",
            finished_epoch + 1,
            train_loss,
            dev_loss,
            " (best)" if improved else "",
            seconds,
        )
        if options.early_stop and state.epochs_without_improvement >= options.es_epochs:
            log.info("Early stop: no dev improvement for %d epochs", state.epochs_without_improvement)
            stopped_early = True
            break
    if board is not None:
        board.close()
    if distributed.world_size > 1:
        dist.barrier()
    return TrainResult(checkpoint_dir / BEST_DEV, state.best_dev_loss, state.epoch, stopped_early, model)


def dataset_loss(
    model: AcousticModel,
    dataset: SpeechDataset,
    sampler: BucketBatchSampler,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    distributed: Distributed,
) -> float:
    """Mean CTC loss per utterance over a dataset (summed across ranks), without dropout."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    with torch.no_grad():
        for cpu_batch in loader:
            batch = cpu_batch.to(device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                features, lengths = _features(model, batch)
                output = model(features, lengths)
            loss = _ctc_loss(output.logits, output.lengths, batch, model.blank)
            if torch.isfinite(loss):
                total += torch.tensor([float(loss) * len(batch.indices), len(batch.indices)], device=device)
    if distributed.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1]) if total[1] > 0 else math.inf


def _ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, batch: Batch, blank: int) -> torch.Tensor:
    # Per-utterance sums averaged over the batch, like DeepSpeech's mean of tf.nn.ctc_loss; in float32 always.
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    loss = F.ctc_loss(log_probs, batch.targets, lengths, batch.target_lengths, blank=blank, reduction="sum")
    return loss / len(batch.indices)


def _features(model: AcousticModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.are_features:
        return batch.inputs, batch.input_lengths
    return model.featurizer(batch.inputs, batch.input_lengths)


def _input_rate(batch: Batch, model: AcousticModel) -> float:
    """Input units per second of audio: samples, or the featurizer's frames."""
    return SAMPLE_RATE / model.featurizer.step_samples if batch.are_features else float(SAMPLE_RATE)


def _all_finite(loss: torch.Tensor, distributed: Distributed) -> bool:
    """Every rank must agree to skip, or DDP's gradient all-reduce would hang."""
    finite = torch.isfinite(loss.detach()).to(torch.int32)
    if distributed.world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite)


def _load_splits(options: TrainOptions, alphabet: Alphabet) -> tuple[list[Sample], list[Sample]]:
    train_samples = load_samples(options.train_csvs, alphabet)[: options.max_train_clips]
    dev_samples = load_samples(options.dev_csvs, alphabet)[: options.max_dev_clips]
    if not train_samples or not dev_samples:
        raise DsitaError("training needs at least one train clip and one dev clip")
    return train_samples, dev_samples
