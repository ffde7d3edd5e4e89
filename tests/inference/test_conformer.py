"""What only a conformer package does: whole segments computed torch-free as torch computes them, streaming in
chunked windows of limited context, and word times in its 40 ms steps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.decoding.greedy import greedy_text
from dsita.decoding.transcript import Transcript
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_FP32, RELEASE_ZIP
from dsita.inference.chunked import ChunkOptions, WindowedLogits, output_steps
from dsita.inference.model import InferenceOptions, SpeechModel, load_model
from dsita.inference.vad import VadOptions
from dsita.inference.vad import segments as vad_segments
from dsita.training.checkpoint import load_trained_model
from tests.architectures import N_OUTPUTS


def test_torch_free_inference_computes_what_torch_computes(
    conformer_release: Path, conformer_writer: Path, test_clips: list[Path]
) -> None:
    speech = load_model(conformer_release / RELEASE_FP32, InferenceOptions(use_lm=False))
    assert not speech.streaming and speech.decoding == "greedy"
    model, alphabet = load_trained_model(conformer_writer)
    for clip in test_clips[:3]:
        audio = load_audio(clip)
        with torch.no_grad():
            expected = model(*model.featurizer(torch.from_numpy(audio)[None])).logits[0].numpy()
        got = speech.run_segment(speech.featurizer.features(audio))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert speech.transcribe_segment(audio).text == greedy_text(expected, alphabet) != ""
    assert speech.transcribe(np.zeros(100, dtype=np.float32)).text == ""  # too short for one frame


def test_long_audio_is_cut_in_pauses_and_streamed_in_windows(
    conformer_release: Path, test_clips: list[Path]
) -> None:
    vad = VadOptions(min_pause_s=0.6, min_segment_s=1.0, relax_after_s=6.0, max_segment_s=8.0)
    speech = load_model(conformer_release / RELEASE_ZIP, InferenceOptions(use_lm=False, vad=vad))
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([piece for clip in test_clips[:8] for piece in (load_audio(clip), silence)])
    segments = list(vad_segments([audio], vad))
    assert len(segments) >= 4
    offsets = np.r_[0, np.cumsum([s.size for s in segments])[:-1]] / SAMPLE_RATE
    expected = Transcript.join(
        speech.transcribe_segment(segment).shifted(offset)
        for segment, offset in zip(segments, offsets, strict=True)
    )
    got = speech.transcribe(audio)
    assert got == expected and len(got.words) >= len(segments)
    assert [w.start for w in got.words] == sorted(w.start for w in got.words)

    def streamed(model: SpeechModel, seed: int) -> tuple[Transcript, list[str]]:
        rng, stream, at, partials = np.random.default_rng(seed), model.stream(), 0, []
        while at < audio.size:
            size = int(rng.integers(300, 9000))
            stream.feed(audio[at : at + size])
            partials.append(stream.intermediate().text)
            at += size
        return stream.finish(), partials

    # Windows wider than any segment see whole segments: the stream computes what transcribe() does.
    wide = ChunkOptions(chunk_steps=8, left_steps=1000, right_steps=1000)
    assert (
        streamed(SpeechModel(speech.package, dataclasses.replace(speech.options, chunks=wide)), 0)[0] == got
    )
    # The default windows (2.56 s left, 0.64 s right context): partials as the audio comes, words in order
    # and inside the audio, letters close to the whole segments' (the cost is measured in BENCHMARKS.md).
    windowed, partials = streamed(speech, 1)
    assert windowed.text and windowed != got and sum(map(bool, partials)) > len(partials) // 2
    assert [w.start for w in windowed.words] == sorted(w.start for w in windowed.words)
    assert windowed.words[0].start >= 0 and windowed.words[-1].end <= audio.size / SAMPLE_RATE + 0.04
    assert jiwer.cer(got.text, windowed.text) < 0.5
    assert streamed(speech, 2)[0] == windowed  # however the audio is cut into pieces


def test_stream_windows_compute_each_step_once_from_its_own_window(
    conformer_release: Path, test_clips: list[Path]
) -> None:
    speech = load_model(conformer_release / RELEASE_FP32, InferenceOptions(use_lm=False))
    audio = np.concatenate([load_audio(clip) for clip in test_clips[:3]])
    options = ChunkOptions(chunk_steps=16, left_steps=32, right_steps=8)
    rng, windows, at, logits = np.random.default_rng(0), WindowedLogits(speech, options, N_OUTPUTS), 0, []
    while at < audio.size:
        size = int(rng.integers(100, 6000))
        logits.append(windows.push(audio[at : at + size]))
        at += size
    streamed = np.concatenate([*logits, windows.close()])
    whole = speech.window_logits(audio)
    assert streamed.shape == whole.shape == (output_steps(audio.size), N_OUTPUTS)
    # Chunk 3 (steps 48-63) comes from steps 16-71 computed as a segment of their own: 640 samples a step.
    window = speech.window_logits(audio[16 * 640 : 72 * 640 + 240])
    np.testing.assert_array_equal(streamed[48:64], window[32:48])
    assert not np.allclose(streamed[48:64], whole[48:64])  # the price of limited context
    # A segment no longer than a window is computed as a whole.
    short = audio[: 20 * 640]
    one = WindowedLogits(speech, options, N_OUTPUTS)
    np.testing.assert_array_equal(np.concatenate([one.push(short), one.close()]), speech.window_logits(short))
    with pytest.raises(DsitaError, match="conformer streaming needs chunk_steps >= 1"):
        ChunkOptions(chunk_steps=0)


@pytest.mark.parametrize("use_lm", [False, True])
def test_word_times_count_the_conformers_40_ms_steps(
    conformer_release: Path, test_clips: list[Path], use_lm: bool
) -> None:
    speech = load_model(conformer_release / RELEASE_ZIP, InferenceOptions(use_lm=use_lm, beam_width=16))
    assert speech.step_seconds == pytest.approx(0.04)
    # Logits that say "a" on steps 10 to 12 and blank elsewhere: the word spans steps 10-13, 0.40-0.52 s.
    logits = np.full((30, len(speech.alphabet) + 1), -10.0, dtype=np.float32)
    logits[:, speech.alphabet.blank_index] = 0.0
    logits[10:13, speech.alphabet.blank_index] = -10.0
    logits[10:13, speech.alphabet.encode("a")[0]] = 0.0
    if not use_lm:
        (word,) = speech.decoder.decode(logits).words
        assert (word.word, word.start, word.end) == ("a", pytest.approx(0.40), pytest.approx(0.52))
    # On real audio the last word ends within the clip, and past its first half (20 ms steps would halve it).
    audio = load_audio(test_clips[0])
    words = speech.transcribe(audio).words
    duration = audio.size / SAMPLE_RATE
    assert words and duration / 2 < words[-1].end <= duration + 0.04
