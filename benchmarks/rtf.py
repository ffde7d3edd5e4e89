"""Inference speed, single-threaded: real-time factor (processing time / audio duration) of the exported model
in fp32 and int8, greedy and with the LM, against the floor set by the model's FLOPs and this machine's
measured GEMM rate; streaming latency from the end of the audio to the final transcript; it-it.zip's size.

    .venv/bin/python benchmarks/rtf.py [--sizes 2048,256] [--seconds 60] [--beam 500] [--scorer DIR]

N_HIDDEN=256 is the small trained test model (tests/fixtures/small_model.pt); other sizes are randomly
initialised (their logits are noise, so their beam-search time is not a trained model's). The audio is the
sample corpus's test clips, one after another. Prints ours, the target or floor, and the ratio; never
asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.export.card import ModelInfo
from dsita.export.onnx import export_fp32, quantize_int8
from dsita.export.release import release_metadata
from dsita.inference.model import InferenceOptions, SpeechModel, load_model
from dsita.inference.package import ALPHABET_FILE, MODEL_FILE, SCORER_DIR
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.lm.corpus import evaluation_sentences
from dsita.model.base import build_model, model_config_to_dict, new_model_config
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_checkpoint
from train_speed import FRAMES_PER_SECOND, macs_per_frame  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = REPO / "tests" / "fixtures" / "small_model.pt"
RTF_TARGET = 0.1  # int8 at N_HIDDEN=2048 with the LM, one core
LATENCY_TARGET_MS = 100.0
ZIP_TARGET_MB = 46.0  # the original's tflite
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def gemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Sustained single-threaded fp32 matrix-multiply rate (numpy's BLAS)."""
    a, b = np.random.rand(4 * n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 4 * n * n * n * repeats / (time.perf_counter() - start) / 1e9


def checkpoint_for(n_hidden: int) -> dict:
    if n_hidden == 256 and SMALL_MODEL.is_file():
        return load_checkpoint(SMALL_MODEL)
    alphabet = Alphabet.italian()
    torch.manual_seed(0)
    model = build_model(new_model_config("deepspeech", len(alphabet) + 1, n_hidden=n_hidden))
    return {
        "model_config": model_config_to_dict(model.config),
        "model": model.state_dict(),
        "alphabet": list(alphabet.labels),
    }


def export_packages(n_hidden: int, work: Path, scorer: Path) -> tuple[dict[str, Path], int, int]:
    """Package folders {fp32, int8} with the scorer; the sizes of the int8 model.onnx and of it-it.zip
    without the scorer."""
    from dsita.training.checkpoint import model_from_checkpoint

    checkpoint = checkpoint_for(n_hidden)
    model, alphabet = model_from_checkpoint(checkpoint)
    metadata = release_metadata(model, alphabet, ModelInfo(), None, (), work)
    folders = {precision: work / f"{n_hidden}-{precision}" for precision in ("fp32", "int8")}
    for folder in folders.values():
        folder.mkdir()
        alphabet.save(folder / ALPHABET_FILE)
        shutil.copytree(scorer, folder / SCORER_DIR)
    export_fp32(model.eval(), folders["fp32"] / MODEL_FILE, metadata)
    quantize_int8(folders["fp32"] / MODEL_FILE, folders["int8"] / MODEL_FILE, metadata)
    zip_path = work / f"{n_hidden}-it-it.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in (MODEL_FILE, ALPHABET_FILE):
            zf.write(folders["int8"] / name, name)
    return folders, (folders["int8"] / MODEL_FILE).stat().st_size, zip_path.stat().st_size


def real_time_factor(model: SpeechModel, audio: np.ndarray) -> float:
    model.transcribe(audio[: SAMPLE_RATE * 2])  # warm-up
    start = time.perf_counter()
    model.transcribe(audio)
    return (time.perf_counter() - start) / (audio.size / SAMPLE_RATE)


def latencies_ms(model: SpeechModel, clips: list[np.ndarray], chunk: int = 5120) -> list[float]:
    """Per clip: fed in 0.32 s chunks, the time from the last chunk's arrival to the final transcript."""
    results = []
    for audio in clips:
        stream = model.stream()
        last = (audio.size - 1) // chunk * chunk
        for at in range(0, last, chunk):
            stream.feed(audio[at : at + chunk])
        start = time.perf_counter()
        stream.feed(audio[last:])
        stream.finish()
        results.append((time.perf_counter() - start) * 1000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="2048,256", help="N_HIDDEN values")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per RTF measurement")
    parser.add_argument("--beam", type=int, default=500, help="beam width with the LM")
    parser.add_argument("--scorer", type=Path, help="scorer folder (default: built from fortunes-it)")
    args = parser.parse_args()
    if any(os.environ.get(name) != "1" for name in THREAD_VARIABLES):
        # Thread pools are sized when numpy and torch load: start again with one thread everywhere.
        env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; onnxruntime and BLAS on 1 thread")
    gemm = gemm_gflops()
    print(f"GEMM rate (fp32 numpy, 1 thread): {gemm:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        import_common_voice(
            REPO / "samples" / "it-sample.tar.gz", corpus, ImportOptions(Alphabet.italian(), progress=False)
        )
        scorer = args.scorer
        if scorer is None:
            scorer = work / "scorer"
            exclude = evaluation_sentences([corpus / "dev.csv", corpus / "test.csv"])
            build_scorer(scorer, Alphabet.italian(), LmBuildOptions(memory="10%", workers=1), exclude=exclude)
        clips = [load_audio(s.wav_path) for s in read_csv(corpus / "test.csv")]
        audio = np.concatenate(clips)
        audio = np.tile(audio, int(args.seconds * SAMPLE_RATE / audio.size) + 1)[
            : int(args.seconds * SAMPLE_RATE)
        ]

        print(f"{'N_HIDDEN':>8} {'model':>5} {'decoding':>14} {'RTF':>7} {'floor':>7} {'floor/RTF':>9}")
        for n_hidden in (int(s) for s in args.sizes.split(",")):
            folders, onnx_bytes, zip_bytes = export_packages(n_hidden, work, scorer)
            greedy_rtf = 0.0
            floor = 2 * macs_per_frame(n_hidden) * FRAMES_PER_SECOND / (gemm * 1e9)
            for precision, folder in folders.items():
                for use_lm in (False, True):
                    model = load_model(folder, InferenceOptions(use_lm=use_lm, beam_width=args.beam))
                    rtf = real_time_factor(model, audio)
                    decoding = f"LM beam {args.beam}" if use_lm else "greedy"
                    row = f"{n_hidden:>8} {precision:>5} {decoding:>14} {rtf:>7.4f} {floor:>7.4f}"
                    print(f"{row} {floor / rtf:>9.1%}")
                    if use_lm:
                        print(f"{'':>8} of which beam search with the LM: {rtf - greedy_rtf:.4f}")
                    greedy_rtf = rtf
                    if precision == "int8":
                        ms = latencies_ms(model, clips)
                        print(
                            f"{'':>8} streaming latency ({decoding}): median {statistics.median(ms):.1f} ms, "
                            f"max {max(ms):.1f} ms over {len(ms)} clips; target {LATENCY_TARGET_MS:.0f} ms, "
                            f"ratio {max(ms) / LATENCY_TARGET_MS:.2f}"
                        )
            mb, mib = zip_bytes / 1e6, zip_bytes / 2**20
            print(
                f"{'':>8} it-it.zip without scorer: {zip_bytes:,} bytes = {mb:.2f} MB = {mib:.2f} MiB;"
                f" target {ZIP_TARGET_MB:.0f} MB, ratio {mb / ZIP_TARGET_MB:.3f}"
                f" (deflate: {zip_bytes / onnx_bytes:.1%} of model.onnx's {onnx_bytes:,} bytes)"
            )
        print(f"target: RTF <= {RTF_TARGET} for int8 at N_HIDDEN=2048 with the LM")


if __name__ == "__main__":
    main()
