"""Speaker and channel augmentation (`dsita.data.augmentation.speaker`, `.channel`): what each transform does
to a synthetic harmonic tone, whose pitch and formant are known, and to real clips of the sample corpus."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dsita.data.augmentation.channel import (
    CODECS,
    MIC_PRESETS,
    CodecRoundTrip,
    add_babble,
    apply_response,
    babble_waveforms,
    band_response,
    channel_waveforms,
    clip,
    codec_round_trip,
    compress,
    mu_law,
    peaking_response,
    random_eq_response,
    resample_round_trip,
    shelf_response,
)
from dsita.data.augmentation.options import CODEC_KBPS, ChannelOptions, SpeakerOptions, parse_codec
from dsita.data.augmentation.speaker import (
    TempoPerturbation,
    change_tempo,
    formant_shift,
    pitch_shift,
    speaker_waveforms,
    time_stretch,
    vtlp,
)
from dsita.data.dataset import SpeechDataset, load_samples, read_wav
from dsita.text.alphabet import Alphabet
from tests.data.test_augment import pad

ITALIAN = Alphabet.italian()
RATE = 16000
F0 = 150.0
FORMANT = 1500.0
SILENCE = 0.25  # seconds before and after the tone


def harmonic_tone(f0: float = F0, seconds: float = 1.0) -> torch.Tensor:
    """A steady vowel-like tone between silences: harmonics of f0 under one Gaussian formant at FORMANT Hz
    (500 Hz wide, over a floor), so f0 and the envelope's peak are both known."""
    time = torch.arange(int(seconds * RATE), dtype=torch.float64) / RATE
    tone = torch.zeros_like(time)
    for k in range(1, int(7500 / f0) + 1):
        amplitude = math.exp(-0.5 * ((k * f0 - FORMANT) / 500) ** 2) + 0.1
        tone += amplitude * torch.sin(2 * math.pi * k * f0 * time + 0.3 * k * k)
    silence = torch.zeros(int(SILENCE * RATE), dtype=torch.float64)
    return (0.3 * torch.cat([silence, tone / tone.abs().max(), silence])).float()


def active(audio: torch.Tensor) -> torch.Tensor:
    """The samples between the first and last 10 ms frame within 10 dB of the loudest."""
    frames = audio[: audio.numel() // 160 * 160].reshape(-1, 160).square().mean(1)
    loud = torch.nonzero(frames > frames.max() / 10).squeeze(1)
    return audio[int(loud[0]) * 160 : (int(loud[-1]) + 1) * 160]


def duration(audio: torch.Tensor) -> float:
    return active(audio).numel() / RATE


def f0_of(audio: torch.Tensor) -> float:
    """f0 from the first autocorrelation peak within 10 % of the highest (60-400 Hz), interpolated."""
    x = active(audio).double()[800:-800]
    x = x - x.mean()
    n = x.numel()
    correlation = torch.fft.irfft(torch.fft.rfft(x, n=2 * n).abs().square())[:n] / torch.arange(n, 0, -1)
    low, high = RATE // 400, RATE // 60
    lags = correlation[low:high]
    peaks = [
        i
        for i in range(1, lags.numel() - 1)
        if lags[i] >= lags[i - 1] and lags[i] > lags[i + 1] and lags[i] > 0.9 * lags.max()
    ]
    lag = peaks[0] + low
    a, b, c = (float(correlation[lag + d]) for d in (-1, 0, 1))
    return RATE / (lag + 0.5 * (a - c) / (a - 2 * b + c))


def formant_of(audio: torch.Tensor) -> float:
    """The envelope's peak: a parabola through the log amplitudes of the harmonics within 450 Hz of the
    strongest (a Gaussian formant is a parabola in log amplitude)."""
    f0 = f0_of(audio)
    x = active(audio).double()
    n = x.numel()
    spectrum = torch.fft.rfft(x * torch.hann_window(n, dtype=torch.float64)).abs()
    harmonics = np.arange(1, int(7000 / f0)) * f0
    amplitudes = np.array(
        [float(spectrum[round(f * n / RATE) - 3 : round(f * n / RATE) + 4].max()) for f in harmonics]
    )
    log_amplitude = np.log(amplitudes)
    near = np.abs(harmonics - harmonics[np.argmax(log_amplitude)]) < 450
    a, b, _ = np.polyfit(harmonics[near], log_amplitude[near], 2)
    return -b / (2 * a)


def spectrogram(audio: torch.Tensor) -> torch.Tensor:
    """Magnitudes of 32 ms frames every 10 ms."""
    return torch.stft(audio, 512, 160, window=torch.hann_window(512), return_complex=True).abs()


def one(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return audio[None], torch.tensor([audio.numel()])


def band_db(before: torch.Tensor, after: torch.Tensor, low: float, high: float) -> float:
    """Change of energy in [low, high) Hz, in dB."""
    frequencies = torch.fft.rfftfreq(before.numel(), 1 / RATE)
    band = (frequencies >= low) & (frequencies < high)
    power = [torch.fft.rfft(x.double()).abs().square()[band].sum() for x in (before, after)]
    return 10 * math.log10(float(power[1] / power[0]))


def snr_db(clean: torch.Tensor, mixed: torch.Tensor) -> float:
    return 10 * math.log10(float(clean.double().square().sum() / (mixed - clean).double().square().sum()))


def assert_padding_zero(out: torch.Tensor, lengths: torch.Tensor) -> None:
    for row, length in enumerate(lengths.tolist()):
        assert not out[row, length:].any()


# --- speaker -----------------------------------------------------------------------------------------------


# Three semitones down, two harmonics of the tone straddle bins of the STFT almost evenly, so which one is a
# peak for the phase locking depends on rounding: the formant comes out 0.4 % high with 2 threads and 3.6 %
# low with one (OMP_NUM_THREADS). The other shifts from -3 to +3 come out the same either way, within 3.2 %.
@pytest.mark.parametrize(("semitones", "formant_tolerance"), [(2.0, 0.03), (-2.0, 0.03), (-3.0, 0.05)])
def test_pitch_shift_moves_f0_and_keeps_the_formant_and_duration(
    semitones: float, formant_tolerance: float
) -> None:
    tone = harmonic_tone()
    out = pitch_shift(*one(tone), torch.tensor([semitones]))[0]
    assert out.shape == tone.shape
    assert f0_of(out) / F0 == pytest.approx(2 ** (semitones / 12), rel=0.005)  # +2: 12.2 % higher
    assert formant_of(out) == pytest.approx(formant_of(tone), rel=formant_tolerance)
    assert duration(out) == pytest.approx(duration(tone), abs=0.02)


@pytest.mark.parametrize("factor", [1.15, 0.87])
def test_formant_shift_moves_the_envelope_and_keeps_f0(factor: float) -> None:
    tone = harmonic_tone()
    out = formant_shift(*one(tone), torch.tensor([factor]))[0]
    assert formant_of(out) / formant_of(tone) == pytest.approx(factor, rel=0.03)
    assert f0_of(out) == pytest.approx(F0, rel=0.005)
    assert duration(out) == pytest.approx(duration(tone), abs=0.02)
    assert out.norm() == pytest.approx(float(tone.norm()), rel=1e-3)  # level kept


@pytest.mark.parametrize("factor", [1.1, 0.9])
def test_vtlp_scales_pitch_and_formant_and_keeps_duration(factor: float) -> None:
    tone = harmonic_tone()
    out = vtlp(*one(tone), torch.tensor([factor]))[0]
    assert out.shape == tone.shape
    assert f0_of(out) / F0 == pytest.approx(factor, rel=0.005)
    assert formant_of(out) / formant_of(tone) == pytest.approx(factor, rel=0.03)
    assert duration(out) == pytest.approx(duration(tone), abs=0.02)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_tempo_divides_the_duration_and_keeps_f0(factor: float) -> None:
    tone = harmonic_tone()
    out = change_tempo(tone, factor)
    assert out.numel() == round(tone.numel() / factor)
    # WSOLA may place the frames at either end up to its 10 ms tolerance off.
    assert duration(out) == pytest.approx(duration(tone) / factor, abs=0.03)
    assert f0_of(out) == pytest.approx(F0, rel=0.005)


def test_phase_vocoder_at_rate_one_gives_the_speech_back(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms[:3])
    same = time_stretch(waveforms, lengths, torch.ones(3))
    torch.testing.assert_close(same, waveforms, atol=1e-4, rtol=0)
    # A barely moved vocal tract keeps the spectrogram (the waveform drifts in phase), up to the smearing of
    # any phase vocoder (the textbook one, without phase locking, gets 0.90-0.96 on these clips).
    near = vtlp(waveforms, lengths, torch.full((3,), 1.002))
    for row, n in enumerate(lengths.tolist()):
        before, after = (spectrogram(x[row, :n]).flatten() for x in (waveforms, near))
        assert torch.corrcoef(torch.stack([before, after]))[0, 1] > 0.88


def test_speaker_variation_on_a_batch_keeps_padding_and_follows_the_seed(
    dev_waveforms: list[torch.Tensor],
) -> None:
    waveforms, lengths = pad(dev_waveforms)
    options = SpeakerOptions(vtlp=1, pitch=1, formant=1)
    out = speaker_waveforms(waveforms, lengths, options, torch.Generator().manual_seed(0))
    assert out.shape == waveforms.shape
    assert_padding_zero(out, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert not torch.equal(out[row, :n], waveforms[row, :n])
        assert out[row, :n].norm() == pytest.approx(float(waveforms[row, :n].norm()), rel=0.1)
    again = speaker_waveforms(waveforms, lengths, options, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    other = speaker_waveforms(waveforms, lengths, options, torch.Generator().manual_seed(1))
    assert not torch.equal(out, other)


def test_speaker_probability_picks_a_share_and_off_draws_nothing(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms * 4)
    state = torch.get_rng_state()
    assert speaker_waveforms(waveforms, lengths, SpeakerOptions(tempo=1.0)) is waveforms
    assert torch.equal(torch.get_rng_state(), state)
    out = speaker_waveforms(waveforms, lengths, SpeakerOptions(formant=0.5), torch.Generator().manual_seed(0))
    changed = sum(not torch.equal(out[row], waveforms[row]) for row in range(len(out)))
    assert 5 <= changed <= 19  # of 24, about half


def test_tempo_perturbation_in_the_dataset_draws_factors_in_the_range(sample_corpus: Path) -> None:
    samples = load_samples([sample_corpus / "dev.csv"], ITALIAN)[:8]
    options = SpeakerOptions(tempo=1.0, tempo_range=(0.8, 1.2))
    dataset = SpeechDataset(samples, ITALIAN, clip_transforms=[TempoPerturbation(options)])
    sizes = [read_wav(s.wav_path).numel() for s in samples]

    def ratios(epoch: int) -> list[float]:
        return [size / dataset[index, epoch].inputs.numel() for index, size in enumerate(sizes)]

    first = ratios(0)
    assert all(0.8 - 1e-3 <= r <= 1.2 + 1e-3 for r in first) and max(first) - min(first) > 0.05
    assert ratios(0) == first and ratios(1) != first  # drawn per clip and epoch


# --- channel: filters --------------------------------------------------------------------------------------


def test_telephone_band_removes_what_is_outside_300_to_3400_hz(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    count = len(dev_waveforms)
    band = ChannelOptions(band_limit=1, band_low_hz=(300, 300), band_high_hz=(3400, 3400))
    out = channel_waveforms(waveforms, lengths, band, torch.Generator().manual_seed(0))
    assert_padding_zero(out, lengths)
    direct = apply_response(
        waveforms,
        lengths,
        lambda f: band_response(f, torch.full((count,), 300.0), torch.full((count,), 3400.0)),
    )
    torch.testing.assert_close(out, direct)
    for row, n in enumerate(lengths.tolist()):
        assert band_db(waveforms[row, :n], out[row, :n], 0, 300) < -20
        assert band_db(waveforms[row, :n], out[row, :n], 3400, 8000) < -20
        assert band_db(waveforms[row, :n], out[row, :n], 400, 3000) == pytest.approx(0, abs=0.5)


def test_8khz_round_trip_removes_the_upper_band_and_keeps_the_rest(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    out = resample_round_trip(waveforms, lengths)
    assert_padding_zero(out, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert band_db(waveforms[row, :n], out[row, :n], 4000, 8000) < -40
        assert band_db(waveforms[row, :n], out[row, :n], 100, 3500) == pytest.approx(0, abs=0.5)


def test_biquads_have_their_gain_at_their_frequency() -> None:
    frequencies = torch.tensor([20.0, 1000.0, 2500.0, 7900.0])
    peak = peaking_response(frequencies, torch.tensor([1000.0]), torch.tensor([6.0]), torch.tensor([2.0]))
    low = shelf_response(frequencies, torch.tensor([200.0]), torch.tensor([-9.0]), high=False)
    high = shelf_response(frequencies, torch.tensor([200.0]), torch.tensor([-9.0]), high=True)
    decibels = [(20 * r[0].log10()).tolist() for r in (peak, low, high)]
    assert decibels[0][1] == pytest.approx(6.0, abs=1e-3) and abs(decibels[0][0]) < 0.1
    assert decibels[1][0] == pytest.approx(-9.0, abs=0.3) and abs(decibels[1][3]) < 0.1
    assert abs(decibels[2][0]) < 0.3 and decibels[2][3] == pytest.approx(-9.0, abs=0.1)


def test_random_eq_filters_speech_by_its_response(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    count = len(dev_waveforms)
    response = random_eq_response(count, 3, 8.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    grid = torch.linspace(100, 7000, 200)
    decibels = 20 * response(grid).log10()
    assert decibels.abs().max() <= 5 * 8.0 and (decibels.max(1).values - decibels.min(1).values > 3).all()
    out = apply_response(waveforms, lengths, response)
    assert_padding_zero(out, lengths)
    # In bands narrow against the response's features, energy changes by the response there.
    for row, n in enumerate(lengths.tolist()):
        for centre in (300.0, 1000.0, 3000.0):
            expected = float(20 * response(torch.tensor([centre]))[row, 0].log10())
            measured = band_db(waveforms[row, :n], out[row, :n], centre * 0.97, centre * 1.03)
            assert measured == pytest.approx(expected, abs=1.0)


def test_microphone_colouration_cuts_the_lowest_band(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    out = channel_waveforms(waveforms, lengths, ChannelOptions(mic=1), torch.Generator().manual_seed(0))
    assert_padding_zero(out, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert band_db(waveforms[row, :n], out[row, :n], 20, 50) < -6  # low cuts at 70 Hz or above
    for preset in MIC_PRESETS.values():
        decibels = 20 * preset.response(torch.tensor([50.0, 1000.0, preset.presence_hz])).log10()[0]
        assert decibels[0] < decibels[1] - 6 and decibels[2] > decibels[1]


# --- channel: coding and levels ----------------------------------------------------------------------------


def lag_of(reference: torch.Tensor, audio: torch.Tensor, search: int = 400) -> int:
    n = 2 * reference.numel()
    correlation = torch.fft.irfft(torch.fft.rfft(audio, n) * torch.fft.rfft(reference, n).conj(), n)
    return int(torch.argmax(torch.cat([correlation[-search:], correlation[: search + 1]]))) - search


@pytest.mark.parametrize("codec", list(CODECS))
def test_codecs_keep_length_and_alignment(dev_waveforms: list[torch.Tensor], codec: str) -> None:
    lowest = f"{codec}:{CODEC_KBPS[codec][0]:g}"  # mp3:8, vorbis:23, opus:6
    for audio in dev_waveforms[:2]:  # two lengths: the delay removed does not depend on the clip
        for spec in (lowest, f"{codec}:32"):
            out = codec_round_trip(audio, *parse_codec(spec))
            assert out.shape == audio.shape and out.dtype == torch.float32
            assert abs(lag_of(audio, out)) <= 1  # within a sample: Opus's 48 kHz core resamples
            correlation = float(torch.dot(audio, out) / (audio.norm() * out.norm()))
            assert correlation > (0.7 if spec == lowest else 0.95), spec
            assert not torch.equal(out, audio)


def test_codec_transform_probability_and_seed(dev_waveforms: list[torch.Tensor]) -> None:
    transform = CodecRoundTrip(ChannelOptions(codec=0.5, codecs=("vorbis:23",)))
    outputs = [
        transform(clip, torch.Generator().manual_seed(seed))
        for seed in range(8)
        for clip in dev_waveforms[:1]
    ]
    changed = sum(not torch.equal(out, dev_waveforms[0]) for out in outputs)
    assert 1 <= changed <= 7
    first = transform(dev_waveforms[0], torch.Generator().manual_seed(3))
    assert torch.equal(first, transform(dev_waveforms[0], torch.Generator().manual_seed(3)))
    state = torch.get_rng_state()
    assert CodecRoundTrip(ChannelOptions())(dev_waveforms[0]) is dev_waveforms[0]
    assert torch.equal(torch.get_rng_state(), state)


def test_mu_law_error_is_within_half_a_step(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, _ = pad(dev_waveforms)
    waveforms = waveforms / waveforms.abs().max()
    out = mu_law(waveforms)
    # Half a step (1/254) in the companded domain, times the expansion's slope at the step's top.
    slope = math.log1p(255) / 255 * (1 + 255 * waveforms.abs()) * 256 ** (1 / 254)
    assert ((out - waveforms).abs() <= slope / 254 + 1e-6).all()
    assert out.unique().numel() <= 255 and not out[waveforms == 0].any()
    assert snr_db(waveforms, out) > 25  # about 38 dB on full-scale speech


def test_clipping_level_is_exact(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    fraction = torch.tensor([0.001, 0.005, 0.01, 0.02, 0.05, 0.1])
    out = clip(waveforms, lengths, fraction)
    assert_padding_zero(out, lengths)
    for row, n in enumerate(lengths.tolist()):
        x, y = waveforms[row, :n], out[row, :n]
        level = float(y.abs().max())
        assert float((x.abs() > level).float().mean()) == pytest.approx(float(fraction[row]), abs=2 / n)
        below = x.abs() <= level
        assert torch.equal(y[below], x[below]) and torch.equal(
            y[~below].abs(), torch.full_like(y[~below], level)
        )


def crest_db(audio: torch.Tensor) -> float:
    return 20 * math.log10(float(audio.abs().max() / audio.square().mean().sqrt()))


def test_compression_lowers_the_crest_factor_and_keeps_the_level(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    count = len(dev_waveforms)
    out = compress(waveforms, lengths, torch.full((count,), -20.0), torch.full((count,), 6.0))
    assert_padding_zero(out, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert crest_db(out[row, :n]) < crest_db(waveforms[row, :n]) - 2
        assert out[row].norm() == pytest.approx(float(waveforms[row].norm()), rel=1e-4)
    # A steady tone has one level throughout: one gain, which the level restoration undoes.
    tone = 0.5 * torch.sin(2 * math.pi * 440 * torch.arange(RATE) / RATE)
    torch.testing.assert_close(compress(*one(tone), torch.tensor([-10.0]), torch.tensor([4.0]))[0], tone)


# --- babble ------------------------------------------------------------------------------------------------


def test_babble_mixes_other_utterances_at_the_snr(dev_waveforms: list[torch.Tensor]) -> None:
    # Each utterance a tone of its own frequency: the babble under one holds the others' tones only.
    count = 8
    frequencies = 200.0 + 150.0 * torch.arange(count)
    n = torch.tensor([12000, 16000, 14000, 16000, 9000, 15000, 16000, 13000])
    time = torch.arange(16000) / RATE
    waveforms = torch.sin(2 * math.pi * frequencies[:, None] * time) * (time * RATE < n[:, None])
    talkers = torch.tensor([3, 4, 5, 6, 7, 7, 3, 5])
    snr = torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0, 3.0, 8.0, 12.0])
    out = add_babble(waveforms, n, talkers, snr, torch.Generator().manual_seed(0))
    assert_padding_zero(out, n)
    for row in range(count):
        length = int(n[row])
        assert snr_db(waveforms[row, :length], out[row, :length]) == pytest.approx(float(snr[row]), abs=0.5)
        spectrum = torch.fft.rfft((out - waveforms)[row, :length]).abs().square()
        power = torch.stack([spectrum[round(float(f) * length / RATE)] for f in frequencies])
        present = power > power.max() / 1000
        assert not present[row] and int(present.sum()) == int(talkers[row])


def test_babble_of_real_clips_follows_the_seed(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms)
    options = ChannelOptions(babble=1, babble_snr_db=(10, 10))
    out = babble_waveforms(waveforms, lengths, options, torch.Generator().manual_seed(0))
    assert torch.equal(out, babble_waveforms(waveforms, lengths, options, torch.Generator().manual_seed(0)))
    assert channel_waveforms(waveforms, lengths, options) is waveforms  # babble is not part of the line
    for row, n in enumerate(lengths.tolist()):
        assert snr_db(waveforms[row, :n], out[row, :n]) == pytest.approx(10, abs=0.5)
    single = add_babble(waveforms[:1], lengths[:1], torch.tensor([5]), torch.tensor([0.0]))
    assert torch.equal(single, waveforms[:1])  # no one else in the batch to babble


# --- the whole channel on a batch --------------------------------------------------------------------------

ALL_CHANNEL = ChannelOptions(
    babble=1, mic=1, clipping=1, compression=1, eq=1, band_limit=1, narrowband=1, mu_law=1
)


def test_channel_on_a_batch_keeps_shape_and_padding_and_follows_the_seed(
    dev_waveforms: list[torch.Tensor],
) -> None:
    waveforms, lengths = pad(dev_waveforms)
    out = channel_waveforms(waveforms, lengths, ALL_CHANNEL, torch.Generator().manual_seed(0))
    assert out.shape == waveforms.shape and out.abs().max() <= 1
    assert_padding_zero(out, lengths)
    assert torch.equal(
        out, channel_waveforms(waveforms, lengths, ALL_CHANNEL, torch.Generator().manual_seed(0))
    )
    assert not torch.equal(
        out, channel_waveforms(waveforms, lengths, ALL_CHANNEL, torch.Generator().manual_seed(1))
    )


def test_channel_probability_picks_a_share_and_off_draws_nothing(dev_waveforms: list[torch.Tensor]) -> None:
    waveforms, lengths = pad(dev_waveforms * 4)
    state = torch.get_rng_state()
    assert channel_waveforms(waveforms, lengths, ChannelOptions(codec=1.0)) is waveforms
    assert torch.equal(torch.get_rng_state(), state)
    out = channel_waveforms(waveforms, lengths, ChannelOptions(mu_law=0.5), torch.Generator().manual_seed(0))
    changed = sum(not torch.equal(out[row], waveforms[row]) for row in range(len(out)))
    assert 5 <= changed <= 19  # of 24, about half


def test_options_reject_impossible_ranges() -> None:
    for bad in (
        {"eq": 1.5},
        {"babble_talkers": (0, 3)},
        {"band_low_hz": (300, 4000)},
        {"codecs": ("flac:16",)},
        {"codecs": ("mp3:4",)},
    ):
        with pytest.raises(ValueError):
            ChannelOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SpeakerOptions(vtlp_range=(0, 1.1))
