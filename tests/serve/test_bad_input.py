"""`dsita serve` and clients that get it wrong: one error message, a closed session, a server that goes on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dsita.serve.server import RecognizerServer

SILENCE = bytes(3200)  # 0.1 s of 16 kHz PCM


async def closing_reply(ws: ClientConnection) -> tuple[dict[str, Any], int | None]:
    """The server's last message and the close code it closed the session with."""
    reply = json.loads(await ws.recv())
    with contextlib.suppress(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 30)
    await ws.wait_closed()
    return reply, ws.close_code


async def send_and_close(url: str, messages: list[str | bytes]) -> tuple[dict[str, Any], int | None]:
    """Send `messages` (replies to audio are read as they come) and return the error that closes it."""
    async with connect(url) as ws:
        for message in messages[:-1]:
            await ws.send(message)
            if isinstance(message, bytes):
                assert "partial" in json.loads(await ws.recv())
        await ws.send(messages[-1])
        return await closing_reply(ws)


def transcribes(server: RecognizerServer, clip: Path, model: Any) -> bool:
    """Whether a well-behaved session still gets the clip's transcript: the server survived."""
    samples, rate = sf.read(clip, dtype="int16")

    async def session() -> str:
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send(json.dumps({"config": {"sample_rate": rate}}))
            pcm = samples.astype("<i2").tobytes()
            for at in range(0, len(pcm), 6400):
                await ws.send(pcm[at : at + 6400])
                await ws.recv()
            await ws.send('{"eof": 1}')
            return json.loads(await ws.recv())["text"]

    return asyncio.run(session()) == model.transcribe(samples).text and freed(server)


def freed(server: RecognizerServer) -> bool:
    """Whether every session has ended, within a minute (the handler ends just after the client's close)."""

    async def wait() -> None:
        while server.sessions:
            await asyncio.sleep(0.02)

    asyncio.run(asyncio.wait_for(wait(), 60))
    return True


def config(**keys: Any) -> str:
    return json.dumps({"config": keys})


@pytest.mark.parametrize(
    ("messages", "says"),
    [
        ([config(sample_rate=0)], "sample_rate"),
        ([config(sample_rate=-16000)], "sample_rate"),
        ([config(sample_rate="fast")], "sample_rate"),
        ([config(sample_rate=1e9)], "sample_rate"),
        ([config(sample_rate=None)], "sample_rate"),
        ([config(sample_rate=True)], "sample_rate"),
        (['{"config": {"sample_rate": NaN}}'], "sample_rate"),
        ([config(words="yes")], "words"),
        ([config(max_alternatives=-1)], "max_alternatives"),
        ([config(max_alternatives=2.5)], "max_alternatives"),
        ([config(hotwords=["cancelletto"])], "hotwords"),
        ([config(hotwords={"": 3})], "hot word"),
        ([config(hotwords={"cancelletto": "molto"})], "boost"),
        ([config(hotwords={"cancelletto": 1e6})], "boost"),
        ([config(phrase_list="uno due")], "phrase_list"),
        ([config(model="/etc")], "model"),
        ([config(sample_rat=16000)], "unknown key 'sample_rat'"),
        (['{"config": 16000}'], "JSON object"),
        (["hello"], "binary frames"),
        (["[1, 2]"], "binary frames"),
        (['{"eof": 2}'], "eof must be 1"),
        (['{"stop": 1}'], "unknown message 'stop'"),
        ([config(sample_rate=16000), SILENCE, bytes(3201)], "3201 bytes"),
        ([config(sample_rate=16000), bytes(1)], "1 bytes"),
        ([config(sample_rate=16000), SILENCE, "not audio"], "binary frames"),
        ([config(sample_rate=16000), SILENCE, config(sample_rate=8000)], "before the audio"),
    ],
)
def test_bad_messages_get_one_error_and_a_closed_session(
    messages: list[str | bytes],
    says: str,
    server: RecognizerServer,
    test_clips: list[Path],
    served_model: Any,
) -> None:
    reply, code = asyncio.run(send_and_close(f"ws://127.0.0.1:{server.port}", messages))
    assert set(reply) == {"error"} and says in reply["error"], reply
    assert code in (1003, 1008)
    assert transcribes(server, test_clips[0], served_model)


def test_a_client_that_vanishes_mid_stream_frees_its_session(
    server: RecognizerServer, test_clips: list[Path], served_model: Any
) -> None:
    samples, rate = sf.read(test_clips[0], dtype="int16")
    pcm = samples.astype("<i2").tobytes()

    async def vanish() -> None:
        ws = await connect(f"ws://127.0.0.1:{server.port}")
        await ws.send(json.dumps({"config": {"sample_rate": rate}}))
        for at in range(0, len(pcm), 3200):
            await ws.send(pcm[at : at + 3200])  # replies left unread
        ws.transport.abort()  # no closing handshake: the TCP connection just drops

    asyncio.run(vanish())
    assert freed(server)
    assert transcribes(server, test_clips[0], served_model)


def test_a_hundred_connections_at_once_are_served_up_to_the_limit_and_told_to_retry_past_it(
    start_server: Callable[..., Any], test_clips: list[Path], served_model: Any
) -> None:
    limit = 4
    with start_server(max_sessions=limit, workers=2) as server:
        url = f"ws://127.0.0.1:{server.port}"

        async def open_one() -> tuple[ClientConnection, dict[str, Any]]:
            ws = await connect(url)
            with contextlib.suppress(ConnectionClosed):  # a refused session may be closed already
                await ws.send(config(sample_rate=16000))
                await ws.send(SILENCE)
            return ws, json.loads(await ws.recv())

        async def hundred() -> tuple[list[dict[str, Any]], list[int | None], list[dict[str, Any]]]:
            opened = await asyncio.gather(*(open_one() for _ in range(100)))
            served = [ws for ws, reply in opened if "partial" in reply]
            refused = [(ws, reply) for ws, reply in opened if "error" in reply]
            for ws, _ in refused:
                await ws.wait_closed()
            finals = []
            for ws in served:
                await ws.send('{"eof": 1}')
                finals.append(json.loads(await ws.recv()))
                await ws.close()
            return [reply for _, reply in refused], [ws.close_code for ws, _ in refused], finals

        refused, codes, finals = asyncio.run(hundred())
        assert len(finals) == limit and all("text" in final for final in finals)
        assert len(refused) == 100 - limit
        assert all("server busy" in reply["error"] for reply in refused) and set(codes) == {1013}
        assert transcribes(server, test_clips[0], served_model)


def test_a_frame_over_the_size_limit_closes_the_session(
    start_server: Callable[..., Any], test_clips: list[Path], served_model: Any
) -> None:
    with start_server(max_frame_bytes=64_000) as server:

        async def too_big() -> int | None:
            async with connect(f"ws://127.0.0.1:{server.port}", max_size=None) as ws:
                await ws.send(config(sample_rate=16000))
                await ws.send(bytes(64_002))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 30)
                return ws.close_code

        assert asyncio.run(too_big()) == 1009  # message too big
        assert transcribes(server, test_clips[0], served_model)


def test_a_silent_client_is_closed_after_the_idle_timeout(
    start_server: Callable[..., Any], test_clips: list[Path], served_model: Any
) -> None:
    with start_server(idle_timeout_s=0.5) as server:

        async def idle() -> tuple[dict[str, Any], int | None]:
            async with connect(f"ws://127.0.0.1:{server.port}") as ws:
                await ws.send(config(sample_rate=16000))
                return await closing_reply(ws)

        reply, code = asyncio.run(idle())
        assert "no message for 0.5 s" in reply["error"] and code == 1008
        assert transcribes(server, test_clips[0], served_model)


def test_eof_before_any_audio_gives_an_empty_result(server: RecognizerServer) -> None:
    async def empty() -> dict[str, Any]:
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send('{"eof" : 1}')
            return json.loads(await ws.recv())

    assert asyncio.run(empty()) == {"text": ""}


def test_noise_and_clipping_are_transcribed_without_error(server: RecognizerServer) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(-32768, 32767, 16000 * 3, dtype=np.int16).astype("<i2").tobytes()

    async def loud() -> dict[str, Any]:
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send(config(sample_rate=16000))
            await ws.send(noise)
            await ws.recv()
            await ws.send('{"eof": 1}')
            return json.loads(await ws.recv())

    assert "text" in asyncio.run(loud())


def test_a_worker_process_that_dies_ends_its_sessions_only(
    start_server: Callable[..., Any], test_clips: list[Path], served_model: Any
) -> None:
    before = {child.pid for child in multiprocessing.active_children()}
    with start_server(processes=1) as server:
        (worker,) = [c for c in multiprocessing.active_children() if c.pid not in before]

        async def killed_mid_session() -> tuple[dict[str, Any], int | None]:
            async with connect(f"ws://127.0.0.1:{server.port}") as ws:
                await ws.send(config(sample_rate=16000))
                await ws.send(SILENCE)
                assert "partial" in json.loads(await ws.recv())
                os.kill(worker.pid, signal.SIGKILL)  # as the kernel's OOM killer would
                await asyncio.to_thread(worker.join, 30)
                await ws.send(SILENCE)
                return await closing_reply(ws)

        reply, code = asyncio.run(killed_mid_session())
        assert "worker process" in reply["error"] and code == 1008
        assert transcribes(server, test_clips[0], served_model)  # a new process took over
