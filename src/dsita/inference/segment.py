"""One VAD segment's way through the model and the decoder, piece by piece as its audio arrives.

Acoustics (`push` samples -> the new logits, `close` -> the rest): `MfccLogits` streams DeepSpeech's MFCCs
into `SegmentLogits`, which runs the recurrent graph in fixed chunks; the conformer's segment graph streams
through `dsita.inference.chunked.WindowedLogits`. Decoding (`feed` logits, `transcript` so far, `finish`):
`dsita.decoding.beam.BeamSegment` advances the beam search on the new frames only; `GreedySegment` keeps
the best label of each frame. A segment fed in pieces of any size gives exactly what it gives whole.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dsita.decoding.greedy import GreedyDecoder
from dsita.decoding.transcript import Transcript, softmax, words_from_alignment
from dsita.inference.features import NumpyContextMfcc

CHUNK_STEPS = 16  # DeepSpeech's n_steps: the model always runs on this many steps at a time

State = tuple[np.ndarray, np.ndarray]  # (c, h), each (1, n_hidden)


class RecurrentModel(Protocol):
    """The part of `SpeechModel` that `SegmentLogits` runs."""

    def initial_state(self) -> State:
        """The state a segment starts from."""
        ...

    def run(self, features: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """(T, n_features) features from `state` -> (T, n_outputs) logits and the state after them."""
        ...


class SegmentAcoustics(Protocol):
    """A segment's samples in, its logits out, as they become computable."""

    def push(self, samples: np.ndarray) -> np.ndarray:
        """More samples -> the logits they make computable (maybe none)."""
        ...

    def close(self) -> np.ndarray:
        """The segment has ended: the logits of the samples still held."""
        ...


class SegmentDecoding(Protocol):
    """A segment's logits in; the transcript of what is known so far, and the final one."""

    def feed(self, logits: np.ndarray) -> None:
        """Decode the next frames' logits."""
        ...

    def transcript(self) -> Transcript:
        """The transcript of what is known so far."""
        ...

    def finish(self) -> Transcript:
        """The segment has ended: its final transcript."""
        ...


class SegmentLogits:
    """The model over one segment's features from a fresh state, run in chunks of CHUNK_STEPS steps (the
    segment's last chunk shorter), however the features arrive.

    Dynamic int8 quantization scales activations per call, so logits depend on how steps are grouped into
    calls; fixing the grouping makes a streamed segment compute exactly what the whole segment computes.
    """

    def __init__(self, model: RecurrentModel, n_features: int, n_outputs: int) -> None:
        self.model = model
        self._state = model.initial_state()
        self._pending = np.zeros((0, n_features), dtype=np.float32)
        self._empty = np.zeros((0, n_outputs), dtype=np.float32)

    def push(self, features: np.ndarray) -> np.ndarray:
        """More steps' features -> the logits of the whole chunks they complete."""
        self._pending = np.concatenate([self._pending, features])
        logits = [self._empty]
        while self._pending.shape[0] >= CHUNK_STEPS:
            logits.append(self._run(self._pending[:CHUNK_STEPS]))
            self._pending = self._pending[CHUNK_STEPS:]
        return np.concatenate(logits)

    def close(self) -> np.ndarray:
        """The segment has ended: the logits of the steps short of a whole chunk."""
        if not self._pending.shape[0]:
            return self._empty
        logits, self._pending = self._run(self._pending), self._pending[:0]
        return logits

    def _run(self, features: np.ndarray) -> np.ndarray:
        logits, self._state = self.model.run(features, self._state)
        return logits


class MfccLogits:
    """DeepSpeech's acoustics of a segment fed as samples: streamed MFCCs into `SegmentLogits`."""

    def __init__(self, model: RecurrentModel, n_outputs: int) -> None:
        self.featurizer = NumpyContextMfcc()
        self.logits = SegmentLogits(model, self.featurizer.n_features, n_outputs)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """More samples -> the logits of the whole chunks their features complete."""
        return self.logits.push(self.featurizer.feed(samples))

    def close(self) -> np.ndarray:
        """The segment has ended: the logits of the remaining features, right context zero-padded."""
        last = self.logits.push(self.featurizer.flush())
        return np.concatenate([last, self.logits.close()])


class GreedySegment:
    """Greedy decoding of a segment as its logits arrive: each frame's best label is found once."""

    def __init__(self, decoder: GreedyDecoder) -> None:
        self.decoder = decoder
        self._labels: list[np.ndarray] = []
        self._probabilities: list[np.ndarray] = []

    def feed(self, logits: np.ndarray) -> None:
        """Record each new frame's best label and its probability."""
        probabilities = softmax(np.asarray(logits, dtype=np.float32))
        best = probabilities.argmax(axis=-1)
        self._labels.append(best)
        self._probabilities.append(probabilities[np.arange(best.size), best])

    def transcript(self) -> Transcript:
        """The words of the best labels so far, with times and confidences."""
        if not self._labels:
            return Transcript("")
        if len(self._labels) > 1:
            self._labels = [np.concatenate(self._labels)]
            self._probabilities = [np.concatenate(self._probabilities)]
        alphabet, step = self.decoder.alphabet, self.decoder.step_seconds
        return words_from_alignment(self._labels[0], self._probabilities[0], alphabet, step)

    def finish(self) -> Transcript:
        """The final transcript: greedy decoding has nothing to close, so `transcript`."""
        return self.transcript()
