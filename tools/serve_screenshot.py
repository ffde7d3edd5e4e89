"""The README's picture of `dsita serve`'s page (docs/serve.png): a model served on a free port, sample clips
played through headless Chromium's fake microphone, the page captured once the transcript is in.

    .venv/bin/python tools/serve_screenshot.py --model it-it.zip --clips CORPUS/test.csv [--out PNG]

Needs what tests/serve/test_page.py needs: Debian's chromium and playwright-core (tools/setup_node.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from dsita.data.csvs import read_csv
from dsita.inference import InferenceOptions, load_model
from dsita.serve.server import RecognizerServer, ServerOptions

REPO = Path(__file__).resolve().parents[1]
PAGE_CHECK = REPO / "tests" / "serve" / "page_check.cjs"
NODE_MODULES = REPO / ".cache" / "node" / "node_modules"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="model package")
    parser.add_argument(
        "--clips", type=Path, required=True, help="DeepSpeech CSV whose first clips are played"
    )
    parser.add_argument("--count", type=int, default=8, help="clips to play")
    parser.add_argument("--beam", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "serve.png")
    args = parser.parse_args()

    server = RecognizerServer(
        load_model(args.model, InferenceOptions(beam_width=args.beam)), ServerOptions(port=0)
    )
    server.warm_up()
    ready = threading.Event()
    threading.Thread(target=lambda: asyncio.run(server.run(lambda _port: ready.set())), daemon=True).start()
    ready.wait(60)
    silence = np.zeros(24000, dtype=np.int16)
    clips = [sample.wav_path for sample in read_csv(args.clips)[: args.count]]
    audio = np.concatenate([silence, *(sf.read(clip, dtype="int16")[0] for clip in clips), silence])
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clips.wav"
        sf.write(wav, audio, 16000, subtype="PCM_16")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = ["node", str(PAGE_CHECK), f"http://127.0.0.1:{server.port}/", "mic", str(wav)]
        command += [f"{audio.size / 16000:.3f}", str(Path(tmp) / "sent.pcm"), str(args.out)]
        env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    server.stop()
    if result.returncode != 0:
        sys.exit(result.stderr)
    page = json.loads(result.stdout)
    print(f"{args.out}: {page['status']} {page['final']!r}")


if __name__ == "__main__":
    main()
