"""CTC forced alignment: where in the frames each character of a given transcript was said.

Beam search returns only text; aligning that text to the logits it came from gives each word's start, end
and confidence, as the greedy path gives them directly. Viterbi over the CTC topology of the text's letters
with two changes: the states between letters accept the space label as well as the blank, and the one
between two words cannot be skipped, so the words come out separated whatever the model emitted there.
"""

from __future__ import annotations

import numpy as np

from dsita.decoding.transcript import Transcript, softmax, words_from_alignment
from dsita.text.alphabet import Alphabet


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        logs: np.ndarray = np.log(x)
    return logs


def align(logits: np.ndarray, text: str, alphabet: Alphabet, step_seconds: float) -> Transcript:
    """`text` (words of the alphabet, single spaces) placed on the (T, n_outputs) logits it was decoded
    from. If the frames are too few to hold it, the transcript has the text and no words."""
    words = text.split()
    if not words or logits.shape[0] == 0:
        return Transcript(" ".join(words))
    probabilities = softmax(np.asarray(logits, dtype=np.float32))
    log_probs = _log(probabilities.astype(np.float64))
    blank, space = alphabet.blank_index, alphabet.labels.index(" ")

    # States: separator, letter, separator, letter, ..., separator (2 L + 1).
    letters = [label for word in words for label in alphabet.encode(word)]
    boundary_after = np.cumsum([len(w) for w in words])[:-1]  # letter counts before each word boundary
    n_states = 2 * len(letters) + 1
    is_boundary = np.zeros(n_states, dtype=bool)
    is_boundary[2 * boundary_after] = True
    state_label = np.full(n_states, blank)
    state_label[1::2] = letters
    emit = log_probs[:, state_label]
    emit[:, 0::2] = np.maximum(log_probs[:, [blank]], log_probs[:, [space]])
    can_skip = np.zeros(n_states, dtype=bool)  # letter s reached from letter s - 2 over an optional blank
    can_skip[3::2] = (np.array(letters[1:]) != np.array(letters[:-1])) & ~is_boundary[2:-1:2]

    frames = log_probs.shape[0]
    score = np.full(n_states, -np.inf)
    score[:2] = emit[0, :2]
    back = np.zeros((frames, n_states), dtype=np.int8)
    for t in range(1, frames):
        step = np.r_[-np.inf, score[:-1]]
        skip = np.where(can_skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)
        choices = np.stack([score, step, skip])
        back[t] = choices.argmax(axis=0)
        score = choices[back[t], np.arange(n_states)] + emit[t]
    state = n_states - 1 if score[-1] >= score[-2] else n_states - 2
    if not np.isfinite(score[state]):
        return Transcript(" ".join(words))

    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(back[t, state])
    labels = np.where(is_boundary[path], space, state_label[path])
    return words_from_alignment(labels, probabilities[np.arange(frames), labels], alphabet, step_seconds)
