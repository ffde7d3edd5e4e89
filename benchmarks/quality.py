"""Quality benchmark: DeepSpeech and Conformer-CTC, augmentation off and on, same data, same budget.

    .venv/bin/python benchmarks/quality.py                 # corpus + LM, then every row, then the table
    .venv/bin/python benchmarks/quality.py --prepare       # corpus and LM only
    .venv/bin/python benchmarks/quality.py --row conformer:on    # one row (the driver runs these)
    .venv/bin/python benchmarks/quality.py --table         # the table from the finished rows

Data (leave one engine out): `dsita synth` speaks disjoint sentence sets into two archives.
- espeak.tar.gz: espeak-ng variants only (many voices across speed and pitch), with --shared-speakers, so
  its dev and test splits are unseen sentences in voices heard in training. The models train on its train
  split and choose their best checkpoint on its dev split.
- festival.tar.gz: both festival voices only, every split used as a test set: a voice family the models
  never heard, standing in for unseen speakers.
The LM is `dsita lm build`'s default corpus (fortunes-it + extra sentences) minus every dev and test
sentence; alpha/beta are tuned per model (--trials on the first --tune-clips espeak dev clips), then both
test sets are decoded, and the espeak test also lexicon-free (words outside the LM vocabulary allowed).

Budget: each row trains for --minutes of its own CPU time on one thread (torch on 1 thread, no loader
workers, so loading, augmentation and dev loss all count), so rows can run side by side (--parallel) on a
small machine without changing what each one gets. Training runs in chunks of --chunk-steps batches with a
dev loss after each; the last chunk is shortened to end within the budget. The spent budget is saved per
chunk, so a killed row resumes. DeepSpeech's N_HIDDEN is chosen so that its parameter count is closest to
the conformer preset's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from dsita.data.augmentation.options import AugmentOptions
from dsita.text.alphabet import Alphabet
from dsita.training.options import TrainOptions

WORK = Path("data/quality-v2")
TEST_SETS = ("espeak", "festival")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--espeak-clips", type=int, default=8000)
    parser.add_argument("--festival-clips", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=30.0, help="CPU minutes of training per row")
    parser.add_argument("--chunk-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-deepspeech", type=float, default=5e-4)
    parser.add_argument("--lr-conformer", type=float, default=3e-4)
    parser.add_argument("--size", default="small", help="conformer preset")
    parser.add_argument("--trials", type=int, default=12, help="alpha/beta trials per row")
    parser.add_argument(
        "--tune-clips", type=int, default=200, help="espeak dev clips alpha/beta are tuned on"
    )
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--rows", default="deepspeech:off,conformer:off,deepspeech:on,conformer:on")
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--row", help="train and evaluate one row")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the trained --rows again")
    parser.add_argument("--evaluate-row", help="evaluate one trained row")
    parser.add_argument("--table", action="store_true")
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------- data + LM
def prepare(args: argparse.Namespace) -> None:
    from dsita.data.clips import ImportOptions
    from dsita.data.commonvoice import import_common_voice
    from dsita.data.sentences import default_sentences, prepare_sentences
    from dsita.data.synth import ESPEAK, FESTIVAL, SynthOptions, synthesize_corpus
    from dsita.lm.build import LmBuildOptions, build_scorer
    from dsita.lm.corpus import evaluation_sentences
    from dsita.text.alphabet import Alphabet

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    alphabet = Alphabet.italian()
    sentences = prepare_sentences(default_sentences(), 3, 14)
    random.Random(args.seed).shuffle(sentences)
    espeak_text = [s.text for s in sentences[: args.espeak_clips]]
    festival_text = [s.text for s in sentences[args.espeak_clips : args.espeak_clips + args.festival_clips]]
    corpora = {
        "espeak": (espeak_text, SynthOptions(
            n_clips=args.espeak_clips, seed=args.seed, engines=(ESPEAK,), shared_speakers=True,
            split_fractions=(0.85, 0.075, 0.075),
        )),
        "festival": (festival_text, SynthOptions(
            n_clips=args.festival_clips, seed=args.seed, engines=(FESTIVAL,),
        )),
    }  # fmt: skip
    for name, (text, options) in corpora.items():
        archive = work / f"{name}.tar.gz"
        if not archive.exists():
            report = synthesize_corpus(text, archive, options)
            print(f"{name}: {len(text)} clips, {report.hours:.2f} h, synthesised in {report.elapsed_s:.0f} s")
        if not (work / name / "test.csv").exists():
            imported = import_common_voice(
                archive, work / name, ImportOptions(alphabet, workers=2, progress=False)
            )
            print(f"{name}: imported {imported.total_kept} clips, skipped {sum(imported.skipped.values())}")
    scorer_dir = work / "scorer"
    if not scorer_dir.exists():
        held_out = [work / "espeak" / "dev.csv", work / "espeak" / "test.csv"]
        held_out += [work / "festival" / f"{split}.csv" for split in ("train", "dev", "test")]
        built = build_scorer(
            scorer_dir,
            alphabet,
            LmBuildOptions(memory="10%", workers=2),
            exclude=evaluation_sentences(held_out),
        )
        print(f"scorer: {built.scorer.vocabulary_size} words, {built.ngrams} n-grams, {built.seconds:.1f} s")


def test_sets(work: Path) -> dict[str, list[Path]]:
    return {
        "espeak": [work / "espeak" / "test.csv"],
        "festival": [work / "festival" / f"{split}.csv" for split in ("train", "dev", "test")],
    }


# ---------------------------------------------------------------------------------------------- one row
def augment_options(on: bool) -> AugmentOptions:
    """Nothing, or exactly what `AUGMENT=1` gives a user (the recommended probabilities and ranges)."""
    from dsita.settings import load_settings
    from dsita.settings.options import augment_options as from_settings

    if not on:
        return AugmentOptions()
    settings, _ = load_settings(overrides={"augment": True})
    return from_settings(settings)


def matched_n_hidden(target_parameters: int, n_outputs: int) -> int:
    """The DeepSpeech width whose parameter count is closest to `target_parameters`."""
    from dsita.model import build_model, count_parameters, new_model_config

    def params(n_hidden: int) -> int:
        return count_parameters(build_model(new_model_config("deepspeech", n_outputs, n_hidden=n_hidden)))

    return min(range(64, 2049, 8), key=lambda n: abs(params(n) - target_parameters))


def run_row(args: argparse.Namespace, row: str) -> None:
    import torch

    from dsita.model import build_model, count_parameters, new_model_config

    torch.set_num_threads(1)
    model_name, augment = row.split(":")
    work: Path = args.work
    alphabet = Alphabet.italian()
    n_outputs = len(alphabet) + 1
    conformer_parameters = count_parameters(
        build_model(new_model_config("conformer", n_outputs, preset=args.size))
    )
    n_hidden = matched_n_hidden(conformer_parameters, n_outputs)
    row_dir = work / "rows" / f"{model_name}-{augment}"
    options = TrainOptions(
        train_csvs=(work / "espeak" / "train.csv",),
        dev_csvs=(work / "espeak" / "dev.csv",),
        checkpoint_dir=row_dir / "checkpoints",
        architecture=model_name,
        model_size=args.size,
        model_fields={"n_hidden": n_hidden, "dropout": 0.1},
        batch_size=args.batch,
        epochs=1,
        learning_rate=args.lr_conformer if model_name == "conformer" else args.lr_deepspeech,
        lr_schedule="constant",  # as when these rows were measured
        early_stop=False,
        amp=False,
        workers=0,
        augment=augment_options(augment == "on"),
        max_steps_per_epoch=args.chunk_steps,
        max_dev_clips=300,
        show_progress=False,
    )
    spent = train_within_budget(options, alphabet, row_dir, args.minutes, args.chunk_steps, row)
    training = {
        "row": row,
        "n_hidden": n_hidden if model_name == "deepspeech" else None,
        **training_summary(options, spent, n_outputs),
    }
    (row_dir / "training.json").write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")


def train_within_budget(
    options: TrainOptions, alphabet: Alphabet, row_dir: Path, minutes: float, chunk_steps: int, label: str
) -> dict[str, float]:
    """Train `options` for `minutes` of this process's CPU time, in chunks of `chunk_steps` batches (one
    "epoch" each, with its dev loss); the last chunk is cut short to end within the budget rather than
    skipped. The CPU time spent is saved per chunk (`budget.json`), so a killed row resumes with its budget.
    Returns what was spent."""
    from dsita.training.loop import train

    spent_path = row_dir / "budget.json"
    spent = {"cpu_seconds": 0.0, "wall_seconds": 0.0, "chunks": 0, "last_chunk_seconds": 0.0}
    if spent_path.exists():
        spent = json.loads(spent_path.read_text())
    budget = minutes * 60
    while True:
        remaining, last = budget - spent["cpu_seconds"], spent["last_chunk_seconds"]
        steps = int(chunk_steps * min(1.0, remaining / last)) if last > 0 else chunk_steps
        if remaining <= 0 or steps < 10:
            break
        start, wall_start = time.process_time(), time.monotonic()
        train(replace(options, epochs=int(spent["chunks"]) + 1, max_steps_per_epoch=steps), alphabet)
        spent["last_chunk_seconds"] = time.process_time() - start
        spent["cpu_seconds"] += spent["last_chunk_seconds"]
        spent["wall_seconds"] += time.monotonic() - wall_start
        spent["chunks"] += 1
        spent_path.write_text(json.dumps(spent) + "\n", encoding="utf-8")
        print(
            f"{label}: chunk {spent['chunks']} ({steps} steps), {spent['cpu_seconds'] / 60:.1f} CPU min",
            flush=True,
        )
    return spent


def epoch_metrics(checkpoint_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch (per-chunk) records of metrics.jsonl, without the checkpoint averages' records."""
    lines = (checkpoint_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "epoch" in record]


def training_summary(options: TrainOptions, spent: dict[str, float], n_outputs: int) -> dict[str, Any]:
    """Parameters, CPU and wall minutes, steps, speed, best dev loss and the dev curve of a trained row."""
    from dsita.model import build_model, count_parameters
    from dsita.training.loop import model_config

    metrics = epoch_metrics(options.checkpoint_dir)
    audio_seconds = sum(m["audio_seconds_per_second"] * m["seconds"] for m in metrics)
    return {
        "parameters": count_parameters(build_model(model_config(options, n_outputs))),
        "cpu_minutes": spent["cpu_seconds"] / 60,
        "wall_minutes": spent["wall_seconds"] / 60,
        "chunks": spent["chunks"],
        "steps": metrics[-1]["step"],
        "audio_seconds_per_second": audio_seconds / sum(m["seconds"] for m in metrics),
        "audio_seconds_per_cpu_second": audio_seconds / spent["cpu_seconds"],
        "best_dev_loss": min(m["dev_loss"] for m in metrics),
        "augment": {k: str(v) for k, v in asdict(options.augment).items()},
        "curve": [(m["step"], m["dev_loss"]) for m in metrics],
    }


def evaluate_row(args: argparse.Namespace, row: str) -> None:
    """Tune alpha/beta on the espeak dev split, then decode both test sets: greedy, with the LM (lexicon),
    and for the espeak test also lexicon-free (words outside the LM vocabulary allowed, beam 100)."""
    import torch

    from dsita.data.dataset import load_samples
    from dsita.training.checkpoint import BEST_DEV, load_trained_model

    torch.set_num_threads(1)
    work: Path = args.work
    row_dir = work / "rows" / row.replace(":", "-")
    training_path = row_dir / "training.json"
    if not training_path.exists():  # rows trained before training.json existed kept it in result.json
        training_path = row_dir / "result.json"
    result = {
        k: v for k, v in json.loads(training_path.read_text()).items() if k not in ("tests", "alpha", "beta")
    }
    alphabet = Alphabet.italian()
    model, _ = load_trained_model(row_dir / "checkpoints" / BEST_DEV)
    dev = load_samples([work / "espeak" / "dev.csv"], alphabet)[: args.tune_clips]
    tuned = tune_scorer(model, alphabet, dev, work / "scorer", row_dir / "scorer", args.trials, row)
    result["alpha"], result["beta"] = tuned.alpha, tuned.beta
    sets = {name: load_samples(csvs, alphabet) for name, csvs in test_sets(work).items()}
    result["tests"] = score_test_sets(model, alphabet, tuned.scorer, sets, lexicon_free=("espeak",))
    (row_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["tests"]), flush=True)


def tune_scorer(
    model: Any, alphabet: Alphabet, dev: list[Any], scorer: Path, copy_to: Path, trials: int, key: str
) -> Any:
    """alpha/beta tuned by `trials` Optuna trials on the `dev` samples, in a copy of the scorer folder (so
    rows never share a study or a default); returns the optimizer's result (`.scorer`, `.alpha`, `.beta`)."""
    import torch

    from dsita.evaluation.evaluate import model_logits
    from dsita.evaluation.tune import OptimizeOptions, optimize
    from dsita.lm.scorer import load_scorer

    shutil.rmtree(copy_to, ignore_errors=True)
    shutil.copytree(scorer, copy_to)
    logits = model_logits(model, dev, alphabet, torch.device("cpu"))
    options = OptimizeOptions(n_trials=trials, workers=1)
    return optimize(load_scorer(copy_to), dev, logits, alphabet, options, key=key.replace(":", "-"))


def score_test_sets(
    model: Any,
    alphabet: Alphabet,
    scorer: Any,
    sets: dict[str, list[Any]],
    lexicon_free: tuple[str, ...] = (),
) -> dict[str, dict[str, float]]:
    """Greedy and LM (lexicon, beam 500) CER and WER of the model on each named list of samples, and for the
    names in `lexicon_free` also lexicon-free (beam 100): one forward pass per set."""
    import torch

    from dsita.decoding.batch import BatchDecoder
    from dsita.decoding.beam import DecoderOptions
    from dsita.evaluation.evaluate import evaluate_logits, model_logits

    results = {}
    with BatchDecoder(alphabet, scorer, workers=1) as decoder:
        for name, samples in sets.items():
            logits = model_logits(model, samples, alphabet, torch.device("cpu"))
            greedy = evaluate_logits(samples, logits, BatchDecoder(alphabet))
            with_lm = evaluate_logits(samples, logits, decoder)
            results[name] = {
                "clips": len(samples),
                "greedy_cer": greedy.cer,
                "greedy_wer": greedy.wer,
                "lm_cer": with_lm.cer,
                "lm_wer": with_lm.wer,
            }
            if name in lexicon_free:
                free = evaluate_logits(
                    samples, logits, decoder, DecoderOptions(beam_width=100, lexicon_free=True)
                )
                results[name] |= {"lm_free_cer": free.cer, "lm_free_wer": free.wer}
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------- driver
def run_rows(args: argparse.Namespace, rows: list[str], mode: str = "--row") -> None:
    """Train and evaluate (`--row`) or evaluate only (`--evaluate-row`) rows as separate one-thread
    processes, `args.parallel` at a time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(rows), []
    while pending or running:
        while pending and len(running) < args.parallel:
            row = pending.pop(0)
            log = (args.work / "rows" / f"{row.replace(':', '-')}{mode}.log").open("w")
            command = [sys.executable, __file__, mode, row, *forward_args(args)]
            running.append((row, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(5)
        for row, process in list(running):
            if process.poll() is not None:
                running.remove((row, process))
                print(f"{row}: finished with exit status {process.returncode}", flush=True)


def forward_args(args: argparse.Namespace) -> list[str]:
    return [
        "--work", str(args.work), "--minutes", str(args.minutes), "--chunk-steps", str(args.chunk_steps),
        "--batch", str(args.batch), "--lr-deepspeech", str(args.lr_deepspeech),
        "--lr-conformer", str(args.lr_conformer), "--size", args.size, "--trials", str(args.trials),
        "--tune-clips", str(args.tune_clips),
    ]  # fmt: skip


def print_oov(work: Path) -> None:
    """Share of test words outside the LM's vocabulary: a floor under the lexicon decoder's WER."""
    from dsita.data.csvs import read_csv
    from dsita.lm.scorer import load_scorer

    vocabulary = set(load_scorer(work / "scorer").vocabulary())
    for name, csvs in test_sets(work).items():
        words = [w for csv in csvs for sample in read_csv(csv) for w in sample.transcript.split()]
        oov = sum(w not in vocabulary for w in words) / len(words)
        print(f"{name} test: {oov:.1%} of words out of the LM vocabulary")


def print_table(work: Path, rows: list[str]) -> None:
    header = "| model | augmentation | parameters | audio-s per CPU-s | steps |"
    for name in TEST_SETS:
        header += f" {name} greedy CER / WER | {name} LM CER / WER |"
    header += " espeak LM lexicon-free CER / WER |"
    print(header)
    print("|" + "---|" * (6 + 2 * len(TEST_SETS)))
    for row in rows:
        path = work / "rows" / row.replace(":", "-") / "result.json"
        if not path.exists():
            print(f"| {row} | not run |")
            continue
        r = json.loads(path.read_text())
        model, augment = row.split(":")
        # Audio seconds trained per CPU second (dev loss included): unlike wall-clock speed, this does not
        # depend on what else shared the machine.
        metrics = epoch_metrics(work / "rows" / row.replace(":", "-") / "checkpoints")
        audio = sum(m["audio_seconds_per_second"] * m["seconds"] for m in metrics)
        speed = audio / (r["cpu_minutes"] * 60)
        line = f"| {model} | {augment} | {r['parameters'] / 1e6:.2f} M | {speed:.1f} | {r['steps']} |"
        for name in TEST_SETS:
            t = r["tests"][name]
            line += (
                f" {t['greedy_cer']:.1%} / {t['greedy_wer']:.1%} | {t['lm_cer']:.1%} / {t['lm_wer']:.1%} |"
            )
        free = r["tests"]["espeak"]
        line += (
            f" {free['lm_free_cer']:.1%} / {free['lm_free_wer']:.1%} |" if "lm_free_cer" in free else " - |"
        )
        print(line)


def main() -> None:
    args = parse_args()
    rows = args.rows.split(",")
    if args.row:
        run_row(args, args.row)
        evaluate_row(args, args.row)
        return
    if args.evaluate_row:
        evaluate_row(args, args.evaluate_row)
        return
    if args.evaluate:
        run_rows(args, rows, "--evaluate-row")
        print_table(args.work, rows)
        print_oov(args.work)
        return
    if args.table:
        print_table(args.work, rows)
        print_oov(args.work)
        return
    prepare(args)
    if args.prepare:
        return
    (args.work / "rows").mkdir(parents=True, exist_ok=True)
    run_rows(args, rows)
    print_table(args.work, rows)
    print_oov(args.work)


if __name__ == "__main__":
    main()
