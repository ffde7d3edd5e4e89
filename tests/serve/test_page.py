"""`dsita serve`'s page in headless Chromium (Debian's `chromium`, driven by playwright-core from npm): a WAV
through the fake microphone, and a WAV picked as a file, come out as the transcript on the page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from dsita.serve.server import RecognizerServer

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / ".cache" / "node" / "node_modules"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
PAGE_CHECK = Path(__file__).with_name("page_check.cjs")


@pytest.fixture(scope="module")
def browser_tools() -> str:
    """The node executable, once Chromium and playwright-core are known to be installed."""
    node = shutil.which("node")
    missing = [
        what
        for what, present in (
            ("node (Node.js 18+)", node is not None),
            (f"{CHROMIUM} (apt-get install chromium)", CHROMIUM.is_file()),
            (
                "playwright-core (bash tools/setup_node.sh .cache/node)",
                (NODE_MODULES / "playwright-core").is_dir(),
            ),
        )
        if not present
    ]
    if missing:
        pytest.fail(f"the page test needs {', '.join(missing)}")
    assert node is not None
    return node


def run_page(node: str, server: RecognizerServer, mode: str, wav: Path, out: Path) -> dict[str, Any]:
    """What the page shows once `wav` went through it; the page's config and its audio under "sent"."""
    seconds = sf.info(wav).duration
    pcm = out / f"{mode}-sent.pcm"
    url = f"http://127.0.0.1:{server.port}/"
    args = [node, str(PAGE_CHECK), url, mode, str(wav), f"{seconds:.3f}", str(pcm)]
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES), "CHROMIUM": str(CHROMIUM)}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert page["state"] == "done", page
    (config,) = [json.loads(m)["config"] for m in page["sent"] if "config" in m]
    rate = int(config["sample_rate"])
    sent = np.frombuffer(pcm.read_bytes(), dtype="<i2")
    page["sent_wav"] = out / f"{mode}-sent.wav"
    sf.write(page["sent_wav"], sent, rate, subtype="PCM_16")
    page["sent_audio"] = soxr.resample(sent.astype(np.float32) / 32768, rate, 16000)
    return page


def padded_clips(clips: list[Path], path: Path, silence_s: float) -> Path:
    """Clips one after another between stretches of silence (the fake microphone starts before the page
    listens, and the last words need a moment to arrive)."""
    silence = np.zeros(int(16000 * silence_s), dtype=np.int16)
    audio = np.concatenate([silence, *(sf.read(c, dtype="int16")[0] for c in clips), silence])
    sf.write(path, audio, 16000, subtype="PCM_16")
    return path


def similarity(received: np.ndarray, sent: np.ndarray, window: int = 16000) -> float:
    """How much of `sent` is in `received` (both 16 kHz): for each second of `sent` that is not silence,
    the peak normalized cross-correlation with `received` at any shift and gain (1: the same audio, near 0:
    another rate, another file, silence); the median of those, so that one skip of the capture costs
    one second, not the rest of the file."""
    n = 1 << int(np.ceil(np.log2(received.size + window)))
    spectrum = np.fft.rfft(received, n)
    energy = np.r_[0.0, np.cumsum(received.astype(np.float64) ** 2)]
    local_norm = np.sqrt(np.maximum(energy[window:] - energy[:-window], 1e-12))  # of received[k : k + window]
    scores = []
    for at in range(0, sent.size - window + 1, window):
        piece = sent[at : at + window].astype(np.float64)
        if np.sqrt(np.mean(piece**2)) < 1e-3:
            continue
        correlation = np.fft.irfft(spectrum * np.conj(np.fft.rfft(piece, n)), n)[: local_norm.size]
        scores.append(float(np.max(correlation / (local_norm * np.linalg.norm(piece)))))
    return float(np.median(scores))


def test_a_file_picked_on_the_page_is_transcribed_as_dsita_transcribe_does(
    browser_tools: str,
    server: RecognizerServer,
    test_clips: list[Path],
    transcribe_cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    wav = padded_clips(test_clips[:3], tmp_path / "three clips.wav", 0.5)
    (record,) = transcribe_cli([wav])
    page = run_page(browser_tools, server, "file", wav, tmp_path)
    # The page decodes the file at the model's rate: a 16 kHz WAV reaches the server sample for sample.
    assert np.array_equal(sf.read(page["sent_wav"], dtype="int16")[0], sf.read(wav, dtype="int16")[0])
    assert page["final"] == record["text"] != ""
    assert [row[0] for row in page["rows"]] == [w["word"] for w in record["words"]]
    assert [float(row[1]) for row in page["rows"]] == [round(w["start"], 2) for w in record["words"]]
    assert page["partials"], "no partial result was shown while the file streamed"


@pytest.mark.slow
def test_the_microphone_is_transcribed_live(
    browser_tools: str,
    server: RecognizerServer,
    test_clips: list[Path],
    transcribe_cli: Callable[..., Any],
    tmp_path: Path,
) -> None:
    wav = padded_clips(test_clips[3:6], tmp_path / "microphone.wav", 1.5)
    page = run_page(browser_tools, server, "mic", wav, tmp_path)
    # What the microphone delivered is the file, through Chromium's resampling to its own rate (24-39 dB
    # SNR measured, lower when a busy machine makes the capture skip); the small model's transcript moves
    # with any shift of the start, so the page's transcript is checked against the audio the page sent,
    # and that audio against the file.
    assert similarity(page["sent_audio"], sf.read(wav, dtype="float32")[0]) >= 0.9
    (record,) = transcribe_cli([page["sent_wav"]])
    assert page["final"] == record["text"] != ""
    assert [row[0] for row in page["rows"]] == [w["word"] for w in record["words"]]
    assert page["partials"], "no partial result was shown while listening"
