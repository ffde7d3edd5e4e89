"""`dsita serve`: the recognizer server and its page."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from dsita.commands.base import app, console, settings_from


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option(help="Model package (default: DATA_DIR/it-it.zip).")] = None,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: all)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (2700: vosk-server's; 0: any).")] = 2700,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Recognition threads for all sessions (default: CPU cores)."),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worker processes, each with its own model, instead of threads (LM decoding in parallel).",
        ),
    ] = 0,
    max_sessions: Annotated[int, typer.Option(min=1, help="Sessions at once; more are told to retry.")] = 8,
    beam: Annotated[int | None, typer.Option(min=1, help="Beam width (with a scorer; default 500).")] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Greedy decoding even with a scorer.")] = False,
    itn: Annotated[
        bool, typer.Option("--itn", help='Numbers as digits unless a session\'s config says "itn": false.')
    ] = False,
    idle_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds a session may stay silent before it is closed (0: never).")
    ] = 60.0,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(help="Another page origin allowed to connect, e.g. http://localhost:8080 (repeatable)."),
    ] = None,
) -> None:
    """Serve a model over vosk-server's WebSocket protocol, with a page at http://HOST:PORT/ that transcribes
    the microphone or a file live."""
    from dsita.inference import InferenceOptions, load_model
    from dsita.serve.protocol import SessionConfig
    from dsita.serve.server import RecognizerServer, ServerOptions, run_server

    # The library logs every connection and HTTP request at INFO: a page load would fill the terminal.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    settings = settings_from(ctx)
    path = model or settings.data_dir / "it-it.zip"
    speech = load_model(path, InferenceOptions(use_lm=not no_lm, beam_width=beam))
    options = ServerOptions(
        host=host,
        port=port,
        workers=workers or os.cpu_count() or 1,
        processes=processes,
        max_sessions=max_sessions,
        idle_timeout_s=idle_timeout,
        allowed_origins=tuple(allow_origin or ()),
        session=SessionConfig(itn=itn),
    )
    server = RecognizerServer(speech, options, name=str(path))
    server.warm_up()

    def ready(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        console.print(
            f"dsita serve: {path} ({speech.decoding}) on ws://{shown}:{bound} and http://{shown}:{bound}/",
            highlight=False,
            soft_wrap=True,
        )

    run_server(server, ready)
