"""Greedy CTC decoding: the best label per step, repeats collapsed, blanks dropped, with word times."""

from __future__ import annotations

import numpy as np

from dsita.decoding.transcript import Transcript, softmax, words_from_alignment
from dsita.text.alphabet import Alphabet


class GreedyDecoder:
    """Best label per frame of a model whose output steps are `step_seconds` apart."""

    def __init__(self, alphabet: Alphabet, step_seconds: float) -> None:
        self.alphabet = alphabet
        self.step_seconds = step_seconds

    def decode(self, logits: np.ndarray) -> Transcript:
        """(T, n_outputs) logits of one segment to its transcript, times from the segment's start."""
        probabilities = softmax(np.asarray(logits, dtype=np.float32))
        best = probabilities.argmax(axis=-1)
        chosen = probabilities[np.arange(best.size), best]
        return words_from_alignment(best, chosen, self.alphabet, self.step_seconds)


def greedy_text(logits: np.ndarray, alphabet: Alphabet) -> str:
    """The greedy transcript's text alone (where no word times are wanted)."""
    return GreedyDecoder(alphabet, step_seconds=1.0).decode(logits).text
