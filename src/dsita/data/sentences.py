"""Sentences for the synthetic corpus: the fortunes-it collection, plain text files, the project's extras.

Readers return human text (punctuation and capitals kept, as Common Voice's `sentence` column has it);
`prepare_sentences` pairs each with its normalized transcript and keeps those fit to be read aloud.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import Rejection, normalize, restore_apostrophe_accents

FORTUNES_DIR = Path("/usr/share/games/fortunes/it")
FORTUNES_INSTALL = "sudo apt-get install fortunes-it"
# `banner` is the package's ASCII-art title page, not prose.
SKIPPED_FORTUNE_FILES = frozenset({"banner"})
EXTRA_SENTENCES_RESOURCE = "resources/extra_sentences.txt"

_ATTRIBUTION = re.compile(r"^\s+--\s")
# A sentence ends at . ! ? … (optionally closed by a quote or bracket) before a capital, an opening mark,
# a list number (`1. `) or a dialogue dash.
_SENTENCE_BREAK = re.compile(
    r"(?:(?<=[.!?…])|(?<=[.!?…][\"»”’')]))\s+(?=[\"«“‘'(]?[A-ZÀ-ÖØ-Þ]|[0-9]+[.)]\s|[-–—]\s)"
    r"|(?<=:)\s+(?=[0-9]+[.)]\s)"  # a list after a colon
)
# A dot after an initial (`S. Ambrogio`) or a title ends an abbreviation, not the sentence.
_ABBREVIATION = re.compile(r"(?:^|[\s(])(?:[A-Z]|Sig|Sigg|Dott|Dr|Prof|Ing|Avv|On|Mr|Mrs|St|pag|vol|cap)\.$")
_DIALOGUE_DASH = re.compile(r"^[-–—]+\s*")
_LEADING_MARK = re.compile(r"^(?:[-–—]+|[0-9]+[.)])\s*")  # a dialogue dash or a list number
# Code, ASCII art, e-mail addresses, emoticons: nobody reads these aloud as the transcript spells them.
_CODE_LIKE = re.compile(r"[#*_|~<>=^{}\[\]\\`@/]|[:;]-?[()]")
# Two capitals in a row: an acronym or a shouted word, which the engines may spell letter by letter.
_CAPITALS_RUN = re.compile(r"[A-ZÀ-ÖØ-Þ]{2}")


@dataclass(frozen=True)
class Sentence:
    """A sentence as written (`text`, the TSV's `sentence`) and its normalized transcript."""

    text: str
    normalized: str


def split_sentences(passage: str) -> list[str]:
    """Split running text into sentences; whitespace collapsed, leading dashes and list numbers dropped."""
    pieces: list[str] = []
    for piece in _SENTENCE_BREAK.split(" ".join(passage.split())):
        if pieces and _ABBREVIATION.search(pieces[-1]):
            pieces[-1] += f" {piece}"
        else:
            pieces.append(piece)
    cleaned = (_balance_quotes(_LEADING_MARK.sub("", piece)).strip() for piece in pieces)
    return [piece for piece in cleaned if piece]


def _balance_quotes(sentence: str) -> str:
    """Drop the quote marks of a sentence cut out of a longer quotation, where they no longer pair up."""
    if sentence.count('"') % 2:
        sentence = sentence.replace('"', "")
    for opening, closing in ("«»", "“”"):
        if sentence.count(opening) != sentence.count(closing):
            sentence = sentence.replace(opening, "").replace(closing, "")
    return sentence


def fortune_passages(entry: str) -> list[str]:
    r"""The prose of one fortune: attributions (`\t\t-- Author`) and dictionary headers dropped.

    A header is an unindented line ending in `:` whose definition follows indented (`Ansia, s.f.:`,
    `Legge di Jones:`). Blank lines and dialogue turns (`- ...`) start a new passage.
    """
    lines = entry.splitlines()
    passages: list[str] = []
    current: list[str] = []
    in_attribution = False

    def flush() -> None:
        if current:
            passages.append(" ".join(current))
            current.clear()

    for index, line in enumerate(lines):
        stripped = line.strip()
        indented = line[:1].isspace()
        if _ATTRIBUTION.match(line) or (in_attribution and indented and stripped):
            in_attribution = True
            flush()
            continue
        in_attribution = False
        next_indented = index + 1 < len(lines) and lines[index + 1][:1].isspace()
        if not stripped or (not indented and stripped.endswith(":") and next_indented):
            flush()
            continue
        if _DIALOGUE_DASH.match(stripped):
            flush()
        current.append(stripped)
    flush()
    return passages


def read_fortunes(directory: Path = FORTUNES_DIR) -> list[str]:
    """Sentences of every `*.u8` fortune file, with apostrophe-accents (`perche'`) repaired."""
    files = sorted(p for p in directory.glob("*.u8") if p.stem not in SKIPPED_FORTUNE_FILES)
    if not files:
        raise DsitaError(f"{directory}: no Italian fortunes found; install them with: {FORTUNES_INSTALL}")
    sentences = []
    for path in files:
        entries = re.split(r"^%$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
        for entry in entries:
            for passage in fortune_passages(entry):
                sentences.extend(split_sentences(restore_apostrophe_accents(passage)))
    return sentences


def sentences_of_text(text: str) -> list[str]:
    """Sentences of a plain text, each line split into sentences; lines starting with `#` are comments."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [sentence for line in lines for sentence in split_sentences(line)]


def read_text_files(paths: Iterable[Path]) -> list[str]:
    """Sentences of UTF-8 text files (see `sentences_of_text`)."""
    sentences = []
    for path in paths:
        if not path.is_file():
            raise DsitaError(f"{path}: text file not found")
        sentences.extend(sentences_of_text(path.read_text(encoding="utf-8")))
    return sentences


def extra_sentences() -> list[str]:
    """The sentences written for this project: digits, euro amounts, typographic quotes and apostrophes."""
    return sentences_of_text(resources.files("dsita").joinpath(EXTRA_SENTENCES_RESOURCE).read_text("utf-8"))


def default_sentences() -> list[str]:
    """The fortunes-it corpus followed by the project's extra sentences."""
    return read_fortunes() + extra_sentences()


def prepare_sentences(candidates: Sequence[str], min_words: int, max_words: int) -> list[Sentence]:
    """Keep the candidates `normalize` accepts, of `min_words`..`max_words` words, once per transcript.

    Order is preserved (first occurrence wins) so that a seeded selection downstream is reproducible.
    """
    alphabet = Alphabet.italian()
    seen: set[str] = set()
    kept = []
    for text in candidates:
        if _CODE_LIKE.search(text) or _CAPITALS_RUN.search(text):
            continue
        normalized = normalize(text, alphabet)
        if isinstance(normalized, Rejection) or normalized in seen:
            continue
        if min_words <= len(normalized.split()) <= max_words:
            seen.add(normalized)
            kept.append(Sentence(text, normalized))
    return kept
