"""What inference returns (text, with each word's start, end and confidence) and the decoder seam.

A `Decoder` turns one segment's (T, n_outputs) logits into a `Transcript` whose times count from the
segment's start. Greedy decoding needs nothing else; beam search with a scorer plugs in behind the same
`decode` method.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dsita.text.alphabet import Alphabet
from dsita.text.itn import itn_text, spans

if TYPE_CHECKING:
    from dsita.decoding.subtitles import Cue, CueOptions


@dataclass(frozen=True)
class Word:
    """A word of a transcript and where it was heard."""

    word: str
    start: float  # seconds: the first frame of its first character
    end: float  # seconds: the end of its last character's frames
    confidence: float  # mean probability of its characters, in [0, 1]


@dataclass(frozen=True)
class Transcript:
    """What was said, and each word with its times and confidence (none for text-only transcripts)."""

    text: str
    words: tuple[Word, ...] = ()

    def shifted(self, seconds: float) -> Transcript:
        """The same transcript with every time `seconds` later (a segment placed in its stream)."""
        words = tuple(replace(w, start=w.start + seconds, end=w.end + seconds) for w in self.words)
        return Transcript(self.text, words)

    @staticmethod
    def join(parts: Iterable[Transcript]) -> Transcript:
        """Consecutive segments' transcripts as one."""
        parts = list(parts)
        text = " ".join(p.text for p in parts if p.text)
        return Transcript(text, tuple(w for p in parts for w in p.words))

    def itn(self) -> Transcript:
        """Spoken numbers, dates, times and money written as digits (`dsita.text.itn`): a rewritten phrase is
        one word from its first word's start to its last word's end, with their lowest confidence."""
        if not self.words:
            return Transcript(itn_text(self.text))
        words: list[Word] = []
        done = 0
        for span in spans([w.word for w in self.words]):
            words.extend(self.words[done : span.start])
            merged = self.words[span.start : span.end]
            confidence = min(w.confidence for w in merged)
            words.append(Word(span.text, merged[0].start, merged[-1].end, confidence))
            done = span.end
        words.extend(self.words[done:])
        return Transcript(" ".join(w.word for w in words), tuple(words))

    def cues(self, options: CueOptions | None = None) -> list[Cue]:
        """The words grouped into subtitle cues, cut at pauses, lines of at most 42 characters
        (`dsita.decoding.subtitles`)."""
        from dsita.decoding.subtitles import CueOptions, cues

        return cues(self, options or CueOptions())

    def to_txt(self) -> str:
        """A cue a line, as `dsita transcribe --output-format txt` writes it."""
        return self._render("txt")

    def to_srt(self) -> str:
        """SubRip subtitles (.srt)."""
        return self._render("srt")

    def to_vtt(self) -> str:
        """WebVTT subtitles (.vtt)."""
        return self._render("vtt")

    def to_tsv(self) -> str:
        """A cue a row: start and end in milliseconds, and the text (whisper's .tsv)."""
        return self._render("tsv")

    def to_json(self) -> str:
        """`to_dict` and the cues as `segments`, as JSON text."""
        return self._render("json")

    def _render(self, output_format: str) -> str:
        from dsita.decoding.subtitles import render

        return render(self, output_format)

    def to_dict(self) -> dict[str, object]:
        """The text and each word's start, end (seconds, 3 decimals) and confidence."""
        words = [
            {
                "word": w.word,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "confidence": round(w.confidence, 4),
            }
            for w in self.words
        ]
        return {"text": self.text, "words": words}


class Decoder(Protocol):
    """What turns one segment's logits into a `Transcript`: the greedy and beam decoders."""

    def decode(self, logits: np.ndarray) -> Transcript:
        """(T, n_outputs) unnormalised logits of one segment, the blank last, to its transcript."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably (max subtracted first)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def words_from_alignment(
    labels: np.ndarray, probabilities: np.ndarray, alphabet: Alphabet, step_seconds: float
) -> Transcript:
    """A frame-by-frame CTC label path (blank = `alphabet.blank_index`) and each frame's label probability
    to words: runs of one label are one character (a blank separates repeats), spaces separate words.
    Frame t spans [t, t + 1) x `step_seconds`, the model's output step."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return Transcript("")
    run_starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    run_ends = np.r_[run_starts[1:], labels.size]
    run_probability = np.maximum.reduceat(np.asarray(probabilities, dtype=np.float64), run_starts)
    words: list[Word] = []
    chars: list[str] = []
    confidences: list[float] = []
    start = end = 0
    for run_start, run_end, probability in zip(run_starts, run_ends, run_probability, strict=True):
        label = int(labels[run_start])
        if label == alphabet.blank_index:
            continue
        char = alphabet.labels[label]
        if char.isspace():
            if chars:
                words.append(_word(chars, confidences, start * step_seconds, end * step_seconds))
            chars, confidences = [], []
            continue
        if not chars:
            start = int(run_start)
        chars.append(char)
        confidences.append(float(probability))
        end = int(run_end)
    if chars:
        words.append(_word(chars, confidences, start * step_seconds, end * step_seconds))
    return Transcript(" ".join(w.word for w in words), tuple(words))


def _word(chars: list[str], confidences: list[float], start: float, end: float) -> Word:
    confidence = sum(confidences) / len(confidences)
    return Word("".join(chars), float(start), float(end), confidence)
