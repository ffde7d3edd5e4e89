"""Bucketed batching, collation, lazy loading and on-the-fly augmentation of training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given
from hypothesis import strategies as st

from dsita.data.augmentation.specaugment import SpecAugment
from dsita.data.csvs import Sample, write_csv
from dsita.data.dataset import (
    BucketBatchSampler,
    FeatureCache,
    Item,
    SpeechDataset,
    collate,
    load_samples,
    speed_perturb,
)
from dsita.errors import DsitaError
from dsita.model import build_model, new_model_config
from dsita.text.alphabet import Alphabet


def durations(n: int, seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).uniform(0.5, 10.0, n).tolist()


def test_buckets_cover_every_clip_once_and_are_fixed_by_seed_and_epoch() -> None:
    sampler = BucketBatchSampler(durations(203), batch_size=8, seed=7, pool_batches=5)
    first = sampler.epoch_batches(0)
    flat = sorted(i for b in first for i in b)
    assert flat == list(range(203))
    assert first == BucketBatchSampler(durations(203), 8, seed=7, pool_batches=5).epoch_batches(0)
    assert first != sampler.epoch_batches(1)
    assert first != BucketBatchSampler(durations(203), 8, seed=8, pool_batches=5).epoch_batches(0)


def test_buckets_pad_less_than_random_batches() -> None:
    d = np.array(durations(400))
    bucketed = BucketBatchSampler(d.tolist(), 16, seed=1).epoch_batches(0)
    random = np.random.default_rng(1).permutation(400).reshape(-1, 16)

    def padding(batches: list) -> float:
        return sum(float(d[b].max() * len(b) - d[b].sum()) for b in batches)

    assert padding(bucketed) < 0.25 * padding(list(random))


def test_sort_by_size_is_shortest_first() -> None:
    d = durations(50)
    batches = BucketBatchSampler(d, 4, seed=0, sort_by_size=True).epoch_batches(3)
    flat = [i for b in batches for i in b]
    assert [d[i] for i in flat] == sorted(d)


@given(n=st.integers(1, 120), batch=st.integers(1, 9), world=st.integers(1, 4))
def test_ranks_get_equal_batch_counts_covering_everything(n: int, batch: int, world: int) -> None:
    shards = [
        BucketBatchSampler(durations(n), batch, 3, num_replicas=world, rank=r).epoch_batches(0)
        for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1
    assert {i for s in shards for b in s for i in b} == set(range(n))


def test_start_batch_skips_trained_batches() -> None:
    sampler = BucketBatchSampler(durations(40), 4, seed=2)
    sampler.set_epoch(1, start_batch=3)
    assert list(sampler) == [[(i, 1) for i in batch] for batch in sampler.epoch_batches(1)[3:]]
    assert len(sampler) == 7


@given(lengths=st.lists(st.integers(1, 50), min_size=1, max_size=6), dims=st.sampled_from([(), (3,)]))
def test_collate_pads_and_concatenates_targets(lengths: list[int], dims: tuple[int, ...]) -> None:
    items = [Item(torch.rand(n, *dims) + 0.1, torch.arange(1, n % 5 + 2), i) for i, n in enumerate(lengths)]
    batch = collate(items)
    assert batch.inputs.shape == (len(items), max(lengths), *dims)
    assert batch.input_lengths.tolist() == lengths
    assert batch.are_features == bool(dims)
    for row, item in enumerate(items):
        assert torch.equal(batch.inputs[row, : lengths[row]], item.inputs)
        assert not batch.inputs[row, lengths[row] :].any()
    assert torch.equal(batch.targets, torch.cat([it.targets for it in items]))
    assert batch.target_lengths.tolist() == [it.targets.numel() for it in items]


def write_clip(path: Path, seconds: float, rate: int = 16000) -> Sample:
    audio = 0.1 * np.sin(np.arange(int(seconds * rate)) * 0.05).astype(np.float32)
    sf.write(path, audio, rate, subtype="PCM_16")
    return Sample(path, path.stat().st_size, "ciao", seconds)


def test_dataset_reads_lazily_and_encodes_targets(tmp_path: Path) -> None:
    alphabet = Alphabet.italian()
    samples = [write_clip(tmp_path / f"{i}.wav", 0.5 + i * 0.1) for i in range(3)]
    dataset = SpeechDataset(samples, alphabet)
    (tmp_path / "2.wav").unlink()  # nothing is read up front
    item = dataset[1]
    assert item.inputs.shape == (9600,) and item.inputs.dtype == torch.float32
    assert item.targets.tolist() == alphabet.encode("ciao")


def test_speed_perturbation_changes_duration() -> None:
    audio = torch.rand(16000)
    assert speed_perturb(audio, 1.1).numel() == pytest.approx(16000 / 1.1, abs=2)
    assert speed_perturb(audio, 0.9).numel() == pytest.approx(16000 / 0.9, abs=2)
    assert speed_perturb(audio, 1.0) is audio


def test_unencodable_transcript_names_csv_row_and_character(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "a.wav", 1.0)
    csv_path = tmp_path / "train.csv"
    write_csv(csv_path, [clip, Sample(clip.wav_path, clip.wav_filesize, "prezzo 5", 1.0)])
    with pytest.raises(DsitaError, match=r"train\.csv, row 3: .*'5'"):
        load_samples([csv_path], Alphabet.italian())


FRAMES, COEFFS, CONTEXT = 40, 6, 2
# Each stacked entry holds 1000 + its source frame number, so masked source frames are easy to find.
SOURCE = torch.arange(FRAMES)[:, None] + torch.arange(2 * CONTEXT + 1)[None] - CONTEXT
STACKED = (SOURCE[..., None].float() + 1000).expand(FRAMES, 2 * CONTEXT + 1, COEFFS).reshape(1, FRAMES, -1)


def test_spec_augment_time_mask_hides_source_frames_everywhere_they_appear() -> None:
    augment = SpecAugment(frame_size=COEFFS, freq_masks=0, time_masks=1, max_time_fraction=0.2)
    for seed in range(5):
        out = augment(STACKED, torch.tensor([FRAMES]), torch.Generator().manual_seed(seed))
        zero = (out.reshape(FRAMES, 2 * CONTEXT + 1, COEFFS) == 0).all(dim=-1)
        hidden = sorted({int(s) for s in SOURCE[zero]})
        assert len(hidden) <= 8
        assert hidden == list(range(hidden[0], hidden[0] + len(hidden))) if hidden else True
        assert torch.equal(zero, torch.isin(SOURCE, torch.tensor(hidden, dtype=torch.long)))


def test_spec_augment_frequency_mask_hides_the_same_coefficients_in_every_frame() -> None:
    augment = SpecAugment(frame_size=COEFFS, freq_masks=1, max_freq_fraction=1 / 3, time_masks=0)
    masked_any = False
    for seed in range(5):
        out = augment(STACKED, torch.tensor([FRAMES]), torch.Generator().manual_seed(seed))
        zero = out.reshape(FRAMES * (2 * CONTEXT + 1), COEFFS) == 0
        assert (zero == zero[0]).all()
        assert int(zero[0].sum()) <= 2
        masked_any |= bool(zero.any())
    assert masked_any


def test_feature_cache_leaves_the_model_featurizer_alone(tmp_path: Path) -> None:
    # The cache computes on a CPU copy; changing the model's own featurizer (its device or mode) would
    # split a GPU model across devices.
    model = build_model(new_model_config("deepspeech", 39, n_hidden=16))
    model.train()
    cache = FeatureCache(tmp_path / "cache", model.featurizer)
    assert cache.featurizer is not model.featurizer and model.featurizer.training
