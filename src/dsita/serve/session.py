"""One WebSocket session's recognizer: PCM at the client's rate in, one protocol message out per frame.

The recognizer holds one `Stream` of the model and cuts utterances where the stream cuts its segments: it
runs its own `Segmenter` with the model's VAD options over the same samples and feeds the stream exactly
the pieces it splits, so that when a piece ends a segment the stream has closed that segment too, and its
transcript so far is the finished utterances (VAD cuts depend on the samples only, never on how they were
fed). A finished utterance is sent once as a result; partials cover the utterance still open. The results
of a session, joined, are the transcript `SpeechModel.transcribe` gives for the same 16 kHz samples.

Not thread-safe: the server runs one call at a time per session, on a worker thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import soxr

from dsita.decoding.transcript import Transcript
from dsita.inference.vad import Segmenter
from dsita.serve.protocol import SessionConfig, partial_message, result_message

# The model runs every 16 steps of 20 ms: a partial cannot change in less audio than that.
PARTIAL_SECONDS = 0.32


def open_stream(model: Any, hotwords: dict[str, float]) -> Any:
    """The model's stream, with the session's hot words (compiled once per list and kept by the model's
    decoder, so sessions with the same list share it). A hot word the alphabet cannot spell, or hot words
    with a model that has no scorer, raise a one-line DsitaError: the client's error message."""
    return model.stream(hotwords=hotwords or None)


class Recognizer:
    """A session's stream, resampler and utterance bookkeeping."""

    def __init__(self, model: Any, config: SessionConfig) -> None:
        self.model = model
        self.config = config
        self.rate = int(model.sample_rate)
        self._stream = open_stream(model, config.hotwords)
        self._partial_every = round(PARTIAL_SECONDS * self.rate)
        self._begin(offset=0.0)

    def _begin(self, offset: float) -> None:
        """A fresh utterance bookkeeping; the stream itself starts over after `finish()`."""
        self._segmenter = Segmenter(self.model.options.vad)
        self._resampler = (
            None
            if self.config.sample_rate == self.rate
            else soxr.ResampleStream(self.config.sample_rate, self.rate, 1, dtype="float32")
        )
        self._offset = offset  # seconds of audio before the stream's start
        self._fed = 0  # samples fed to the stream since its start
        self._sent_tokens = 0  # of the stream's transcript, already sent in results
        self._sent_words = 0
        self._since_partial = 0
        self._partial = partial_message(Transcript(""), self.config)

    def accept(self, pcm: bytes) -> str:
        """One frame of 16-bit little-endian PCM (an even number of bytes) -> a partial or a result."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        finished = self._feed(samples)
        if finished is not None:
            return self._result(finished)
        if self._since_partial >= self._partial_every:
            self._since_partial = 0
            self._partial = partial_message(
                self._unsent(self._stream.intermediate(), commit=False), self.config
            )
        return self._partial

    def finish(self) -> str:
        """The rest of the audio's result; the recognizer then starts a new utterance, its times going on."""
        if self._resampler is not None:
            self._feed(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        rest = self._segmenter.flush()
        self._stream.feed(rest)
        self._fed += rest.size
        message = self._result(self._stream.finish())
        self._begin(offset=self._offset + self._fed / self.rate)
        return message

    def _feed(self, samples: np.ndarray) -> Transcript | None:
        """Feed the stream piece by piece; the transcript of the finished utterances if a segment ended."""
        finished = None
        for piece, ends in self._segmenter.split(samples):
            self._stream.feed(piece)
            self._fed += piece.size
            self._since_partial += piece.size
            if ends:
                finished = self._stream.intermediate()  # the open segment is empty now
        return finished

    def _unsent(self, transcript: Transcript, commit: bool) -> Transcript:
        """The part of the stream's transcript not yet sent in a result, placed in the session's time."""
        tokens = transcript.text.split()[self._sent_tokens :]
        words = transcript.words[self._sent_words :]
        if commit:
            self._sent_tokens += len(tokens)
            self._sent_words += len(words)
        unsent = Transcript(" ".join(tokens), words).shifted(self._offset)
        return unsent.itn() if self.config.itn else unsent

    def _result(self, transcript: Transcript) -> str:
        self._since_partial = 0
        self._partial = partial_message(Transcript(""), self.config)
        return result_message(self._unsent(transcript, commit=True), self.config)
