"""Streaming with the LM: the time from a segment's last chunk to its final transcript at 5, 20 and 60 s
segments, the incremental beam search against re-decoding the whole segment; and the conformer's chunked
streaming against whole segments.

    .venv/bin/python benchmarks/stream_latency.py [--work DIR] [--checkpoint tests/fixtures/small_model.pt]
        [--conformer-checkpoint DIR/best_dev.pt]

Setup (benchmarks/sample_setup.py, kept in --work): the sample scorer with alpha and beta tuned on dev, the
checkpoint exported (int8 it-it.zip), beam 500, one onnxruntime thread.

Latency: the sample's test clips one after another, 0.3 s apart and looped, cut to exactly L seconds and
streamed as one VAD segment (the segmenter's limits are set past L, so that nothing cuts it) in chunks of
0.32 s. Timed (wall, --repeats audios per length, the clips rotated): the last chunk's `Stream.feed` plus
`Stream.finish`; `Stream.intermediate` at every chunk; and the next `feed` (0.32 s), which frees the
finished segment's search. "Re-decoding" is what the stream did before:
the model over the same chunks, then at the end the beam search over the whole segment's logits and the
alignment of its text (`BeamSearchDecoder.decode`, `align`), timed the same way; a partial then cost one
such search over the logits so far (timed at the segment's end). Both give the same words.

Conformer (with --conformer-checkpoint): the test clips, and the test clips joined 1 s apart (VAD segments
of 10-16 s), transcribed whole (`transcribe`) and streamed (`stream`, 0.32 s chunks) with a few window
sizes; WER and CER against the references, and the CER of the streamed text against the whole one.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import jiwer
import numpy as np

from dsita.audio import SAMPLE_RATE
from dsita.decoding.align import align
from dsita.decoding.beam import BeamDecoder
from dsita.decoding.transcript import Transcript
from dsita.inference.chunked import ChunkOptions
from dsita.inference.model import SpeechModel
from dsita.inference.vad import VadOptions
from sample_setup import SMALL_MODEL, clips, release, sample_corpus

CHUNK = int(0.32 * SAMPLE_RATE)
GAP = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)


def audio_of(test: list[np.ndarray], seconds: float, rotation: int) -> np.ndarray:
    """Clips from `rotation` on, 0.3 s apart and looped, cut to `seconds`."""
    pieces, total, i = [], 0, rotation
    while total < seconds * SAMPLE_RATE:
        clip = test[i % len(test)]
        pieces += [clip, GAP]
        total += clip.size + GAP.size
        i += 1
    return np.concatenate(pieces)[: int(seconds * SAMPLE_RATE)]


def chunks_of(audio: np.ndarray) -> list[np.ndarray]:
    return [audio[at : at + CHUNK] for at in range(0, audio.size, CHUNK)]


def incremental(model: SpeechModel, audio: np.ndarray) -> tuple[float, list[float], float, Transcript]:
    """(last chunk + finish, intermediate times, the next feed, which frees the finished search, the final
    transcript) of the stream as it is."""
    stream, partials = model.stream(), []
    pieces = chunks_of(audio)
    for piece in pieces[:-1]:
        stream.feed(piece)
        start = time.perf_counter()
        stream.intermediate()
        partials.append(time.perf_counter() - start)
    start = time.perf_counter()
    stream.feed(pieces[-1])
    final = stream.finish()
    took = time.perf_counter() - start
    start = time.perf_counter()
    stream.feed(pieces[0])
    return took, partials, time.perf_counter() - start, final


def redecoding(model: SpeechModel, audio: np.ndarray) -> tuple[float, float, str]:
    """(last chunk + the whole segment searched and aligned, one partial at the end, the text)."""
    decoder = model.decoder
    assert isinstance(decoder, BeamDecoder)
    acoustics, logits = model.segment_acoustics(), []
    pieces = chunks_of(audio)
    for piece in pieces[:-1]:
        logits.append(acoustics.push(piece))
    so_far = np.concatenate(logits)
    start = time.perf_counter()
    align(so_far, decoder.beam.decode(so_far, decoder.options), model.alphabet, model.step_seconds)
    partial = time.perf_counter() - start
    start = time.perf_counter()
    logits += [acoustics.push(pieces[-1]), acoustics.close()]
    whole = np.concatenate(logits)
    text = decoder.beam.decode(whole, decoder.options)
    align(whole, text, model.alphabet, model.step_seconds)
    return time.perf_counter() - start, partial, text


def latency(model: SpeechModel, test: list[np.ndarray], lengths: list[float], repeats: int) -> None:
    print(
        "| segment | incremental: last chunk to final (median / max) | intermediate (median / max) | "
        "next feed, freeing the search | re-decoding: last chunk to final | re-decoding: a partial at the "
        "end | same words |"
    )
    print("|---|---|---|---|---|---|---|")
    for seconds in lengths:
        limit = seconds + 1.0
        vad = VadOptions(min_segment_s=limit, relax_after_s=limit, max_segment_s=limit)
        long = SpeechModel(model.package, replace(model.options, vad=vad))
        new, partials, freeing, old, old_partial, same = [], [], [], [], [], True
        for rotation in range(repeats):
            audio = audio_of(test, seconds, rotation * 7)
            took, during, freed, final = incremental(long, audio)
            new.append(took)
            partials += during
            freeing.append(freed)
            took, partial, text = redecoding(long, audio)
            old.append(took)
            old_partial.append(partial)
            same = same and text == final.text
        print(
            f"| {seconds:g} s | {ms(statistics.median(new))} / {ms(max(new))} | "
            f"{ms(statistics.median(partials))} / {ms(max(partials))} | {ms(statistics.median(freeing))} | "
            f"{ms(statistics.median(old))} / {ms(max(old))} | {ms(statistics.median(old_partial))} | {same} |"
        )


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def streamed(model: SpeechModel, audio: np.ndarray) -> str:
    stream = model.stream()
    for piece in chunks_of(audio):
        stream.feed(piece)
    return stream.finish().text


def conformer_cost(model: SpeechModel, test: list[np.ndarray], references: list[str]) -> None:
    joined = np.concatenate([p for clip in test for p in (clip, np.zeros(SAMPLE_RATE, dtype=np.float32))])
    joined_reference = " ".join(references)
    print("| audio | windows (left / chunk / right steps of 40 ms) | WER | CER | CER against whole |")
    print("|---|---|---|---|---|")
    whole_clips = [model.transcribe(a).text for a in test]
    whole_joined = model.transcribe(joined).text
    for name, hyps, ref in (
        ("40 clips", whole_clips, references),
        ("joined", [whole_joined], [joined_reference]),
    ):
        print(f"| {name} | whole segments | {jiwer.wer(ref, hyps):.1%} | {jiwer.cer(ref, hyps):.1%} | - |")
    for left, chunk, right in ((64, 16, 16), (64, 16, 8), (64, 16, 0), (32, 8, 8), (128, 16, 16)):
        options = replace(model.options, chunks=ChunkOptions(chunk, left, right))
        windowed = SpeechModel(model.package, options)
        clips_out = [streamed(windowed, a) for a in test]
        joined_out = [streamed(windowed, joined)]
        for name, hyps, ref, whole in (
            ("40 clips", clips_out, references, whole_clips),
            ("joined", joined_out, [joined_reference], [whole_joined]),
        ):
            print(
                f"| {name} | {left} / {chunk} / {right} | {jiwer.wer(ref, hyps):.1%} | "
                f"{jiwer.cer(ref, hyps):.1%} | {jiwer.cer(whole, hyps):.1%} |"
            )
    took, _, _, _ = incremental(model, audio_of(test, 20, 0))
    print(f"conformer, 20 s segment: last chunk to final {ms(took)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dsita-bench")
    parser.add_argument("--checkpoint", type=Path, default=SMALL_MODEL)
    parser.add_argument("--conformer-checkpoint", type=Path)
    parser.add_argument("--lengths", default="5,20,60")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    test = clips(sample_corpus(args.work), "test")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    model = release(args.work, args.checkpoint)
    print(f"{args.checkpoint}: {model.decoding}")
    latency(model, test.audio, [float(s) for s in args.lengths.split(",")], args.repeats)
    if args.conformer_checkpoint is not None:
        conformer = release(args.work, args.conformer_checkpoint)
        print(f"{args.conformer_checkpoint}: {conformer.decoding}")
        conformer_cost(conformer, test.audio, test.references)


if __name__ == "__main__":
    main()
