"""CTC beam search with KenLM shallow fusion, through flashlight-text. Works on numpy logits; no torch.

Lexicon mode (the default) searches only words of the scorer's vocabulary, spelled in the alphabet: a trie
of spellings, each ending with the space label, which the model uses as word separator (flashlight's
"silence"); the LM is flashlight's C++ KenLM, consulted at word ends. Lexicon-free mode
(`dsita.decoding.lexicon_free`) lets any letter sequence through, 20-30 times slower.

Scores: the acoustic log-probabilities (natural log) plus alpha times KenLM's log10 probability per word,
plus beta per word, plus the boosts of hot words (`dsita.decoding.hot_lexicon`, lexicon mode).

A lexicon search runs incrementally (`SegmentSearch`: flashlight's decode_begin / decode_step / decode_end)
and whole utterances go through the same steps, so a segment fed in pieces gives exactly what it gives in
one piece. Results are read from the best hypothesis alone (`get_best_hypothesis`): its words, and its CTC
path, which places the words in time without aligning the text again.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import kenlm
import numpy as np
from flashlight.lib.text.decoder import (
    CriterionType,
    DecodeResult,
    LexiconDecoder,
    LexiconDecoderOptions,
    SmearingMode,
    Trie,
)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from dsita.decoding.hot_lexicon import HotLexicon, HotScores, build_hot_lexicon
from dsita.decoding.hotwords import hot_words
from dsita.decoding.lexicon_free import UNK, LexiconFreeSearch
from dsita.decoding.transcript import Transcript, words_from_alignment
from dsita.errors import DsitaError
from dsita.lm.scorer import Scorer
from dsita.text.alphabet import Alphabet, UnencodableCharacter

HOT_LEXICONS_KEPT = 8  # compiled hot-word lists kept per decoder: a list used again costs nothing
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


@contextlib.contextmanager
def _kenlm_errors(scorer: Scorer) -> Iterator[None]:
    """KenLM's exceptions on a damaged binary (a multi-line C++ message) as one line naming the file."""
    try:
        yield
    except (RuntimeError, UnicodeDecodeError, OSError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[-1][:300] if lines else type(exc).__name__
        raise DsitaError(f"{scorer.lm_path}: KenLM cannot read it ({detail})") from None


def check_alphabet(scorer: Scorer, alphabet: Alphabet) -> None:
    """Raise DsitaError unless `scorer` was built for `alphabet` and the alphabet has the space label."""
    if scorer.alphabet() != alphabet:
        raise DsitaError(f"{scorer.folder}: the scorer was built for another alphabet than the model's")
    if " " not in alphabet:
        raise DsitaError("beam search needs the space label in the alphabet (the word separator)")


class BeamDecoder:
    """Beam search as a `dsita.decoding.transcript.Decoder`: the best text, with word times from its CTC
    path (steps `step_seconds` apart); `start` decodes a segment incrementally, as it arrives."""

    def __init__(
        self,
        beam: BeamSearchDecoder,
        options: DecoderOptions,
        step_seconds: float,
        hot: HotLexicon | None = None,
    ) -> None:
        self.beam = beam
        self.options = options
        self.step_seconds = step_seconds
        self.hot = hot

    def with_hotwords(self, hotwords: Mapping[str, float] | None) -> BeamDecoder:
        """This decoder with `hotwords` ({"word or phrase": boost}) boosted; none: this decoder."""
        if not hotwords:
            return self
        hot = self.beam.hot_lexicon(hotwords, self.options)
        return BeamDecoder(self.beam, self.options, self.step_seconds, hot)

    def decode(self, logits: np.ndarray) -> Transcript:
        """(T, n_outputs) logits of one segment to its transcript, times from the segment's start."""
        segment = self.start()
        segment.feed(logits)
        return segment.finish()

    def start(self) -> BeamSegment:
        """A new incremental search over one segment, with this decoder's options and hot words."""
        return BeamSegment(self)


class BeamSegment:
    """One segment's search as its logits arrive: `transcript` is the best hypothesis so far (its finished
    words), `finish` closes the beam. Only the new frames are searched at each `feed`."""

    def __init__(self, decoder: BeamDecoder) -> None:
        self.decoder = decoder
        self._search = decoder.beam.search(decoder.options, decoder.hot)
        self._emissions: list[np.ndarray] = []  # log-probabilities, for the words' confidences

    def feed(self, logits: np.ndarray) -> None:
        """Search the next (T, labels + 1) logits of the segment; a DsitaError for a wrong shape."""
        emissions = self.decoder.beam.check_logits(logits)
        if emissions.shape[0]:
            self._emissions.append(emissions)
            self._search.step(emissions)

    def transcript(self) -> Transcript:
        """The best hypothesis so far, with word times and confidences (its finished words only)."""
        return self._words(self._search.best()[1])

    def finish(self) -> Transcript:
        """Close the beam and return the segment's final transcript."""
        return self._words(self._search.end()[1])

    def _words(self, path: np.ndarray) -> Transcript:
        if len(self._emissions) > 1:
            self._emissions = [np.concatenate(self._emissions)]
        if not self._emissions or not path.size:
            return Transcript("")
        emissions = self._emissions[0][: path.size]
        probabilities = np.exp(emissions[np.arange(path.size), path])
        alphabet = self.decoder.beam.alphabet
        return words_from_alignment(path, probabilities, alphabet, self.decoder.step_seconds)


class SegmentSearch:
    """flashlight's lexicon search over one utterance, advanced as its frames arrive.

    `step` searches new frames (log-probabilities) only; `best` reads the best hypothesis so far (its
    finished words: a word is known once the space after it is); `end` adds the closing frame and closes
    the beam. Feeding an utterance in pieces gives the same hypotheses as feeding it whole: flashlight
    searches frame by frame whatever the pieces.
    """

    def __init__(
        self, beam: BeamSearchDecoder, decoder: LexiconDecoder, hot: HotLexicon | None, token_beam: int
    ) -> None:
        self._beam = beam
        self._decoder = decoder
        self._hot = hot
        self._token_beam = token_beam
        self._frames = 0
        self._ended = False
        decoder.decode_begin()

    def step(self, emissions: np.ndarray) -> None:
        """Search the next (T, labels + 1) frames of log-probabilities; RuntimeError after `end`."""
        if self._ended:
            raise RuntimeError("the search has ended")
        if emissions.shape[0]:
            self._run(emissions)
            self._frames += emissions.shape[0]

    def _run(self, emissions: np.ndarray) -> None:
        if self._hot is not None:
            data = self._hot.extend(emissions, self._token_beam)
        else:
            data = np.ascontiguousarray(emissions)
        self._decoder.decode_step(data.ctypes.data, *data.shape)

    def best(self) -> tuple[str, np.ndarray]:
        """The best hypothesis's words so far and its path over the frames (blanks after its last word)."""
        if not self._frames:
            return "", np.zeros(0, dtype=np.int64)
        return self._beam.read_hypothesis(self._decoder.get_best_hypothesis(0), self._frames)

    def end(self) -> tuple[str, np.ndarray]:
        """Close the beam: the last word ends on a closing frame of space; the final words and path."""
        if not self._ended and self._frames:
            closing = np.full((1, len(self._beam.alphabet) + 1), _CLOSING_LOG_PROB, dtype=np.float32)
            closing[0, self._beam.alphabet.labels.index(" ")] = 0.0
            self._run(closing)
            self._decoder.decode_end()
        self._ended = True
        return self.best()


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
        with _kenlm_errors(scorer):
            self._lm = KenLM(str(scorer.lm_path), self._word_dict)
        self._trie: Trie | None = None
        self._kenlm: kenlm.Model | None = None
        self._sorted: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._hot: OrderedDict[tuple[tuple[tuple[str, float], ...], float, float], HotLexicon] = OrderedDict()
        self._hot_lock = threading.Lock()  # server sessions open streams from several threads

    def _lexicon(self) -> Trie:
        if self._trie is None:
            trie = Trie(len(self.alphabet) + 1, self._space)
            start = self._lm.start(False)
            for index, word in enumerate(self._words[1:], start=1):
                try:
                    spelling = [*self.alphabet.encode(word), self._space]
                except UnencodableCharacter as exc:
                    raise DsitaError(f"{self.scorer.vocabulary_path}: {exc}") from None
                trie.insert(spelling, index, self._lm.score(start, index)[1])
            trie.smear(SmearingMode.MAX)
            self._trie = trie
        return self._trie

    def decode(
        self, logits: np.ndarray, options: DecoderOptions, hotwords: Mapping[str, float] | None = None
    ) -> str:
        """The best transcript of one utterance's (T, labels + 1) logits or log-probabilities."""
        return self.decode_path(logits, options, hotwords)[0]

    def check_logits(self, logits: np.ndarray) -> np.ndarray:
        """(T, labels + 1) logits -> their log-probabilities, or a DsitaError naming the shape expected."""
        n_tokens = len(self.alphabet) + 1
        if logits.ndim != 2 or logits.shape[1] != n_tokens:
            raise DsitaError(
                f"logits of shape {logits.shape} do not match the alphabet: expected (T, {n_tokens})"
            )
        return log_softmax(logits)

    def decode_path(
        self, logits: np.ndarray, options: DecoderOptions, hotwords: Mapping[str, float] | None = None
    ) -> tuple[str, np.ndarray]:
        """The best transcript and its CTC alignment: one label per frame (the blank last), for word times."""
        emissions = self.check_logits(logits)
        if options.lexicon_free:
            if hotwords:
                raise DsitaError("hot words need the lexicon search: lexicon-free decoding takes none")
            return self._decode_free(emissions, options)
        search = self.search(options, self.hot_lexicon(hotwords, options) if hotwords else None)
        search.step(emissions)
        return search.end()

    def _decode_free(self, emissions: np.ndarray, options: DecoderOptions) -> tuple[str, np.ndarray]:
        frames = len(emissions)
        if frames == 0:
            return "", np.zeros(0, dtype=np.int64)
        alpha, beta = self._weights(options)
        search = LexiconFreeSearch(self._kenlm_model(), self.alphabet, self._sorted_words(), alpha, beta)
        path = search.decode(emissions, options.beam_width, self._token_beam(options), options.beam_threshold)
        return self._path_text(path), path

    def search(self, options: DecoderOptions, hot: HotLexicon | None = None) -> SegmentSearch:
        """A lexicon search of one utterance, fed its log-probabilities frame by frame (`SegmentSearch`)."""
        if options.lexicon_free:
            raise DsitaError("incremental decoding needs the lexicon search, not lexicon-free mode")
        return SegmentSearch(self, self._lexicon_decoder(options, hot), hot, self._token_beam(options))

    def read_hypothesis(self, result: DecodeResult, frames: int) -> tuple[str, np.ndarray]:
        """A flashlight hypothesis -> its finished words and its path over `frames` frames.

        The path is cut after the frame where its last word was emitted (a letter after it belongs to a
        word not yet finished) and filled with blanks; hot words' extra outputs read as the space.
        """
        words = np.asarray(result.words, dtype=np.int64)
        emitted = np.flatnonzero(words >= 0)
        path = np.full(frames, self._blank, dtype=np.int64)
        if emitted.size:
            # tokens[0] is the start state; tokens[i] is frame i - 1.
            kept = min(int(emitted[-1]), frames)
            path[:kept] = result.tokens[1 : kept + 1]
            path[path > self._blank] = self._space
        return self._path_text(path), path

    def _path_text(self, path: np.ndarray) -> str:
        labels = [token for token, _ in itertools.groupby(path.tolist()) if token != self._blank]
        return " ".join(self.alphabet.decode(labels).split())

    def hot_lexicon(self, hotwords: Mapping[str, float], options: DecoderOptions) -> HotLexicon:
        """The lexicon with `hotwords` ({"word or phrase": boost}) merged in, for these options' alpha and
        beta; the last few lists are kept, so using one again costs nothing."""
        key = (tuple(hotwords.items()), *self._weights(options))
        try:
            with self._hot_lock:
                hot = self._hot.get(key)
        except TypeError:  # a boost that is not a number: hot_words says so
            hot_words(hotwords, self.alphabet)
            raise
        if hot is None:
            scores = HotScores(self._vocabulary_index(), self._unigram, self._phrase_score)
            entries = hot_words(hotwords, self.alphabet)
            hot = build_hot_lexicon(self._lexicon(), entries, self.alphabet, scores, key[1], key[2])
        with self._hot_lock:
            self._hot[key] = hot
            self._hot.move_to_end(key)
            while len(self._hot) > HOT_LEXICONS_KEPT:
                self._hot.popitem(last=False)
        return hot

    def _vocabulary_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {word: i for i, word in enumerate(self._words) if i}
        return self._index

    def _unigram(self, label: int) -> float:
        """The trie's score of a label: its log10 probability after the sentence start (as `_lexicon`)."""
        return float(self._lm.score(self._lm.start(False), label)[1])

    def _phrase_score(self, words: list[str]) -> float:
        """KenLM's log10 probability of `words` in sequence, from no context."""
        model = self._kenlm_model()
        state, total = kenlm.State(), 0.0
        model.NullContextWrite(state)
        for word in words:
            after = kenlm.State()
            total += model.BaseScore(state, word, after)
            state = after
        return total

    def _weights(self, options: DecoderOptions) -> tuple[float, float]:
        alpha = self.scorer.alpha if options.alpha is None else options.alpha
        beta = self.scorer.beta if options.beta is None else options.beta
        return alpha, beta

    def _token_beam(self, options: DecoderOptions) -> int:
        n_tokens = len(self.alphabet) + 1
        return min(options.token_beam or n_tokens, n_tokens)

    def _lexicon_decoder(self, options: DecoderOptions, hot: HotLexicon | None) -> LexiconDecoder:
        alpha, beta = self._weights(options)
        # Each hot column is one more label to try: the token beam grows by as many, so that the search
        # tries the same real labels as without them wherever a hot word could end.
        extra = len(hot.columns) if hot is not None else 0
        lexicon_options = LexiconDecoderOptions(
            beam_size=options.beam_width,
            beam_size_token=self._token_beam(options) + extra,
            beam_threshold=options.beam_threshold,
            lm_weight=alpha,
            word_score=beta,
            unk_score=float("-inf"),
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        trie = hot.trie if hot is not None else self._lexicon()
        return LexiconDecoder(lexicon_options, trie, self._lm, self._space, self._blank, 0, [], False)

    def _sorted_words(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self._words[1:])
        return self._sorted

    def _kenlm_model(self) -> kenlm.Model:
        if self._kenlm is None:
            with _kenlm_errors(self.scorer):
                self._kenlm = kenlm.Model(str(self.scorer.lm_path))
        return self._kenlm
