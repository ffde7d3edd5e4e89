"""CPU cost of each speaker and channel augmentation on one training batch: 16 utterances of 6 s.

    .venv/bin/python benchmarks/augment_speed.py [--batch 16] [--seconds 6] [--threads 1] [--repeats 3]

The utterances are the committed sample's train clips joined end to end (0.3 s apart) into exactly 6 s
each. Every transform runs on all of them (probability 1), so the figures are the cost per augmented batch;
at probability p a batch costs about p times as much. Batch transforms run on the whole (B, samples) batch
as the trainer would on the CPU; clip transforms (tempo, codecs, and speed perturbation for comparison) run
on each clip in turn, as the DataLoader workers would, spread over them. Each figure is the least CPU time
(process time: a shared machine disturbs it less than wall time) of `--repeats` runs after one warm-up,
with `--threads` torch threads. Prints milliseconds per batch and the real-time factor (audio seconds per
CPU second). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dsita.audio import SAMPLE_RATE
from dsita.data.augmentation.batch import augment_batch
from dsita.data.augmentation.channel import (
    add_babble,
    apply_response,
    band_response,
    channel_waveforms,
    clip,
    codec_delay,
    codec_round_trip,
    compress,
    mu_law,
    random_eq_response,
    random_mic_response,
    resample_round_trip,
)
from dsita.data.augmentation.options import AugmentOptions, ChannelOptions, SpeakerOptions, parse_codec
from dsita.data.augmentation.speaker import (
    change_tempo,
    formant_shift,
    pitch_shift,
    speaker_waveforms,
    vtlp,
)
from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.data.dataset import read_wav, speed_perturb
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[1]
GAP = torch.zeros(int(0.3 * SAMPLE_RATE))


def utterances(corpus: Path, count: int, seconds: float) -> torch.Tensor:
    """(count, seconds * 16000): train clips joined 0.3 s apart, cut to exactly `seconds`."""
    size = int(seconds * SAMPLE_RATE)
    clips = [read_wav(s.wav_path) for s in read_csv(corpus / "train.csv")]
    stream = torch.cat([piece for c in clips for piece in (c, GAP)])
    while stream.numel() < count * size:
        stream = torch.cat([stream, stream])
    return stream[: count * size].reshape(count, size).contiguous()


def cpu_ms(run: Callable[[], object], repeats: int) -> float:
    """Least process time of `repeats` runs after a warm-up, in milliseconds."""
    run()  # warm-up: first calls allocate, and the codecs probe their delay
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best * 1000


def batch_cases(waveforms: torch.Tensor, lengths: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Each batch transform on every utterance, by name."""
    batch = waveforms.shape[0]
    device = waveforms.device

    def full(value: float) -> torch.Tensor:
        return torch.full((batch,), value)

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    all_speaker = SpeakerOptions(vtlp=1, pitch=1, formant=1)
    all_channel = ChannelOptions(
        babble=1, mic=1, clipping=1, compression=1, eq=1, band_limit=1, narrowband=1, mu_law=1
    )
    return {
        "vtlp (x1.1)": lambda: vtlp(waveforms, lengths, full(1.1)),
        "pitch shift (+2 semitones)": lambda: pitch_shift(waveforms, lengths, full(2.0)),
        "formant shift (x1.1)": lambda: formant_shift(waveforms, lengths, full(1.1)),
        "speaker: all three, drawn": lambda: speaker_waveforms(waveforms, lengths, all_speaker, generator()),
        "babble (5 talkers)": lambda: add_babble(waveforms, lengths, full(5).long(), full(10.0), generator()),
        "microphone colouration": lambda: apply_response(
            waveforms, lengths, random_mic_response(batch, generator(), device)
        ),
        "random EQ (3 peaks, 2 shelves)": lambda: apply_response(
            waveforms, lengths, random_eq_response(batch, 3, 8.0, generator(), device)
        ),
        "telephone band": lambda: apply_response(
            waveforms, lengths, lambda f: band_response(f, full(300.0), full(3400.0))
        ),
        "8 kHz round trip": lambda: resample_round_trip(waveforms, lengths),
        "clipping (1 %)": lambda: clip(waveforms, lengths, full(0.01)),
        "compression (-20 dB, 6:1)": lambda: compress(waveforms, lengths, full(-20.0), full(6.0)),
        "mu-law": lambda: mu_law(waveforms),
        "channel: the line's seven, drawn": lambda: channel_waveforms(
            waveforms, lengths, all_channel, generator()
        ),
        "existing: noise": lambda: augment_batch(
            waveforms, lengths, AugmentOptions(noise=1), None, generator()
        ),
        "existing: reverb": lambda: augment_batch(
            waveforms, lengths, AugmentOptions(reverb=1), None, generator()
        ),
    }


def clip_cases(waveforms: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Each clip transform on every utterance in turn, by name (Opus besides the default codecs)."""
    rows = list(waveforms)
    cases: dict[str, Callable[[], object]] = {
        "speed perturbation (x1.1, existing)": lambda: [speed_perturb(r, 1.1) for r in rows],
        "tempo (x0.9, WSOLA)": lambda: [change_tempo(r, 0.9) for r in rows],
        "tempo (x1.15, WSOLA)": lambda: [change_tempo(r, 1.15) for r in rows],
    }
    for spec in (*ChannelOptions().codecs, "opus:6", "opus:8", "opus:12"):
        codec, kbps = parse_codec(spec)
        codec_delay(codec, kbps)
        cases[f"codec {spec}"] = lambda codec=codec, kbps=kbps: [
            codec_round_trip(r, codec, kbps) for r in rows
        ]
    return cases


def main() -> None:
    """Time every transform and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        import_common_voice(
            REPO / "samples" / "it-sample.tar.gz", corpus, ImportOptions(Alphabet.italian(), progress=False)
        )
        waveforms = utterances(corpus, args.batch, args.seconds)
    lengths = torch.full((args.batch,), waveforms.shape[1])
    audio_s = args.batch * args.seconds
    print(
        f"{args.batch} x {args.seconds:g} s utterances, {args.threads} torch thread(s), "
        f"torch {torch.__version__}, numpy {np.__version__}, {platform.machine()}, "
        f"least CPU time of {args.repeats} runs"
    )
    print(f"{'transform':40} {'ms/batch':>10} {'x real time':>12}")
    for title, cases in (("batch", batch_cases(waveforms, lengths)), ("clip", clip_cases(waveforms))):
        print(f"-- {title} transforms")
        for name, run in cases.items():
            ms = cpu_ms(run, args.repeats)
            print(f"{name:40} {ms:10.1f} {audio_s / (ms / 1000):12.0f}")


if __name__ == "__main__":
    main()
