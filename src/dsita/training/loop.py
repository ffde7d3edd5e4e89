"""The training loop, readable top to bottom: start or resume, load the data, train epochs, stop.

Runs on the CPU, one GPU, or N processes under DDP (NCCL on GPUs, gloo on the CPU; `dsita run` starts one
process per GPU, `torchrun` works too). Only rank 0 writes checkpoints and logs. Every checkpoint holds what a
restart needs, so a run killed at any point resumes from its newest state and loses at most the batches since
that state was written.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text
from dsita.model.base import AcousticModel, ModelConfig, build_model, model_config_class, new_model_config
from dsita.progress import Progress
from dsita.text.alphabet import Alphabet
from dsita.training.averaging import average_state_dicts, last_epoch_checkpoints
from dsita.training.checkpoint import (
    BEST_DEV,
    LAST,
    epoch_checkpoint_name,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
    rotate_epoch_checkpoints,
    save_checkpoint,
    snapshot,
    transfer_weights,
)
from dsita.training.data import Batch, TrainingData, load_training_data
from dsita.training.options import TrainOptions
from dsita.training.runtime import (
    Distributed,
    autocast,
    autocast_dtype,
    join_process_group,
    learning_rate,
    pick_device,
    quiet_unless_main,
    rank_seed,
    restore_rng,
    tensorboard_writer,
)

log = logging.getLogger("dsita.training")
PLATEAU_THRESHOLD = 1e-4  # a dev loss this much (relative) below the best counts as progress for the LR
STATUS_EVERY = 20  # batches between progress updates that read the loss back from the device


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: its best checkpoint and dev loss, and the trained model (rank-local under DDP)."""

    best_checkpoint: Path
    best_dev_loss: float
    epochs_completed: int
    stopped_early: bool
    model: AcousticModel


@dataclass
class TrainState:
    """Counters a resumed run restores, besides the model, optimizer, scaler and RNG states."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    step: int = 0
    best_dev_loss: float = math.inf
    epochs_without_improvement: int = 0
    lr_scale: float = 1.0  # what reduce-on-plateau has divided the rate by so far
    plateau_epochs: int = 0  # epochs since the dev loss last improved by PLATEAU_THRESHOLD


@dataclass
class Run:
    """What a training process holds while it trains."""

    options: TrainOptions
    alphabet: Alphabet
    distributed: Distributed
    device: torch.device
    model: AcousticModel
    trained: nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    schedule: str
    state: TrainState

    def checkpoint(self) -> dict[str, Any]:
        """Everything a restart needs, as one dict for `save_checkpoint`."""
        return snapshot(self.model, self.alphabet, self.optimizer, self.scaler, self.device, self.state,
                        self.options.settings_env)  # fmt: skip


@dataclass
class EpochStats:
    """What one epoch did."""

    loss_sum: Tensor
    batches: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def loss(self) -> float:
        """The mean loss over the epoch's batches (0 for none); reading it waits for the device."""
        return float(self.loss_sum) / max(self.batches, 1)


def train(options: TrainOptions, alphabet: Alphabet, distributed: Distributed | None = None) -> TrainResult:
    """Train (or resume training) a model on `options`' CSVs; returns how the run ended."""
    distributed = distributed or Distributed()
    device = pick_device(distributed, options.device)
    join_process_group(distributed, device)
    with quiet_unless_main(distributed, log):
        run = start_or_resume(options, alphabet, distributed, device)
        data = load_training_data(options, alphabet, run.model, distributed, device)
        if distributed.is_main:
            options.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(options.checkpoint_dir / "settings.env", options.settings_env)
        board = tensorboard_writer(options.checkpoint_dir) if distributed.is_main else None
        stopped_early = False
        try:
            while run.state.epoch < options.epochs and not stopped_early:
                stats = train_epoch(run, data)
                stopped_early = end_epoch(run, data, stats, board)
            if options.average_checkpoints > 1:
                average_last_epochs(run, data)
        finally:
            if board is not None:
                board.close()
        if distributed.world_size > 1:
            dist.barrier()
    best = options.checkpoint_dir / BEST_DEV
    return TrainResult(best, run.state.best_dev_loss, run.state.epoch, stopped_early, run.model)


def model_config(options: TrainOptions, n_outputs: int) -> ModelConfig:
    """The config of the model `options` train, for `n_outputs` (alphabet + blank)."""
    settable = model_config_class(options.architecture).OPTION_FIELDS
    given = {name: value for name, value in options.model_fields.items() if value is not None}
    fields = {name: value for name, value in given.items() if name in settable}
    return new_model_config(options.architecture, n_outputs, options.model_size, **fields)


def start_or_resume(
    options: TrainOptions, alphabet: Alphabet, distributed: Distributed, device: torch.device
) -> Run:
    """Resume this run from `last.pt`, or start a fresh model (from another run's weights when transferring).

    The optimizer runs at the configured rate, never the source checkpoint's; the seed makes the model's
    initialisation the same on every rank, then each rank draws its own dropout and augmentation.
    """
    last = options.checkpoint_dir / LAST
    resume = load_checkpoint(last) if last.is_file() else None
    torch.manual_seed(options.seed)
    if resume is not None:
        model, saved_alphabet = model_from_checkpoint(resume)
        if saved_alphabet != alphabet:
            raise DsitaError(f"{last}: saved with a different alphabet than this run's")
        state = TrainState(**resume["train_state"])
        log.info("Resuming from %s: epoch %d, batch %d", last, state.epoch + 1, state.batch_in_epoch)
    else:
        state = TrainState()
        model = build_model(model_config(options, len(alphabet) + 1))
        if options.load_checkpoint_dir is not None:
            # Transfer happens only on a fresh start, so a resumed run never re-initialises layers again.
            transfer_weights(
                model, resolve_checkpoint(options.load_checkpoint_dir), options.drop_source_layers
            )
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    amp_dtype = autocast_dtype(options.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    torch.manual_seed(rank_seed(options.seed, distributed.rank))
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        if scaler.is_enabled() and resume.get("scaler"):  # a bf16 or CPU run saved a disabled scaler: {}
            scaler.load_state_dict(resume["scaler"])
        if distributed.is_main:
            restore_rng(resume["rng"], device)
        else:  # only rank 0's generator state is saved: the others take a fresh one of their own
            torch.manual_seed(rank_seed(options.seed, distributed.rank, state.step))
    schedule = options.lr_schedule if options.lr_schedule != "auto" else model.config.LR_SCHEDULE
    trained: nn.Module = model
    if distributed.world_size > 1:
        # device_ids=None: DDP would otherwise move every input to the GPU, the CPU frame lengths included.
        trained = DistributedDataParallel(model, device_ids=None, broadcast_buffers=False)
    return Run(options, alphabet, distributed, device, model, trained, optimizer, scaler, amp_dtype, schedule,
               state)  # fmt: skip


def train_epoch(run: Run, data: TrainingData) -> EpochStats:
    """Train on the batches of the current epoch not yet trained, saving `last.pt` every CHECKPOINT_SECS."""
    options, state = run.options, run.state
    stats = EpochStats(torch.zeros((), device=run.device))
    total = data.batches_left(state.epoch, state.batch_in_epoch)
    last_save = time.monotonic()
    run.trained.train()
    show = options.show_progress and run.distributed.is_main
    with Progress(show, log) as progress:
        task = progress.task(f"epoch {state.epoch + 1}/{options.epochs}", total, "batches")
        for number, cpu_batch in enumerate(data.train_batches(state.epoch, state.batch_in_epoch)):
            if number >= total:
                break
            train_step(run, data, cpu_batch, stats)
            state.step += 1
            state.batch_in_epoch += 1
            status = None
            if number % STATUS_EVERY == 0 or number == total - 1:
                status = f"loss {stats.loss:.2f}, {_speed(stats, run):.0f} audio-s/s"
            task.advance(1, status)
            if run.distributed.is_main and time.monotonic() - last_save >= options.checkpoint_secs:
                save_checkpoint(options.checkpoint_dir / LAST, run.checkpoint())
                last_save = time.monotonic()
    if stats.skipped and not stats.batches:
        raise DsitaError(f"every batch of epoch {state.epoch + 1} gave a non-finite loss; check the data")
    return stats


def train_step(run: Run, data: TrainingData, cpu_batch: Batch, stats: EpochStats) -> None:
    """One optimizer step on one batch, or none when any rank's loss is not finite (then logged)."""
    frame_lengths = data.frame_lengths(cpu_batch)  # on the CPU: the LSTM's packing needs them there
    batch = cpu_batch.to(run.device)
    features, _ = data.augmented_features(run.model, batch, frame_lengths)
    with autocast(run.device, run.amp_dtype):
        output = run.trained(features, frame_lengths)
    loss = ctc_loss(output.logits, output.lengths, batch, run.model.blank)
    stats.audio_seconds += data.audio_seconds(cpu_batch)
    if not _all_finite(loss, run.distributed):
        stats.skipped += 1
        log.warning("Skipped a batch with a non-finite loss: %s", ", ".join(data.files(cpu_batch)))
        return
    rate = learning_rate(run.options.learning_rate, run.schedule, run.options.lr_warmup_steps, run.state.step)
    for group in run.optimizer.param_groups:
        group["lr"] = rate * run.state.lr_scale
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    run.scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.options.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    stats.loss_sum += loss.detach()
    stats.batches += 1


def end_epoch(run: Run, data: TrainingData, stats: EpochStats, board: Any) -> bool:
    """Dev loss, learning rate, checkpoints and metrics after an epoch; returns whether to stop early."""
    options, state = run.options, run.state
    dev_loss = dataset_loss(run.model, data, run.device, run.amp_dtype, run.distributed)
    improved = dev_loss < state.best_dev_loss - options.es_min_delta
    _reduce_on_plateau(run, dev_loss)
    state.best_dev_loss = min(state.best_dev_loss, dev_loss)
    state.epochs_without_improvement = 0 if improved else state.epochs_without_improvement + 1
    finished = state.epoch + 1
    state.epoch, state.batch_in_epoch = finished, 0
    seconds = time.monotonic() - stats.started
    if run.distributed.is_main:
        checkpoint = run.checkpoint()
        save_checkpoint(options.checkpoint_dir / epoch_checkpoint_name(finished), checkpoint)
        if improved:
            save_checkpoint(options.checkpoint_dir / BEST_DEV, checkpoint)
        save_checkpoint(options.checkpoint_dir / LAST, checkpoint)
        keep = max(options.max_to_keep, options.average_checkpoints)  # averaging reads the last epochs back
        rotate_epoch_checkpoints(options.checkpoint_dir, keep)
        record = {
            "epoch": finished,
            "step": state.step,
            "train_loss": stats.loss,
            "dev_loss": dev_loss,
            "lr": run.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "audio_seconds_per_second": round(_speed(stats, run), 2),
            "skipped_batches": stats.skipped,
        }
        with open(options.checkpoint_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if board is not None:
            for key in ("train_loss", "dev_loss", "lr", "audio_seconds_per_second"):
                board.add_scalar(key, record[key], finished)
    best = " (best)" if improved else ""
    log.info(
        "Epoch %d: train loss %.3f, dev loss %.3f%s, %.1f s", finished, stats.loss, dev_loss, best, seconds
    )
    if options.early_stop and state.epochs_without_improvement >= options.es_epochs:
        log.info("Early stop: no dev improvement for %d epochs", state.epochs_without_improvement)
        return True
    return False


def average_last_epochs(run: Run, data: TrainingData) -> None:
    """Average the weights of the last AVERAGE_CHECKPOINTS epochs and keep the average as `best_dev.pt` when
    its dev loss is below every epoch's (and every earlier average's): `best_dev_loss` is then its loss.

    Rank 0 reads the epoch checkpoints and sends the average to the other ranks. The dev pass draws nothing
    from the training RNG, so a run resumed after this trains as one that never stopped.
    """
    options, state, distributed = run.options, run.state, run.distributed
    found = [last_epoch_checkpoints(options.checkpoint_dir, options.average_checkpoints)]
    if distributed.world_size > 1:
        dist.broadcast_object_list(found, src=0)  # only rank 0's folder need hold the files
    paths = found[0]
    if len(paths) < 2:
        return
    averaged = copy.deepcopy(run.model)
    if distributed.is_main:
        averaged.load_state_dict(average_state_dicts([load_checkpoint(path)["model"] for path in paths]))
    if distributed.world_size > 1:
        for tensor in averaged.state_dict().values():
            dist.broadcast(tensor, src=0)
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        dev_loss = dataset_loss(averaged, data, run.device, run.amp_dtype, distributed)
    kept = dev_loss < state.best_dev_loss
    names = [path.name for path in paths]
    log.info("Average of %s: dev loss %.3f%s", ", ".join(names), dev_loss, " (best)" if kept else "")
    if kept:
        state.best_dev_loss = dev_loss
    if not distributed.is_main:
        return
    if kept:
        best = {**run.checkpoint(), "model": averaged.state_dict(), "averaged_epochs": names}
        save_checkpoint(options.checkpoint_dir / BEST_DEV, best)
        save_checkpoint(options.checkpoint_dir / LAST, run.checkpoint())
    record = {"averaged_epochs": names, "step": state.step, "dev_loss": dev_loss, "kept_as_best": kept}
    with open(options.checkpoint_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def dataset_loss(
    model: AcousticModel,
    data: TrainingData,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    distributed: Distributed,
) -> float:
    """Mean CTC loss per utterance over the dev set (summed across ranks), without dropout or augmentation."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for cpu_batch in data.dev_batches():
            frame_lengths = data.frame_lengths(cpu_batch)
            batch = cpu_batch.to(device)
            features, _ = data.features(model, batch)
            with autocast(device, amp_dtype):
                output = model(features, frame_lengths)
            loss = ctc_loss(output.logits, output.lengths, batch, model.blank)
            count = len(batch.indices)
            total += torch.where(torch.isfinite(loss), torch.stack([loss * count, loss.new_tensor(count)]), 0)
    if distributed.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1]) if total[1] > 0 else math.inf


def ctc_loss(logits: Tensor, lengths: Tensor, batch: Batch, blank: int) -> Tensor:
    """Per-utterance CTC sums averaged over the batch, like DeepSpeech's mean of tf.nn.ctc_loss, in float32.

    An utterance its output steps cannot spell (infinite loss) counts as 0 with no gradient, so it costs the
    batch nothing; the data loader drops those it can tell in advance.
    """
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    losses = F.ctc_loss(
        log_probs,
        batch.targets,
        lengths,
        batch.target_lengths,
        blank=blank,
        reduction="none",
        zero_infinity=True,
    )
    return losses.sum() / len(batch.indices)


def _reduce_on_plateau(run: Run, dev_loss: float) -> None:
    """Divide the rate by `plateau_factor` after `plateau_epochs` epochs without relative progress."""
    options, state = run.options, run.state
    if not options.reduce_lr_on_plateau:
        return
    progressed = dev_loss < state.best_dev_loss * (1 - PLATEAU_THRESHOLD)
    state.plateau_epochs = 0 if progressed else state.plateau_epochs + 1
    if state.plateau_epochs >= options.plateau_epochs:
        state.lr_scale *= options.plateau_factor
        state.plateau_epochs = 0
        for group in run.optimizer.param_groups:
            group["lr"] *= options.plateau_factor
        log.info("Dev loss stalled: learning rate divided by %g", 1 / options.plateau_factor)


def _all_finite(loss: Tensor, distributed: Distributed) -> bool:
    """Every rank must agree to skip, or DDP's gradient all-reduce would hang (the step's one device sync)."""
    finite = torch.isfinite(loss.detach()).to(torch.int32)
    if distributed.world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite)


def _speed(stats: EpochStats, run: Run) -> float:
    """Audio seconds trained per second of wall time, all ranks together."""
    return stats.audio_seconds * run.distributed.world_size / max(time.monotonic() - stats.started, 1e-9)
