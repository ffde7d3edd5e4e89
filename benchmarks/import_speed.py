"""Clip conversion speed: `dsita import cv` end to end against the seed's one `sox` process per clip.

    .venv/bin/python benchmarks/import_speed.py [--clips 200] [--workers 2] [--rounds 3]

Makes N ~4 s 48 kHz MP3 clips (every other one stereo; syllable-like chirps in noise), packs them as a
Common Voice archive, then times
  (a) import_common_voice on the archive, end to end (stream, checks, conversion, CSVs), TSVs after the clips
      as in the worst case and TSVs first, each into a fresh output folder;
  (b) the seed's method: `sox in.mp3 -r 16000 -c 1 -b 16 out.wav`, one process per clip, sequentially, on
      already-extracted MP3s (its `tar xzf` is not counted).
The methods run in alternating rounds and the fastest round of each counts, so that load from other work
hits them alike. Prints wall time, clips/s, CPU ms per clip (all processes) and the ratio to sox.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf

from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.text.alphabet import Alphabet

RATE = 48000
SECS = 4.0
TOP = "cv-corpus-bench/it"
SENTENCES = [
    "Il treno per Milano parte alle 10 dal binario tre",
    "Domani andiamo al mare se non piove",
    "L’Italia è una repubblica democratica fondata sul lavoro",
    "Ho comprato due chili di mele e un po' di pane",
]


def make_clip(args: tuple[int, Path]) -> Path:
    """Syllable-like bursts: gliding harmonics under a 4 Hz envelope, plus a little noise."""
    number, folder = args
    rng = np.random.default_rng(number)
    t = np.arange(int(SECS * RATE)) / RATE
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * (3 + rng.random()) * t), 0, None) ** 2
    audio = (0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    if number % 2:
        audio = np.stack([audio, 0.8 * audio], axis=1)
    path = folder / f"common_voice_it_{number}.mp3"
    sf.write(path, audio, RATE, format="MP3")
    return path


def make_archive(clips: list[Path], path: Path, tsv_first: bool) -> None:
    header = "client_id\tpath\tsentence_id\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\n"
    tsvs: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for i, clip in enumerate(clips):
        split = "dev" if i % 10 == 8 else "test" if i % 10 == 9 else "train"
        tsvs[split].append(f"c{i}\t{clip.name}\ts{i}\t{SENTENCES[i % len(SENTENCES)]}\t2\t0\t\t\t\tit\n")
    staged = path.parent / f"{path.stem}-tsv"
    staged.mkdir(exist_ok=True)
    for split, rows in tsvs.items():
        (staged / f"{split}.tsv").write_text(header + "".join(rows), encoding="utf-8")
    with tarfile.open(path, "w:gz") as tar:
        if tsv_first:
            for tsv in sorted(staged.iterdir()):
                tar.add(tsv, f"{TOP}/{tsv.name}")
        for clip in clips:
            tar.add(clip, f"{TOP}/clips/{clip.name}")
        if not tsv_first:
            for tsv in sorted(staged.iterdir()):
                tar.add(tsv, f"{TOP}/{tsv.name}")


def sox_reads_mp3() -> bool:
    if shutil.which("sox") is None:
        return False
    formats = subprocess.run(["sox", "-h"], capture_output=True, text=True).stdout
    return any(line.startswith("AUDIO FILE FORMATS") and " mp3" in line for line in formats.splitlines())


def cpu_seconds() -> float:
    """User + system time of this process and of its finished children (the workers, the sox processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_ours(archive: Path, out: Path, workers: int) -> None:
    shutil.rmtree(out, ignore_errors=True)
    report = import_common_voice(
        archive, out, ImportOptions(Alphabet.italian(), workers=workers, progress=False)
    )
    assert report.total_kept == report.converted, "every clip should be kept and freshly converted"


def run_sox(clips: list[Path], out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for clip in clips:
        wav = out / f"{clip.stem}.wav"
        subprocess.run(["sox", str(clip), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)


def measure(run: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    run()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; the fastest of each counts"
    )
    args = parser.parse_args()
    if not sox_reads_mp3():
        sys.exit("sox with MP3 support is needed for the baseline: sudo apt-get install sox libsox-fmt-mp3")

    n = args.clips
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="dsita-bench-") as tmp:
        work = Path(tmp)
        (work / "mp3").mkdir()
        with ProcessPoolExecutor(args.workers) as pool:
            clips = list(pool.map(make_clip, [(i, work / "mp3") for i in range(n)]))
        runs: dict[str, Callable[[], None]] = {
            "sox, one process per clip": partial(run_sox, clips, work / "sox")
        }
        for order in ("clips-first", "tsv-first"):
            make_archive(clips, work / f"{order}.tar.gz", tsv_first=order == "tsv-first")
            archive, out = work / f"{order}.tar.gz", work / f"out-{order}"
            runs[f"dsita import cv, {order}"] = partial(run_ours, archive, out, args.workers)
        for _ in range(args.rounds):  # alternate, so that load from elsewhere hits every method alike
            for name, run in runs.items():
                results.setdefault(name, []).append(measure(run))

    print(
        f"{n} clips of {SECS:g} s at {RATE} Hz (half stereo); {os.cpu_count()} CPUs; {args.workers} workers;"
    )
    print(f"fastest of {args.rounds} alternating rounds")
    seed = min(wall for wall, _ in results["sox, one process per clip"])
    for name, measured in results.items():
        wall, cpu = min(measured)
        print(f"{name:27}: {wall:6.2f} s  {n / wall:6.1f} clips/s  {1000 * cpu / n:5.1f} ms CPU/clip  "
              f"{seed / wall:4.1f}x sox")  # fmt: skip


if __name__ == "__main__":
    main()
