"""The GPU paths of training, shown on the CPU where they can be, and on CUDA (marked `gpu`) where not.

- One DDP step's ranks get batches of about the same length, so none waits long for the others.
- Checkpoints resume across machines: a CUDA RNG state saved as a list per GPU (older dsita) and a GradScaler
  state from an fp16 run, both resumed where they do not apply (the CPU).
- Augmentation makes no host sync on a GPU: rows picked by masks, not by `nonzero`; SpecAugment draws and
  bounds its masks on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dsita.data.augmentation.options import AugmentOptions
from dsita.data.augmentation.specaugment import SpecAugment
from dsita.data.augmentation.waveform import augment_waveforms
from dsita.data.dataset import BucketBatchSampler
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import LAST, load_checkpoint, save_checkpoint
from dsita.training.loop import TrainOptions, train

ITALIAN = Alphabet.italian()


# --- DDP batches ------------------------------------------------------------------------------------------


def step_spread(steps: list[list[list[int]]], durations: np.ndarray) -> float:
    """Mean over steps of (longest - shortest) padded length among the ranks' batches of one step: how long
    the fastest rank waits for the slowest."""
    return float(np.mean([np.ptp([durations[b].max() for b in step]) for step in steps]))


def test_one_steps_ranks_get_batches_of_about_the_same_length() -> None:
    durations = np.random.default_rng(0).uniform(0.5, 15.0, 4000)
    world, size = 4, 16  # 50-batch pools do not split into steps of 4: each pool has 2 batches left over
    ranks = [
        BucketBatchSampler(durations.tolist(), size, 3, num_replicas=world, rank=r).epoch_batches(0)
        for r in range(world)
    ]
    steps = [list(step) for step in zip(*ranks, strict=True)]
    # Dealing the same batches round-robin after a shuffle, as before: unrelated lengths in one step.
    batches = [b for step in steps for b in step]
    shuffled = [batches[i] for i in np.random.default_rng(1).permutation(len(batches))]
    dealt = [shuffled[i : i + world] for i in range(0, len(shuffled), world)]
    assert step_spread(steps, durations) < 0.15 * step_spread(dealt, durations)
    longest = [max(np.ptp([durations[b].max() for b in step]) for step in steps)]
    assert longest[0] < 0.2 * np.ptp(durations)  # no step pairs a pool's longest batch with its shortest
    clips = [i for b in batches for i in b]
    assert len(clips) - len(set(clips)) < world * size  # only the last step is filled with repeats


# --- resuming across machines -----------------------------------------------------------------------------


def options(corpus: Path, checkpoint_dir: Path, **overrides: object) -> TrainOptions:
    base = TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=checkpoint_dir,
        batch_size=4,
        epochs=2,
        learning_rate=1e-3,
        model_fields={"n_hidden": 16, "dropout": 0.1},
        workers=0,
        max_train_clips=16,
        max_dev_clips=4,
        show_progress=False,
        device="cpu",
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def straight(sample_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The weights of two epochs without a stop."""
    return train(options(sample_corpus, tmp_path_factory.mktemp("straight")), ITALIAN).model.state_dict()


@pytest.mark.parametrize("saved_on", ["two GPUs, older dsita", "an fp16 GPU run"])
def test_a_gpu_runs_checkpoint_resumes_on_the_cpu_exactly(
    sample_corpus: Path, tmp_path: Path, straight: dict[str, torch.Tensor], saved_on: str
) -> None:
    train(options(sample_corpus, tmp_path, epochs=1), ITALIAN)
    checkpoint = load_checkpoint(tmp_path / LAST)
    if saved_on == "two GPUs, older dsita":  # torch.cuda.get_rng_state_all(): one state per visible GPU
        checkpoint["rng"]["cuda"] = [torch.get_rng_state(), torch.get_rng_state()]
    else:  # an enabled GradScaler's state, which a run without one must not load
        checkpoint["scaler"] = {
            "scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
            "_growth_tracker": 7,
        }  # fmt: skip
    save_checkpoint(tmp_path / LAST, checkpoint)
    resumed = train(options(sample_corpus, tmp_path), ITALIAN).model.state_dict()
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_a_cuda_rng_list_of_more_gpus_than_visible_resumes_on_cuda(
    sample_corpus: Path, tmp_path: Path
) -> None:
    cuda = options(sample_corpus, tmp_path, epochs=1, device="cuda")
    train(cuda, ITALIAN)
    checkpoint = load_checkpoint(tmp_path / LAST)
    state = checkpoint["rng"]["cuda"]
    checkpoint["rng"]["cuda"] = [state] * (torch.cuda.device_count() + 2)
    save_checkpoint(tmp_path / LAST, checkpoint)
    result = train(dataclasses.replace(cuda, epochs=2), ITALIAN)
    assert result.epochs_completed == 2


# --- host syncs in augmentation ---------------------------------------------------------------------------


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight utterances of 0.2-0.5 s of tones and noise, zero-padded."""
    rng = np.random.default_rng(seed)
    lengths = torch.tensor(rng.integers(3200, 8000, 8))
    waveforms = torch.zeros(8, int(lengths.max()))
    for row, n in enumerate(lengths.tolist()):
        t = np.arange(n) / 16000
        waveforms[row, :n] = torch.from_numpy(
            0.3 * np.sin(2 * np.pi * 220 * (row + 1) * t) + 0.01 * rng.normal(size=n)
        )
    return waveforms, lengths


ALL = AugmentOptions(noise=1.0, gain=1.0, reverb=1.0, rt60=(0.25, 0.25))  # one response length either way


def test_masks_and_gathered_rows_give_the_same_batch_when_every_row_is_picked() -> None:
    waveforms, lengths = batch()
    gathered = augment_waveforms(
        waveforms, lengths, ALL, generator=torch.Generator().manual_seed(5), masks=False
    )
    masked = augment_waveforms(
        waveforms, lengths, ALL, generator=torch.Generator().manual_seed(5), masks=True
    )
    torch.testing.assert_close(masked, gathered, rtol=1e-5, atol=1e-6)
    assert not torch.equal(masked, waveforms)


@pytest.mark.parametrize("name", ["noise", "gain", "reverb"])
def test_masks_change_the_picked_rows_only_and_keep_the_padding(name: str) -> None:
    waveforms, lengths = batch(1)
    options = AugmentOptions(**{name: 0.5})
    out = augment_waveforms(
        waveforms, lengths, options, generator=torch.Generator().manual_seed(2), masks=True
    )
    changed = [not torch.equal(out[r], waveforms[r]) for r in range(len(lengths))]
    assert 0 < sum(changed) < len(lengths)
    # The same draws pick the same rows either way.
    gathered = augment_waveforms(waveforms, lengths, options, generator=torch.Generator().manual_seed(2))
    assert changed == [not torch.equal(gathered[r], waveforms[r]) for r in range(len(lengths))]
    padding = torch.arange(waveforms.shape[1])[None] >= lengths[:, None]
    assert not out[padding].any()
    if name == "gain":  # nothing drawn inside the transform: the two ways agree exactly
        torch.testing.assert_close(out, gathered)


@pytest.mark.gpu
def test_augmentation_on_cuda_never_waits_for_the_device() -> None:
    waveforms, lengths = batch(2)
    cuda_waveforms, cuda_lengths = waveforms.cuda(), lengths.cuda()
    spec = SpecAugment(26, prob=0.7)
    features = torch.randn(8, 50, 19 * 26, device="cuda")
    frame_lengths = torch.full((8,), 50)  # the trainer's frame lengths are on the CPU
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        augment_waveforms(cuda_waveforms, cuda_lengths, AugmentOptions(noise=0.5, gain=0.5, reverb=0.5))
        masked = spec(features, frame_lengths, torch.Generator().manual_seed(3))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # SpecAugment's draws are the CPU generator's: the same masks as on the CPU.
    on_cpu = spec(features.cpu(), frame_lengths, torch.Generator().manual_seed(3))
    torch.testing.assert_close(masked.cpu(), on_cpu)
