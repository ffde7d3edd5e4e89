"""The lexicon-free beam search: any letter sequence is a word, scored by KenLM when a space ends it.

Words outside the vocabulary can come out (at the cost of KenLM's <unk>). flashlight calls back into Python
for the LM here (`WordLM`) at every label, which makes this mode 20-30 times slower than the lexicon search
(BENCHMARKS.md): give it a smaller beam.
"""

from __future__ import annotations

import bisect

import kenlm
import numpy as np
from flashlight.lib.text.decoder import (
    LM,
    CriterionType,
    LexiconFreeDecoder,
    LexiconFreeDecoderOptions,
    LMState,
)

from dsita.text.alphabet import Alphabet

UNK = "<unk>"


class WordLM(LM):  # type: ignore[misc]  # flashlight-text has no stubs: LM is Any
    """KenLM over words, fed one label at a time, for the lexicon-free search.

    A space (or the end) scores the finished word: alpha times its log10 probability, plus beta. A partial
    word pays the unknown word's cost as soon as no vocabulary word starts with it, so that the beam drops
    misspellings early (pyctcdecode does the same); the finished word's score then gives it back.
    flashlight merges hypotheses by LM state identity; `LMState.child` gives one state per label history.
    """

    def __init__(
        self, model: kenlm.Model, alphabet: Alphabet, sorted_words: list[str], alpha: float, beta: float
    ) -> None:
        LM.__init__(self)
        self._model = model
        self._labels = alphabet.labels
        self._space = alphabet.labels.index(" ")
        self._sorted_words = sorted_words
        self._alpha, self._beta = alpha, beta
        null = kenlm.State()
        model.NullContextWrite(null)
        self._unknown = alpha * model.BaseScore(null, UNK, kenlm.State())
        # LM state -> (KenLM state, partial word, what the partial word was charged, this step's score)
        self._states: dict[LMState, tuple[kenlm.State, str, float, float]] = {}

    def _is_prefix(self, partial: str) -> bool:
        i = bisect.bisect_left(self._sorted_words, partial)
        return i < len(self._sorted_words) and self._sorted_words[i].startswith(partial)

    def _word(self, state: kenlm.State, word: str) -> tuple[kenlm.State, float]:
        out = kenlm.State()
        return out, self._alpha * self._model.BaseScore(state, word, out) + self._beta

    def start(self, start_with_nothing: bool) -> LMState:
        """The root state of a new utterance: after <s>, or no context at all (`start_with_nothing`).

        Forgets the states of the previous utterance.
        """
        state, ken = LMState(), kenlm.State()
        if start_with_nothing:
            self._model.NullContextWrite(ken)
        else:
            self._model.BeginSentenceWrite(ken)
        self._states = {state: (ken, "", 0.0, 0.0)}  # one utterance at a time: forget the previous one
        return state

    def score(self, state: LMState, token: int) -> tuple[LMState, float]:
        """The state after `token` and its score: 0 within a known prefix, the unknown word's cost
        when the partial word leaves the vocabulary, and at a space the finished word's score less
        what it was charged.
        """
        child = state.child(token)
        known = self._states.get(child)
        if known is None:
            ken, word, charged, _ = self._states[state]
            if token != self._space:
                word += self._labels[token]
                step = self._unknown if charged == 0.0 and not self._is_prefix(word) else 0.0
                known = (ken, word, charged + step, step)
            elif word:
                ken, value = self._word(ken, word)
                known = (ken, "", 0.0, value - charged)
            else:
                known = (ken, "", 0.0, 0.0)
            self._states[child] = known
        return child, known[3]

    def finish(self, state: LMState) -> tuple[LMState, float]:
        """The final state and the end score: the pending word (if any) and </s>, less what was charged."""
        ken, word, charged, _ = self._states[state]
        total = -charged
        if word:
            ken, value = self._word(ken, word)
            total += value
        end = kenlm.State()
        total += self._alpha * self._model.BaseScore(ken, "</s>", end)
        child = state.child(-1)
        self._states[child] = (end, "", 0.0, total)
        return child, total


class LexiconFreeSearch:
    """One lexicon-free search with `WordLM` over KenLM `model` (alpha, beta applied by the LM)."""

    def __init__(
        self, model: kenlm.Model, alphabet: Alphabet, sorted_words: list[str], alpha: float, beta: float
    ) -> None:
        self.alphabet = alphabet
        # The Python LM must outlive the search: flashlight holds no reference to the Python object.
        self._lm = WordLM(model, alphabet, sorted_words, alpha, beta)

    def decode(self, emissions: np.ndarray, beam: int, token_beam: int, threshold: float) -> np.ndarray:
        """(T, labels + 1) log-probabilities -> the best path, one label per frame (all blanks if none)."""
        options = LexiconFreeDecoderOptions(
            beam_size=beam,
            beam_size_token=token_beam,
            beam_threshold=threshold,
            lm_weight=1.0,  # WordLM applies alpha and beta itself: these options have no word bonus
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        space, blank = self.alphabet.labels.index(" "), self.alphabet.blank_index
        decoder = LexiconFreeDecoder(options, self._lm, space, blank, [])
        frames = len(emissions)
        result = decoder.decode(np.ascontiguousarray(emissions).ctypes.data, *emissions.shape)
        if not result:
            return np.full(frames, blank, dtype=np.int64)
        # tokens: the start state, one label per frame decoded, the end state.
        return np.asarray(result[0].tokens[1 : frames + 1], dtype=np.int64)
