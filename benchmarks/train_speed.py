"""Training throughput (audio seconds per second) against the floor set by the model's FLOPs and this
machine's measured GEMM rate, plus peak resident memory of real training runs on datasets of two sizes.

    .venv/bin/python benchmarks/train_speed.py [--sizes 2048,256] [--batch 16] [--steps 3]

Prints our figure, the GEMM bound from the same run, and the ratio. Never asserts a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dsita.audio import SAMPLE_RATE
from dsita.data.csvs import Sample, write_csv
from dsita.model.base import build_model, count_parameters, new_model_config
from dsita.text.alphabet import Alphabet

CLIP_SECONDS = 5.0
FRAMES_PER_SECOND = 50  # 20 ms step


def gemm_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Sustained fp32 matrix-multiply rate of this machine, as the training GEMMs see it."""
    a, b = torch.randn(4 * n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * 4 * n * n * n * repeats / (time.perf_counter() - start) / 1e9


def macs_per_frame(n_hidden: int, n_input: int = 494, n_outputs: int = 39) -> int:
    """Multiply-accumulates per 20 ms frame: three dense layers, the LSTM (input and recurrent), two more."""
    h = n_hidden
    return n_input * h + 2 * h * h + 4 * h * (h + h) + h * h + h * n_outputs


def training_speed(n_hidden: int, batch: int, steps: int) -> tuple[float, float, int]:
    """Audio seconds per second of real Adam steps on batches of 5 s clips, FLOPs per audio second, params."""
    alphabet = Alphabet.italian()
    model = build_model(new_model_config("deepspeech", len(alphabet) + 1, n_hidden=n_hidden, dropout=0.4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    samples = int(CLIP_SECONDS * SAMPLE_RATE)
    waves = torch.randn(batch, samples) * 0.1
    lengths = torch.full((batch,), samples)
    targets = torch.randint(0, len(alphabet), (batch * 60,))
    target_lengths = torch.full((batch,), 60)

    def step() -> None:
        features, feature_lengths = model.featurizer(waves, lengths)
        output = model(features, feature_lengths)
        log_probs = output.logits.log_softmax(-1).transpose(0, 1)
        loss = torch.nn.functional.ctc_loss(
            log_probs, targets, output.lengths, target_lengths, blank=model.blank
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 400.0)
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    audio_per_second = steps * batch * CLIP_SECONDS / elapsed
    flops_per_audio_second = 3 * 2 * macs_per_frame(n_hidden) * FRAMES_PER_SECOND  # forward + 2x backward
    return audio_per_second, flops_per_audio_second, count_parameters(model)


MEMORY_RUN = """
import sys
from pathlib import Path
from dsita.text.alphabet import Alphabet
from dsita.training.loop import TrainOptions, train
folder = Path(sys.argv[1])
options = TrainOptions(train_csvs=(folder / sys.argv[2],), dev_csvs=(folder / "dev.csv",),
    checkpoint_dir=folder / ("ckpt-" + sys.argv[2]), batch_size=16, epochs=1, workers=0,
    model_fields={'n_hidden': 64},
    show_progress=False, amp=False)
train(options, Alphabet.italian())
# VmHWM is this process's own peak (ru_maxrss would carry the forking parent's peak across exec).
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def peak_rss_mb(folder: Path, csv_name: str) -> float:
    """Peak resident memory of a real one-epoch training run, loading in the main process (workers=0)."""
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_RUN, str(folder), csv_name], capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        raise SystemExit(f"training run on {csv_name} failed:\n{run.stderr}")
    return int(run.stdout.split()[-1]) / 1024


def memory_figures(work: Path, sizes: tuple[int, int]) -> list[tuple[int, float]]:
    """Same clips listed many times: memory must not grow with the number of rows."""
    rng = np.random.default_rng(0)
    clips = []
    for i in range(32):
        path = work / f"clip{i}.wav"
        sf.write(
            path, (rng.standard_normal(SAMPLE_RATE * 2) * 0.05).astype(np.float32), SAMPLE_RATE, "PCM_16"
        )
        clips.append(Sample(path, path.stat().st_size, "una frase di prova", 2.0))
    write_csv(work / "dev.csv", clips[:4])
    results = []
    for n in sizes:
        write_csv(work / f"train{n}.csv", [clips[i % len(clips)] for i in range(n)])
        results.append((n, peak_rss_mb(work, f"train{n}.csv")))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="2048,256", help="N_HIDDEN values")
    parser.add_argument("--batch", type=int, default=16, help="clips of 5 s per batch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per size")
    parser.add_argument("--memory-rows", default="500,4000", help="two dataset sizes for the memory check")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    gemm = gemm_gflops()
    print(f"GEMM rate (fp32 torch.mm): {gemm:.1f} GFLOP/s")
    print(f"{'N_HIDDEN':>8} {'params':>11} {'audio-s/s':>10} {'GEMM bound':>11} {'ratio':>6}")
    for n_hidden in (int(s) for s in args.sizes.split(",")):
        speed, flops, params = training_speed(n_hidden, args.batch, args.steps)
        bound = gemm * 1e9 / flops
        print(f"{n_hidden:>8} {params:>11,} {speed:>10.2f} {bound:>11.2f} {speed / bound:>6.1%}")

    rows = tuple(int(s) for s in args.memory_rows.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        figures = memory_figures(Path(tmp), (rows[0], rows[1]))
    for n, mb in figures:
        print(f"peak RSS training on {n:>6} rows: {mb:.0f} MB")
    print(f"memory ratio {figures[1][0] // figures[0][0]}x rows: {figures[1][1] / figures[0][1]:.2f}x RSS")


if __name__ == "__main__":
    main()
