"""`dsita serve` with real WebSocket clients in Vosk's style: transcripts equal `dsita transcribe`'s."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dsita.decoding.transcript import Transcript, Word
from dsita.serve.server import RecognizerServer

FRAME_SECONDS = 0.2  # vosk-server's example clients send 0.2 s of audio a frame


def pcm_of(path: Path) -> tuple[bytes, int]:
    samples, rate = sf.read(path, dtype="int16")
    return samples.astype("<i2").tobytes(), rate


async def vosk_session(
    url: str,
    pcm: bytes,
    rate: int,
    config: dict[str, Any] | None = None,
    frame_seconds: float = FRAME_SECONDS,
) -> list[dict[str, Any]]:
    """What vosk-server's websocket/test.py does: config, then a frame and its reply at a time, then eof.
    The config and eof strings are spelled as Vosk's clients spell them."""
    async with connect(url) as ws:
        if config is None:
            await ws.send('{ "config" : { "sample_rate" : ' + str(rate) + " } }")
        else:
            await ws.send(json.dumps({"config": {"sample_rate": rate, **config}}))
        messages = []
        frame = int(rate * frame_seconds) * 2
        for at in range(0, len(pcm), frame):
            await ws.send(pcm[at : at + frame])
            messages.append(json.loads(await ws.recv()))
        await ws.send('{"eof" : 1}')
        messages.append(json.loads(await ws.recv()))
        await ws.wait_closed()
    return messages


def results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "text" in m]


def joined_text(messages: list[dict[str, Any]]) -> str:
    return " ".join(m["text"] for m in results(messages) if m["text"])


def words_of(messages: list[dict[str, Any]]) -> list[tuple[str, float, float, float]]:
    return [
        (w["word"], w["start"], w["end"], w["conf"]) for m in results(messages) for w in m.get("result", [])
    ]


def reference_words(record: dict[str, Any]) -> list[tuple[str, float, float, float]]:
    return [(w["word"], w["start"], w["end"], w["confidence"]) for w in record["words"]]


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def concatenated(clips: list[Path], path: Path) -> Path:
    return write_wav(path, np.concatenate([sf.read(c, dtype="int16")[0] for c in clips]), 16000)


def test_clips_stream_to_the_transcripts_of_dsita_transcribe(
    server: RecognizerServer, test_clips: list[Path], transcribe_cli: Callable[..., Any]
) -> None:
    chosen = test_clips[:6]
    for clip, record in zip(chosen, transcribe_cli(chosen), strict=True):
        pcm, rate = pcm_of(clip)
        messages = asyncio.run(vosk_session(f"ws://127.0.0.1:{server.port}", pcm, rate))
        frames = -(-len(pcm) // (int(rate * FRAME_SECONDS) * 2))
        assert len(messages) == frames + 1  # one reply per frame, then the final result
        assert all("partial" in m for m in messages[:-1]) and "text" in messages[-1]
        assert joined_text(messages) == record["text"] != ""
        assert words_of(messages) == reference_words(record)


def test_a_long_stream_comes_back_as_several_utterances_joining_to_the_whole_transcript(
    server: RecognizerServer, test_clips: list[Path], transcribe_cli: Callable[..., Any], tmp_path: Path
) -> None:
    wav = concatenated(test_clips[:16], tmp_path / "long.wav")
    (record,) = transcribe_cli([wav])
    pcm, rate = pcm_of(wav)
    messages = asyncio.run(vosk_session(f"ws://127.0.0.1:{server.port}", pcm, rate))
    assert len(results(messages)) >= 2  # the VAD cut the stream: each utterance's result came as it ended
    assert joined_text(messages) == record["text"]
    assert words_of(messages) == reference_words(record)
    partials = [m["partial"] for m in messages if "partial" in m]
    assert any(partials), "no partial result while streaming"


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_sample_rates_are_resampled_as_dsita_transcribe_resamples_files(
    rate: int,
    server: RecognizerServer,
    test_clips: list[Path],
    transcribe_cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    audio = np.concatenate([sf.read(c, dtype="float32")[0] for c in test_clips[:4]])
    wav = write_wav(tmp_path / f"clip-{rate}.wav", soxr.resample(audio, 16000, rate), rate)
    (record,) = transcribe_cli([wav])
    pcm, file_rate = pcm_of(wav)
    assert file_rate == rate
    messages = asyncio.run(vosk_session(f"ws://127.0.0.1:{server.port}", pcm, rate))
    assert joined_text(messages) == record["text"] != ""


def test_concurrent_sessions_each_get_their_own_transcript(
    server: RecognizerServer, test_clips: list[Path], transcribe_cli: Callable[..., Any]
) -> None:
    chosen = test_clips[6:12]
    records = transcribe_cli(chosen)
    url = f"ws://127.0.0.1:{server.port}"

    async def all_at_once() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(vosk_session(url, *pcm_of(clip), frame_seconds=0.1) for clip in chosen))

    for messages, record in zip(asyncio.run(all_at_once()), records, strict=True):
        assert joined_text(messages) == record["text"]
        assert words_of(messages) == reference_words(record)
    asyncio.run(asyncio.wait_for(sessions_ended(server), 60))


async def sessions_ended(server: RecognizerServer) -> None:
    """Returns once no session is open (a handler ends just after its client has closed)."""
    while server.sessions:
        await asyncio.sleep(0.02)


def test_worker_processes_serve_the_same_transcripts(
    start_server: Callable[..., Any], test_clips: list[Path], transcribe_cli: Callable[..., Any]
) -> None:
    chosen = test_clips[12:16]
    records = transcribe_cli(chosen)
    with start_server(processes=2) as server:
        url = f"ws://127.0.0.1:{server.port}"

        async def all_at_once() -> list[list[dict[str, Any]]]:
            return await asyncio.gather(*(vosk_session(url, *pcm_of(clip)) for clip in chosen))

        for messages, record in zip(asyncio.run(all_at_once()), records, strict=True):
            assert joined_text(messages) == record["text"]
            assert words_of(messages) == reference_words(record)


def test_reset_sends_the_utterance_so_far_and_times_go_on(
    server: RecognizerServer, test_clips: list[Path], transcribe_cli: Callable[..., Any]
) -> None:
    first, second = transcribe_cli(test_clips[:2])
    (pcm_a, rate), (pcm_b, _) = pcm_of(test_clips[0]), pcm_of(test_clips[1])

    async def two_utterances() -> tuple[dict[str, Any], dict[str, Any]]:
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send(json.dumps({"config": {"sample_rate": rate}}))
            for pcm in (pcm_a,):
                await ws.send(pcm)
                await ws.recv()
            await ws.send('{"reset" : 1}')
            after_reset = json.loads(await ws.recv())
            await ws.send(pcm_b)
            await ws.recv()
            await ws.send('{"eof" : 1}')
            return after_reset, json.loads(await ws.recv())

    after_reset, final = asyncio.run(two_utterances())
    assert after_reset["text"] == first["text"] and final["text"] == second["text"]
    offset = len(pcm_a) / 2 / rate
    expected = [round(w["start"] + offset, 3) for w in second["words"]]
    assert [w["start"] for w in final["result"]] == pytest.approx(expected, abs=0.0015)


def test_config_options_shape_the_messages(server: RecognizerServer, test_clips: list[Path]) -> None:
    pcm, rate = pcm_of(test_clips[0])
    url = f"ws://127.0.0.1:{server.port}"
    plain = asyncio.run(vosk_session(url, pcm, rate, {"words": 0}))
    assert "result" not in plain[-1] and plain[-1]["text"]
    alternatives = asyncio.run(vosk_session(url, pcm, rate, {"max_alternatives": 5}))
    (best,) = alternatives[-1]["alternatives"]  # dsita's beam search returns its best hypothesis only
    assert best["text"] == plain[-1]["text"] and 0 < best["confidence"] <= 1
    partial_words = asyncio.run(vosk_session(url, pcm, rate, {"partial_words": True}))
    with_words = [m for m in partial_words if m.get("partial")]
    assert with_words and all(len(m["partial_result"]) == len(m["partial"].split()) for m in with_words)


def test_itn_in_the_config_rewrites_the_results(
    server: RecognizerServer, test_clips: list[Path], transcribe_cli: Callable[..., Any]
) -> None:
    (record,) = transcribe_cli(test_clips[:1])
    words = tuple(Word(w["word"], w["start"], w["end"], w["confidence"]) for w in record["words"])
    expected = Transcript(record["text"], words).itn()
    pcm, rate = pcm_of(test_clips[0])
    messages = asyncio.run(vosk_session(f"ws://127.0.0.1:{server.port}", pcm, rate, {"itn": True}))
    assert joined_text(messages) == expected.text
    assert [w[0] for w in words_of(messages)] == [w.word for w in expected.words]


def http_get(server: RecognizerServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_the_page_and_info_are_served_over_plain_http(server: RecognizerServer) -> None:
    status, kind, body = http_get(server, "/")
    assert status == 200 and kind.startswith("text/html") and b"app.js" in body
    for name, kind_prefix in (("app.js", "text/javascript"), ("pcm-worklet.js", "text/javascript")):
        status, kind, body = http_get(server, f"/{name}")
        assert status == 200 and kind.startswith(kind_prefix) and body
    status, kind, body = http_get(server, "/info")
    info = json.loads(body)
    assert kind == "application/json" and info["sample_rate"] == 16000 and info["model"] == "it-it.zip"
    assert http_get(server, "/../../etc/passwd")[0] == 404
    assert http_get(server, "/missing.html")[0] == 404


def test_a_page_from_another_origin_cannot_connect(server: RecognizerServer) -> None:
    url = f"ws://127.0.0.1:{server.port}"

    async def with_origin(origin: str) -> int:
        try:
            async with connect(url, origin=origin) as ws:
                await ws.send('{"eof": 1}')
                await ws.recv()
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(with_origin("http://evil.example")) == 403
    assert asyncio.run(with_origin(f"http://127.0.0.1:{server.port}")) == 101


# Started with SIGINT ignored, as a shell's background job (and so CI) starts it, Ctrl-C must still stop it.
@pytest.mark.parametrize("sigint_at_start", [signal.SIG_DFL, signal.SIG_IGN])
def test_dsita_serve_runs_from_the_command_line(
    model_zip: Path, test_clips: list[Path], sigint_at_start: signal.Handlers
) -> None:
    command = [
        sys.executable,
        "-m",
        "dsita.cli",
        "serve",
        "--model",
        str(model_zip),
        "--port",
        "0",
        "--no-lm",
    ]
    env = {**os.environ, "COLUMNS": "300"}
    process = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint_at_start),
    )
    try:
        assert process.stderr is not None
        watchdog = threading.Timer(120, process.kill)  # a server that never says where it listens
        watchdog.start()
        lines = []
        while not lines or " and http://" not in lines[-1]:
            lines.append(process.stderr.readline())
            assert lines[-1], f"dsita serve exited: {lines}"
        watchdog.cancel()
        line = lines[-1]
        assert "greedy" in line, lines
        port = int(line.split("ws://127.0.0.1:")[1].split()[0])
        pcm, rate = pcm_of(test_clips[0])
        messages = asyncio.run(vosk_session(f"ws://127.0.0.1:{port}", pcm, rate))
        assert results(messages)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert process.returncode == 0
