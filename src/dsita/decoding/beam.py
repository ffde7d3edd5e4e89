"""CTC beam search with KenLM shallow fusion, through flashlight-text. Works on numpy logits; no torch.

Lexicon mode (the default) searches only words of the scorer's vocabulary, spelled in the alphabet: a trie
of spellings, each ending with the space label, which the model uses as word separator (flashlight's
"silence"). Lexicon-free mode lets any letter sequence through and scores each word with KenLM when a space
ends it, so words outside the vocabulary can come out (at the cost of KenLM's <unk>); it calls back into
Python for the LM, which makes it 20-30 times slower (BENCHMARKS.md): give it a smaller beam.

Scores: the acoustic log-probabilities (natural log) plus alpha times KenLM's log10 probability per word,
plus beta per word.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

import kenlm
import numpy as np
from flashlight.lib.text.decoder import (
    LM,
    CriterionType,
    LexiconDecoder,
    LexiconDecoderOptions,
    LexiconFreeDecoder,
    LexiconFreeDecoderOptions,
    LMState,
    SmearingMode,
    Trie,
)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from dsita.decoding.align import align
from dsita.decoding.transcript import Transcript
from dsita.errors import DsitaError
from dsita.lm.scorer import Scorer
from dsita.text.alphabet import Alphabet

UNK = "<unk>"
# The frame appended to every utterance in lexicon mode: only a space, so that the last word, which the model
# does not follow with a space, can end (a word of the trie ends with the space label).
_CLOSING_LOG_PROB = -1e4


@dataclass(frozen=True)
class DecoderOptions:
    """Beam search parameters. alpha/beta None: the scorer's defaults. token_beam None: every label.

    The pruning defaults are pyctcdecode's rule of thumb: drop hypotheses more than 10 (natural log) below
    the best, and try only the 10 likeliest labels per step. On the sample they change WER by at most two
    words in 230 at beam 500 and make decoding about six times faster than no pruning (BENCHMARKS.md).
    """

    beam_width: int = 500
    beam_threshold: float = 10.0
    token_beam: int | None = 10
    alpha: float | None = None
    beta: float | None = None
    lexicon_free: bool = False

    def __post_init__(self) -> None:
        if self.beam_width < 1 or (self.token_beam is not None and self.token_beam < 1):
            raise DsitaError("beam width and token beam must be positive integers")
        if self.beam_threshold <= 0:
            raise DsitaError(f"beam threshold must be a positive number, got {self.beam_threshold}")
        for name in ("alpha", "beta"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise DsitaError(f"{name} must be a non-negative number, got {value}")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, float32 and C-contiguous as flashlight reads them."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    return np.ascontiguousarray(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)))


class _WordLM(LM):
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
        state, ken = LMState(), kenlm.State()
        if start_with_nothing:
            self._model.NullContextWrite(ken)
        else:
            self._model.BeginSentenceWrite(ken)
        self._states = {state: (ken, "", 0.0, 0.0)}  # one utterance at a time: forget the previous one
        return state

    def score(self, state: LMState, token: int) -> tuple[LMState, float]:
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


def check_alphabet(scorer: Scorer, alphabet: Alphabet) -> None:
    if scorer.alphabet() != alphabet:
        raise DsitaError(f"{scorer.folder}: the scorer was built for another alphabet than the model's")
    if " " not in alphabet:
        raise DsitaError("beam search needs the space label in the alphabet (the word separator)")


class BeamDecoder:
    """Beam search as a `dsita.decoding.transcript.Decoder`: the best text, aligned to the frames for word
    times (steps `step_seconds` apart)."""

    def __init__(self, beam: BeamSearchDecoder, options: DecoderOptions, step_seconds: float) -> None:
        self.beam = beam
        self.options = options
        self.step_seconds = step_seconds

    def decode(self, logits: np.ndarray) -> Transcript:
        """(T, n_outputs) logits of one segment to its transcript, times from the segment's start."""
        text = self.beam.decode(logits, self.options)
        return align(logits, text, self.beam.alphabet, self.step_seconds)


class BeamSearchDecoder:
    """One scorer's LM, vocabulary trie and alphabet, loaded once; `decode` takes per-call options."""

    def __init__(self, scorer: Scorer, alphabet: Alphabet) -> None:
        check_alphabet(scorer, alphabet)
        self.scorer = scorer
        self.alphabet = alphabet
        self._space = alphabet.labels.index(" ")
        self._blank = alphabet.blank_index
        self._words = [UNK, *scorer.vocabulary()]
        self._word_dict = Dictionary(self._words)
        self._lm = KenLM(str(scorer.lm_path), self._word_dict)
        self._trie: Trie | None = None
        self._kenlm: kenlm.Model | None = None
        self._sorted: list[str] | None = None

    def _lexicon(self) -> Trie:
        if self._trie is None:
            trie = Trie(len(self.alphabet) + 1, self._space)
            start = self._lm.start(False)
            for index, word in enumerate(self._words[1:], start=1):
                spelling = [*self.alphabet.encode(word), self._space]
                trie.insert(spelling, index, self._lm.score(start, index)[1])
            trie.smear(SmearingMode.MAX)
            self._trie = trie
        return self._trie

    def decode(self, logits: np.ndarray, options: DecoderOptions) -> str:
        """The best transcript of one utterance's (T, labels + 1) logits or log-probabilities."""
        return self.decode_path(logits, options)[0]

    def decode_path(self, logits: np.ndarray, options: DecoderOptions) -> tuple[str, np.ndarray]:
        """The best transcript and its CTC alignment: one label per frame (the blank last), for word times."""
        n_tokens = len(self.alphabet) + 1
        if logits.ndim != 2 or logits.shape[1] != n_tokens:
            raise DsitaError(
                f"logits of shape {logits.shape} do not match the alphabet: expected (T, {n_tokens})"
            )
        frames = len(logits)
        if frames == 0:
            return "", np.zeros(0, dtype=np.int64)
        alpha = self.scorer.alpha if options.alpha is None else options.alpha
        beta = self.scorer.beta if options.beta is None else options.beta
        token_beam = min(options.token_beam or n_tokens, n_tokens)
        emissions = log_softmax(logits)
        if options.lexicon_free:
            # The Python LM must outlive the search: flashlight holds no reference to the Python object.
            word_lm = _WordLM(self._kenlm_model(), self.alphabet, self._sorted_words(), alpha, beta)
            decoder = self._lexicon_free(options, token_beam, word_lm)
            result = decoder.decode(emissions.ctypes.data, *emissions.shape)
        else:
            closing = np.full((1, n_tokens), _CLOSING_LOG_PROB, dtype=np.float32)
            closing[0, self._space] = 0.0
            emissions = np.ascontiguousarray(np.concatenate([emissions, closing]))
            result = self._lexicon_decoder(options, token_beam, alpha, beta).decode(
                emissions.ctypes.data, *emissions.shape
            )
        if not result:
            return "", np.full(frames, self._blank, dtype=np.int64)
        # tokens: the start state, one label per frame decoded, the end state.
        path = np.asarray(result[0].tokens[1 : frames + 1], dtype=np.int64)
        if options.lexicon_free:
            labels = [token for token, _ in itertools.groupby(path.tolist()) if token != self._blank]
            return " ".join(self.alphabet.decode(labels).split()), path
        return " ".join(self._words[i] for i in result[0].words if i > 0), path

    def _lexicon_decoder(
        self, options: DecoderOptions, token_beam: int, alpha: float, beta: float
    ) -> LexiconDecoder:
        lexicon_options = LexiconDecoderOptions(
            beam_size=options.beam_width,
            beam_size_token=token_beam,
            beam_threshold=options.beam_threshold,
            lm_weight=alpha,
            word_score=beta,
            unk_score=float("-inf"),
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        return LexiconDecoder(
            lexicon_options, self._lexicon(), self._lm, self._space, self._blank, 0, [], False
        )

    def _sorted_words(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self._words[1:])
        return self._sorted

    def _kenlm_model(self) -> kenlm.Model:
        if self._kenlm is None:
            self._kenlm = kenlm.Model(str(self.scorer.lm_path))
        return self._kenlm

    def _lexicon_free(self, options: DecoderOptions, token_beam: int, word_lm: _WordLM) -> LexiconFreeDecoder:
        free_options = LexiconFreeDecoderOptions(
            beam_size=options.beam_width,
            beam_size_token=token_beam,
            beam_threshold=options.beam_threshold,
            lm_weight=1.0,  # _WordLM applies alpha and beta itself: these options have no word bonus
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        return LexiconFreeDecoder(free_options, word_lm, self._space, self._blank, [])
