"""The original clients against dsita's runtime, on the same clips in one run: the real-time factor of Coqui
`stt==1.4.0` on dsita's `output_graph.tflite` (int8 weights, as released; `--float32` adds the float32-weight
file) and of dsita's ONNX int8 runtime on its `model.onnx`, and the .tflite's size against the original's
46 MB.

    .venv/bin/python benchmarks/client_rtf.py [--sizes 256,2048] [--beam 500] [--float32]

Needs the client venvs (`bash tools/setup_clients.sh .cache/clients`). N_HIDDEN=256 is the small trained
test model; other sizes are randomly initialised (their transcripts are noise; the acoustic model's cost is
a trained one's). The clips are the sample corpus's test clips, each transcribed on its own, without a
scorer: `stt` runs its beam search without LM (at `--beam`, and at width 1 to show the decoder's share) with
the 4 TFLite threads it always asks for; dsita decodes greedily (its no-LM mode) on 1 onnxruntime thread.
RTF = summed transcription time / summed audio duration; model loading is reported apart. Never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dsita.audio import SAMPLE_RATE, feature_metadata, load_audio
from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.export.onnx import export_fp32, quantize_int8
from dsita.export.tflite import write_tflite
from dsita.inference.model import InferenceOptions, load_model
from dsita.inference.package import ALPHABET_FILE, GRAPH_VERSION, MODEL_FILE
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import model_from_checkpoint
from rtf import checkpoint_for  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
STT_PYTHON = REPO / ".cache" / "clients" / "stt-1.4.0" / "bin" / "python"
DRIVER = REPO / "tools" / "client_driver.py"
ORIGINAL_TFLITE_MB = 46.0


def export(n_hidden: int, work: Path, beam: int) -> tuple[dict[str, Path], Path]:
    """The .tflite files {int8, float32} and an int8 ONNX package folder of the model of size `n_hidden`."""
    checkpoint = checkpoint_for(n_hidden)
    model, alphabet = model_from_checkpoint(checkpoint)
    model.eval()
    tflite = {weights: work / f"{n_hidden}-{weights}.tflite" for weights in ("int8", "float32")}
    for weights, path in tflite.items():
        write_tflite(model, alphabet, path, beam_width=beam, int8_weights=weights == "int8")
    package = work / f"{n_hidden}-int8"
    package.mkdir()
    alphabet.save(package / ALPHABET_FILE)
    # What dsita's runtime checks in a graph; a release adds who made it and how it scored.
    metadata = {"alphabet": list(alphabet.labels), "graph_version": GRAPH_VERSION, **feature_metadata()}
    export_fp32(model, work / f"{n_hidden}-fp32.onnx", metadata)
    quantize_int8(work / f"{n_hidden}-fp32.onnx", package / MODEL_FILE, metadata)
    return tflite, package


def stt_rtf(
    tflite: Path, clips: list[Path], audio_seconds: float, beam: int, work: Path
) -> tuple[float, float]:
    """(RTF, model load seconds) of the stt client on the clips."""
    job = {"module": "stt", "model": str(tflite), "clips": [str(c) for c in clips], "beam_width": beam}
    job_path, result_path = work / "job.json", work / "result.json"
    job_path.write_text(json.dumps(job), encoding="utf-8")
    subprocess.run(
        [str(STT_PYTHON), str(DRIVER), str(job_path), str(result_path)], check=True, stderr=subprocess.DEVNULL
    )
    result = json.loads(result_path.read_text(encoding="utf-8"))
    return sum(c["seconds"] for c in result["clips"]) / audio_seconds, result["load_seconds"]


def dsita_rtf(package: Path, clips: list[Path], audio_seconds: float) -> tuple[float, float]:
    """(RTF, model load seconds) of dsita's int8 ONNX runtime, greedy, on the clips."""
    start = time.perf_counter()
    model = load_model(package, InferenceOptions(use_lm=False, threads=1))
    load_seconds = time.perf_counter() - start
    audio = [load_audio(clip) for clip in clips]
    model.transcribe(audio[0])  # warm-up, as the client's first call is not timed apart either
    start = time.perf_counter()
    for samples in audio:
        model.transcribe(samples)
    return (time.perf_counter() - start) / audio_seconds, load_seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="256,2048", help="N_HIDDEN values")
    parser.add_argument(
        "--beam", type=int, default=500, help="the stt client's beam width (DeepSpeech's default)"
    )
    parser.add_argument("--float32", action="store_true", help="also run the float32-weight .tflite")
    args = parser.parse_args()
    if not STT_PYTHON.is_file():
        sys.exit(f"client venv {STT_PYTHON.parents[1]} is missing: run tools/setup_clients.sh .cache/clients")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        import_common_voice(
            REPO / "samples" / "it-sample.tar.gz", corpus, ImportOptions(Alphabet.italian(), progress=False)
        )
        clips = [s.wav_path for s in read_csv(corpus / "test.csv")]
        seconds = sum(load_audio(c).size for c in clips) / SAMPLE_RATE
        print(f"{len(clips)} clips, {seconds:.1f} s of audio")
        print(f"{'N_HIDDEN':>8} {'runtime':<50} {'RTF':>7} {'load s':>7}")
        for n_hidden in (int(s) for s in args.sizes.split(",")):
            tflite, package = export(n_hidden, work, args.beam)
            runs = [("int8", args.beam), ("int8", 1)] + ([("float32", args.beam)] if args.float32 else [])
            for weights, beam in runs:
                rtf, load = stt_rtf(tflite[weights], clips, seconds, beam, work)
                runtime = f"stt 1.4.0, {weights} .tflite, beam {beam}, no LM, 4 threads"
                print(f"{n_hidden:>8} {runtime:<50} {rtf:>7.4f} {load:>7.2f}")
            rtf, load = dsita_rtf(package, clips, seconds)
            print(f"{n_hidden:>8} {'dsita ONNX int8, greedy, 1 thread':<50} {rtf:>7.4f} {load:>7.2f}")
            for weights, path in tflite.items():
                size = path.stat().st_size
                mb = size / 1e6
                print(
                    f"{'':>8} output_graph.tflite, {weights} weights: {size:,} bytes = {mb:.1f} MB"
                    f" (the original's: {ORIGINAL_TFLITE_MB:.0f} MB, ratio {mb / ORIGINAL_TFLITE_MB:.2f})"
                )


if __name__ == "__main__":
    main()
