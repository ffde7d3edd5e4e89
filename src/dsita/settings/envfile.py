"""Env files: `NAME=value` lines, as the original image's `docker run --env-file` read them, parsed strictly.

A line is blank, a `#` comment, or `[export ]NAME=value`. A value may be quoted ('...' or "...", the latter
with backslash escapes) or bare, where ` #` starts a comment. Anything else is an error naming the file and
the line: a setting never falls back to its default because its line was misread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dsita.errors import SettingsError

_LINE = re.compile(r"^\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


@dataclass(frozen=True)
class EnvEntry:
    """One `NAME=value` of an env file, and where it stood."""

    name: str
    value: str
    line: int


def read_env_file(path: Path) -> list[EnvEntry]:
    """The entries of an env file, in order; any problem raises SettingsError naming `path:line`."""
    if not path.is_file():
        raise SettingsError(f"env file {path} not found: expected a file of NAME=value lines")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise SettingsError(
            f"{path}:{line}: not UTF-8 text (byte {exc.start}); save the env file as UTF-8"
        ) from None
    except OSError as exc:
        raise SettingsError(f"env file {path} cannot be read: {exc.strerror}") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(raw)
        if match is None:
            shown = stripped if len(stripped) <= 60 else stripped[:57] + "..."
            raise SettingsError(f"{path}:{number}: expected NAME=value, got {shown!r}")
        value = _value(match.group("value"), f"{path}:{number}")
        entries.append(EnvEntry(match.group("name"), value, number))
    return entries


def _value(text: str, where: str) -> str:
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = _closing_quote(text, quote)
        if end < 0:
            raise SettingsError(f"{where}: the value's {quote} quote is never closed")
        rest = text[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise SettingsError(f"{where}: unexpected {rest!r} after the quoted value")
        inner = text[1:end]
        return inner if quote == "'" else re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), inner)
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def _closing_quote(text: str, quote: str) -> int:
    position = 1
    while position < len(text):
        if text[position] == "\\" and quote == '"':
            position += 2
            continue
        if text[position] == quote:
            return position
        position += 1
    return -1
