"""A transcript as subtitles and the other files `dsita transcribe --output-format` writes, whisper-style.

Words are grouped into cues: a cue ends at a pause (`pause_s` of silence between two words), before it would
last more than `max_cue_s`, or before its text would need more than `max_lines` lines of `max_line`
characters (42, the usual limit of broadcast subtitles). A two-line cue is broken where its lines come out
most even. The formats:

    txt   one cue a line
    srt   numbered cues, `00:01:02,500 --> 00:01:04,250` (SubRip)
    vtt   `WEBVTT`, then cues timed `00:01:02.500 --> 00:01:04.250` (WebVTT)
    tsv   `start`, `end` (integer milliseconds) and `text` columns, a cue a row (whisper's tsv)
    json  the transcript's text and words (`Transcript.to_dict`) and its cues as `segments`
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text

if TYPE_CHECKING:
    from dsita.decoding.transcript import Transcript, Word

FORMATS = ("txt", "vtt", "srt", "tsv", "json")  # whisper's order for `all`
ALL = "all"
MAX_LINE = 42
MAX_LINES = 2
PAUSE_S = 0.6  # a silence this long between two words ends a cue
MAX_CUE_S = 7.0  # subtitling guidelines keep a cue on screen for at most about 7 seconds


@dataclass(frozen=True)
class CueOptions:
    """How words are grouped into cues and cues into lines."""

    max_line: int = MAX_LINE
    max_lines: int = MAX_LINES
    pause_s: float = PAUSE_S
    max_cue_s: float = MAX_CUE_S

    def __post_init__(self) -> None:
        if self.max_line < 1 or self.max_lines < 1 or not self.pause_s > 0 or not self.max_cue_s > 0:
            raise DsitaError("cue options: line length, line count, pause and cue length must be positive")


@dataclass(frozen=True)
class Cue:
    """One subtitle: its time span in seconds and its lines."""

    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The cue's lines as one line."""
        return " ".join(self.lines)


def cues(transcript: Transcript, options: CueOptions = CueOptions()) -> list[Cue]:
    """The transcript's words grouped into cues (a transcript without word times: untimed cues at 0)."""
    from dsita.decoding.transcript import Word

    words = list(transcript.words) or [Word(w, 0.0, 0.0, 1.0) for w in transcript.text.split()]
    result: list[Cue] = []
    current: list[Word] = []
    for word in words:
        if current and not _continues(current, word, options):
            result.append(_cue(current, options))
            current = []
        current.append(word)
    if current:
        result.append(_cue(current, options))
    return result


def _continues(current: list[Word], word: Word, options: CueOptions) -> bool:
    """Whether `word` joins the cue of the `current` words."""
    if word.start - current[-1].end >= options.pause_s or word.end - current[0].start > options.max_cue_s:
        return False
    return len(wrap([w.word for w in (*current, word)], options.max_line)) <= options.max_lines


def _cue(words: list[Word], options: CueOptions) -> Cue:
    """The cue of `words`, from the first one's start to the last one's end."""
    return Cue(words[0].start, words[-1].end, tuple(wrap([w.word for w in words], options.max_line)))


def wrap(words: Sequence[str], max_line: int) -> list[str]:
    """Words as few lines of at most `max_line` characters as they fit in (a longer word gets a line of its
    own); two lines are broken where they come out most even."""
    text = " ".join(words)
    if len(text) <= max_line:
        return [text]
    splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
    even = [pair for pair in splits if max(map(len, pair)) <= max_line]
    if even:
        most_even = min(even, key=lambda pair: (max(map(len, pair)), -len(pair[1])))
        return list(most_even)
    lines: list[str] = []
    for word in words:  # no even break into two: fill lines greedily
        if lines and len(lines[-1]) + 1 + len(word) <= max_line:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def timestamp(seconds: float, separator: str = ",") -> str:
    """`HH:MM:SS,mmm` (SubRip; `.` for WebVTT)."""
    total = max(0, round(seconds * 1000))
    hours, rest = divmod(total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def to_txt(items: Sequence[Cue]) -> str:
    """A cue a line."""
    return "".join(f"{cue.text}\n" for cue in items)


def to_srt(items: Sequence[Cue]) -> str:
    """SubRip: numbered cues, each with its time span and lines, a blank line between them."""
    blocks = (
        f"{n}\n{timestamp(c.start)} --> {timestamp(c.end)}\n" + "\n".join(c.lines) + "\n"
        for n, c in enumerate(items, start=1)
    )
    return "\n".join(blocks)


def to_vtt(items: Sequence[Cue]) -> str:
    """WebVTT: the `WEBVTT` header, then each cue's time span and lines, a blank line between them."""
    blocks = (
        f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n" + "\n".join(c.lines) + "\n" for c in items
    )
    return "\n".join(["WEBVTT\n", *blocks])


def to_tsv(items: Sequence[Cue]) -> str:
    """A header, then a cue a row: start and end in integer milliseconds, and the text."""
    rows = (f"{round(c.start * 1000)}\t{round(c.end * 1000)}\t{c.text}\n" for c in items)
    return "start\tend\ttext\n" + "".join(rows)


def to_json(transcript: Transcript, items: Sequence[Cue]) -> str:
    """The transcript's text and words (`Transcript.to_dict`) and its cues as `segments`."""
    segments = [
        {"id": n, "start": round(c.start, 3), "end": round(c.end, 3), "text": c.text}
        for n, c in enumerate(items)
    ]
    return json.dumps({**transcript.to_dict(), "segments": segments}, ensure_ascii=False) + "\n"


def render(transcript: Transcript, output_format: str, options: CueOptions = CueOptions()) -> str:
    """The transcript in one of FORMATS."""
    items = cues(transcript, options)
    if output_format == "json":
        return to_json(transcript, items)
    writers = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}
    if output_format not in writers:
        raise DsitaError(
            f"unknown output format {output_format!r}; expected one of {', '.join(FORMATS)}, all"
        )
    return writers[output_format](items)


def formats(output_format: str) -> tuple[str, ...]:
    """The formats `--output-format` names: one of FORMATS, or all of them."""
    if output_format == ALL:
        return FORMATS
    if output_format not in FORMATS:
        raise DsitaError(f"--output-format {output_format}: expected one of {', '.join(FORMATS)}, or {ALL}")
    return (output_format,)


def write_outputs(
    transcript: Transcript,
    out_dir: Path,
    stem: str,
    chosen: Sequence[str],
    options: CueOptions = CueOptions(),
) -> list[Path]:
    """Write `out_dir/stem.<format>` for each chosen format, each file atomically; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for output_format in chosen:
        path = out_dir / f"{stem}.{output_format}"
        atomic_write_text(path, render(transcript, output_format, options))
        written.append(path)
    return written
