"""`dsita serve`: a WebSocket recognizer speaking vosk-server's protocol, and a page using it, on one port.

One asyncio loop (the `websockets` library) accepts connections; each session's audio is recognized on a
bounded pool of worker threads, or of worker processes (`dsita.serve.workers`: with the LM, processes
decode in parallel where threads cannot), one frame at a time per session, so a session holds at most one
frame in work and `MAX_QUEUE` frames in the library's receive buffer: past that the server stops reading
its socket and TCP holds the client back, instead of the server buffering without bound. At most
`max_sessions` sessions run at once; the next ones get a "busy" error. Any mistake of a client (see
`dsita.serve.protocol`), and a client that vanishes, ends that session only.

Plain HTTP GETs on the same port serve the page (`/`, from the package's `static/` folder) and `/info`.
WebSocket handshakes from a browser page must come from the page itself (same origin as the request's
Host) unless `allowed_origins` lists the page's origin; clients that send no Origin (every non-browser
client) are always let in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from importlib import resources
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from dsita.errors import DsitaError
from dsita.serve.protocol import (
    Config,
    Eof,
    ProtocolError,
    SessionConfig,
    error_message,
    parse_text_message,
)
from dsita.serve.workers import ProcessWorkers, ThreadWorkers, Workers

log = logging.getLogger(__name__)

MAX_QUEUE = 4  # frames buffered per session before the server stops reading its socket
STATIC_FILES = ("index.html", "app.js", "pcm-worklet.js", "style.css")
# Close codes: RFC 6455's, and 1013 (try again later) as registered with IANA.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_BUSY = 1013


@dataclass(frozen=True)
class ServerOptions:
    """Where to listen and how much work to take on."""

    host: str = "127.0.0.1"
    port: int = 2700  # vosk-server's port: its example clients connect to ws://localhost:2700
    workers: int = 2  # threads recognizing audio, shared by every session
    processes: int = 0  # above 0: worker processes, each with its own model, instead of threads
    max_sessions: int = 8
    max_frame_bytes: int = 1 << 20  # 32 s of 16 kHz PCM in one frame
    idle_timeout_s: float = 60.0  # a session with no message (or a client not reading) for this long ends
    allowed_origins: tuple[str, ...] = ()  # extra browser origins allowed to connect ("*": any)
    session: SessionConfig = field(default_factory=SessionConfig)  # defaults before a client's config

    def __post_init__(self) -> None:
        if self.workers < 1 or self.max_sessions < 1 or self.processes < 0:
            raise DsitaError("serve: --workers and --max-sessions must be at least 1, --processes at least 0")
        if not 0 <= self.port <= 65535:
            raise DsitaError(f"serve: --port must be from 0 to 65535, got {self.port}")


def _static(name: str) -> bytes:
    return resources.files("dsita.serve").joinpath("static", name).read_bytes()


def _http_response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class RecognizerServer:
    """The server of one loaded model: `run()` serves until `stop()`."""

    def __init__(self, model: Any, options: ServerOptions = ServerOptions(), name: str = "") -> None:
        self.model = model
        self.options = options
        self.name = name or str(getattr(getattr(model, "package", None), "source", "model"))
        self.port: int | None = None
        self.sessions = 0
        self.workers: Workers = (
            ProcessWorkers(model, options.processes)
            if options.processes
            else ThreadWorkers(model, options.workers)
        )
        self._keys = 0  # session keys, for the workers
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        session_rate = float(model.sample_rate)
        self.defaults = replace(options.session, sample_rate=session_rate)

    def warm_up(self) -> None:
        """Decode half a second of silence once: builds the lazy parts (the LM's trie) before any session
        can race to build them."""
        import numpy as np

        self.model.transcribe(np.zeros(int(self.model.sample_rate) // 2, dtype=np.float32))
        if isinstance(self.workers, ProcessWorkers):
            self.workers.warm_up()

    async def run(self, ready: Callable[[int], None] | None = None) -> None:
        """Listen, call `ready(port)` once bound, and serve until `stop()`."""
        self._loop = asyncio.get_running_loop()
        async with serve(
            self._session,
            self.options.host,
            self.options.port,
            process_request=self._process_request,
            max_size=self.options.max_frame_bytes,
            max_queue=MAX_QUEUE,
            compression=None,  # PCM does not deflate; per-message deflate would only cost CPU
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            if ready is not None:
                ready(self.port)
            await server.wait_closed()
        self.workers.shutdown()

    def stop(self) -> None:
        """Stop serving; callable from any thread."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Serve the page and /info over plain HTTP; check a WebSocket handshake's origin."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            origin = request.headers.get("Origin")
            if origin is None or self._origin_allowed(origin, request.headers.get("Host", "")):
                return None
            return _http_response(HTTPStatus.FORBIDDEN, b"origin not allowed\n", "text/plain; charset=utf-8")
        path = request.path.split("?", 1)[0]
        if path == "/info":
            body = json.dumps(self.info(), ensure_ascii=False).encode()
            return _http_response(HTTPStatus.OK, body, "application/json")
        name = "index.html" if path == "/" else path.lstrip("/")
        if name not in STATIC_FILES:
            return _http_response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return _http_response(HTTPStatus.OK, _static(name), f"{content_type}; charset=utf-8")

    def _origin_allowed(self, origin: str, host: str) -> bool:
        allowed = self.options.allowed_origins
        return "*" in allowed or origin in allowed or origin in (f"http://{host}", f"https://{host}")

    def info(self) -> dict[str, Any]:
        """What the page shows about the model."""
        return {
            "model": os.path.basename(self.name.rstrip("/")),
            "decoding": getattr(self.model, "decoding", ""),
            "sample_rate": int(self.model.sample_rate),
            "itn": self.defaults.itn,
            "max_sessions": self.options.max_sessions,
        }

    async def _session(self, connection: ServerConnection) -> None:
        if self.sessions >= self.options.max_sessions:
            busy = f"server busy: {self.sessions} sessions open, the most it serves at once; try again later"
            await _close_with_error(connection, busy, CLOSE_BUSY)
            return
        self.sessions += 1
        self._keys += 1
        session = Session(self, connection, self._keys)
        try:
            await session.run()
        except ConnectionClosed:
            log.info("session from %s: the client left", connection.remote_address)
        finally:
            self.sessions -= 1
            self.workers.close(session.key)


async def _close_with_error(connection: ServerConnection, text: str, code: int) -> None:
    with contextlib.suppress(ConnectionClosed):
        await connection.send(error_message(text))
        await connection.close(code, text[:120])


class Session:
    """One connection: messages in order, one reply per audio frame."""

    def __init__(self, server: RecognizerServer, connection: ServerConnection, key: int) -> None:
        self.server = server
        self.connection = connection
        self.key = key
        self.config = server.defaults
        self.opened = False  # whether the workers hold a recognizer for the current config
        self.heard_audio = False  # since the last config, reset or start

    async def run(self) -> None:
        """Handle the connection's messages until the client ends it, errs or falls silent.

        A protocol or dsita error closes it with that message, a bug of ours with an internal error (logged);
        no message for `idle_timeout_s` closes it, and a client that stops reading replies is cut off.
        """
        timeout = self.server.options.idle_timeout_s or None
        while True:
            try:
                message = await asyncio.wait_for(self.connection.recv(), timeout)
            except TimeoutError:
                await _close_with_error(self.connection, f"no message for {timeout:g} s", CLOSE_POLICY)
                return
            try:
                reply, done = await self._handle(message)
            except ProtocolError as exc:
                await _close_with_error(self.connection, str(exc), CLOSE_UNSUPPORTED_DATA)
                return
            except DsitaError as exc:
                await _close_with_error(self.connection, str(exc), CLOSE_POLICY)
                return
            except Exception as exc:  # a bug of ours must end this session only, never the server
                log.exception("session from %s failed", self.connection.remote_address)
                await _close_with_error(self.connection, f"internal error: {exc}", CLOSE_INTERNAL)
                return
            if reply is not None:
                try:
                    await asyncio.wait_for(self.connection.send(reply), timeout)
                except TimeoutError:  # the client stopped reading: its TCP window is full
                    self.connection.transport.abort()
                    return
            if done:
                await self.connection.close()
                return

    async def _handle(self, message: str | bytes) -> tuple[str | None, bool]:
        """The reply to one message, and whether the session is over."""
        if isinstance(message, str):
            command = parse_text_message(message, self.config)
            if isinstance(command, Config):
                if self.heard_audio:
                    raise ProtocolError("config must come before the audio (or right after a reset)")
                self.config, self.opened = command.config, False
                log.debug("session from %s: config %s", self.connection.remote_address, self.config)
                return None, False
            await self._open()
            reply = await self.server.workers.finish(self.key)
            self.heard_audio = False
            return reply, isinstance(command, Eof)
        if len(message) % 2:
            raise ProtocolError(
                f"a binary frame of {len(message)} bytes: audio must be whole 16-bit samples (an even number "
                "of bytes)"
            )
        self.heard_audio = True
        await self._open()
        return await self.server.workers.accept(self.key, message), False

    async def _open(self) -> None:
        """The recognizer (and its stream) is made on the workers when the first message needs it."""
        if not self.opened:
            await self.server.workers.open(self.key, self.config)
            self.opened = True


def run_server(server: RecognizerServer, ready: Callable[[int], None] | None = None) -> None:
    """Serve in this thread until interrupted (Ctrl-C) or terminated (SIGTERM), then stop cleanly."""

    async def serve_until_stopped() -> None:
        # Both stop the server cleanly, Ctrl-C too even where the process was started with SIGINT ignored
        # (a background job of a shell inherits that, and a server left running then cannot be interrupted).
        for number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
                asyncio.get_running_loop().add_signal_handler(number, server.stop)
        await server.run(ready)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_stopped())
