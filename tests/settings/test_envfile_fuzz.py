"""Fuzzing the env-file parser: any bytes give entries or one SettingsError naming `file:line`, never another
exception, and the values a file spells out (bare, quoted, escaped) read back as written."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsita.errors import SettingsError
from dsita.settings.envfile import read_env_file
from dsita.settings.sources import load_settings

FIXTURES = [HealthCheck.function_scoped_fixture]  # tmp_path is shared by the examples, each in its own file
FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=FIXTURES)
NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
# Values as they are meant: no line breaks (a file holds one value a line), any other character.
BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at
VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=BREAKS), max_size=20)
LINE_PIECES = st.sampled_from(["A=1", "export B=2", "#", "=", "'", '"', "\\", " ", "\t", "x y", "C=' z", "\n",
                               "\r\n", "\xff", "\x00", "\ufeff", "é", 'D="a\\"b"', "E=a #c"])  # fmt: skip
FILES = st.one_of(st.binary(max_size=300), st.lists(LINE_PIECES, max_size=30).map("".join).map(str.encode))


def write(folder: Path, data: bytes) -> Path:
    path = folder / f"{uuid.uuid4().hex}.env"
    path.write_bytes(data)
    return path


def one_line(exc: SettingsError, path: Path) -> None:
    message = str(exc)
    assert "\n" not in message and str(path) in message


@FUZZ
@given(
    data=st.one_of(st.binary(max_size=300), st.lists(LINE_PIECES, max_size=30).map("".join).map(str.encode))
)
def test_any_bytes_give_entries_or_one_line_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    try:
        entries = read_env_file(path)
    except SettingsError as exc:
        one_line(exc, path)
        assert re.search(rf"{re.escape(str(path))}(:\d+)?", str(exc))
        return
    lines = data.decode("utf-8-sig").splitlines()
    for entry in entries:
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", entry.name)
        assert entry.name in lines[entry.line - 1]


def quoted(value: str, style: str) -> str:
    if style == "double":
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"'{value}'"


@FUZZ
@given(pairs=st.lists(st.tuples(NAME, VALUE, st.sampled_from(["single", "double", "bare"])), max_size=8),
       export=st.booleans())  # fmt: skip
def test_values_read_back_as_written(tmp_path: Path, pairs: list[tuple[str, str, str]], export: bool) -> None:
    lines, expected = [], []
    for name, value, style in pairs:
        if style == "single" and "'" in value:
            style = "double"
        if style == "bare":
            value = re.split(r"\s+#", value.strip(), maxsplit=1)[0].strip()  # what a bare value can hold
            if value[:1] in ("'", '"'):
                style = "double"
        text = value if style == "bare" else quoted(value, style)
        lines.append(f"{'export ' if export else ''}{name}={text}")
        expected.append((name, value))
    path = write(tmp_path, ("\n".join(lines) + "\n").encode())
    entries = read_env_file(path)
    assert [(e.name, e.value) for e in entries] == expected
    assert [e.line for e in entries] == list(range(1, len(pairs) + 1))


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURES)
@given(data=st.lists(st.sampled_from(["BATCH_SIZE=2", "BATSH_SIZE=2", "epochs=3", "SEED=x", "N_HIDDEN=-1",
                                      "NOT_A_SETTING=1", "LEARNING_RATE=inf", "# c", "FAST_TRAIN=maybe"]),
                     max_size=5).map("\n".join))  # fmt: skip
def test_settings_from_an_env_file_load_or_fail_in_one_line(tmp_path: Path, data: str) -> None:
    path = write(tmp_path, data.encode())
    try:
        load_settings(path, environ={})
    except SettingsError as exc:
        assert "\n" not in str(exc)
