"""Training augmentation on real clips of the sample corpus: what each one does to the audio, and that the
trainer applies them to training batches only."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsita.data.augmentation.batch import augment_batch, clip_transforms
from dsita.data.augmentation.options import AugmentOptions, ChannelOptions, SpeakerOptions
from dsita.data.augmentation.specaugment import SpecAugment
from dsita.data.augmentation.waveform import (
    add_noise,
    apply_gain,
    augment_waveforms,
    draw_noise,
    load_noise_bank,
)
from dsita.data.dataset import SpeechDataset, load_samples, read_wav
from dsita.errors import DsitaError
from dsita.model.features import ContextMfcc, LogMel
from dsita.settings import load_settings
from dsita.settings.model import Settings
from dsita.settings.options import TRAIN_KEY_SETTINGS, train_options
from dsita.text.alphabet import Alphabet
from dsita.training.data import load_training_data
from dsita.training.loop import Distributed, TrainOptions, dataset_loss, train

ITALIAN = Alphabet.italian()
RATE = 16000


def pad(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([c.numel() for c in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        batch[row, : clip.numel()] = clip
    return batch, lengths


def snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    return 10 * math.log10(float(clean.double().square().sum() / (noisy - clean).double().square().sum()))


def write_noise_folder(folder: Path) -> Path:
    """A 1 kHz tone as 44.1 kHz stereo WAV (resampled and downmixed on load), shorter than any clip so it
    loops, and a FLAC of the same tone in a subfolder."""
    (folder / "sub").mkdir(parents=True)
    tone = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(int(0.2 * 44100)) / 44100)
    sf.write(folder / "tone.wav", np.stack([tone, tone], axis=1), 44100)
    sf.write(folder / "sub" / "tone.flac", tone, 44100)
    return folder


def test_all_off_returns_the_batch_and_draws_nothing(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    state = torch.get_rng_state()
    assert augment_waveforms(waveforms, lengths, AugmentOptions()) is waveforms
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "options",
    [AugmentOptions(noise=1), AugmentOptions(gain=1), AugmentOptions(reverb=1)],
    ids=["noise", "gain", "reverb"],
)
def test_shape_and_zero_padding_are_kept(dev_waveforms: list[torch.Tensor], options: AugmentOptions) -> None:
    waveforms, lengths = pad(dev_waveforms)
    out = augment_waveforms(waveforms, lengths, options, generator=torch.Generator().manual_seed(0))
    assert out.shape == waveforms.shape
    for row, length in enumerate(lengths.tolist()):
        assert not out[row, length:].any()
        assert not torch.equal(out[row, :length], waveforms[row, :length])


def test_probability_picks_a_share_of_the_utterances(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms * 8)
    out = augment_waveforms(
        waveforms, lengths, AugmentOptions(gain=0.5), None, torch.Generator().manual_seed(0)
    )
    changed = sum(not torch.equal(out[row], waveforms[row]) for row in range(len(out)))
    assert 12 <= changed <= 36  # of 48, about half


def test_speed_perturbation_changes_the_duration_by_the_factor(sample_corpus: Path) -> None:
    samples = load_samples([sample_corpus / "dev.csv"], ITALIAN)[:6]
    dataset = SpeechDataset(samples, ITALIAN, speed_perturb_prob=1.0)
    torch.manual_seed(0)
    ratios = set()
    for index, sample in enumerate(samples):
        ratio = read_wav(sample.wav_path).numel() / dataset[index].inputs.numel()
        assert min(abs(ratio - 0.9), abs(ratio - 1.1)) < 1e-3
        ratios.add(round(ratio, 1))
    assert ratios == {0.9, 1.1}


def test_synthetic_noise_is_mixed_at_the_drawn_snr(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    generator = torch.Generator().manual_seed(0)
    fixed = augment_waveforms(waveforms, lengths, AugmentOptions(noise=1, snr_db=(12, 12)), None, generator)
    ranged = augment_waveforms(waveforms, lengths, AugmentOptions(noise=1, snr_db=(0, 30)), None, generator)
    drawn = []
    for row, n in enumerate(lengths.tolist()):
        assert snr_db(waveforms[row, :n], fixed[row, :n]) == pytest.approx(12, abs=0.5)
        drawn.append(snr_db(waveforms[row, :n], ranged[row, :n]))
    assert all(0 - 0.5 <= s <= 30 + 0.5 for s in drawn) and max(drawn) - min(drawn) > 3


def test_synthetic_noise_is_white_pink_or_brown() -> None:
    noise = draw_noise(48, RATE, None, torch.Generator().manual_seed(0), torch.device("cpu"))
    power = torch.fft.rfft(noise).abs().square()  # 1 Hz bins
    tilt_db = 10 * torch.log10(power[:, 100:500].mean(1) / power[:, 4000:8000].mean(1))
    # 1/f**k power: about 0 dB for white, 14 dB for pink and 28 dB for brown between these bands.
    colours = torch.bucketize(tilt_db, torch.tensor([7.0, 21.0]))
    assert set(colours.tolist()) == {0, 1, 2}


def test_noise_folder_files_are_mixed_at_the_drawn_snr(
    dev_waveforms: list[torch.Tensor], tmp_path: Path
) -> None:
    bank = load_noise_bank(write_noise_folder(tmp_path / "noise"))
    assert bank.sizes.tolist() == [3200, 3200]  # 0.2 s, resampled to 16 kHz
    waveforms, lengths = pad(dev_waveforms * 2)
    options = AugmentOptions(noise=1, snr_db=(10, 10))
    out = augment_waveforms(waveforms, lengths, options, bank, torch.Generator().manual_seed(0))
    tonal = 0
    for row, n in enumerate(lengths.tolist()):
        assert snr_db(waveforms[row, :n], out[row, :n]) == pytest.approx(10, abs=0.5)
        spectrum = torch.fft.rfft(out[row, :n] - waveforms[row, :n]).abs().square()
        peak = round(1000 * n / RATE)
        tonal += float(spectrum[peak - 5 : peak + 6].sum() / spectrum.sum()) > 0.9
    assert 0 < tonal < len(lengths)  # some from the files, the others synthetic


def test_a_bad_noise_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.wav").write_bytes(b"RIFF not really a wav")
    (tmp_path / "silent").mkdir()
    sf.write(tmp_path / "silent" / "zero.wav", np.zeros(1600), RATE)
    for folder, named in [
        ("missing", "missing"),
        ("empty", "empty"),
        ("broken", "bad.wav"),
        ("silent", "zero"),
    ]:
        with pytest.raises(DsitaError) as info:
            load_noise_bank(tmp_path / folder)
        assert named in str(info.value) and "\n" not in str(info.value)


def test_gain_is_exact_in_decibels(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    gains = torch.tensor([-6.0, -3.0, 0.0, 1.5, 3.0, 6.0])
    out = apply_gain(waveforms, gains)
    for row, gain in enumerate(gains.tolist()):
        measured = 10 * math.log10(float(out[row].square().sum() / waveforms[row].square().sum()))
        assert measured == pytest.approx(gain, abs=1e-4)
    drawn = augment_waveforms(
        waveforms, lengths, AugmentOptions(gain=1, gain_db=4), generator=torch.Generator().manual_seed(0)
    )
    factors = drawn.norm(dim=1) / waveforms.norm(dim=1)
    torch.testing.assert_close(drawn, waveforms * factors[:, None])  # one factor per utterance
    assert (20 * factors.log10()).abs().max() <= 4 + 1e-4 and factors.unique().numel() == len(dev_waveforms)


def test_add_noise_measures_power_over_valid_samples_only() -> None:
    # Two identical utterances, the second padded: the same SNR must give the same noise level.
    signal = torch.sin(torch.arange(RATE) * 0.1)
    waveforms = torch.stack([signal, torch.cat([signal[: RATE // 2], torch.zeros(RATE // 2)])])
    lengths = torch.tensor([RATE, RATE // 2])
    noise = torch.ones(2, RATE)
    out = add_noise(waveforms, lengths, noise, torch.tensor([20.0, 20.0]))
    assert (out - waveforms)[0, 0] == pytest.approx(float((out - waveforms)[1, 0]), rel=1e-3)
    assert not out[1, RATE // 2 :].any()


def test_reverb_response_is_direct_sound_then_a_decaying_tail() -> None:
    waveforms, lengths = torch.zeros(2, RATE), torch.tensor([RATE, RATE // 2])
    waveforms[:, 1600] = 1.0
    options = AugmentOptions(reverb=1, rt60=(0.3, 0.3))
    out = augment_waveforms(waveforms, lengths, options, generator=torch.Generator().manual_seed(0))
    assert out[:, :1600].abs().max() < 1e-6 and not out[1, RATE // 2 :].any()  # causal (FFT rounding aside)
    assert (out.abs().argmax(dim=1) == 1600).all()  # the direct sound comes first and is the loudest

    def energy(start_s: float, end_s: float) -> float:
        return float(out[0, 1600 + int(start_s * RATE) : 1600 + int(end_s * RATE)].square().sum())

    # A 0.3 s RT60 loses 60 dB in 0.3 s, so 20 dB between windows 0.1 s apart.
    assert 10 * math.log10(energy(0.05, 0.1) / energy(0.15, 0.2)) == pytest.approx(20, abs=3)


def test_reverb_spreads_speech_into_the_silence_after_it(dev_waveforms: list[torch.Tensor]) -> None:
    # Half a second of silence more after each clip's own, so the tail has room to decay within it.
    speech = [torch.cat([c, torch.zeros(RATE // 2)]) for c in dev_waveforms]
    waveforms, lengths = pad(speech)
    options = AugmentOptions(reverb=1, rt60=(0.3, 0.3))
    out = augment_waveforms(waveforms, lengths, options, generator=torch.Generator().manual_seed(0))
    for row, clip in enumerate(dev_waveforms):
        end, n = int(torch.nonzero(clip.abs() > 0.01).max()) + 1, int(lengths[row])  # end of the speech
        assert not out[row, n:].any()
        assert out[row, :n].norm() == pytest.approx(float(waveforms[row, :n].norm()), rel=1e-4)  # same level
        after = out[row, end:n].square()
        assert float(after[:1600].sum()) > 100 * float(after[4800:6400].sum()) > 0  # a decaying tail
        wet, dry = out[row, :end], clip[:end]
        correlation = torch.dot(wet, dry) / (wet.norm() * dry.norm())
        assert correlation > 0.5  # the direct sound is still there


def test_spec_augment_probability(dev_waveforms: list[torch.Tensor]) -> None:
    featurizer = ContextMfcc()
    waveforms, lengths = pad(dev_waveforms * 4)
    features, frames = featurizer(waveforms, lengths)
    kept = SpecAugment(featurizer.frame_size, prob=0.0)(features, frames)
    assert torch.equal(kept, features)
    masked = SpecAugment(featurizer.frame_size, prob=1.0)(features, frames, torch.Generator().manual_seed(0))
    touched = [not torch.equal(masked[row], features[row]) for row in range(len(features))]
    assert sum(touched) >= len(features) - 2  # a mask drawn with width 0 may leave an utterance alone
    half = SpecAugment(featurizer.frame_size, prob=0.5)(features, frames, torch.Generator().manual_seed(0))
    touched = [not torch.equal(half[row], features[row]) for row in range(len(features))]
    assert 3 <= sum(touched) <= 21  # of 24


# --- SpecAugment widths in time ----------------------------------------------------------------------------


@pytest.mark.parametrize("featurizer", [ContextMfcc(), LogMel()], ids=["mfcc-20ms", "logmel-10ms"])
def test_spec_augment_widths_in_ms_hide_the_same_time_for_either_featurizer(
    dev_waveforms: list[torch.Tensor], featurizer: torch.nn.Module
) -> None:
    waveforms, lengths = pad(dev_waveforms)
    features, frames = featurizer(waveforms, lengths)
    frame_ms = 1000 * featurizer.step_samples / RATE
    augment = SpecAugment.for_featurizer(
        featurizer.frame_size, featurizer.step_samples, 1.0, 1, 160.0, 0, 0.15, RATE
    )
    assert augment.max_time_frames == round(160 / frame_ms)  # 8 MFCC frames or 16 log-mel frames
    widest = 0.0
    for seed in range(30):
        masked = augment(features, frames, torch.Generator().manual_seed(seed))
        for row, n in enumerate(frames.tolist()):
            # Whole steps zeroed (one time mask, no frequency mask): for stacked MFCCs, the steps whose
            # centre frame is hidden.
            frame = masked[row, :n].reshape(n, -1, featurizer.frame_size)
            centre = frame[:, frame.shape[1] // 2]
            hidden = int((centre == 0).all(dim=-1).sum())
            assert hidden <= min(augment.max_time_frames, 0.2 * n)
            widest = max(widest, hidden * frame_ms)
    assert widest >= 0.75 * 160  # the widest masks reach about the 160 ms asked


def test_spec_augment_time_share_caps_a_short_utterance() -> None:
    augment = SpecAugment.for_featurizer(1, 160, 1.0, 1, 1000.0, 0, 0.0, RATE)  # 1 s: 100 frames
    features = torch.ones(1, 40, 1)
    for seed in range(20):
        out = augment(features, torch.tensor([40]), torch.Generator().manual_seed(seed))
        assert int((out == 0).sum()) <= 8  # a fifth of 40 frames, not 100


# --- the whole chain ---------------------------------------------------------------------------------------

EVERYTHING = AugmentOptions(
    speed=1.0, spec_augment=1.0, noise=1.0, gain=1.0, reverb=1.0,
    speaker=SpeakerOptions(vtlp=1.0, pitch=1.0, formant=1.0, tempo=1.0),
    channel=ChannelOptions(
        babble=1.0, mic=1.0, clipping=1.0, compression=1.0, eq=1.0, band_limit=1.0, narrowband=1.0,
        mu_law=1.0, codec=1.0,
    ),
)  # fmt: skip


def test_the_batch_chain_keeps_shape_and_padding_follows_the_seed_and_draws_nothing_when_off(
    dev_waveforms: list[torch.Tensor],
) -> None:
    waveforms, lengths = pad(dev_waveforms)
    state = torch.get_rng_state()
    assert augment_batch(waveforms, lengths, AugmentOptions()) is waveforms
    assert torch.equal(torch.get_rng_state(), state)
    out = augment_batch(waveforms, lengths, EVERYTHING, None, torch.Generator().manual_seed(0))
    assert out.shape == waveforms.shape and torch.isfinite(out).all()
    for row, length in enumerate(lengths.tolist()):
        assert not out[row, length:].any()
        assert not torch.equal(out[row, :length], waveforms[row, :length])
    again = augment_batch(waveforms, lengths, EVERYTHING, None, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_clip_transforms_are_those_turned_on(dev_waveforms: list[torch.Tensor]) -> None:
    assert clip_transforms(AugmentOptions(speed=1.0, noise=1.0)) == []
    both = clip_transforms(EVERYTHING)
    assert [type(t).__name__ for t in both] == ["TempoPerturbation", "CodecRoundTrip"]
    torch.manual_seed(0)
    out = both[0](dev_waveforms[0])
    assert out.numel() != dev_waveforms[0].numel()  # tempo changes the length


# --- in the training loop ----------------------------------------------------------------------------------

ONE_BY_ONE = {
    "speed": AugmentOptions(speed=1.0),
    "spec_augment": AugmentOptions(spec_augment=1.0, spec_time_ms=200.0),
    "noise": AugmentOptions(noise=1.0),
    "gain": AugmentOptions(gain=1.0),
    "reverb": AugmentOptions(reverb=1.0),
    "speaker": AugmentOptions(speaker=SpeakerOptions(vtlp=1.0, pitch=1.0, formant=1.0)),
    "tempo": AugmentOptions(speaker=SpeakerOptions(tempo=1.0)),
    "babble": AugmentOptions(channel=ChannelOptions(babble=1.0)),
    "channel": AugmentOptions(
        channel=ChannelOptions(mic=1.0, clipping=1.0, compression=1.0, eq=1.0, band_limit=1.0, mu_law=1.0)
    ),
    "codec": AugmentOptions(channel=ChannelOptions(codec=1.0)),
    "all": EVERYTHING,
}


def tiny_options(corpus: Path, checkpoint_dir: Path, augment: AugmentOptions) -> TrainOptions:
    # No dropout: the two runs then differ only by what augmentation does to the training batches.
    return TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=checkpoint_dir,
        batch_size=4,
        epochs=1,
        model_fields={"n_hidden": 16, "dropout": 0.0},
        workers=0,
        max_steps_per_epoch=2,
        max_train_clips=8,
        max_dev_clips=8,
        augment=augment,
        show_progress=False,
        device="cpu",  # the CPU even on a GPU machine: the resume test compares runs exactly
    )


def metrics(checkpoint_dir: Path) -> dict[str, float]:
    return json.loads((checkpoint_dir / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def plain_run(sample_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    folder = tmp_path_factory.mktemp("plain")
    train(tiny_options(sample_corpus, folder, AugmentOptions()), ITALIAN)
    return metrics(folder)


@pytest.mark.parametrize("name", list(ONE_BY_ONE))
def test_training_augments_train_batches_and_never_dev(
    sample_corpus: Path, tmp_path: Path, plain_run: dict[str, float], name: str
) -> None:
    noise_dir = write_noise_folder(tmp_path / "noise")
    augment = dataclasses.replace(ONE_BY_ONE[name], noise_dir=noise_dir)
    options = tiny_options(sample_corpus, tmp_path / "run", augment)
    result = train(options, ITALIAN)
    assert metrics(options.checkpoint_dir)["train_loss"] != pytest.approx(plain_run["train_loss"], rel=1e-6)
    # The dev loss the trainer recorded is that of the unaugmented dev clips.
    cpu = torch.device("cpu")
    clean_options = dataclasses.replace(options, augment=AugmentOptions())
    data = load_training_data(clean_options, ITALIAN, result.model, Distributed(), cpu)
    clean = dataset_loss(result.model, data, cpu, None, Distributed())
    assert metrics(options.checkpoint_dir)["dev_loss"] == pytest.approx(clean, rel=1e-6)


def test_resumed_augmented_training_matches_an_uninterrupted_one(sample_corpus: Path, tmp_path: Path) -> None:
    # Every augmentation on, and checkpoint averaging, which runs a dev pass when the first part ends.
    options = dataclasses.replace(
        tiny_options(sample_corpus, tmp_path / "straight", EVERYTHING), epochs=3, average_checkpoints=2
    )
    split = dataclasses.replace(options, checkpoint_dir=tmp_path / "split")
    train(dataclasses.replace(split, epochs=2), ITALIAN)
    resumed = train(split, ITALIAN).model.state_dict()
    for key, value in train(options, ITALIAN).model.state_dict().items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)


def test_a_feature_cache_refuses_audio_augmentation(sample_corpus: Path, tmp_path: Path) -> None:
    for augment in (
        AugmentOptions(reverb=0.5),
        AugmentOptions(speaker=SpeakerOptions(pitch=0.5)),
        AugmentOptions(channel=ChannelOptions(codec=0.5)),
    ):
        options = dataclasses.replace(
            tiny_options(sample_corpus, tmp_path / "run", augment), feature_cache=tmp_path / "f"
        )
        with pytest.raises(DsitaError, match="cannot use a feature cache"):
            train(options, ITALIAN)


def test_settings_fill_the_train_options(tmp_path: Path) -> None:
    environ = {
        "AUG_NOISE": "0.25",
        "AUG_SNR_DB": "0,20",
        "AUG_NOISE_DIR": str(tmp_path),
        "AUG_VTLP": "0.3",
        "AUG_TEMPO_RANGE": "0.8,1.25",
        "AUG_CODECS": "mp3:16, opus:12",
        "AUG_BABBLE": "0.2",
        "AUG_SPEC_TIME_MS": "150",
        "AVERAGE_CHECKPOINTS": "4",
    }
    overrides = {"aug_rt60": "0.2,0.9", "aug_pitch_semitones": "-2,4"}
    settings, _ = load_settings(overrides=overrides, environ=environ)
    options = train_options(settings, [], [], tmp_path)
    assert options.augment == AugmentOptions(
        noise=0.25,
        noise_dir=tmp_path,
        snr_db=(0, 20),
        rt60=(0.2, 0.9),
        spec_time_ms=150.0,
        speaker=SpeakerOptions(vtlp=0.3, tempo_range=(0.8, 1.25), pitch_semitones=(-2.0, 4.0)),
        channel=ChannelOptions(babble=0.2, codecs=("mp3:16", "opus:12")),
    )
    assert options.average_checkpoints == 4
    # Every AUG_* setting reaches the options and the train step's re-run key.
    aug_settings = {name for name in Settings.model_fields if name.startswith("aug_")}
    assert aug_settings <= set(TRAIN_KEY_SETTINGS) and "average_checkpoints" in TRAIN_KEY_SETTINGS


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("AUG_CODECS", "flac:16", "AUG_CODECS must be comma-separated codec:kbps"),
        ("AUG_CODECS", "mp3:4", "AUG_CODECS must be comma-separated codec:kbps"),
        ("AUG_TEMPO_RANGE", "0,1.1", "AUG_TEMPO_RANGE must be MIN,MAX factors above 0"),
        ("AUG_VTLP", "2", "AUG_VTLP must be a probability from 0 to 1"),
    ],
)
def test_a_bad_augmentation_setting_is_one_line(variable: str, value: str, expected: str) -> None:
    with pytest.raises(DsitaError) as info:
        load_settings(environ={variable: value})
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)
