"""The language model's text: corpus files (plain, .gz, .xz) or the offline Italian default, normalized.

Every line goes through the transcript normalizer, so that the LM and the acoustic model share one alphabet
and one spelling. Sentences of the evaluation sets are dropped, so that evaluation is not flattered.
"""

from __future__ import annotations

import gzip
import lzma
import multiprocessing
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import IO, TypeVar

from dsita.data.csvs import read_csv
from dsita.data.sentences import default_sentences
from dsita.errors import DsitaError
from dsita.progress import Task
from dsita.system import ParentWatch
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import Rejection, normalize

DEFAULT_CORPUS_NAME = "fortunes-it and dsita's extra sentences"
CHUNK_LINES = 2000

# (source index, line number, text); line 0 means "one sentence of the default corpus".
Line = tuple[int, int, str]

Item = TypeVar("Item")
Output = TypeVar("Output")


@dataclass(frozen=True)
class CorpusStats:
    """What went into the LM text: lines read, kept, rejected by the normalizer, excluded as eval lines."""

    sources: tuple[str, ...]
    lines: int
    kept: int
    rejected: int
    excluded: int
    words: int
    first_rejection: str | None


def open_text(path: Path) -> IO[str]:
    """A UTF-8 text file, decompressed when its name ends in .gz or .xz."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _file_lines(index: int, path: Path) -> Iterator[Line]:
    non_blank = 0
    number = 0
    try:
        with open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    non_blank += 1
                    yield index, number, line
    except UnicodeDecodeError:
        raise DsitaError(f"{path}, line {number + 1}: not UTF-8 text") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DsitaError(f"{path}: cannot be read as a {path.suffix or 'text'} file ({exc})") from None
    if non_blank == 0:
        raise DsitaError(f"{path}: the corpus file is empty (expected lines of Italian text)")


def check_files(paths: Sequence[Path] | None) -> None:
    """Raise DsitaError for the first corpus path that is not a file (None: no files to check)."""
    for path in paths or ():
        if not path.is_file():
            raise DsitaError(f"{path}: corpus file not found")


def corpus_lines(paths: Sequence[Path] | None) -> tuple[tuple[str, ...], Iterator[Line]]:
    """Source names and their lines: the files given, or the default Italian corpus when there are none."""
    if not paths:
        sentences = default_sentences()
        return (DEFAULT_CORPUS_NAME,), ((0, 0, s) for s in sentences)
    check_files(paths)

    def lines() -> Iterator[Line]:
        for index, path in enumerate(paths):
            yield from _file_lines(index, path)

    return tuple(str(p) for p in paths), lines()


def evaluation_sentences(csvs: Iterable[Path]) -> frozenset[str]:
    """The transcripts of DeepSpeech CSVs (dev and test), to keep out of the LM text."""
    return frozenset(sample.transcript for csv in csvs for sample in read_csv(csv))


def _normalize_chunk(chunk: list[Line], alphabet: Alphabet) -> list[tuple[int, int, str | Rejection]]:
    return [(index, number, normalize(text, alphabet)) for index, number, text in chunk]


def _chunks(lines: Iterator[Line]) -> Iterator[list[Line]]:
    while chunk := list(islice(lines, CHUNK_LINES)):
        yield chunk


def _map_ahead(
    executor: ProcessPoolExecutor, fn: Callable[[Item], Output], items: Iterator[Item], ahead: int
) -> Iterator[Output]:
    """`executor.map` in order with at most `ahead` tasks in flight (map would read a whole corpus first)."""
    pending: deque[Future[Output]] = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def write_corpus(
    paths: Sequence[Path] | None,
    out: IO[str],
    alphabet: Alphabet,
    exclude: frozenset[str] = frozenset(),
    workers: int = 1,
    progress: Task | None = None,
) -> tuple[CorpusStats, Counter[str]]:
    """Normalize the corpus into `out`, one sentence a line; return its statistics and word counts.
    `progress` counts the lines read."""
    sources, lines = corpus_lines(paths)
    counts: Counter[str] = Counter()
    read = kept = rejected = excluded = 0
    first_rejection: str | None = None
    work = partial(_normalize_chunk, alphabet=alphabet)
    executor: ProcessPoolExecutor | None = None
    if workers > 1:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        executor = ProcessPoolExecutor(workers, mp_context=context, initializer=ParentWatch())
    try:
        chunks = _chunks(lines)
        results = _map_ahead(executor, work, chunks, 4 * workers) if executor else map(work, chunks)
        for chunk in results:
            if progress is not None:
                progress.advance(len(chunk))
            for index, number, result in chunk:
                read += 1
                if isinstance(result, Rejection):
                    rejected += 1
                    if first_rejection is None:
                        where = f"{sources[index]}, line {number}" if number else sources[index]
                        first_rejection = f"{where}: {result.reason}"
                elif result in exclude:
                    excluded += 1
                else:
                    kept += 1
                    words = result.split()
                    counts.update(words)
                    out.write(result + "\n")
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    stats = CorpusStats(sources, read, kept, rejected, excluded, sum(counts.values()), first_rejection)
    if kept == 0:
        raise DsitaError(_no_usable_line(stats))
    return stats, counts


def _no_usable_line(stats: CorpusStats) -> str:
    parts = [f"no usable line in {', '.join(stats.sources)}: {stats.lines} read"]
    if stats.rejected:
        parts.append(f"{stats.rejected} rejected by the normalizer (first: {stats.first_rejection})")
    if stats.excluded:
        parts.append(f"{stats.excluded} excluded as dev/test sentences")
    return ", ".join(parts) + "; expected Italian text that normalizes to the alphabet"


def top_words(counts: Counter[str], top_k: int) -> list[str]:
    """The `top_k` most frequent words; ties keep the order of first appearance."""
    return [word for word, _ in counts.most_common(top_k)]
