"""Errors a user can act on. The CLI prints them on one line, never with a traceback.

A message names files, columns and values that came from the user, and those may hold terminal escape
sequences (a CSV header with ESC [ 2 J): `printable` writes every control character as a visible escape,
and a DsitaError's text always goes through it.
"""

import logging
import re

# C0 and C1 controls (tab kept), DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")


def printable(text: str, newlines: bool = False) -> str:
    r"""`text` with control characters as escapes (ESC -> \x1b, newline -> \n unless `newlines`)."""
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_escape, text)


class PrintableLog(logging.Filter):
    """A handler filter that escapes control characters in log messages (a log shows user text too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Escape control characters in `record`'s message (newlines kept); never drops a record."""
        message = record.getMessage()
        clean = printable(message, newlines=True)  # tables in the log files span lines on purpose
        if clean != message:
            record.msg, record.args = clean, None
        return True


class DsitaError(Exception):
    """A user's mistake or a missing prerequisite, with a message that names what and where."""

    def __str__(self) -> str:
        return printable(super().__str__())


class SettingsError(DsitaError):
    """A setting has a value outside what is allowed."""


class AudioLoadingError(DsitaError):
    """An audio file is missing, unreadable, or empty."""
