r"""The model's output labels, in DeepSpeech's `alphabet.txt` format.

The file has one label per line (UTF-8). A line starting with `#` is a comment; a label that is itself `#`
is written `\#`, as DeepSpeech does. A line holding a single space is the space label. The CTC blank is not
in the file: it is the extra output after the last label (`blank_index == len(alphabet)`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text

_ITALIAN_LABELS = (" ", "'", *"abcdefghijklmnopqrstuvwxyz", *"àèéìíòóôùú")
_ENGLISH_LABELS = (" ", *"abcdefghijklmnopqrstuvwxyz", "'")
_ESCAPED_HASH = "\\#"
_HEADER = "# One label per line; a line with a single space is the space label.\n"


class UnencodableCharacter(DsitaError):
    """A character of a transcript has no label in the alphabet."""

    def __init__(self, char: str, position: int, text: str) -> None:
        self.char = char
        self.position = position
        shown = text if len(text) <= 60 else text[:57] + "..."
        super().__init__(
            f"character {char!r} (U+{ord(char):04X}) at position {position} of {shown!r} "
            "is not in the alphabet"
        )


@dataclass(frozen=True)
class Alphabet:
    """An ordered tuple of one-character labels; label i is model output i."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.labels:
            raise DsitaError("alphabet has no labels")
        seen: set[str] = set()
        for index, label in enumerate(self.labels):
            problem = _label_problem(label, seen)
            if problem:
                raise DsitaError(f"alphabet label {index}: {problem}")
            seen.add(label)

    @classmethod
    def italian(cls) -> Alphabet:
        """Space, apostrophe, a-z and the ten accented vowels of Italian text: 38 labels."""
        return cls(_ITALIAN_LABELS)

    @classmethod
    def english(cls) -> Alphabet:
        """DeepSpeech's English alphabet (space, a-z, apostrophe): 28 labels, 29 outputs with the blank."""
        return cls(_ENGLISH_LABELS)

    @classmethod
    def load(cls, path: str | Path) -> Alphabet:
        """Read an `alphabet.txt`; any problem raises DsitaError naming the file and the line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DsitaError(f"alphabet file {path} not found") from None
        except UnicodeDecodeError as exc:
            raise DsitaError(f"alphabet file {path} is not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise DsitaError(f"alphabet file {path} cannot be read: {exc.strerror}") from None
        return cls.from_text(text, f"alphabet file {path}")

    @classmethod
    def from_text(cls, text: str, source: str) -> Alphabet:
        """Parse an `alphabet.txt`'s content; any problem raises DsitaError naming `source` and the line."""
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        labels: list[str] = []
        seen: set[str] = set()
        for number, raw in enumerate(lines, start=1):
            line = raw.removesuffix("\r")
            if line.startswith("#"):
                continue
            label = "#" if line == _ESCAPED_HASH else line
            problem = _label_problem(label, seen)
            if problem:
                raise DsitaError(f"{source}, line {number}: {problem}")
            labels.append(label)
            seen.add(label)
        if not labels:
            raise DsitaError(f"{source} has no labels (only comments or nothing)")
        return cls(tuple(labels))

    def save(self, path: str | Path) -> None:
        """Write the alphabet in the format `load` reads, atomically."""
        body = "".join(f"{_ESCAPED_HASH if label == '#' else label}\n" for label in self.labels)
        atomic_write_text(path, _HEADER + body)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    @property
    def blank_index(self) -> int:
        """The CTC blank: the output after the last label."""
        return len(self.labels)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def encode(self, text: str) -> list[int]:
        """Label ids of each character; a character with no label raises UnencodableCharacter."""
        index = self._index
        ids: list[int] = []
        for position, char in enumerate(text):
            label_id = index.get(char)
            if label_id is None:
                raise UnencodableCharacter(char, position, text)
            ids.append(label_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of label ids; the blank decodes to nothing, an id out of range raises DsitaError."""
        chars: list[str] = []
        for label_id in ids:
            if label_id == self.blank_index:
                continue
            if not 0 <= label_id < len(self.labels):
                raise DsitaError(f"label id {label_id} is out of range 0..{self.blank_index}")
            chars.append(self.labels[label_id])
        return "".join(chars)


def _label_problem(label: str, seen: set[str]) -> str | None:
    """Why `label` cannot be a label, or None."""
    if label == "":
        return "empty line (the space label is a line holding a single space)"
    if len(label) != 1:
        return f"label {label!r} is {len(label)} characters long, expected exactly one"
    if label in "\r\n":
        return "a line break cannot be a label"
    if label in seen:
        return f"duplicate label {label!r}"
    return None
