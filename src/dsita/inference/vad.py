"""Energy voice-activity cuts, so that long audio goes through the model in segments of bounded length.

The segmenter sees the stream in 20 ms frames counted from its first sample and decides after each frame
whether the current segment ends there: after a pause (enough quiet frames once something louder was
heard), or, past `relax_after_s`, after a shorter and less quiet dip between words, or at
`max_segment_s` regardless. Cuts fall on frame boundaries and depend only on the samples, never on how
they were fed, so a streamed file and the whole file are cut at the same places.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from dsita.audio import SAMPLE_RATE, STEP_SAMPLES

FRAME = STEP_SAMPLES  # 20 ms
FRAMES_PER_SECOND = SAMPLE_RATE / FRAME


@dataclass(frozen=True)
class VadOptions:
    """Where the segmenter cuts: what counts as quiet, how long a pause must be, and the segment
    lengths between which cuts may (and past which they must) fall.
    """

    quiet_db: float = 35.0  # a frame is quiet this far below the segment's loudest frame...
    floor_db: float = -55.0  # ...or below this level (dB full scale)
    min_pause_s: float = 0.3  # quiet time that ends a segment
    # Segments are cut no shorter than training clips (MAX_SECS, 10 s) need: a cut loses the LSTM's and the
    # LM's context, so clips of training length are never cut.
    min_segment_s: float = 10.0
    relax_after_s: float = 16.0  # from here, one frame `relaxed_db` below the peak is a pause enough
    relaxed_db: float = 20.0
    max_segment_s: float = 25.0  # cut here even in the middle of speech

    def __post_init__(self) -> None:
        if not 0 < self.min_segment_s <= self.relax_after_s <= self.max_segment_s:
            raise ValueError("need 0 < min_segment_s <= relax_after_s <= max_segment_s")


def frame_levels(samples: np.ndarray) -> np.ndarray:
    """dB full scale of each whole 20 ms frame of `samples` (RMS, floored at -120 dB)."""
    frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    power = np.mean(frames * frames, axis=1)
    levels: np.ndarray = 10.0 * np.log10(np.maximum(power, 1e-12))
    return levels


class Segmenter:
    """Splits a stream of mono 16 kHz samples into pieces, marking the pieces that end a segment."""

    def __init__(self, options: VadOptions = VadOptions()) -> None:
        self.options = options
        self._min_pause = max(1, round(options.min_pause_s * FRAMES_PER_SECOND))
        self._min_frames = round(options.min_segment_s * FRAMES_PER_SECOND)
        self._relax_frames = round(options.relax_after_s * FRAMES_PER_SECOND)
        self._max_frames = round(options.max_segment_s * FRAMES_PER_SECOND)
        self._carry = np.zeros(0, dtype=np.float32)  # samples short of a whole frame
        self._new_segment()

    def _new_segment(self) -> None:
        self._frames = 0
        self._peak = -math.inf
        self._quiet_run = 0
        self._voiced = False

    def split(self, samples: np.ndarray) -> list[tuple[np.ndarray, bool]]:
        """The next samples of the stream as (piece, ends_segment) pairs; a partial frame waits for more."""
        samples = np.concatenate([self._carry, np.asarray(samples, dtype=np.float32)])
        levels = frame_levels(samples)
        self._carry = samples[levels.size * FRAME :]
        pieces: list[tuple[np.ndarray, bool]] = []
        piece_start = 0
        for index, level in enumerate(levels):
            if self._ends_segment(float(level)):
                end = (index + 1) * FRAME
                pieces.append((samples[piece_start:end], True))
                piece_start = end
                self._new_segment()
        if piece_start < levels.size * FRAME:
            pieces.append((samples[piece_start : levels.size * FRAME], False))
        return pieces

    def flush(self) -> np.ndarray:
        """The stream has ended: the samples still held back, which end the last segment."""
        rest, self._carry = self._carry, np.zeros(0, dtype=np.float32)
        self._new_segment()
        return rest

    def _ends_segment(self, level: float) -> bool:
        options = self.options
        self._frames += 1
        quiet = level < max(self._peak - options.quiet_db, options.floor_db)
        self._voiced = self._voiced or not quiet
        self._peak = max(self._peak, level)
        self._quiet_run = self._quiet_run + 1 if quiet else 0
        if self._frames >= self._max_frames:
            return True
        if not self._voiced or self._frames < self._min_frames:
            return False
        if self._quiet_run >= self._min_pause:
            return True
        return self._frames >= self._relax_frames and level < self._peak - options.relaxed_db


def segments(blocks: Iterable[np.ndarray], options: VadOptions = VadOptions()) -> Iterator[np.ndarray]:
    """The whole segments of a stream of sample blocks, in order; together they hold every sample once."""
    segmenter = Segmenter(options)
    pieces: list[np.ndarray] = []
    for block in blocks:
        for piece, ends in segmenter.split(block):
            pieces.append(piece)
            if ends:
                yield np.concatenate(pieces)
                pieces = []
    yield np.concatenate([*pieces, segmenter.flush()])
