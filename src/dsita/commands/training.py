"""Commands that train and evaluate acoustic models, and run the whole pipeline."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dsita.commands.base import (
    CsvList,
    app,
    console,
    out,
    settings_from,
    split_csvs,
)


@app.command("train")
def train_command(
    ctx: typer.Context,
    train_files: CsvList = None,
    dev_files: CsvList = None,
    test_files: CsvList = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Default: DATA_DIR/checkpoints.")] = None,
    load_checkpoint_dir: Annotated[Path | None, typer.Option(help="Start from this run's weights.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="BATCH_SIZE.")] = None,
    epochs: Annotated[int | None, typer.Option(help="EPOCHS.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="LEARNING_RATE.")] = None,
    n_hidden: Annotated[int | None, typer.Option(help="N_HIDDEN.")] = None,
    dropout: Annotated[float | None, typer.Option(help="DROPOUT.")] = None,
    model: Annotated[str | None, typer.Option(help="MODEL: deepspeech or conformer.")] = None,
    model_size: Annotated[str | None, typer.Option(help="MODEL_SIZE: the conformer's preset.")] = None,
    sort_by_size: Annotated[bool, typer.Option(help="DeepSpeech's fixed shortest-first order.")] = False,
    feature_cache: Annotated[Path | None, typer.Option(help="Folder of cached features.")] = None,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
    augment: Annotated[bool | None, typer.Option("--augment/--no-augment", help="AUGMENT.")] = None,
    aug_speed: Annotated[float | None, typer.Option(help="AUG_SPEED.")] = None,
    aug_specaugment: Annotated[float | None, typer.Option(help="AUG_SPECAUGMENT.")] = None,
    aug_noise: Annotated[float | None, typer.Option(help="AUG_NOISE.")] = None,
    aug_gain: Annotated[float | None, typer.Option(help="AUG_GAIN.")] = None,
    aug_reverb: Annotated[float | None, typer.Option(help="AUG_REVERB.")] = None,
    aug_noise_dir: Annotated[Path | None, typer.Option(help="AUG_NOISE_DIR.")] = None,
    aug_snr_db: Annotated[str | None, typer.Option(help="AUG_SNR_DB, as MIN,MAX.")] = None,
    aug_gain_db: Annotated[float | None, typer.Option(help="AUG_GAIN_DB.")] = None,
    aug_rt60: Annotated[str | None, typer.Option(help="AUG_RT60, as MIN,MAX seconds.")] = None,
    reduce_lr_on_plateau: Annotated[bool, typer.Option(help="Divide the LR by 10 when dev stalls.")] = False,
    es_min_delta: Annotated[float, typer.Option(help="Smallest dev-loss drop that counts.")] = 0.0,
    grad_clip: Annotated[float, typer.Option(help="Gradient norm clip.")] = 400.0,
) -> None:
    """Train an acoustic model; resumes when the checkpoint dir holds a run. Works under torchrun."""
    from dsita.text.alphabet import Alphabet
    from dsita.training.loop import options_from_settings, train

    settings = settings_from(
        ctx,
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=learning_rate,
        n_hidden=n_hidden,
        dropout=dropout,
        model=model,
        model_size=model_size,
        augment=augment,
        aug_speed=aug_speed,
        aug_specaugment=aug_specaugment,
        aug_noise=aug_noise,
        aug_gain=aug_gain,
        aug_reverb=aug_reverb,
        aug_noise_dir=aug_noise_dir,
        aug_snr_db=aug_snr_db,
        aug_gain_db=aug_gain_db,
        aug_rt60=aug_rt60,
    )
    alphabet = Alphabet.for_settings(settings)
    checkpoint_dir = checkpoint_dir or settings.data_dir / "checkpoints"
    options = options_from_settings(
        settings,
        split_csvs(settings, train_files, "train"),
        split_csvs(settings, dev_files, "dev"),
        checkpoint_dir,
        load_checkpoint_dir=load_checkpoint_dir,
        sort_by_size=sort_by_size,
        feature_cache=feature_cache,
        workers=workers,
        reduce_lr_on_plateau=reduce_lr_on_plateau,
        es_min_delta=es_min_delta,
        grad_clip=grad_clip,
        show_progress=sys.stderr.isatty(),
    )
    distributed = distributed_from_environment()
    result = train(options, alphabet, distributed)
    console.print(f"best dev loss {result.best_dev_loss:.3f} after {result.epochs_completed} epochs")
    tests = split_csvs(settings, test_files, "test")
    if distributed.is_main and all(p.is_file() for p in tests):
        evaluate_checkpoint(
            result.best_checkpoint, tests, checkpoint_dir / "test_report_greedy.json", alphabet
        )


ScorerOption = Annotated[Path | None, typer.Option(help="Scorer folder (default: DATA_DIR/lm/scorer).")]
AlphaOption = Annotated[float | None, typer.Option(min=0, help="LM weight (default: the scorer's).")]
BetaOption = Annotated[float | None, typer.Option(min=0, help="Word bonus (default: the scorer's).")]
BeamWidthOption = Annotated[int | None, typer.Option(min=1, help="Beam width (default 500).")]
BeamThresholdOption = Annotated[
    float | None, typer.Option(min=0, help="Drop hypotheses this far below the best (default 10).")
]
TokenBeamOption = Annotated[int | None, typer.Option(min=1, help="Labels tried per step (default 10).")]
LexiconFreeOption = Annotated[bool, typer.Option(help="Allow words outside the LM vocabulary (slower).")]
DecodeWorkersOption = Annotated[int | None, typer.Option(min=1, help="Decoding processes (default: CPUs).")]
ReportOption = Annotated[Path | None, typer.Option(help="JSON report (default: next to the checkpoint).")]


@app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file or folder.")] = None,
    test_files: CsvList = None,
    report: ReportOption = None,
    scorer: ScorerOption = None,
    greedy: Annotated[bool, typer.Option(help="Greedy decoding even when a scorer exists.")] = False,
    alpha: AlphaOption = None,
    beta: BetaOption = None,
    beam_width: BeamWidthOption = None,
    beam_threshold: BeamThresholdOption = None,
    token_beam: TokenBeamOption = None,
    lexicon_free: LexiconFreeOption = False,
    workers: DecodeWorkersOption = None,
) -> None:
    """WER and CER on test CSVs, with best, median and worst samples and a JSON report.

    Decoding is beam search with the scorer when there is one (--scorer, or DATA_DIR/lm/scorer), else greedy.
    """
    from dsita.lm.scorer import MANIFEST, default_scorer_dir
    from dsita.text.alphabet import Alphabet

    settings = settings_from(ctx)
    checkpoint = checkpoint or settings.data_dir / "checkpoints"
    if scorer is None and (default_scorer_dir(settings) / MANIFEST).is_file():
        scorer = default_scorer_dir(settings)
    scorer = None if greedy else scorer
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    report = report or folder / f"test_report_{'lm' if scorer else 'greedy'}.json"
    options = decoder_options(beam_width, beam_threshold, token_beam, lexicon_free, alpha=alpha, beta=beta)
    test_csvs = split_csvs(settings, test_files, "test")
    evaluate_checkpoint(
        checkpoint, test_csvs, report, Alphabet.for_settings(settings), scorer, options, workers
    )


def decoder_options(
    beam_width: int | None,
    beam_threshold: float | None,
    token_beam: int | None,
    lexicon_free: bool,
    **weights: Any,
) -> Any:
    from dsita.decoding.beam import DecoderOptions

    given = {"beam_width": beam_width, "beam_threshold": beam_threshold, "token_beam": token_beam, **weights}
    return DecoderOptions(lexicon_free=lexicon_free, **{k: v for k, v in given.items() if v is not None})


def evaluate_checkpoint(
    checkpoint: Path,
    test_csvs: list[Path],
    report_path: Path,
    alphabet: Any,
    scorer_dir: Path | None = None,
    options: Any = None,
    workers: int | None = None,
) -> None:
    import torch

    from dsita.data.dataset import load_samples
    from dsita.decoding.batch import BatchDecoder
    from dsita.evaluation.evaluate import evaluate_logits, model_logits
    from dsita.lm.scorer import load_scorer
    from dsita.training.checkpoint import load_trained_model

    scorer = load_scorer(scorer_dir) if scorer_dir is not None else None
    model, model_alphabet = load_trained_model(checkpoint)
    samples = load_samples(test_csvs, model_alphabet)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    logits = model_logits(model, samples, model_alphabet, device)
    greedy = evaluate_logits(samples, logits, BatchDecoder(model_alphabet))
    report = greedy
    if scorer is not None:
        with BatchDecoder(model_alphabet, scorer, workers or os.cpu_count() or 1) as decoder:
            report = evaluate_logits(samples, logits, decoder, options)
    report.save(report_path)
    table = Table("", "WER", "CER", "reference", "hypothesis", title=f"{report.decoder} decoding")
    for label, s in report.best_median_worst():
        table.add_row(label, f"{s.wer:.1%}", f"{s.cer:.1%}", s.reference, s.hypothesis)
    out.print(table)
    versus = f" (greedy: WER {greedy.wer:.2%}, CER {greedy.cer:.2%})" if scorer is not None else ""
    out.print(f"test WER {report.wer:.2%}, CER {report.cer:.2%}{versus} on {len(samples)} clips", end="")
    out.print(f"; report: {report_path}")


@app.command("run")
def run_command(
    ctx: typer.Context,
    steps: Annotated[
        str | None,
        typer.Option(help="Comma-separated subset: import, lm, train, test, export, lm-optimize, package."),
    ] = None,
    force: Annotated[
        list[str] | None, typer.Option("--force", help="Run STEP even when up to date (repeatable).")
    ] = None,
) -> None:
    """The whole pipeline, from DATA_DIR/sources/it.tar.gz to the release files, without a question asked.

    Steps that are up to date are skipped; after an interruption, the same command carries on. checks and
    alphabet always run. Works under torchrun: rank 0 runs the pipeline, every rank trains.
    """
    from dsita.pipeline import RunOptions, run_pipeline

    settings = settings_from(ctx)
    options = RunOptions.parse(steps, force or [], progress=sys.stderr.isatty())
    result = run_pipeline(settings, options, distributed_from_environment())
    if result is not None:
        for table in result.tables:
            out.print(table)
        out.print(f"summary: {result.summary_path}; logs: {result.summary_path.parent}")


def distributed_from_environment() -> Any:
    """The process group torchrun describes in the environment; nothing below reads it."""
    from dsita.training.loop import Distributed

    return Distributed(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )
