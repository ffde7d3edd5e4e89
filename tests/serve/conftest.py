"""Fixtures for `dsita serve`: the small release's model behind a real server on a free port, and `dsita
transcribe`'s transcripts of the same audio as the reference. The clients' clips are `test_clips`
(tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsita.export.release import RELEASE_ZIP
from dsita.inference import InferenceOptions, load_model
from dsita.serve.server import RecognizerServer, ServerOptions
from dsita.settings import Settings

BEAM = 40  # a narrow beam keeps the LM in every test at a fraction of the default's time
SETTINGS_NAMES = {name for field in Settings.model_fields for name in Settings.field_env_names(field)}


@pytest.fixture(scope="session")
def model_zip(small_release: Path) -> Path:
    return small_release / RELEASE_ZIP


@pytest.fixture(scope="session")
def served_model(model_zip: Path) -> Any:
    return load_model(model_zip, InferenceOptions(beam_width=BEAM))


@contextlib.contextmanager
def running_server(model: Any, options: ServerOptions) -> Iterator[RecognizerServer]:
    """A server on its own thread and event loop, as `dsita serve` runs one, until the block ends."""
    server = RecognizerServer(model, options)
    server.warm_up()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            asyncio.run(server.run(lambda _port: started.set()))
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        server.stop()
        thread.join(60)


@pytest.fixture(scope="session")
def start_server(served_model: Any) -> Callable[..., contextlib.AbstractContextManager[RecognizerServer]]:
    """`with start_server(max_sessions=2) as server:` a server of the small model with those options."""

    def start(**options: Any) -> contextlib.AbstractContextManager[RecognizerServer]:
        return running_server(served_model, ServerOptions(port=0, **options))

    return start


@pytest.fixture(scope="module")
def server(start_server: Callable[..., Any]) -> Iterator[RecognizerServer]:
    with start_server() as running:
        yield running


def url_of(server: RecognizerServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


@pytest.fixture(scope="session")
def transcribe_cli(model_zip: Path) -> Callable[[list[Path]], list[dict[str, Any]]]:
    """`dsita transcribe --json` on the files: one record (text, words) per file."""

    def run(paths: list[Path]) -> list[dict[str, Any]]:
        args = ["transcribe", "--json", "--model", str(model_zip), "--beam", str(BEAM), *map(str, paths)]
        # The reference decodes as the served model does: no dsita setting of this shell's reaches it.
        env = {k: v for k, v in os.environ.items() if k not in SETTINGS_NAMES} | {"COLUMNS": "300"}
        result = subprocess.run(
            [sys.executable, "-m", "dsita.cli", *args], capture_output=True, text=True, env=env, timeout=300
        )
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    return run
