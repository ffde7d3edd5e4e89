"""Hot words per session of `dsita serve`: a session's results equal `SpeechModel.transcribe` with the same
hot words, the next session without them is unchanged, and a hot word the alphabet cannot spell ends the
session with one clear error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

from dsita.serve.protocol import PHRASE_BOOST
from dsita.serve.server import RecognizerServer
from tests.serve.test_server import joined_text, pcm_of, vosk_session, words_of

HOTWORDS = {"ponte": 5.0, "lungo": 6.0, "teniamo": 6.0}  # "teniamo" is not in the scorer's vocabulary


def test_a_sessions_hot_words_give_what_transcribe_gives(
    server: RecognizerServer, served_model: Any, test_clips: list[Path], tmp_path: Path
) -> None:
    samples = np.concatenate([sf.read(clip, dtype="int16")[0] for clip in test_clips[3:6]])
    path = tmp_path / "three.wav"
    sf.write(path, samples, 16000, subtype="PCM_16")
    pcm, rate = pcm_of(path)
    url = f"ws://127.0.0.1:{server.port}"
    boosted = asyncio.run(vosk_session(url, pcm, rate, {"hotwords": HOTWORDS}))
    expected = served_model.transcribe(samples, hotwords=HOTWORDS)
    assert joined_text(boosted) == expected.text
    assert [w[0] for w in words_of(boosted)] == [w.word for w in expected.words]
    assert set(HOTWORDS) <= set(expected.text.split())
    # Hot words belong to their session: the next one has none.
    plain = asyncio.run(vosk_session(url, pcm, rate))
    assert joined_text(plain) == served_model.transcribe(samples).text != expected.text
    # Vosk's phrase_list is taken as hot words at PHRASE_BOOST.
    listed = asyncio.run(vosk_session(url, pcm, rate, {"phrase_list": sorted(HOTWORDS)}))
    assert (
        joined_text(listed)
        == served_model.transcribe(samples, hotwords=dict.fromkeys(HOTWORDS, PHRASE_BOOST)).text
    )


def test_a_hot_word_the_alphabet_cannot_spell_ends_the_session(server: RecognizerServer) -> None:
    async def session() -> tuple[dict[str, Any], int | None]:
        async with connect(f"ws://127.0.0.1:{server.port}") as ws:
            await ws.send(json.dumps({"config": {"sample_rate": 16000, "hotwords": {"жук": 4}}}))
            await ws.send(b"\x00\x00" * 3200)
            reply = json.loads(await ws.recv())
            await ws.wait_closed()
            return reply, ws.close_code

    reply, code = asyncio.run(session())
    assert reply == {"error": "hot word 'жук' cannot be spelled: character 'ж' not in alphabet"}
    assert code is not None and code != 1000
