"""What the training loop reads: the train and dev clips, their loaders, and the batch's features.

Clips are read lazily by persistent DataLoader workers; features are computed by the model's featurizer on
the training device (or read from a feature cache). Augmentation runs on the training clips only: speed,
tempo and codecs per clip in the workers, seeded per (seed, epoch, clip); the batch chain
(`dsita.data.augmentation.batch.augment_batch`) on the device, then SpecAugment on the features, both from the
device's RNG, which checkpoints save.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from dsita.audio import SAMPLE_RATE
from dsita.data.augmentation.batch import augment_batch, clip_transforms
from dsita.data.augmentation.options import AugmentOptions
from dsita.data.augmentation.specaugment import SpecAugment
from dsita.data.augmentation.waveform import NoiseBank, load_noise_bank
from dsita.data.csvs import Sample, sample_duration
from dsita.data.dataset import (
    Batch,
    BucketBatchSampler,
    FeatureCache,
    Item,
    SpeechDataset,
    collate,
    ctc_steps_needed,
    load_samples,
)
from dsita.errors import DsitaError
from dsita.model.base import AcousticModel, Featurizer
from dsita.system import ParentWatch
from dsita.text.alphabet import Alphabet
from dsita.training.options import TrainOptions
from dsita.training.runtime import Distributed, default_workers

__all__ = ["Batch", "TrainingData", "load_training_data"]

log = logging.getLogger("dsita.training")


@dataclass
class TrainingData:
    """The loaders of one training process, and how a batch becomes the model's input."""

    options: TrainOptions
    train_samples: list[Sample]
    train_sampler: BucketBatchSampler
    # torch types a DataLoader by its dataset's items; `collate` makes them Batches.
    train_loader: DataLoader[Item]
    dev_sampler: BucketBatchSampler
    dev_loader: DataLoader[Item]
    featurizer_step: int  # samples per feature frame
    frame_counter: Featurizer  # the model's featurizer, for frame counts from sample counts
    spec_augment: SpecAugment | None
    noise_bank: NoiseBank | None

    def batches_left(self, epoch: int, done: int) -> int:
        """Batches still to train in `epoch` after the `done` ones (FAST_TRAIN caps them)."""
        self.train_sampler.set_epoch(epoch, done)
        left = len(self.train_sampler)
        if self.options.max_steps_per_epoch is not None:
            left = min(left, max(self.options.max_steps_per_epoch - done, 0))
        return left

    def train_batches(self, epoch: int, done: int) -> Iterator[Batch]:
        """The batches of `epoch` after the `done` ones."""
        self.train_sampler.set_epoch(epoch, done)
        return iter(self.train_loader)

    def dev_batches(self) -> Iterator[Batch]:
        """The dev set, shortest first."""
        return iter(self.dev_loader)

    def frame_lengths(self, batch: Batch) -> Tensor:
        """Each item's valid feature frames, computed on the CPU from the CPU batch."""
        if batch.are_features:
            return batch.input_lengths
        return self.frame_counter.frame_lengths(batch.input_lengths)

    def features(self, model: AcousticModel, batch: Batch) -> tuple[Tensor, Tensor]:
        """The model's input features of a batch on the device (cached ones as they are)."""
        if batch.are_features:
            return batch.inputs, batch.input_lengths
        features: tuple[Tensor, Tensor] = model.featurizer(batch.inputs, batch.input_lengths)
        return features

    def augmented_features(
        self, model: AcousticModel, batch: Batch, frame_lengths: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`features`, with the batch augmentations before and SpecAugment after."""
        augment = self.options.augment
        if not batch.are_features and augment.waveform:
            waveforms = augment_batch(batch.inputs, batch.input_lengths, augment, self.noise_bank)
            batch = dataclasses.replace(batch, inputs=waveforms)
        features, lengths = self.features(model, batch)
        if self.spec_augment is not None:
            features = self.spec_augment(features, frame_lengths)
        return features, lengths

    def audio_seconds(self, batch: Batch) -> float:
        """Seconds of audio in a CPU batch."""
        units = float(batch.input_lengths.sum())
        return units * (self.featurizer_step if batch.are_features else 1) / SAMPLE_RATE

    def files(self, batch: Batch) -> list[str]:
        """The clips of a batch, to name in a warning."""
        return [str(self.train_samples[i].wav_path) for i in batch.indices]


def load_training_data(
    options: TrainOptions,
    alphabet: Alphabet,
    model: AcousticModel,
    distributed: Distributed,
    device: torch.device,
) -> TrainingData:
    """Read the CSVs, drop the clips the model cannot spell, and set up loaders and augmentation."""
    train_samples = _spellable(model, alphabet, load_samples(options.train_csvs, alphabet), "train")
    dev_samples = _spellable(model, alphabet, load_samples(options.dev_csvs, alphabet), "dev")
    train_samples, dev_samples = (
        train_samples[: options.max_train_clips],
        dev_samples[: options.max_dev_clips],
    )
    if not train_samples or not dev_samples:
        raise DsitaError("training needs at least one train clip and one dev clip")
    augment = options.augment
    cache = FeatureCache(options.feature_cache, model.featurizer) if options.feature_cache else None
    if cache is not None and augment.waveform:
        raise DsitaError(
            "noise, gain, reverberation, speaker and channel augmentation change the audio each epoch "
            "and cannot use a feature cache"
        )
    noise_bank = None
    if augment.noise > 0 and augment.noise_dir is not None:
        noise_bank = load_noise_bank(augment.noise_dir).to(device)  # read once, before the first batch
    workers = options.workers if options.workers is not None else default_workers(device, distributed)
    train_sampler = _sampler(options, train_samples, distributed, options.sort_by_size)
    dev_sampler = _sampler(options, dev_samples, distributed, True)
    train_set = SpeechDataset(
        train_samples, alphabet, cache, augment.speed, clip_transforms(augment), seed=options.seed
    )
    featurizer = model.featurizer
    return TrainingData(
        options,
        train_samples,
        train_sampler,
        _loader(train_set, train_sampler, workers, device),
        dev_sampler,
        _loader(SpeechDataset(dev_samples, alphabet, cache), dev_sampler, workers, device),
        featurizer.step_samples,
        featurizer,
        _spec_augment(augment, featurizer),
        noise_bank,
    )


def _spec_augment(augment: AugmentOptions, featurizer: Featurizer) -> SpecAugment | None:
    """SpecAugment for the model's featurizer: its mask widths in milliseconds turned into its frames."""
    if not augment.spec_augment:
        return None
    return SpecAugment.for_featurizer(
        featurizer.frame_size,
        featurizer.step_samples,
        augment.spec_augment,
        augment.spec_time_masks,
        augment.spec_time_ms,
        augment.spec_freq_masks,
        augment.spec_freq_share,
        SAMPLE_RATE,
    )


def _sampler(
    options: TrainOptions, samples: list[Sample], distributed: Distributed, sort_by_size: bool
) -> BucketBatchSampler:
    durations = [sample_duration(s) for s in samples]
    return BucketBatchSampler(
        durations,
        options.batch_size,
        options.seed,
        sort_by_size,
        distributed.world_size,
        distributed.rank,
        batch_seconds=options.batch_seconds,
    )


def _loader(
    dataset: SpeechDataset, sampler: BucketBatchSampler, workers: int, device: torch.device
) -> DataLoader[Item]:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=workers > 0,  # started once, not every epoch
        pin_memory=device.type == "cuda",
        worker_init_fn=ParentWatch() if workers > 0 else None,  # workers die with the trainer, by SIGKILL too
    )


def _spellable(model: AcousticModel, alphabet: Alphabet, samples: list[Sample], split: str) -> list[Sample]:
    """The samples whose transcript fits the model's output steps (CTC needs a step per label and a blank
    between repeats): the import filter counts 20 ms feature frames, which a subsampling model has fewer
    of."""
    if not samples:
        return samples
    counts = torch.tensor([round(sample_duration(s) * SAMPLE_RATE) for s in samples], dtype=torch.long)
    steps = model.output_lengths(model.featurizer.frame_lengths(counts)).tolist()
    fits = [ctc_steps_needed(alphabet.encode(s.transcript)) <= n for s, n in zip(samples, steps, strict=True)]
    kept = [s for s, ok in zip(samples, fits, strict=True) if ok]
    if len(kept) < len(samples):
        dropped = [s for s, ok in zip(samples, fits, strict=True) if not ok]
        log.warning(
            "%d %s clips are too short for their transcripts at the model's output rate and are left out "
            "(first: %s)",
            *(len(dropped), split, dropped[0].wav_path),
        )
    return kept
