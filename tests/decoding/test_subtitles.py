"""Subtitle cues and transcript files: cut at pauses, two lines of 42 characters at most, as whisper does."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsita.decoding.subtitles import FORMATS, CueOptions, formats, wrap
from dsita.decoding.transcript import Transcript, Word
from dsita.errors import DsitaError

SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d"
WORDS = "la nonna racconta ai nipoti una lunga storia di draghi e di castelli lontani".split()  # noqa: SIM905


def spoken(words: list[str], gaps: list[float], length: float = 0.3) -> Transcript:
    """Words `length` seconds long, each after the gap before it."""
    timed, at = [], 0.0
    for word, gap in zip(words, gaps, strict=True):
        at += gap
        timed.append(Word(word, at, at + length, 0.9))
        at += length
    return Transcript(" ".join(words), tuple(timed))


def seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def test_a_pause_ends_a_cue_and_lines_stay_within_42_characters() -> None:
    words = WORDS * 2  # 28 words without a pause, then a pause, then four more
    transcript = spoken([*words, "e", "poi", "la", "cena"], [0.05] * len(words) + [1.0, 0.05, 0.05, 0.05])
    cues = transcript.cues()
    assert cues[-1].text == "e poi la cena" and cues[-1].start == transcript.words[-4].start
    assert " ".join(c.text for c in cues) == transcript.text  # every word, in order, once
    for cue in cues:
        assert 1 <= len(cue.lines) <= 2 and all(len(line) <= 42 for line in cue.lines), cue
        assert cue.end - cue.start <= 7.0
    # 28 words without a pause: two full cues of two lines (a 15th word would not fit either), then the rest.
    assert [len(c.lines) for c in cues] == [2, 2, 1]
    for cue, following in itertools.pairwise(cues[:2]):
        assert len(wrap([*cue.text.split(), following.text.split()[0]], 42)) > 2


def test_two_lines_are_broken_where_they_come_out_even() -> None:
    assert wrap(["uno", "due"], 42) == ["uno due"]
    lines = wrap(WORDS[:10], 42)
    assert lines == ["la nonna racconta ai nipoti", "una lunga storia di draghi"]
    assert wrap(["a", "x" * 50, "b"], 42) == ["a", "x" * 50, "b"]  # a word too long gets its own line


def test_every_format_in_whispers_conventions() -> None:
    transcript = spoken(["buongiorno", "a", "tutti", "come", "state"], [0.2, 0.1, 0.1, 1.5, 0.1])
    cues = transcript.cues()
    assert [c.text for c in cues] == ["buongiorno a tutti", "come state"]

    assert transcript.to_txt() == "buongiorno a tutti\ncome state\n"
    srt = transcript.to_srt().split("\n\n")
    assert len(srt) == 2
    for number, (block, cue) in enumerate(zip(srt, cues, strict=True), start=1):
        index, times, *lines = block.strip().split("\n")
        assert index == str(number) and lines == list(cue.lines)
        start, end = re.fullmatch(rf"({SRT_TIME}) --> ({SRT_TIME})", times).groups()  # type: ignore[union-attr]
        assert seconds(start) == pytest.approx(cue.start, abs=1e-3)
        assert seconds(end) == pytest.approx(cue.end, abs=1e-3)
    vtt = transcript.to_vtt()
    assert vtt.startswith("WEBVTT\n\n00:00:00.200 --> 00:00:01.300\nbuongiorno a tutti\n\n")
    assert transcript.to_tsv() == "start\tend\ttext\n200\t1300\tbuongiorno a tutti\n2800\t3500\tcome state\n"
    record = json.loads(transcript.to_json())
    assert record["text"] == transcript.text and len(record["words"]) == 5
    assert record["segments"] == [
        {"id": 0, "start": 0.2, "end": 1.3, "text": "buongiorno a tutti"},
        {"id": 1, "start": 2.8, "end": 3.5, "text": "come state"},
    ]


def test_formats_and_a_transcript_without_word_times() -> None:
    assert formats("all") == FORMATS == ("txt", "vtt", "srt", "tsv", "json")
    assert formats("srt") == ("srt",)
    with pytest.raises(DsitaError, match="--output-format docx: expected one of txt, vtt, srt, tsv, json"):
        formats("docx")
    with pytest.raises(DsitaError, match="must be positive"):
        CueOptions(max_line=0)
    untimed = Transcript(" ".join(WORDS))  # e.g. text written by hand: cues untimed, still 42 a line
    assert " ".join(c.text for c in untimed.cues()) == untimed.text
    assert all(len(line) <= 42 for c in untimed.cues() for line in c.lines)
    assert Transcript("").to_srt() == "" and Transcript("").to_vtt() == "WEBVTT\n"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefghilmnopqrstuvzàèéìòù'", min_size=1, max_size=50),
            st.floats(0, 2.5),  # the gap before the word
            st.floats(0.02, 1.5),  # its length
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(10, 60),
)
def test_cues_keep_every_word_in_order_and_their_limits(words: list, max_line: int) -> None:
    timed, at = [], 0.0
    for text, gap, length in words:
        start = at + gap
        at = start + length  # the next gap starts at this very float: `at += gap + length` rounds otherwise
        timed.append(Word(text, start, at, 1.0))
    transcript = Transcript(" ".join(w.word for w in timed), tuple(timed))
    options = CueOptions(max_line=max_line)
    cues = transcript.cues(options)
    assert " ".join(c.text for c in cues) == transcript.text
    by_start = {w.start: w for w in timed}
    for cue, following in itertools.pairwise(cues):
        assert cue.end <= following.start
    for cue in cues:
        single = len(cue.text.split()) == 1
        assert len(cue.lines) <= 2 or single
        assert all(len(line) <= max_line or " " not in line for line in cue.lines)
        assert cue.end - cue.start <= 7.0 or single
        inside = [w for w in timed if cue.start <= w.start and w.end <= cue.end]
        assert [w.word for w in inside] == cue.text.split() and cue.start in by_start
        for before, after in itertools.pairwise(inside):
            assert after.start - before.end < 0.6  # no pause inside a cue
