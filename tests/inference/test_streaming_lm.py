"""Streaming with the LM (the beam search advanced on new frames only) and hot words, through the public API,
on the small release and the sample's test clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_ZIP
from dsita.inference.model import InferenceOptions, SpeechModel, load_model
from dsita.inference.vad import VadOptions
from dsita.inference.vad import segments as vad_segments

BEAM = 50
VAD = VadOptions(min_pause_s=0.6, min_segment_s=1.0, relax_after_s=6.0, max_segment_s=8.0)


@pytest.fixture(scope="module")
def model(small_release: Path) -> SpeechModel:
    return load_model(small_release / RELEASE_ZIP, InferenceOptions(beam_width=BEAM, vad=VAD))


@pytest.fixture(scope="module")
def test_set(sample_corpus: Path) -> list[tuple[np.ndarray, str]]:
    return [(load_audio(s.wav_path), s.transcript) for s in read_csv(sample_corpus / "test.csv")]


def joined(clips: list[np.ndarray], pause_s: float = 1.0) -> np.ndarray:
    silence = np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([piece for clip in clips for piece in (clip, silence)])


def streamed(model: SpeechModel, audio: np.ndarray, seed: int, **kwargs: object) -> tuple[list[str], object]:
    """Feed `audio` in random pieces, reading a partial after each; the partials' texts and the final."""
    rng = np.random.default_rng(seed)
    stream, at, partials = model.stream(**kwargs), 0, []  # type: ignore[arg-type]
    while at < audio.size:
        size = int(rng.integers(200, 12000))
        stream.feed(audio[at : at + size])
        partials.append(stream.intermediate().text)
        at += size
    return partials, stream.finish()


def test_a_stream_with_the_lm_gives_the_whole_files_transcript(
    model: SpeechModel, test_set: list[tuple[np.ndarray, str]]
) -> None:
    audio = joined([clip for clip, _ in test_set[:6]])
    assert len(list(vad_segments([audio], VAD))) >= 3  # several segments, each searched as it arrives
    whole = model.transcribe(audio)
    assert whole.text and model.decoding.startswith("beam search")
    partials, final = streamed(model, audio, seed=0)
    assert final == whole  # text, word times and confidences
    # The last partial misses at most the words the final beam closing has still to end.
    assert whole.text.startswith(partials[-1])
    assert any(partials) and all(
        set(p.split()) <= set(model.decoder.beam.scorer.vocabulary()) for p in partials
    )
    # Segments already finished stay as they were in every later partial.
    first_segment = model.transcribe_segment(next(iter(vad_segments([audio], VAD)))).text
    assert sum(p.startswith(first_segment) for p in partials) >= len(partials) // 3
    # The stream starts over after finish.
    partials, again = streamed(model, audio, seed=1)
    assert again == whole


def test_hot_words_raise_recall_without_false_alarms(
    model: SpeechModel, test_set: list[tuple[np.ndarray, str]]
) -> None:
    clips, references = [c for c, _ in test_set[:16]], [r for _, r in test_set[:16]]
    plain = [model.transcribe(clip).text for clip in clips]
    missed = {
        word
        for reference, text in zip(references, plain, strict=True)
        for word in reference.split()
        if len(word) >= 5 and word not in text.split()
    }
    assert len(missed) >= 10
    hotwords = dict.fromkeys(sorted(missed), 5.0)
    boosted = [model.transcribe(clip, hotwords=hotwords).text for clip in clips]
    found = {
        word
        for reference, text in zip(references, boosted, strict=True)
        for word in reference.split()
        if word in missed and word in text.split()
    }
    assert len(found) >= len(missed) // 4  # recall of the missed words: from 0 to a quarter at least
    vocabulary = set(model.decoder.beam.scorer.vocabulary())
    assert found - vocabulary  # words outside the vocabulary among them, decodable because they are hot
    for reference, before, after in zip(references, plain, boosted, strict=True):
        if not missed & set(reference.split()):
            assert after == before  # a clip that says no hot word is left alone
        assert set(after.split()) - set(before.split()) <= missed | set(reference.split())


def test_a_stream_takes_hot_words_as_transcribe_does(
    model: SpeechModel, test_set: list[tuple[np.ndarray, str]]
) -> None:
    audio = joined([clip for clip, _ in test_set[3:7]], pause_s=0.8)
    hotwords = {"ponte": 5.0, "lungo": 5.0, "teniamo": 6.0, "sistema operativo": 4.0}
    whole = model.transcribe(audio, hotwords=hotwords)
    assert {"ponte", "lungo", "teniamo"} <= set(whole.text.split())
    assert streamed(model, audio, seed=2, hotwords=hotwords)[1] == whole
    assert streamed(model, audio, seed=3)[1] == model.transcribe(audio)  # the next stream has none


def test_hot_words_are_refused_in_one_line_where_they_cannot_work(
    model: SpeechModel, small_release: Path
) -> None:
    with pytest.raises(DsitaError, match="hot word 'жук' cannot be spelled") as error:
        model.stream(hotwords={"жук": 5.0})
    assert "\n" not in str(error.value)
    greedy = load_model(small_release / RELEASE_ZIP, InferenceOptions(use_lm=False))
    with pytest.raises(DsitaError, match="hot words need the beam search with a scorer, and the LM is off"):
        greedy.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), hotwords={"ponte": 5.0})
    assert greedy.stream(hotwords={}).finish().text == ""  # an empty list is no hot words
