"""The importers' CSV/TSV reading: every input line ends in exactly one of the output CSV or the skipped list.

Huge fields are no abort (a 200 kB transcript is a skip with a reason), an unbalanced quote skips its own line
instead of swallowing the lines after it, and Hypothesis-generated tables (quotes, delimiters, stray line
breaks, NULs, escape codes, invalid UTF-8) are read into "a one-line DsitaError or a correct result".
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsita.audio import SAMPLE_RATE
from dsita.data.clips import TEXT_TOO_LONG, ImportOptions, read_table
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.data.own_csv import import_own_csv
from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet

OPTIONS = ImportOptions(Alphabet.italian(), max_secs=10.0, workers=1, progress=False)
LINES = re.compile(r"\r\n|\r|\n")
HUGE = 200_000  # characters: over the csv module's 128 KiB field limit
FIXTURES = [HealthCheck.function_scoped_fixture]  # tmp_path is shared by the examples, each in its own folder
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=FIXTURES)
IMPORTS = settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)


def data_lines(data: bytes) -> int:
    """Lines after the header, as a person counts them (the last line's line break starts no line)."""
    lines = LINES.split(data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff"))
    return len(lines) - 1 - (lines[-1] == "") if len(lines) > 1 or lines[0] else 0


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a.wav and sub/b.wav (1.5 s tones) for the tables to list."""
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(1.5 * SAMPLE_RATE)) / SAMPLE_RATE)).astype(
        np.float32
    )
    sf.write(root / "a.wav", tone, SAMPLE_RATE)
    sf.write(root / "sub" / "b.wav", tone, SAMPLE_RATE)
    return root


def account(out: Path, split: str, skipped: Path, data: bytes) -> None:
    """The output CSV's rows and the split's skipped rows are the table's lines, each line once."""
    kept = csv_rows(out / f"{split}.csv")
    skips = [row for row in csv_rows(skipped) if row[0] == split]
    numbers = [int(row[2]) for row in skips]
    assert len(numbers) == len(set(numbers)) and all(2 <= n <= data_lines(data) + 1 for n in numbers)
    assert len(kept) + len(skips) == data_lines(data)


def test_a_200_kb_transcript_is_skipped_not_an_abort(clips: Path, tmp_path: Path) -> None:
    table = clips / "huge.csv"
    rows = [f"a.wav,{'parola ' * (HUGE // 7)}", "sub/b.wav,una frase breve", f"c.wav,{'x' * HUGE}"]
    table.write_text("wav_filename,transcript,note\n" + "\n".join(r + ",n" for r in rows) + "\n")
    report = import_own_csv(table, tmp_path / "out", OPTIONS)
    assert report.kept["huge"] == 1
    assert report.skipped["huge", TEXT_TOO_LONG] == 2
    account(tmp_path / "out", "huge", report.skipped_csv, table.read_bytes())


def test_a_huge_field_in_an_unused_tsv_column_keeps_its_row(clips: Path, tmp_path: Path) -> None:
    locale = tmp_path / "cv" / "it"
    (locale / "clips").mkdir(parents=True)
    sf.write(locale / "clips" / "one.mp3", sf.read(clips / "a.wav")[0], SAMPLE_RATE, format="MP3")
    header = "client_id\tpath\tsentence\tsentence_domain\n"
    (locale / "train.tsv").write_text(header + f"c\tone.mp3\tciao a tutti\t{'d' * HUGE}\n")
    for split in ("dev", "test"):
        (locale / f"{split}.tsv").write_text(header)
    report = import_common_voice(tmp_path / "cv", tmp_path / "out", OPTIONS)
    assert report.kept["train"] == 1


def test_an_unbalanced_quote_skips_its_line_and_no_other(clips: Path, tmp_path: Path) -> None:
    table = clips / "quote.csv"
    lines = ['a.wav,"Ciao', "sub/b.wav,una frase", "a.wav,un'altra", 'sub/b.wav,"fine"', '"a.wav",altra"']
    table.write_text("wav_filename,transcript\n" + "\n".join(lines) + "\n")
    report = import_own_csv(table, tmp_path / "out", OPTIONS)
    skipped = {int(row[2]): row[4] for row in csv_rows(report.skipped_csv)}
    assert "unbalanced quote" in skipped[2] and 3 not in skipped  # the line after the quote is read
    assert report.kept["quote"] == 2  # lines 3 and 5 (sub/b.wav twice: the second is a duplicate)
    account(tmp_path / "out", "quote", report.skipped_csv, table.read_bytes())


# --- Hypothesis -------------------------------------------------------------------------------------------

CELL = st.text(st.sampled_from([*"ciao èà,;|\t\"'\r\n\x00\x1b[]\\", "\u202e", "ß"]), max_size=12)
AUDIO = st.sampled_from(["a.wav", "sub/b.wav", "missing.wav", "", "../a.wav", '"a.wav"', "a.wav\t", " a.wav"])
ROW = st.tuples(AUDIO, CELL, st.sampled_from(["", ",x", ",", ',"', "\xff"]))


def table_bytes(rows: list[tuple[str, str, str]], newline: str, header: str) -> bytes:
    text = header + newline + newline.join(f"{audio},{text}{tail}" for audio, text, tail in rows)
    return text.encode().replace("\xff".encode(), b"\xff")  # the tail's \xff: a byte of invalid UTF-8


@IMPORTS
@given(rows=st.lists(ROW, max_size=10), newline=st.sampled_from(["\n", "\r\n"]), end=st.booleans())
def test_every_line_of_an_own_csv_ends_in_the_csv_or_the_skipped_list(
    clips: Path, tmp_path: Path, rows: list[tuple[str, str, str]], newline: str, end: bool
) -> None:
    data = table_bytes(rows, newline, "wav_filename,transcript") + (newline.encode() if end else b"")
    table = clips / f"t{uuid.uuid4().hex[:8]}.csv"
    table.write_bytes(data)
    out = tmp_path / uuid.uuid4().hex
    try:
        report = import_own_csv(table, out, OPTIONS)
    except DsitaError as exc:  # nothing usable: still one line, and every row listed as skipped
        assert "\n" not in str(exc)
        return
    finally:
        table.unlink()
    account(out, table.stem, report.skipped_csv, data)


@IMPORTS
@given(rows=st.lists(st.tuples(st.sampled_from(["one.mp3", "two", "gone.mp3", "", "../x.mp3"]), CELL),
                     max_size=10))  # fmt: skip
def test_every_line_of_a_common_voice_tsv_ends_in_the_csv_or_the_skipped_list(
    clips: Path, tmp_path: Path, rows: list[tuple[str, str]]
) -> None:
    locale = tmp_path / uuid.uuid4().hex / "it"
    (locale / "clips").mkdir(parents=True)
    for name in ("one.mp3", "two.mp3"):
        (locale / "clips" / name).write_bytes((clips / "a.wav").read_bytes())  # soundfile reads by content
    header = "client_id\tpath\tsentence"
    data = "\n".join([header, *(f"c\t{path}\t{text}" for path, text in rows)]).encode()
    (locale / "train.tsv").write_bytes(data)
    (locale / "dev.tsv").write_text(f"{header}\nc\ttwo.mp3\tdue\n")
    (locale / "test.tsv").write_text(f"{header}\n")
    out = locale.parent / "out"
    report = import_common_voice(locale.parent, out, OPTIONS)
    account(out, "train", report.skipped_csv, data)
    account(out, "dev", report.skipped_csv, (locale / "dev.tsv").read_bytes())


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)),
       tsv=st.booleans())  # fmt: skip
def test_read_table_accounts_for_every_line_or_refuses_the_header(data: bytes, tsv: bool) -> None:
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if tsv else (",", csv.QUOTE_MINIMAL)
    try:
        header, rows, skips = read_table(data, "t.tsv", "train", delimiter, quoting)
    except DsitaError as exc:
        assert "\n" not in str(exc)
        return
    assert len(rows) + len(skips) == data_lines(data)
    assert all(len(fields) == len(header) for _, fields in rows)


WAV_NAME = st.sampled_from(["a.wav", "", "x/../b.wav", "c\x00.wav", '"q'])
SIZE = st.sampled_from(["12", "-1", "x", "", "1e3"])
DURATION = st.sampled_from(["", "1.5", "nan", "-2", "inf", "a"])
DEEPSPEECH = st.lists(st.tuples(WAV_NAME, SIZE, CELL, DURATION), max_size=6)


@FUZZ
@given(rows=DEEPSPEECH, raw=st.binary(max_size=200), use_raw=st.booleans())
def test_read_csv_gives_samples_or_one_line(
    tmp_path: Path, rows: list[tuple[str, str, str, str]], raw: bytes, use_raw: bool
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["wav_filename", "wav_filesize", "transcript", "duration"])
    writer.writerows(rows)
    path = tmp_path / f"{uuid.uuid4().hex}.csv"
    path.write_bytes(raw if use_raw else buffer.getvalue().encode())
    try:
        samples = read_csv(path)
    except DsitaError as exc:
        assert "\n" not in str(exc)
        return
    assert all(s.wav_filesize >= 0 and (s.duration is None or s.duration >= 0) for s in samples)
