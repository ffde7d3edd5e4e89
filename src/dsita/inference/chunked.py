"""Streaming for a segment graph (the conformer): chunks recomputed over windows with limited right context.

The conformer attends over whole segments and normalises its log-mels over the whole segment, so a stream
cannot carry state from one piece to the next. Instead each chunk of `chunk_steps` output steps is computed
once its `right_steps` of right context have arrived: the window of up to `left_steps` steps before the
chunk, the chunk and its right context is featurised (normalised over the window) and run through the
segment graph as a segment of its own, and the chunk's outputs are kept. When the segment ends, the chunks
left are computed with the right context there is. A segment no longer than one window is computed in one
piece, as `transcribe` computes it. The cost of streaming is the extra compute of the overlapping windows
and the WER lost to shorter attention and per-window normalisation (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dsita.audio import LOG_MEL_STEP_SAMPLES, LOG_MEL_WINDOW_SAMPLES
from dsita.errors import DsitaError
from dsita.inference.features import log_mel_frames

FRAMES_PER_STEP = 4  # the conformer's x4 subsampling: one output step per four 10 ms frames
STEP_SAMPLES = FRAMES_PER_STEP * LOG_MEL_STEP_SAMPLES  # 640 samples, 40 ms
# Samples from a step's first sample to the end of its last frame's window: 3 steps of 160, then 400.
_STEP_TAIL = (FRAMES_PER_STEP - 1) * LOG_MEL_STEP_SAMPLES + LOG_MEL_WINDOW_SAMPLES - STEP_SAMPLES


@dataclass(frozen=True)
class ChunkOptions:
    """Window sizes of conformer streaming, in output steps (40 ms each)."""

    chunk_steps: int = 16  # 0.64 s computed at a time
    left_steps: int = 64  # 2.56 s of left context
    right_steps: int = 16  # 0.64 s of right context: the partials' delay

    def __post_init__(self) -> None:
        if self.chunk_steps < 1 or self.left_steps < 0 or self.right_steps < 0:
            raise DsitaError(
                "conformer streaming needs chunk_steps >= 1 and left_steps, right_steps >= 0, got "
                f"{self.chunk_steps}, {self.left_steps}, {self.right_steps}"
            )


class SegmentRunner(Protocol):
    """What the windows run on: a model's features and its segment graph."""

    def window_logits(self, samples: np.ndarray) -> np.ndarray:
        """Mono samples of one window, featurised as a segment of its own -> its (steps, n_outputs) logits."""
        ...


def output_steps(n_samples: int) -> int:
    """The conformer's output steps for a segment of `n_samples`: ceil(frames / 4)."""
    return -(-log_mel_frames(n_samples) // FRAMES_PER_STEP)


class WindowedLogits:
    """One segment's logits, chunk by chunk, as its samples arrive (`push`), and the rest at its end
    (`close`). Only the samples the next window needs are kept."""

    def __init__(self, runner: SegmentRunner, options: ChunkOptions, n_outputs: int) -> None:
        self.runner = runner
        self.options = options
        self.n_outputs = n_outputs
        self._samples = np.zeros(0, dtype=np.float32)
        self._first = 0  # the segment's sample index of self._samples[0], a multiple of STEP_SAMPLES
        self._done = 0  # output steps computed

    def push(self, samples: np.ndarray) -> np.ndarray:
        """New samples -> the logits of the chunks whose right context is now complete (maybe none)."""
        self._samples = np.concatenate([self._samples, np.asarray(samples, dtype=np.float32)])
        available = self._first + self._samples.size
        chunks = []
        while True:
            end = self._done + self.options.chunk_steps
            if (end + self.options.right_steps) * STEP_SAMPLES + _STEP_TAIL > available:
                break
            chunks.append(self._chunk(end, end + self.options.right_steps))
        return self._joined(chunks)

    def close(self) -> np.ndarray:
        """The segment has ended: the logits of every step not yet computed."""
        total = output_steps(self._first + self._samples.size)
        chunks = []
        while self._done < total:
            chunks.append(self._chunk(min(self._done + self.options.chunk_steps, total), None))
        return self._joined(chunks)

    def _chunk(self, end: int, window_end: int | None) -> np.ndarray:
        """Steps [done, end) from the window of left context, them, and right context up to `window_end`
        (None: the segment's end)."""
        start = max(0, self._done - self.options.left_steps)
        begin = start * STEP_SAMPLES - self._first
        stop = None if window_end is None else window_end * STEP_SAMPLES + _STEP_TAIL - self._first
        logits = self.runner.window_logits(self._samples[begin:stop])
        chunk = logits[self._done - start : end - start]
        self._done = end
        # Keep what the next window's left context starts from.
        keep = max(0, self._done - self.options.left_steps) * STEP_SAMPLES
        if keep > self._first:
            self._samples = self._samples[keep - self._first :]
            self._first = keep
        return chunk

    def _joined(self, chunks: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.zeros((0, self.n_outputs), dtype=np.float32), *chunks])
