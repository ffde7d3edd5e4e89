"""Hot words: words and phrases boosted at run time, as lists of `phrase[:boost]` and checked entries.

A boost is a score (natural-log units, like the acoustic scores and beta) added once per occurrence of a
hot word or phrase in a hypothesis. A word outside the scorer's vocabulary becomes decodable by being hot;
a phrase is boosted only as a whole, its words in sequence. Entries are normalised as transcripts are
(`dsita.text.normalize`), so "Cancelletto" and "cancelletto" are one entry and digits are spelled out; an
entry the alphabet cannot spell is refused. How the beam search applies them: `dsita.decoding.hot_lexicon`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import Rejection, normalize

DEFAULT_BOOST = 5.0  # --hotword WORD without :BOOST, and a --hotwords-file line without one


@dataclass(frozen=True)
class HotWord:
    """One entry: its words, normalised into the alphabet (single spaces), and its boost."""

    text: str
    boost: float

    @property
    def words(self) -> list[str]:
        """The entry's words, in order (a phrase is several)."""
        return self.text.split(" ")


def parse_hotword(spec: str, source: str = "--hotword") -> tuple[str, float]:
    """`phrase[:boost]` -> (phrase, boost); the boost defaults to DEFAULT_BOOST."""
    text, separator, boost_text = spec.rpartition(":")
    if not separator:
        text, boost_text = spec, ""
    if not text.strip():
        raise DsitaError(f"{source}: {spec!r} has no word before the boost (expected WORD[:BOOST])")
    if not boost_text.strip():
        return text.strip(), DEFAULT_BOOST
    try:
        boost = float(boost_text)
    except ValueError:
        raise DsitaError(f"{source}: the boost of {text.strip()!r} is {boost_text!r}, not a number") from None
    return text.strip(), boost


def read_hotwords_file(path: Path) -> dict[str, float]:
    """One `phrase[:boost]` a line; blank lines and lines starting with `#` are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DsitaError(f"{path}: cannot read the hot words file ({exc})") from None
    hotwords: dict[str, float] = {}
    for number, line in enumerate(lines, start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            text, boost = parse_hotword(line.strip(), f"{path}:{number}")
            hotwords[text] = boost
    return hotwords


def hot_words(hotwords: Mapping[str, float], alphabet: Alphabet) -> tuple[HotWord, ...]:
    """The entries normalised as transcripts are (`dsita.text.normalize`), checked; a later entry with the
    same normalised text replaces an earlier one."""
    entries: dict[str, HotWord] = {}
    for text, boost in hotwords.items():
        if not isinstance(boost, int | float) or not math.isfinite(boost):
            raise DsitaError(f"hot word {text!r}: the boost must be a finite number, got {boost!r}")
        spelled = _plain(str(text), alphabet) or normalize(str(text), alphabet)
        if isinstance(spelled, Rejection):
            raise DsitaError(f"hot word {text!r} cannot be spelled: {spelled.reason}")
        if " " in spelled and boost < 0:
            raise DsitaError(f"hot phrase {text!r}: a phrase takes a boost of 0 or more, got {boost:g}")
        entries[spelled] = HotWord(spelled, float(boost))
    return tuple(entries.values())


def _plain(text: str, alphabet: Alphabet) -> str | None:
    """`text` itself when normalising would not change it (alphabet letters and single spaces, no
    apostrophe): the common case, a hundred times faster than `normalize`."""
    if text and text == " ".join(text.split()) and "'" not in text and all(c in alphabet for c in text):
        return text
    return None
