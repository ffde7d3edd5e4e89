"""Generalization benchmark: voices and channels the model never met, one row per training recipe.

    .venv/bin/python benchmarks/generalization.py               # corpora, LM, test channels, every row, table
    .venv/bin/python benchmarks/generalization.py --prepare     # corpora, LM and test channels only
    .venv/bin/python benchmarks/generalization.py --row speaker # one row (the driver runs them one at a time)
    .venv/bin/python benchmarks/generalization.py --table       # the table of the finished rows
    .venv/bin/python benchmarks/generalization.py --final       # the held-out set, once, at the very end

The same command carries on after an interruption: corpora, test sets and finished rows are kept, and a row
killed mid-training resumes with the CPU time it had left (`quality.train_within_budget`). Rows run on a copy
of the source made before the first one (`WORK/code`), so that all of them train with the same code.

Data: every clip is `dsita synth` speech (Debian main voices), split by engine and voice family, never by
sentence alone; no sentence is in two corpora.
- **espeak** (train, dev, and the `trained` test): espeak-ng variants except the Klatt family, with shared
  speakers: the models train on its train split, choose their checkpoint on its dev split, and its test split
  is unseen sentences in voices heard in training. **espeak-variety** is the same corpus spoken with
  `SynthVariety` (a vocal tract per speaker, prosody per clip), for the synthesis-variety row.
- **klatt**: the held-out espeak-ng family: the variants that use espeak-ng's Klatt synthesiser (klatt,
  klatt2, klatt3, adam, benjamin, david, edward), every split a test set.
- **festival**: both festival voices, the held-out engine, every split a test set.
- **final**: festival and Klatt voices again, on other sentences and speakers' rates and pitches: the set
  kept back and looked at once, at the end (`--final`), so that the recipe is not tuned to the benchmark.

Each test set is also scored through five channels training never produces (`CHANNELS`): a G.711-like
telephone line (exactly 300-3400 Hz, 8 kHz, mu-law), Opus at 12 kb/s, the "laptop" microphone of
`MIC_PRESETS`, a simulated shoebox room (image sources, RT60 about 0.54 s: not training's noise tail),
and speech-shaped noise at 10 dB SNR (training draws white, pink or brown noise).

Rows (`rows()`) are cumulative, one change each over the row before, except `baseline+channel` (the channel
chain without the speaker transforms, which cost steps for no gain), all with the same seed and the same
budget: --minutes of CPU time (80 = the issue's 2 cores x 40 minutes) on one torch thread, no loader workers,
so loading, augmentation and dev passes all count. The LM is `dsita lm build`'s default corpus minus every
dev and test sentence; alpha/beta are tuned per row on espeak dev clips.

A row takes about 100 minutes on one core, so the table is filled over several sessions (and machines): each
finished row is recorded in `benchmarks/results/generalization/ROW.json`, which is committed, with a digest
of the dsita source it trained with, and `--table` prints the recorded rows. The corpora are rebuilt the same
from the seed. At its end a row also scores the final set, into `.../final/ROW.json`, which only `--final`
prints: the final set is looked at once, when every row is in, even though each row's model is gone by then.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import quality  # the same folder: its CPU-time budgets, alpha/beta tuning and scoring
from dsita.data.augmentation.options import AugmentOptions, ChannelOptions, SpeakerOptions
from dsita.data.synth import ESPEAK, ESPEAK_VARIANTS, FESTIVAL, SynthOptions, SynthVariety
from dsita.text.alphabet import Alphabet
from dsita.training.options import TrainOptions

WORK = Path("data/generalization")
RESULTS = Path(__file__).resolve().parent / "results" / "generalization"  # committed, one file a row
KLATT_FAMILY = ("klatt", "klatt2", "klatt3", "adam", "benjamin", "david", "edward")
TRAINED_VARIANTS = tuple(v for v in ESPEAK_VARIANTS if v not in KLATT_FAMILY)
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Corpus:
    """One `dsita synth` archive: which sentences (a slice of the shuffled pool) and how they are spoken."""

    sentences: tuple[int, int]
    options: SynthOptions


def corpora(seed: int, scale: float = 1.0) -> dict[str, Corpus]:
    """The archives; espeak and espeak-variety share sentences, splits and variants. `scale` shrinks every
    corpus (a smoke run of the whole benchmark)."""
    sizes = {"espeak": 7000, "klatt": 400, "festival": 400, "final": 400}
    n = {name: max(30, round(size * scale)) for name, size in sizes.items()}
    start = {"espeak": 0, "klatt": n["espeak"]}
    start["festival"] = start["klatt"] + n["klatt"]
    start["final"] = start["festival"] + n["festival"]
    espeak = SynthOptions(
        n_clips=n["espeak"], seed=seed, engines=(ESPEAK,), shared_speakers=True,
        split_fractions=(0.9, 0.05, 0.05), espeak_variants=TRAINED_VARIANTS,
    )  # fmt: skip
    klatt = SynthOptions(n_clips=n["klatt"], seed=seed, engines=(ESPEAK,), espeak_variants=KLATT_FAMILY)
    festival = SynthOptions(n_clips=n["festival"], seed=seed, engines=(FESTIVAL,))
    final = SynthOptions(
        n_clips=n["final"], seed=seed + 1, engines=(ESPEAK, FESTIVAL), espeak_variants=KLATT_FAMILY
    )

    def span(name: str) -> tuple[int, int]:
        return start[name], start[name] + n[name]

    return {
        "espeak": Corpus(span("espeak"), espeak),
        "espeak-variety": Corpus(span("espeak"), replace(espeak, variety=SynthVariety())),
        "klatt": Corpus(span("klatt"), klatt),
        "festival": Corpus(span("festival"), festival),
        "final": Corpus(span("final"), final),
    }


def test_csvs(work: Path) -> dict[str, list[Path]]:
    """The clean test sets the rows are compared on (final is apart)."""
    return {
        "trained": [work / "espeak" / "test.csv"],
        "klatt": [work / "klatt" / f"{split}.csv" for split in SPLITS],
        "festival": [work / "festival" / f"{split}.csv" for split in SPLITS],
    }


# ---------------------------------------------------------------------------------------------- channels
def telephone(audio: Any, index: int) -> Any:
    """A G.711-like line: exactly the 300-3400 Hz band, an 8 kHz round trip and 8-bit mu-law."""
    import torch

    from dsita.data.augmentation.channel import apply_response, band_response, mu_law, resample_round_trip

    x, n = audio[None], torch.tensor([audio.numel()])
    band = apply_response(x, n, lambda f: band_response(f, torch.tensor([300.0]), torch.tensor([3400.0])))
    return mu_law(resample_round_trip(band, n))[0]


def opus(audio: Any, index: int) -> Any:
    """Opus at 12 kb/s (training's codecs are MP3 and Vorbis)."""
    from dsita.data.augmentation.channel import codec_round_trip

    return codec_round_trip(audio, "opus", 12.0)


def laptop_mic(audio: Any, index: int) -> Any:
    """The "laptop" microphone of MIC_PRESETS (training draws random microphones)."""
    import torch

    from dsita.data.augmentation.channel import MIC_PRESETS, apply_response

    return apply_response(audio[None], torch.tensor([audio.numel()]), MIC_PRESETS["laptop"].response)[0]


def shoebox_response(
    room: tuple[float, float, float] = (6.0, 4.5, 3.0),
    source: tuple[float, float, float] = (1.4, 1.8, 1.6),
    mic: tuple[float, float, float] = (4.3, 2.9, 1.3),
    rt60: float = 0.4,  # Sabine; the response measures about 0.54 s (Schroeder T30)
    order: int = 25,
    rate: int = 16000,
) -> np.ndarray:
    """The impulse response of a rectangular room by the image-source method (Allen and Berkley, 1979):
    every mirror image of the source up to `order` reflections per axis, delayed by its distance over the
    speed of sound, attenuated by 1/distance and by the walls' reflection factor, which Sabine's formula sets
    from `rt60`. Discrete early echoes, then a dense tail: unlike training's exponentially decaying noise."""
    speed = 343.0
    volume = room[0] * room[1] * room[2]
    surface = 2 * (room[0] * room[1] + room[0] * room[2] + room[1] * room[2])
    reflection = math.sqrt(1 - min(0.161 * volume / (surface * rt60), 0.99))
    n = np.arange(-order, order + 1)
    axes = []
    for length, s, m in zip(room, source, mic, strict=True):
        # Images at 2nL + s (|2n| reflections) and 2nL - s (|2n - 1| reflections) along one axis.
        positions = np.concatenate([2 * n * length + s, 2 * n * length - s]) - m
        bounces = np.concatenate([np.abs(2 * n), np.abs(2 * n - 1)])
        axes.append((positions, bounces))
    (px, bx), (py, by), (pz, bz) = axes
    distance = np.sqrt(px[:, None, None] ** 2 + py[None, :, None] ** 2 + pz[None, None, :] ** 2).ravel()
    bounces = (bx[:, None, None] + by[None, :, None] + bz[None, None, :]).ravel()
    gain = reflection**bounces / distance
    delay = distance / speed * rate
    length = int(rt60 * 1.5 * rate)
    kept = delay < length - 1
    response = np.zeros(length)
    whole = np.floor(delay[kept]).astype(int)
    fraction = delay[kept] - whole
    np.add.at(response, whole, gain[kept] * (1 - fraction))  # linear interpolation of fractional delays
    np.add.at(response, whole + 1, gain[kept] * fraction)
    return response[int(np.floor(delay.min())) :] / np.abs(response).max()


def room(audio: Any, index: int) -> Any:
    """The clip played in the simulated shoebox room, its RMS kept."""
    import torch

    response = torch.from_numpy(shoebox_response()).float()
    size = audio.numel() + response.numel() - 1
    n_fft = 1 << (size - 1).bit_length()
    wet = torch.fft.irfft(torch.fft.rfft(audio, n_fft) * torch.fft.rfft(response, n_fft), n_fft)[
        : audio.numel()
    ]
    return wet * (audio.norm() / wet.norm().clamp_min(1e-9))


def speech_noise(audio: Any, index: int) -> Any:
    """Stationary noise with the clip's own long-term spectrum (speech-shaped noise), at 10 dB SNR."""
    import torch

    spectrum = torch.fft.rfft(audio.double())
    # The magnitude smoothed over about 50 Hz: the clip's long-term spectrum, without its harmonics.
    width = max(1, round(50 * audio.numel() / 16000)) | 1
    kernel = torch.ones(1, 1, width, dtype=torch.float64) / width
    envelope = torch.nn.functional.conv1d(spectrum.abs()[None, None], kernel, padding="same")[0, 0]
    rng = np.random.default_rng(index)
    phase = torch.from_numpy(rng.uniform(0, 2 * math.pi, envelope.numel()))
    noise = torch.fft.irfft(torch.polar(envelope, phase), audio.numel())
    scale = audio.double().norm() / (noise.norm() * 10 ** (10 / 20))
    return (audio.double() + noise * scale).float()


CHANNELS: dict[str, Callable[[Any, int], Any]] = {
    "telephone": telephone,
    "opus12": opus,
    "laptop-mic": laptop_mic,
    "room": room,
    "noise10": speech_noise,
}


def write_changed_set(folder: Path, csvs: list[Path], change: Callable[[Any, int], Any]) -> Path:
    """`change(audio, index)` applied to every clip of `csvs`, as WAVs under `folder` and its test.csv
    (written once: an existing test.csv is kept). Returns the CSV's path."""
    from dsita.audio import write_wav
    from dsita.data.csvs import Sample, read_csv, write_csv
    from dsita.data.dataset import read_wav

    if not (folder / "test.csv").exists():
        (folder / "clips").mkdir(parents=True, exist_ok=True)
        written = []
        for index, sample in enumerate(sample for csv in csvs for sample in read_csv(csv)):
            out = change(read_wav(sample.wav_path), index).numpy()
            out = out / max(1.0, float(np.abs(out).max()) / 0.99)  # no clipping in 16-bit PCM
            path = folder / "clips" / sample.wav_path.name
            write_wav(path, out, durable=False)
            written.append(Sample(path, path.stat().st_size, sample.transcript, len(out) / 16000))
        write_csv(folder / "test.csv", written)
        print(f"{folder.name}: {len(written)} clips", flush=True)
    return folder / "test.csv"


def write_channel_sets(work: Path, name: str, csvs: list[Path]) -> None:
    """Each channel of `CHANNELS` applied to every clip of a test set, as WAVs and one CSV per channel."""
    for channel, transform in CHANNELS.items():
        write_changed_set(work / "channels" / f"{name}+{channel}", csvs, transform)


def evaluation_csvs(work: Path, final: bool = False) -> dict[str, list[Path]]:
    """Every scored set: the clean ones and each through every channel (only `final` with final=True)."""
    clean = {"final": [work / "final" / f"{split}.csv" for split in SPLITS]} if final else test_csvs(work)
    sets = dict(clean)
    for name in clean:
        for channel in CHANNELS:
            sets[f"{name}+{channel}"] = [work / "channels" / f"{name}+{channel}" / "test.csv"]
    return sets


# ---------------------------------------------------------------------------------------------- prepare
def prepare(args: argparse.Namespace) -> None:
    """Synthesise and import the corpora, build the LM without dev or test sentences, write the channels."""
    from dsita.data.clips import ImportOptions
    from dsita.data.commonvoice import import_common_voice
    from dsita.data.sentences import default_sentences, prepare_sentences
    from dsita.data.synth import synthesize_corpus
    from dsita.lm.build import LmBuildOptions, build_scorer
    from dsita.lm.corpus import evaluation_sentences

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    alphabet = Alphabet.italian()
    pool = prepare_sentences(default_sentences(), 3, 14)
    random.Random(args.seed).shuffle(pool)
    for name, corpus in corpora(args.seed, args.scale).items():
        archive = work / f"{name}.tar.gz"
        if not archive.exists():
            start, end = corpus.sentences
            options = replace(corpus.options, workers=args.synth_workers)
            report = synthesize_corpus([s.text for s in pool[start:end]], archive, options)
            print(
                f"{name}: {sum(s.clips for s in report.splits.values())} clips, {report.hours:.2f} h, "
                f"{report.speakers} speakers in {report.voices} voices, {report.elapsed_s:.0f} s",
                flush=True,
            )
        if not (work / name / "test.csv").exists():
            imported = import_common_voice(
                archive, work / name, ImportOptions(alphabet, workers=2, progress=False)
            )
            print(f"{name}: imported {imported.total_kept} clips, skipped {sum(imported.skipped.values())}")
    scorer_dir = work / "scorer"
    if not scorer_dir.exists():
        held_out = [work / "espeak" / "dev.csv", work / "espeak" / "test.csv"]
        held_out += [
            work / name / f"{split}.csv" for name in ("klatt", "festival", "final") for split in SPLITS
        ]
        built = build_scorer(
            scorer_dir,
            alphabet,
            LmBuildOptions(memory="10%", workers=2),
            exclude=evaluation_sentences(held_out),
        )
        print(f"scorer: {built.scorer.vocabulary_size} words, {built.ngrams} n-grams", flush=True)
    clean = {**test_csvs(work), "final": [work / "final" / f"{split}.csv" for split in SPLITS]}
    for name, csvs in clean.items():
        write_channel_sets(work, name, csvs)


# ---------------------------------------------------------------------------------------------- rows
# Today's AUGMENT=1, before this benchmark: the baseline every row builds on.
TODAY = AugmentOptions(speed=0.5, spec_augment=1.0, noise=0.5, gain=0.5, reverb=0.3)
SPEAKER = SpeakerOptions(vtlp=0.3, pitch=0.3, formant=0.3, tempo=0.3)
# Babble with the channel: both are what stands between a talker and the microphone, and babble alone is
# too cheap a change for a row of its own at 80 CPU minutes a row (its own share is in the per-channel table).
CHANNEL = ChannelOptions(
    babble=0.2, mic=0.3, clipping=0.1, compression=0.2, eq=0.3, band_limit=0.2, narrowband=0.1, mu_law=0.05,
    codec=0.1,
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """What one row changes: augmentation, training corpus, and the optimisation recipe."""

    augment: AugmentOptions
    train: str = "espeak"
    learning_rate: float = 3e-4  # quality.py's conformer rate: 1e-3 without warmup stalled on the blank
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    average_checkpoints: int = 0
    notes: list[str] = field(default_factory=list)


def rows() -> dict[str, Recipe]:
    """The ablation, in order; each row is the one before plus one change."""
    speaker = replace(TODAY, speaker=SPEAKER)
    channel = replace(speaker, channel=CHANNEL)
    recipe_augment = replace(channel, spec_time_ms=200.0)
    return {
        "none": Recipe(AugmentOptions(), notes=["no augmentation: the reference"]),
        "baseline": Recipe(TODAY, notes=["AUGMENT=1 before this benchmark"]),
        "speaker": Recipe(speaker, notes=["+ VTLP, pitch, formant 0.3 each, tempo 0.3"]),
        "channel": Recipe(channel, notes=["+ channel chain and babble"]),
        "baseline+channel": Recipe(
            replace(TODAY, channel=CHANNEL), notes=["baseline + channel chain and babble, no speaker changes"]
        ),
        "variety": Recipe(channel, train="espeak-variety", notes=["+ SynthVariety training corpus"]),
        "recipe": Recipe(
            recipe_augment,
            train="espeak-variety",
            learning_rate=8e-4,
            lr_schedule="warmup-decay",
            lr_warmup_steps=500,
            average_checkpoints=5,
            notes=[
                "+ warmup-decay (peak 8e-4, 500 steps), average of the last 5 chunks, time masks <= 200 ms"
            ],
        ),
    }


# The baseline and the whole recipe first: with those two the headline is known; the rows between them, which
# tell each change's share, and the no-augmentation reference follow. baseline+channel, added once the speaker
# row had cost steps for nothing, goes before the rest: it decides whether AUGMENT=1 gains the channel chain.
RUN_ORDER = ("baseline", "recipe", "speaker", "baseline+channel", "channel", "variety", "none")


def train_options(args: argparse.Namespace, name: str, recipe: Recipe) -> TrainOptions:
    """One row's training: the conformer preset, batch 16, one thread, chunks of --chunk-steps batches."""
    work: Path = args.work
    return TrainOptions(
        train_csvs=(work / recipe.train / "train.csv",),
        dev_csvs=(work / "espeak" / "dev.csv",),
        checkpoint_dir=work / "rows" / name / "checkpoints",
        architecture="conformer",
        model_size=args.size,
        batch_size=args.batch,
        epochs=1,
        learning_rate=recipe.learning_rate,
        lr_schedule=recipe.lr_schedule,  # type: ignore[arg-type]
        lr_warmup_steps=recipe.lr_warmup_steps,
        average_checkpoints=recipe.average_checkpoints,
        early_stop=False,
        amp=False,
        seed=args.seed,
        workers=0,
        augment=recipe.augment,
        max_steps_per_epoch=args.chunk_steps,
        max_dev_clips=300,
        show_progress=False,
    )


def code_digest() -> str:
    """SHA-256 of the dsita source this process runs (file names and bytes): rows recorded with different
    digests trained with different code, and the table says so."""
    import hashlib

    import dsita

    root = Path(dsita.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON, written atomically."""
    from dsita.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def run_row(args: argparse.Namespace, name: str) -> None:
    """Train one row within its CPU budget (resuming), tune alpha/beta and score every test set; then
    score the final set into its sealed file and record both under --results; parts done are skipped."""
    import torch

    from dsita.data.dataset import load_samples
    from dsita.lm.scorer import load_scorer
    from dsita.training.checkpoint import BEST_DEV, load_trained_model

    torch.set_num_threads(1)
    recipe = rows()[name]
    alphabet = Alphabet.italian()
    row_dir: Path = args.work / "rows" / name
    options = train_options(args, name, recipe)
    model = None
    if not (row_dir / "result.json").exists():
        spent = quality.train_within_budget(options, alphabet, row_dir, args.minutes, args.chunk_steps, name)
        result: dict[str, Any] = {"row": name, "notes": recipe.notes, "train": recipe.train}
        result |= quality.training_summary(options, spent, len(alphabet) + 1)
        result["averages"] = [
            record
            for record in map(json.loads, (options.checkpoint_dir / "metrics.jsonl").read_text().splitlines())
            if "averaged_epochs" in record
        ]
        model, _ = load_trained_model(options.checkpoint_dir / BEST_DEV)
        dev = load_samples([args.work / "espeak" / "dev.csv"], alphabet)[: args.tune_clips]
        tuned = quality.tune_scorer(
            model, alphabet, dev, args.work / "scorer", row_dir / "scorer", args.trials, name
        )
        result["alpha"], result["beta"] = tuned.alpha, tuned.beta
        sets = {
            set_name: load_samples(csvs, alphabet) for set_name, csvs in evaluation_csvs(args.work).items()
        }
        result["tests"] = quality.score_test_sets(model, alphabet, tuned.scorer, sets)
        result["code"] = code_digest()
        result["minutes"], result["seed"] = args.minutes, args.seed
        write_json(row_dir / "result.json", result)
    if not (row_dir / "final.json").exists():
        if model is None:
            model, _ = load_trained_model(options.checkpoint_dir / BEST_DEV)
        sets = {
            set_name: load_samples(csvs, alphabet)
            for set_name, csvs in evaluation_csvs(args.work, final=True).items()
        }
        with contextlib.redirect_stdout(io.StringIO()):  # score_test_sets prints each set: kept sealed
            final = quality.score_test_sets(model, alphabet, load_scorer(row_dir / "scorer"), sets)
        write_json(row_dir / "final.json", final)
    results: Path = args.results
    for source, target in ((row_dir / "result.json", results / f"{name}.json"),
                           (row_dir / "final.json", results / "final" / f"{name}.json")):  # fmt: skip
        if not target.exists():  # a record once written is the row's: a later run does not replace it
            write_json(target, json.loads(source.read_text()))


def recorded(name: str, work: Path, results: Path) -> dict[str, Any] | None:
    """A row's record: the committed one, or the work folder's if it was not copied there."""
    for path in (results / f"{name}.json", work / "rows" / name / "result.json"):
        if path.exists():
            return dict(json.loads(path.read_text()))
    return None


def run_final(args: argparse.Namespace) -> None:
    """Unseal the final set: gather every row's sealed scores into WORK/final.json (once), for the table."""
    path = args.work / "final.json"
    if path.exists() and not args.force:
        print(f"{path} exists: the final set is looked at once (--force to gather it again)")
        return
    sealed: Path = args.results / "final"
    missing = [name for name in rows() if not (sealed / f"{name}.json").exists()]
    if missing and not args.force:
        raise SystemExit(
            f"rows {', '.join(missing)} have no final scores yet: the final set waits for every row"
        )
    scores = {
        name: json.loads((sealed / f"{name}.json").read_text()) for name in rows() if name not in missing
    }
    write_json(path, scores)


# ---------------------------------------------------------------------------------------------- table
def channel_mean(tests: dict[str, dict[str, float]], name: str, metric: str) -> float:
    return sum(tests[f"{name}+{channel}"][metric] for channel in CHANNELS) / len(CHANNELS)


def print_table(work: Path, results: Path) -> None:
    """The ablation table (clean and channel-averaged figures) and the festival and klatt channel tables."""
    header = "| row | steps | audio-s per CPU-s | best dev loss |"
    for name in test_csvs(work):
        header += f" {name} greedy CER / LM WER | {name} 5 channels greedy CER / LM WER |"
    print(header)
    print("|" + "---|" * (4 + 2 * len(test_csvs(work))))
    finished: dict[str, dict[str, Any]] = {}
    for name in rows():
        r = recorded(name, work, results)
        if r is None:
            print(f"| {name} | not run |")
            continue
        finished[name] = r
        t = r["tests"]
        line = (
            f"| {name} | {r['steps']} | {r['audio_seconds_per_cpu_second']:.1f} | {r['best_dev_loss']:.1f} |"
        )
        for set_name in test_csvs(work):
            line += f" {t[set_name]['greedy_cer']:.1%} / {t[set_name]['lm_wer']:.1%} |"
            mean_cer, mean_wer = (channel_mean(t, set_name, m) for m in ("greedy_cer", "lm_wer"))
            line += f" {mean_cer:.1%} / {mean_wer:.1%} |"
        print(line)
    digests = {name: r.get("code", "unrecorded") for name, r in finished.items()}
    if len(set(digests.values())) > 1:
        print(f"\nthe rows trained with different dsita source: {digests}")
    for set_name in ("festival", "klatt", "trained"):
        print(f"\n{set_name}, greedy CER per channel:\n")
        print("| row | clean | " + " | ".join(CHANNELS) + " |")
        print("|" + "---|" * (2 + len(CHANNELS)))
        for name, r in finished.items():
            cells = [r["tests"][set_name]] + [r["tests"][f"{set_name}+{c}"] for c in CHANNELS]
            print(f"| {name} | " + " | ".join(f"{c['greedy_cer']:.1%}" for c in cells) + " |")
    final = work / "final.json"
    if final.exists():
        print("\nfinal (held out, scored once), greedy CER / LM WER:\n")
        print("| row | clean | " + " | ".join(CHANNELS) + " |")
        print("|" + "---|" * (2 + len(CHANNELS)))
        for name, t in json.loads(final.read_text()).items():
            cells = [t["final"]] + [t[f"final+{c}"] for c in CHANNELS]
            print(
                f"| {name} | "
                + " | ".join(f"{c['greedy_cer']:.1%} / {c['lm_wer']:.1%}" for c in cells)
                + " |"
            )


# ---------------------------------------------------------------------------------------------- driver
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where finished rows are recorded (the checkout's)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=80.0, help="CPU minutes of training per row")
    parser.add_argument("--chunk-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", default="small", help="conformer preset")
    parser.add_argument("--trials", type=int, default=12, help="alpha/beta trials per row")
    parser.add_argument(
        "--tune-clips", type=int, default=200, help="espeak dev clips alpha/beta are tuned on"
    )
    parser.add_argument("--synth-workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="corpus sizes times this (a smoke run)")
    parser.add_argument("--rows", default=",".join(RUN_ORDER), help="rows to run, in this order")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--row", help="train and score one row")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--final", action="store_true", help="score the held-out final set (once)")
    parser.add_argument("--force", action="store_true", help="with --final: score it again")
    return parser.parse_args()


def forward_args(args: argparse.Namespace) -> list[str]:
    return [
        "--work", str(args.work), "--seed", str(args.seed), "--minutes", str(args.minutes),
        "--chunk-steps", str(args.chunk_steps), "--batch", str(args.batch), "--size", args.size,
        "--trials", str(args.trials), "--tune-clips", str(args.tune_clips),
        "--results", str(args.results.resolve()),
    ]  # fmt: skip


def frozen_code(work: Path) -> Path:
    """A copy of dsita's source and of these scripts, made before the first row, that every row runs: rows
    trained days apart, while the tree changes, still train with the same code."""
    code = work / "code"
    if not (code / "generalization.py").exists():
        here = Path(__file__).resolve().parent
        shutil.copytree(
            here.parent / "src" / "dsita", code / "dsita", ignore=shutil.ignore_patterns("__pycache__")
        )
        for script in ("quality.py", "generalization.py"):
            shutil.copy2(here / script, code / script)
    return code


def run_rows(args: argparse.Namespace, names: list[str]) -> None:
    """The unfinished rows one after another, each its own one-thread process with a log beside it, on the
    frozen copy of the code."""
    code = frozen_code(args.work)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(code.resolve())}
    for name in names:
        row_dir = args.work / "rows" / name
        if (args.results / f"{name}.json").exists() and (args.results / "final" / f"{name}.json").exists():
            continue  # recorded, perhaps in an earlier session
        row_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with (row_dir / "row.log").open("a") as log:
            command = [sys.executable, str(code / "generalization.py"), "--row", name, *forward_args(args)]
            status = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
        minutes = (time.monotonic() - started) / 60
        print(f"{name}: exit status {status.returncode} after {minutes:.0f} min", flush=True)
        if status.returncode != 0:
            raise SystemExit(f"row {name} failed: see {row_dir / 'row.log'}")


def main() -> None:
    args = parse_args()
    unknown = set(args.rows.split(",")) - set(rows())
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}: choose among {', '.join(rows())}")
    if args.row:
        run_row(args, args.row)
    elif args.table:
        print_table(args.work, args.results)
    elif args.final:
        run_final(args)
        print_table(args.work, args.results)
    else:
        prepare(args)
        if not args.prepare:
            run_rows(args, args.rows.split(","))
            print_table(args.work, args.results)


if __name__ == "__main__":
    main()
