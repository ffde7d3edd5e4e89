"""User text never reaches the terminal raw: escape codes from a CSV header or a folder name print as visible
escapes, and rich markup in them (`[bold]`) prints as it is written."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from dsita.errors import DsitaError, PrintableLog, printable

from ..pipeline.test_pipeline import clean_environment

ESC = "\x1b[2J\x1b[31m"  # clear the screen, then red


def dsita(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_environment(DATA_DIR=str(cwd / "data"), COLUMNS="1000")
    return subprocess.run([sys.executable, "-m", "dsita.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def test_an_escape_code_in_a_csv_header_prints_escaped(tmp_path: Path) -> None:
    table = tmp_path / "mine.csv"
    table.write_text(f"{ESC}file,[bold]text[/bold]\x07\na.wav,ciao\n", encoding="utf-8")
    result = dsita("import", "csv", str(table), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "columns found: \\x1b[2J\\x1b[31mfile, [bold]text[/bold]\\x07" in result.stderr


def test_markup_and_escapes_in_a_folder_name_print_as_written(tmp_path: Path) -> None:
    locale = tmp_path / f"[red]cv{ESC}"
    locale.mkdir()
    (locale / "train.tsv").write_text("client_id\tpath\tsentence\n", encoding="utf-8")
    result = dsita("import", "cv", str(locale), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert "\x1b" not in result.stderr
    assert "note: no dev.tsv, test.tsv in" in result.stderr and "[red]cv\\x1b[2J" in result.stderr


def test_messages_and_log_lines_escape_control_characters() -> None:
    assert str(DsitaError(f"a{ESC}b\nc\u202ed\te")) == "a\\x1b[2J\\x1b[31mb\\nc\\u202ed\te"
    assert printable("line one\nline two\r", newlines=True) == "line one\nline two\\r"
    record = logging.LogRecord("dsita", logging.INFO, __file__, 1, "clip %s", (f"x{ESC}",), None)
    PrintableLog().filter(record)
    assert record.getMessage() == "clip x\\x1b[2J\\x1b[31m"
