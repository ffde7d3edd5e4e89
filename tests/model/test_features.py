"""DeepSpeech 0.9 / TF-style MFCC features and context windows, and the conformer's log-mels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dsita.audio import N_INPUT, N_MFCC, SAMPLE_RATE, load_audio
from dsita.inference.features import NumpyLogMel
from dsita.model.features import ContextMfcc, LogMel, Mfcc, context_windows, n_frames


def reference_mfcc(signal: np.ndarray) -> np.ndarray:
    """TF's audio_spectrogram(magnitude_squared=True) + mfcc(), written as TF's C++ loops, in float64."""
    window, step, fft_size = 512, 320, 512
    n_bins, n_mel, n_mfcc = fft_size // 2 + 1, 40, 26
    hann = [0.5 - 0.5 * math.cos(2 * math.pi * i / window) for i in range(window)]

    def to_mel(hz: float) -> float:
        return 1127.0 * math.log1p(hz / 700.0)

    mel_low, mel_high = to_mel(20.0), to_mel(8000.0)
    spacing = (mel_high - mel_low) / (n_mel + 1)
    centres = [mel_low + spacing * (i + 1) for i in range(n_mel + 1)]
    hz_per_bin = 0.5 * SAMPLE_RATE / (n_bins - 1)
    start, end = int(1.5 + 20.0 / hz_per_bin), int(8000.0 / hz_per_bin)
    band_of, weight_of = [-2] * n_bins, [0.0] * n_bins
    channel = 0
    for i in range(n_bins):
        if start <= i <= end:
            melf = to_mel(i * hz_per_bin)
            while channel < n_mel and centres[channel] < melf:
                channel += 1
            band_of[i] = channel - 1
            if band_of[i] >= 0:
                c = band_of[i]
                weight_of[i] = (centres[c + 1] - melf) / (centres[c + 1] - centres[c])
            else:
                weight_of[i] = (centres[0] - melf) / (centres[0] - mel_low)

    rows = []
    for t in range(max(0, (len(signal) - window) // step + 1)):
        frame = np.zeros(fft_size)
        for i in range(window):
            frame[i] = signal[t * step + i] * hann[i]
        spectrum = np.fft.rfft(frame)
        power = spectrum.real**2 + spectrum.imag**2
        mel = [0.0] * n_mel
        for i in range(start, end + 1):
            magnitude = math.sqrt(power[i])
            weighted = magnitude * weight_of[i]
            if band_of[i] >= 0:
                mel[band_of[i]] += weighted
            if band_of[i] + 1 < n_mel:
                mel[band_of[i] + 1] += magnitude - weighted
        logs = [math.log(max(m, 1e-12)) for m in mel]
        norm = math.sqrt(2.0 / n_mel)
        rows.append(
            [
                sum(norm * math.cos(math.pi / n_mel * k * (j + 0.5)) * logs[j] for j in range(n_mel))
                for k in range(n_mfcc)
            ]
        )
    return np.array(rows, dtype=np.float64).reshape(-1, n_mfcc)


def make_signal(n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    signal = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)
    signal += 0.05 * rng.standard_normal(n)
    signal[1200:2200] = 0.0  # digital silence: exercises the 1e-12 log floor
    return signal


@pytest.mark.parametrize(
    ("samples", "frames"), [(0, 0), (100, 0), (511, 0), (512, 1), (831, 1), (832, 2), (16000, 49)]
)
def test_frame_counts(samples: int, frames: int) -> None:
    assert n_frames(samples) == frames
    assert n_frames(torch.tensor([samples])).item() == frames
    mfcc, lengths = Mfcc()(torch.zeros(1, samples), torch.tensor([samples]))
    assert mfcc.shape == (1, frames, N_MFCC)
    assert lengths.tolist() == [frames]


def test_batch_shapes_and_short_batches() -> None:
    featurizer = ContextMfcc()
    lengths = torch.tensor([16000, 8000, 300])
    features, frame_lengths = featurizer(torch.randn(3, 16000), lengths)
    assert features.shape == (3, 49, N_INPUT)
    assert frame_lengths.tolist() == [49, 24, 0]
    assert featurizer.frame_lengths(lengths).tolist() == [49, 24, 0]
    empty, empty_lengths = featurizer(torch.randn(2, 400))
    assert empty.shape == (2, 0, N_INPUT)
    assert empty_lengths.tolist() == [0, 0]


def test_matches_numpy_reference_float64_and_float32() -> None:
    signal = make_signal()
    expected = reference_mfcc(signal)
    assert expected.shape == (n_frames(len(signal)), N_MFCC)
    got64, _ = Mfcc()(torch.from_numpy(signal)[None])
    assert got64.dtype == torch.float64
    np.testing.assert_allclose(got64[0].numpy(), expected, rtol=0, atol=1e-4)
    got32, _ = Mfcc()(torch.from_numpy(signal).float()[None])
    assert got32.dtype == torch.float32
    # float32 rounding on values up to ~|250| (the silent frames' c0), as TF's float32 output would have
    np.testing.assert_allclose(got32[0].numpy(), expected, rtol=0, atol=5e-4)


def test_pure_tone_peaks_in_its_bin_and_mel_channel() -> None:
    t = torch.arange(8000, dtype=torch.float64) / SAMPLE_RATE
    tone = torch.sin(2 * math.pi * 1000.0 * t)[None]  # 1000 Hz = bin 32 at 31.25 Hz per bin
    mfcc = Mfcc()
    power = mfcc.power_spectrogram(tone)
    assert power.shape == (1, n_frames(8000), 257)
    assert (power[0].argmax(dim=-1) == 32).all()
    mel = power.sqrt() @ mfcc.mel_matrix
    low, high, tone_mel = (1127.0 * math.log1p(hz / 700.0) for hz in (20.0, 8000.0, 1000.0))
    nearest = round((tone_mel - low) / ((high - low) / 41)) - 1  # channel k peaks at low + (k + 1) spacing
    assert (mel[0].argmax(dim=-1) == nearest).all()


def test_padding_does_not_change_an_items_features() -> None:
    rng = np.random.default_rng(1)
    clips = [make_signal(n, seed=n) for n in (5000, 3333, 900)]
    batch = torch.from_numpy(rng.standard_normal((3, 5000)))  # padding is noise, not zeros, on purpose
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = torch.from_numpy(clip)
    lengths = torch.tensor([len(c) for c in clips])
    featurizer = ContextMfcc()
    features, frame_lengths = featurizer(batch, lengths)
    for i, clip in enumerate(clips):
        alone, alone_lengths = featurizer(torch.from_numpy(clip)[None])
        n = int(frame_lengths[i])
        assert n == int(alone_lengths[0]) == n_frames(len(clip))
        torch.testing.assert_close(features[i, :n], alone[0], rtol=0, atol=1e-12)
    mfcc, _ = featurizer.mfcc(batch, lengths)
    for i, n in enumerate(frame_lengths.tolist()):
        assert (mfcc[i, n:] == 0).all()  # what zero-padded DeepSpeech batches held past the end


def test_context_window_ordering() -> None:
    batch, steps, channels, context = 2, 5, 3, 2
    grid = torch.meshgrid(torch.arange(batch), torch.arange(steps), torch.arange(channels), indexing="ij")
    frames = 1000.0 * grid[0] + 10.0 * grid[1] + grid[2] + 1.0  # every value distinct and non-zero
    windows = context_windows(frames, context)
    assert windows.shape == (batch, steps, (2 * context + 1) * channels)
    for b in range(batch):
        for t in range(steps):
            for w in range(2 * context + 1):
                source = t + w - context
                for c in range(channels):
                    expected = frames[b, source, c].item() if 0 <= source < steps else 0.0
                    assert windows[b, t, w * channels + c].item() == expected
    # DeepSpeech's width: 9 frames each side of 26 MFCCs, the centre frame in the middle
    mfcc = torch.randn(1, 30, N_MFCC)
    full = context_windows(mfcc)
    assert full.shape == (1, 30, N_INPUT)
    torch.testing.assert_close(full[0, 15, 9 * N_MFCC : 10 * N_MFCC], mfcc[0, 15])
    torch.testing.assert_close(full[0, 15, :N_MFCC], mfcc[0, 6])
    torch.testing.assert_close(full[0, 15, -N_MFCC:], mfcc[0, 24])


def test_featurizer_has_no_parameters_or_state() -> None:
    featurizer = ContextMfcc()
    assert list(featurizer.parameters()) == []
    assert featurizer.state_dict() == {}


def test_numpy_log_mels_match_torch(test_clips: list[Path]) -> None:
    audio = load_audio(test_clips[0])
    got = NumpyLogMel().features(audio)
    featurizer = LogMel()
    assert featurizer.frame_size == featurizer.n_features == 80
    features, lengths = featurizer(torch.from_numpy(audio)[None])  # float32 input, as training feeds it
    assert features.dtype == torch.float32 and got.shape == features.shape[1:] == (int(lengths[0]), 80)
    np.testing.assert_allclose(got, features[0].numpy(), atol=1e-5, rtol=0)
    # Normalised per channel over the utterance.
    np.testing.assert_allclose(got.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(got.std(axis=0), 1.0, atol=1e-3)


def test_log_mels_ignore_padding() -> None:
    rng = np.random.default_rng(0)
    short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (5_000, 9_123))
    batch = torch.zeros(2, long.size)
    batch[0, : short.size], batch[1] = torch.from_numpy(short), torch.from_numpy(long)
    batch[0, short.size :] = 0.7  # whatever sits in the padding
    features, lengths = LogMel()(batch, torch.tensor([short.size, long.size]))
    assert lengths.tolist() == [1 + (5_000 - 400) // 160, 1 + (9_123 - 400) // 160]
    alone, _ = LogMel()(torch.from_numpy(short)[None])
    torch.testing.assert_close(features[0, : lengths[0]], alone[0], rtol=0, atol=1e-6)
    assert (features[0, lengths[0] :] == 0).all()
