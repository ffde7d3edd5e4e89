"""Training data: lazily loaded clips, duration-bucketed batches, and CTC collation.

Audio is read from disk per item in DataLoader workers, so memory does not grow with the dataset. Features are
computed by the model's featurizer on the training device, unless a feature cache is used, in which case the
workers load (or compute once and store) them; the batch says which it carries.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from dsita.audio import SAMPLE_RATE
from dsita.data.csvs import Sample, read_csv
from dsita.errors import AudioLoadingError, DsitaError
from dsita.fileio import atomic_write
from dsita.text.alphabet import Alphabet

# Kaldi's three speeds: 1.0 is the share of clips that speed perturbation leaves alone (1 - its probability).
SPEED_FACTORS = (0.9, 1.1)
# A per-clip augmentation run in the DataLoader workers after speed perturbation (tempo, codecs): it draws
# from torch's RNG, which is seeded per worker, and may change the clip's length.
ClipTransform = Callable[[Tensor], Tensor]


def load_samples(csv_paths: Sequence[str | Path], alphabet: Alphabet) -> list[Sample]:
    """Read one or more DeepSpeech CSVs and check every transcript against the alphabet before any training.

    A transcript the alphabet cannot encode stops here, naming the CSV, its row and the character.
    """
    samples: list[Sample] = []
    for csv_path in csv_paths:
        rows = read_csv(csv_path)
        for row_number, sample in enumerate(rows, start=2):
            bad = next((ch for ch in sample.transcript if ch not in alphabet), None)
            if bad is not None:
                raise DsitaError(
                    f"{csv_path}, row {row_number}: transcript {sample.transcript!r} has {bad!r}, "
                    "which the alphabet cannot encode"
                )
            if not sample.transcript:
                raise DsitaError(f"{csv_path}, row {row_number}: empty transcript")
        samples.extend(rows)
    return samples


@dataclass(frozen=True)
class Item:
    """One loaded clip: its audio or cached features, its label ids, and its index in the dataset."""

    inputs: Tensor  # (samples,) waveform, or (frames, n_features) cached features
    targets: Tensor  # (n_labels,) int64 label ids
    index: int


@dataclass(frozen=True)
class Batch:
    """Padded inputs of several clips with their lengths, and their targets concatenated for CTC."""

    inputs: Tensor  # (B, samples) waveforms or (B, frames, n_features) features, zero padded
    input_lengths: Tensor  # (B,) valid samples or frames
    targets: Tensor  # (sum of target lengths,) concatenated label ids, as CTCLoss accepts
    target_lengths: Tensor  # (B,)
    indices: list[int]  # positions in the dataset, to name the files of a bad batch
    are_features: bool

    def to(self, device: torch.device) -> Batch:
        """The batch on `device`; the copies do not wait for the device (pinned memory makes them async)."""
        return self._map(lambda x: x.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory: DataLoader's `pin_memory=True` calls this on custom batches."""
        return self._map(lambda x: x.pin_memory())

    def _map(self, move: Callable[[Tensor], Tensor]) -> Batch:
        return Batch(
            move(self.inputs),
            move(self.input_lengths),
            move(self.targets),
            move(self.target_lengths),
            self.indices,
            self.are_features,
        )


class FeatureCache:
    """Features computed once per clip by a CPU featurizer and stored as tensors under a folder.

    The key covers the clip's path, size and mtime and the featurizer's identity, so a changed clip or a
    different featurizer never reads stale features.
    """

    def __init__(self, folder: str | Path, featurizer: torch.nn.Module) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # A CPU copy: moving the model's own featurizer would split a GPU model across two devices.
        self.featurizer = copy.deepcopy(featurizer).cpu().eval()
        self.identity = (
            f"{type(featurizer).__module__}.{type(featurizer).__qualname__}:{featurizer.n_features}"
        )

    def path_for(self, wav_path: Path) -> Path:
        """The cache file for `wav_path`, named by a hash of its path, size, mtime and the featurizer."""
        stat = wav_path.stat()
        key = f"{wav_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.identity}"
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.pt"

    def features(self, wav_path: Path, audio: Tensor | None = None) -> Tensor:
        """The clip's (frames, n_features) features: read from the cache, or computed and stored.

        `audio` saves reading the WAV again when the caller has it.
        """
        cached = self.path_for(wav_path)
        if cached.exists():
            stored: Tensor = torch.load(cached, weights_only=True)
            return stored
        if audio is None:
            audio = read_wav(wav_path)
        feats: Tensor
        with torch.no_grad():
            feats, lengths = self.featurizer(audio[None], torch.tensor([audio.numel()]))
        feats = feats[0, : int(lengths[0])].contiguous()
        with atomic_write(cached, "wb") as f:
            torch.save(feats, f)
        return feats


def read_wav(path: Path) -> Tensor:
    """A 16 kHz mono clip as written by the importers, as float32 in [-1, 1]."""
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioLoadingError(f"{path}: cannot read audio ({exc})") from None
    if rate != SAMPLE_RATE or audio.shape[1] != 1:
        raise AudioLoadingError(
            f"{path}: expected 16 kHz mono audio, got {rate} Hz with {audio.shape[1]} channels"
        )
    return torch.from_numpy(audio[:, 0])


def speed_perturb(audio: Tensor, factor: float) -> Tensor:
    """Play the clip `factor` times faster (pitch moves too, as in Kaldi's speed perturbation)."""
    if factor == 1.0:
        return audio
    out = soxr.resample(audio.numpy(), SAMPLE_RATE * factor, SAMPLE_RATE)
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


class SpeechDataset(Dataset[Item]):
    """The clips of a list of samples as `Item`s: audio (or cached features) and encoded transcript.

    Speed perturbation and clip transforms change the audio each epoch, so they cannot be combined with a
    feature cache (DsitaError).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        alphabet: Alphabet,
        feature_cache: FeatureCache | None = None,
        speed_perturb_prob: float = 0.0,
        clip_transforms: Sequence[ClipTransform] = (),
        seed: int = 0,
    ) -> None:
        if feature_cache is not None and (speed_perturb_prob > 0 or clip_transforms):
            raise DsitaError(
                "speed, tempo and codec augmentation change the audio each epoch "
                "and cannot use a feature cache"
            )
        self.samples = list(samples)
        self.alphabet = alphabet
        self.feature_cache = feature_cache
        self.speed_perturb_prob = speed_perturb_prob
        self.clip_transforms = tuple(clip_transforms)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        """The clip at `key`: an index, or (index, epoch) from a `BucketBatchSampler`, which fixes its
        augmentation draws whatever process or worker loads it, so that a resumed run draws the same."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if not (self.speed_perturb_prob > 0 or self.clip_transforms):
            return self._load(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            return self._load(index)

    def _load(self, index: int) -> Item:
        sample = self.samples[index]
        targets = torch.tensor(self.alphabet.encode(sample.transcript), dtype=torch.long)
        if self.feature_cache is not None:
            return Item(self.feature_cache.features(sample.wav_path), targets, index)
        audio = read_wav(sample.wav_path)
        if self.speed_perturb_prob > 0 and torch.rand(()) < self.speed_perturb_prob:
            factor = SPEED_FACTORS[int(torch.randint(len(SPEED_FACTORS), ()))]
            audio = speed_perturb(audio, factor)
        for transform in self.clip_transforms:
            audio = transform(audio)
        return Item(audio, targets, index)


def collate(items: Sequence[Item]) -> Batch:
    """A `Batch` of `items`, inputs zero-padded to the longest; all items waveforms or all features."""
    lengths = torch.tensor([it.inputs.shape[0] for it in items], dtype=torch.long)
    padded = torch.zeros((len(items), int(lengths.max()), *items[0].inputs.shape[1:]), dtype=torch.float32)
    for row, item in enumerate(items):
        padded[row, : item.inputs.shape[0]] = item.inputs
    return Batch(
        inputs=padded,
        input_lengths=lengths,
        targets=torch.cat([it.targets for it in items]),
        target_lengths=torch.tensor([it.targets.numel() for it in items], dtype=torch.long),
        indices=[it.index for it in items],
        are_features=items[0].inputs.dim() == 2,
    )


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one clip's augmentation draws in one epoch."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) & ((1 << 63) - 1)


def ctc_steps_needed(labels: Sequence[int]) -> int:
    """Output steps CTC needs for a label sequence: one per label, plus a blank between two equal labels."""
    return len(labels) + sum(a == b for a, b in itertools.pairwise(labels))


class BucketBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of clips of similar duration, in an order fixed by (seed, epoch), as (index, epoch) keys.

    Shuffled mode: a seeded permutation is cut into pools of `pool_batches` batches; each pool is sorted by
    duration and cut into batches, which are grouped `num_replicas` neighbours at a time into steps, and the
    steps are shuffled. Padding stays small, batches differ between epochs, and under DDP the ranks of one
    step get batches of about the same length, so none waits long for the others. `sort_by_size` gives
    DeepSpeech's fixed shortest-first order instead.

    A batch holds `batch_size` clips, or with `batch_seconds` as many as fit that much padded audio
    (clips x the longest): memory then stays even across batches. Every rank gets the same number of batches
    (the last step is filled by repeating the first), and `start_batch` skips batches already trained when
    resuming mid-epoch.
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int,
        seed: int,
        sort_by_size: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        pool_batches: int = 50,
        batch_seconds: float | None = None,
    ) -> None:
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.seed = seed
        self.sort_by_size = sort_by_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.pool_batches = pool_batches
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Deal the batches of `epoch`, from batch `start_batch` of this rank on."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _cut(self, order: np.ndarray) -> list[list[int]]:
        """Consecutive clips of `order` (sorted by duration) into batches."""
        if self.batch_seconds is None:
            return [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order.tolist():
            longest = max(self.durations[current[0]], self.durations[index]) if current else 0.0
            if current and longest * (len(current) + 1) > self.batch_seconds:
                batches.append(current)
                current = []
            current.append(index)
        return [*batches, current] if current else batches

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches for an epoch, in order, as clip indices."""
        n, replicas = len(self.durations), self.num_replicas
        if self.sort_by_size:
            steps = _group(self._cut(np.argsort(self.durations, kind="stable")), replicas)
        else:
            rng = np.random.default_rng([self.seed, epoch])
            permutation = rng.permutation(n)
            pool = self.batch_size * self.pool_batches
            steps, leftover = [], []
            for start in range(0, n, pool):
                chunk = permutation[start : start + pool]
                batches = self._cut(chunk[np.argsort(self.durations[chunk], kind="stable")])
                whole = len(batches) - len(batches) % replicas
                steps += _group(batches[:whole], replicas)
                # A pool's last batches, its longest, join the other pools' in steps of their own, rather than
                # the pool's shortest (a slow step, and clips trained twice an epoch).
                leftover += batches[whole:]
            leftover.sort(key=lambda batch: float(self.durations[batch].max()))
            steps += _group(leftover, replicas)
            steps = [steps[i] for i in rng.permutation(len(steps))]
        return [step[self.rank] for step in steps]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.epoch_batches(self.epoch)[self.start_batch :]:
            yield [(index, self.epoch) for index in batch]

    def __len__(self) -> int:
        return max(len(self.epoch_batches(self.epoch)) - self.start_batch, 0)


def _group(batches: list[list[int]], size: int) -> list[list[list[int]]]:
    """Neighbouring batches `size` at a time; the last group is filled from the first batches."""
    if not batches:
        return []
    padded = batches + [batches[i % len(batches)] for i in range(-len(batches) % size)]
    return [padded[i : i + size] for i in range(0, len(padded), size)]
