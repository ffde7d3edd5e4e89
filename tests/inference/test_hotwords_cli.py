"""`dsita transcribe --hotword WORD[:BOOST] --hotwords-file FILE`, against the API with the same hot words."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsita.audio import load_audio
from dsita.data.csvs import read_csv
from dsita.decoding.hotwords import DEFAULT_BOOST
from dsita.export.release import RELEASE_ZIP
from dsita.inference.model import InferenceOptions, load_model

BEAM = 50


def dsita(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "300"}
    command = [sys.executable, "-m", "dsita.cli", "transcribe", *args]
    return subprocess.run(command, input=stdin, capture_output=True, env=env, check=False, timeout=300)


@pytest.fixture(scope="module")
def clip(sample_corpus: Path) -> Path:
    return next(
        s.wav_path for s in read_csv(sample_corpus / "test.csv") if s.transcript.startswith("il ponte")
    )


def test_hot_words_from_flags_and_a_file(small_release: Path, clip: Path, tmp_path: Path) -> None:
    model_path = small_release / RELEASE_ZIP
    listing = tmp_path / "hot.txt"
    listing.write_text("# two words\nlungo:6\nponte:3\n", encoding="utf-8")
    args = [str(clip), "--model", str(model_path), "--beam", str(BEAM), "--json"]
    result = dsita(*args, "--hotwords-file", str(listing), "--hotword", "ponte")  # the flag's boost wins
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    model = load_model(model_path, InferenceOptions(beam_width=BEAM))
    hotwords = {"lungo": 6.0, "ponte": DEFAULT_BOOST}
    expected = model.transcribe(clip, hotwords=hotwords)
    assert record["text"] == expected.text != model.transcribe(clip).text
    assert {"ponte", "lungo"} <= set(record["text"].split())
    # A stream takes them too.
    pcm = (load_audio(clip) * 32767).astype("<i2").tobytes()
    streamed = dsita(
        "--stream", "-", "--model", str(model_path), "--beam", str(BEAM), "--hotword", "ponte", stdin=pcm
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.decode().strip() == model.transcribe(pcm, hotwords={"ponte": DEFAULT_BOOST}).text


def test_bad_hot_words_stop_the_command_in_one_line(small_release: Path, clip: Path, tmp_path: Path) -> None:
    model_path = str(small_release / RELEASE_ZIP)
    listing = tmp_path / "hot.txt"
    listing.write_text("ponte\nlungo:molto\n", encoding="utf-8")
    cases = [
        (["--hotword", "жук"], "hot word 'жук' cannot be spelled: character 'ж' not in alphabet"),
        (["--hotword", "ponte:tanto"], "--hotword: the boost of 'ponte' is 'tanto', not a number"),
        (["--hotwords-file", str(listing)], f"{listing}:2: the boost of 'lungo' is 'molto', not a number"),
        (
            ["--hotword", "ponte", "--no-lm"],
            "hot words need the beam search with a scorer, and the LM is off",
        ),
    ]
    for flags, message in cases:
        result = dsita(str(clip), "--model", model_path, *flags)
        errors = result.stderr.decode().splitlines()
        assert result.returncode == 2 and result.stdout == b""
        assert errors == [f"error: {message}"]
