"""Load on `dsita serve`: how many concurrent streams, each paced at real time, this machine keeps up with.

    .venv/bin/python benchmarks/serve_load.py [--sizes 2048,256] [--decodings lm,greedy] [--seconds 20]
                                   [--beam 500] [--pools threads:2,processes:2] [--max-streams 96]

Per N_HIDDEN: the exported int8 package (256: the small trained test model; other sizes random weights, so
their logits are noise and their beam search is not a trained model's), with the scorer built from the
default corpus, served by the server of `dsita serve` (RecognizerServer, with each pool of --pools:
worker threads sharing one model, or worker processes with a model each) in a child process. The
clients, all in this process on the same cores, stream the sample's test clips one after another (each
client from another point), 0.2 s per frame as vosk-server's example clients do, and as they do wait for
each frame's reply before the next; frame k leaves k * 0.2 s after the client's start or on the reply to
frame k - 1, whichever is later. The clients start spread over one frame period.

Per stream: RTF = time the server spent on it (the sum of its round trips, eof included) / its audio; it
keeps up when RTF < 1. N doubles until a stream does not keep up (or --max-streams), then bisects. At the
largest N where every stream kept up: percentiles of frame-to-reply latency (a frame's arrival to its
partial) and of the last frame's arrival to the final result, and how far behind schedule the last frame
left. Prints the machine's load average too: other work on a shared machine lowers the figures. Nothing
is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FRAME_S = 0.2
RATE = 16000
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class StreamStats:
    """One client's figures."""

    rtf: float
    round_trips: tuple[float, ...]  # seconds, per audio frame
    final: float  # seconds from the last frame's send to the final result
    behind: float  # seconds the last frame left after its schedule


@dataclass(frozen=True)
class Trial:
    """N streams at once."""

    streams: int
    stats: tuple[StreamStats, ...]

    @property
    def kept_up(self) -> bool:
        return all(s.rtf < 1 for s in self.stats)

    def line(self) -> str:
        rtfs = [s.rtf for s in self.stats]
        trips = [t * 1000 for s in self.stats for t in s.round_trips]
        finals = [s.final * 1000 for s in self.stats]
        return (
            f"{self.streams:>4} streams: RTF median {statistics.median(rtfs):.3f} max {max(rtfs):.3f}; "
            f"frame->partial p50 {percentile(trips, 50):.0f} p95 {percentile(trips, 95):.0f} ms; "
            f"last frame->final p50 {percentile(finals, 50):.0f} max {max(finals):.0f} ms; "
            f"behind schedule max {max(s.behind for s in self.stats):.2f} s"
            f"{'' if self.kept_up else '  <- not keeping up'}"
        )


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def paced_stream(url: str, pcm: bytes, delay: float) -> StreamStats:
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    frame = int(RATE * FRAME_S) * 2
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": RATE}}))
        start = time.perf_counter()
        trips: list[float] = []
        sent = start
        for k, at in enumerate(range(0, len(pcm), frame)):
            wait = start + k * FRAME_S - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            sent = time.perf_counter()
            await ws.send(pcm[at : at + frame])
            await ws.recv()
            trips.append(time.perf_counter() - sent)
        behind = sent - (start + (len(trips) - 1) * FRAME_S)
        eof = time.perf_counter()
        await ws.send('{"eof": 1}')
        await ws.recv()
        done = time.perf_counter()
    busy = sum(trips) + done - eof
    return StreamStats(busy / (len(pcm) / 2 / RATE), tuple(trips), done - sent, behind)


def trial(url: str, streams: int, audio: np.ndarray, seconds: float) -> Trial:
    length = int(seconds * RATE)
    tiled = np.tile(audio, int(np.ceil((length * 2 + audio.size) / audio.size)))
    step = audio.size // max(streams, 1)
    pcms = [(tiled[i * step : i * step + length] * 32767).astype("<i2").tobytes() for i in range(streams)]

    async def run() -> list[StreamStats]:
        delays = [i * FRAME_S / streams for i in range(streams)]
        return await asyncio.gather(*(paced_stream(url, pcm, d) for pcm, d in zip(pcms, delays, strict=True)))

    return Trial(streams, tuple(asyncio.run(run())))


def search(url: str, audio: np.ndarray, seconds: float, max_streams: int) -> list[Trial]:
    """Double N until a trial fails, then bisect between the last good and the first bad N."""
    trials: list[Trial] = []
    good, bad, n = 0, max_streams + 1, 1
    while n <= max_streams:
        trials.append(trial(url, n, audio, seconds))
        print(f"  {trials[-1].line()}", flush=True)
        if not trials[-1].kept_up:
            bad = n
            break
        good, n = n, n * 2
    while bad - good > 1 and good < max_streams:
        n = (good + bad) // 2
        trials.append(trial(url, n, audio, seconds))
        print(f"  {trials[-1].line()}", flush=True)
        good, bad = (n, bad) if trials[-1].kept_up else (good, n)
    return trials


def start_server(
    package: Path, use_lm: bool, beam: int, pool: str, work: Path
) -> tuple[subprocess.Popen, str]:
    """The server in a child process; `pool` is "threads:N" or "processes:N"."""
    port_file = work / f"port-{time.monotonic_ns()}"
    command = [sys.executable, __file__, "--serve", str(package), "--beam", str(beam), "--pool", pool]
    command += ["--port-file", str(port_file), *([] if use_lm else ["--no-lm"])]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 300
    while not port_file.is_file() or not port_file.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    return process, f"ws://127.0.0.1:{port_file.read_text().strip()}"


def serve(package: Path, use_lm: bool, beam: int, pool: str, port_file: Path) -> None:
    """The child process: a server of the package until terminated."""
    from dsita.inference import InferenceOptions, load_model
    from dsita.serve.server import RecognizerServer, ServerOptions, run_server

    kind, count = pool.split(":")
    model = load_model(package, InferenceOptions(use_lm=use_lm, beam_width=beam))
    workers = {"workers": int(count)} if kind == "threads" else {"processes": int(count)}
    server = RecognizerServer(model, ServerOptions(port=0, max_sessions=1024, idle_timeout_s=0, **workers))
    server.warm_up()
    run_server(server, lambda port: port_file.write_text(str(port)))  # until the benchmark's SIGTERM


def sample_audio(work: Path) -> np.ndarray:
    from dsita.audio import load_audio
    from dsita.data.clips import ImportOptions
    from dsita.data.commonvoice import import_common_voice
    from dsita.data.csvs import read_csv
    from dsita.text.alphabet import Alphabet

    corpus = work / "corpus"
    import_common_voice(
        REPO / "samples" / "it-sample.tar.gz", corpus, ImportOptions(Alphabet.italian(), progress=False)
    )
    return np.concatenate([load_audio(s.wav_path) for s in read_csv(corpus / "test.csv")])


def report(trials: list[Trial]) -> None:
    passing = [t for t in trials if t.kept_up]
    if not passing:
        print("  no N kept up")
        return
    best = max(passing, key=lambda t: t.streams)
    trips = [t * 1000 for s in best.stats for t in s.round_trips]
    finals = [s.final * 1000 for s in best.stats]
    quantiles = ", ".join(f"p{q} {percentile(trips, q):.0f}" for q in (50, 90, 95, 99))
    print(f"  largest N with every stream at RTF < 1: {best.streams}")
    print(f"    frame arrival -> partial (ms): {quantiles}, max {max(trips):.0f} ({len(trips)} frames)")
    final_q = ", ".join(f"p{q} {percentile(finals, q):.0f}" for q in (50, 90))
    print(f"    last frame arrival -> final (ms): {final_q}, max {max(finals):.0f} ({len(finals)} streams)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="2048,256", help="N_HIDDEN values")
    parser.add_argument("--decodings", default="lm,greedy", help="lm (beam search with the scorer), greedy")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    parser.add_argument("--beam", type=int, default=500, help="beam width with the LM (the served default)")
    parser.add_argument(
        "--pools", default="threads:2,processes:2", help="worker pools to compare: threads:N, processes:N"
    )
    parser.add_argument("--max-streams", type=int, default=96)
    parser.add_argument("--scorer", type=Path, help="scorer folder (default: built from fortunes-it)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-lm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if any(os.environ.get(name) != "1" for name in THREAD_VARIABLES):
        env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, "1")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if args.serve is not None:
        serve(args.serve, not args.no_lm, args.beam, args.pools, args.port_file)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from dsita.lm.build import LmBuildOptions, build_scorer
    from dsita.lm.corpus import evaluation_sentences
    from dsita.text.alphabet import Alphabet
    from rtf import export_packages  # the packages rtf.py measures

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(f"onnxruntime 1 thread per worker; {args.seconds:g} s per stream")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio = sample_audio(work)
        scorer = args.scorer
        if scorer is None:
            scorer = work / "scorer"
            exclude = evaluation_sentences([work / "corpus" / "dev.csv", work / "corpus" / "test.csv"])
            build_scorer(scorer, Alphabet.italian(), LmBuildOptions(memory="10%", workers=1), exclude=exclude)
        for n_hidden in (int(s) for s in args.sizes.split(",")):
            folders, _, _ = export_packages(n_hidden, work, scorer)
            weights = "trained (tests/fixtures/small_model.pt)" if n_hidden == 256 else "random weights"
            for decoding, pool in itertools.product(args.decodings.split(","), args.pools.split(",")):
                label = f"LM beam {args.beam}" if decoding == "lm" else "greedy"
                print(f"N_HIDDEN={n_hidden} int8, {weights}, {label}, {pool}:", flush=True)
                process, url = start_server(folders["int8"], decoding == "lm", args.beam, pool, work)
                try:
                    report(search(url, audio, args.seconds, args.max_streams))
                finally:
                    process.terminate()
                    process.wait(30)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
