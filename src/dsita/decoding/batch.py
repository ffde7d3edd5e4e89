"""Per-step CTC logits to text: the one decoding interface of evaluation, the optimizer and inference.

Without a scorer, decoding is greedy. With one, it is beam search with the KenLM scorer
(`dsita.decoding.beam`),
in worker processes that each load the scorer once and then decode chunks of utterances. No torch here:
logits are numpy arrays.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np

from dsita.decoding.beam import BeamSearchDecoder, DecoderOptions, check_alphabet
from dsita.decoding.greedy import greedy_text
from dsita.lm.scorer import Scorer
from dsita.system import ParentWatch
from dsita.text.alphabet import Alphabet

CHUNKS_PER_WORKER = 4  # a few chunks per worker even out utterances of different lengths


_worker_decoder: BeamSearchDecoder | None = None


def _start_worker(watch: ParentWatch, scorer: Scorer, alphabet: Alphabet) -> None:
    global _worker_decoder
    watch()  # die with the parent: an orphaned decoder would hold its memory and a CPU for nothing
    _worker_decoder = BeamSearchDecoder(scorer, alphabet)


def _decode_chunk(chunk: list[np.ndarray], options: DecoderOptions) -> list[str]:
    assert _worker_decoder is not None
    return [_worker_decoder.decode(logits, options) for logits in chunk]


class BatchDecoder:
    """Decodes utterances: greedily without a scorer, else by beam search in `workers` processes.

    Use it as a context manager, or call `close`, to stop the workers; reuse it across calls (the optimizer
    decodes the same utterances with new alpha and beta in every trial).
    """

    def __init__(self, alphabet: Alphabet, scorer: Scorer | None = None, workers: int = 1) -> None:
        self.alphabet = alphabet
        self.scorer = scorer
        self.workers = max(1, workers)
        self._local: BeamSearchDecoder | None = None
        self._pool: ProcessPoolExecutor | None = None
        if scorer is not None and self.workers == 1:
            self._local = BeamSearchDecoder(scorer, alphabet)
        elif scorer is not None:
            check_alphabet(scorer, alphabet)  # here, not in every worker
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(ParentWatch(), scorer, alphabet),
            )

    def __enter__(self) -> BatchDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the worker processes down, dropping queued work; safe to call twice."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def describe(self, options: DecoderOptions) -> str:
        """The decoding `decode` does with `options`, in words for logs and reports (alpha and beta
        defaulting to the scorer's).
        """
        if self.scorer is None:
            return "greedy"
        alpha = self.scorer.alpha if options.alpha is None else options.alpha
        beta = self.scorer.beta if options.beta is None else options.beta
        mode = "lexicon-free" if options.lexicon_free else "lexicon"
        return f"beam search ({mode}, beam {options.beam_width}, alpha {alpha:.3g}, beta {beta:.3g})"

    def decode(self, logits: Sequence[np.ndarray], options: DecoderOptions | None = None) -> list[str]:
        """One transcript per (T, labels + 1) array, in order."""
        options = options or DecoderOptions()
        if self.scorer is None:
            return [greedy_text(x, self.alphabet) for x in logits]
        if self._local is not None:
            return [self._local.decode(x, options) for x in logits]
        if self._pool is None:
            raise RuntimeError("the decoder is closed")
        size = max(1, -(-len(logits) // (self.workers * CHUNKS_PER_WORKER)))
        chunks = [list(logits[i : i + size]) for i in range(0, len(logits), size)]
        results = self._pool.map(partial(_decode_chunk, options=options), chunks)
        return [text for chunk in results for text in chunk]
