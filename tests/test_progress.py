"""Progress of long work outside a terminal: log lines (every 30 s, DSITA_PROGRESS_INTERVAL_S for tests), also
while an external program runs, and from `dsita synth`, which was silent for minutes."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from dsita.data.synth import synthesize_corpus
from dsita.progress import LOG_INTERVAL_S, Progress, log_interval_s
from tests.data.test_synth import TINY_OPTIONS, TINY_SENTENCES, needs_tts

log = logging.getLogger("dsita.test_progress")


def lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


def test_a_task_logs_its_progress_at_the_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSITA_PROGRESS_INTERVAL_S", "0")
    with caplog.at_level(logging.INFO), Progress(False, log) as progress:
        task = progress.task("converting clips", 4, "clips")
        for _ in range(4):
            task.advance(status="2 skipped")
    logged = lines(caplog, "converting clips: ")
    assert logged[0].startswith("converting clips: 1/4 clips (25%), ") and logged[0].endswith(", 2 skipped")
    assert logged[-1] == "converting clips: 4/4 clips (100%), 2 skipped"
    caplog.clear()
    monkeypatch.delenv("DSITA_PROGRESS_INTERVAL_S")
    with caplog.at_level(logging.INFO):
        quiet = Progress(False, log).task("converting clips", 4, "clips")
        quiet.advance(4)
    assert lines(caplog, "converting clips") == []  # the next line comes 30 s after the start


def test_a_bad_interval_is_a_warning_and_the_default(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSITA_PROGRESS_INTERVAL_S", "soon")
    with caplog.at_level(logging.WARNING):
        assert log_interval_s() == LOG_INTERVAL_S
    assert "DSITA_PROGRESS_INTERVAL_S='soon' is not a number of seconds" in caplog.text


def test_work_that_reports_nothing_still_logs_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LM build's lmplz, filter and build_binary run for minutes on a large corpus without a word."""
    monkeypatch.setenv("DSITA_PROGRESS_INTERVAL_S", "0")
    done = threading.Event()
    with caplog.at_level(logging.INFO), Progress(False, log) as progress:
        task = progress.task("LM build", 3, "KenLM steps")
        with task.ticking("lmplz running"):
            while len(lines(caplog, "LM build: 0/3 KenLM steps (0%), lmplz running, ")) < 2:
                done.wait(0.05)
    assert "progress-ticker" not in {t.name for t in threading.enumerate()}  # it stops with the block


@needs_tts
def test_synth_logs_its_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSITA_PROGRESS_INTERVAL_S", "0")
    with caplog.at_level(logging.INFO):
        synthesize_corpus(TINY_SENTENCES, tmp_path / "it.tar.gz", TINY_OPTIONS)
    logged = lines(caplog, "synthesizing it.tar.gz: ")
    assert len(logged) == TINY_OPTIONS.n_clips
    assert logged[-1] == f"synthesizing it.tar.gz: {TINY_OPTIONS.n_clips}/{TINY_OPTIONS.n_clips} clips (100%)"
