"""Commands that train and evaluate acoustic models, and run the whole pipeline."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dsita.commands.base import (
    CsvList,
    EnvFileOption,
    app,
    console,
    out,
    setting_option,
    settings_from,
    split_csvs,
)
from dsita.errors import DsitaError


@app.command("train")
def train_command(
    ctx: typer.Context,
    train_files: CsvList = None,
    dev_files: CsvList = None,
    test_files: CsvList = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Default: DATA_DIR/checkpoints.")] = None,
    load_checkpoint_dir: Annotated[Path | None, typer.Option(help="Start from this run's weights.")] = None,
    batch_size: Annotated[int | None, setting_option("batch_size")] = None,
    epochs: Annotated[int | None, setting_option("epochs")] = None,
    learning_rate: Annotated[float | None, setting_option("learning_rate")] = None,
    n_hidden: Annotated[int | None, setting_option("n_hidden")] = None,
    dropout: Annotated[float | None, setting_option("dropout")] = None,
    model: Annotated[str | None, setting_option("model")] = None,
    model_size: Annotated[str | None, setting_option("model_size")] = None,
    augment: Annotated[bool | None, setting_option("augment", "--augment/--no-augment")] = None,
    aug_speed: Annotated[float | None, setting_option("aug_speed")] = None,
    aug_specaugment: Annotated[float | None, setting_option("aug_specaugment")] = None,
    aug_noise: Annotated[float | None, setting_option("aug_noise")] = None,
    aug_gain: Annotated[float | None, setting_option("aug_gain")] = None,
    aug_reverb: Annotated[float | None, setting_option("aug_reverb")] = None,
    aug_noise_dir: Annotated[Path | None, setting_option("aug_noise_dir")] = None,
    aug_snr_db: Annotated[str | None, setting_option("aug_snr_db")] = None,
    aug_gain_db: Annotated[float | None, setting_option("aug_gain_db")] = None,
    aug_rt60: Annotated[str | None, setting_option("aug_rt60")] = None,
    aug_spec_time_ms: Annotated[float | None, setting_option("aug_spec_time_ms")] = None,
    aug_spec_time_masks: Annotated[int | None, setting_option("aug_spec_time_masks")] = None,
    aug_spec_freq_masks: Annotated[int | None, setting_option("aug_spec_freq_masks")] = None,
    aug_spec_freq_share: Annotated[float | None, setting_option("aug_spec_freq_share")] = None,
    aug_vtlp: Annotated[float | None, setting_option("aug_vtlp")] = None,
    aug_pitch: Annotated[float | None, setting_option("aug_pitch")] = None,
    aug_formant: Annotated[float | None, setting_option("aug_formant")] = None,
    aug_tempo: Annotated[float | None, setting_option("aug_tempo")] = None,
    aug_vtlp_range: Annotated[str | None, setting_option("aug_vtlp_range")] = None,
    aug_pitch_semitones: Annotated[str | None, setting_option("aug_pitch_semitones")] = None,
    aug_formant_range: Annotated[str | None, setting_option("aug_formant_range")] = None,
    aug_tempo_range: Annotated[str | None, setting_option("aug_tempo_range")] = None,
    aug_babble: Annotated[float | None, setting_option("aug_babble")] = None,
    aug_mic: Annotated[float | None, setting_option("aug_mic")] = None,
    aug_clipping: Annotated[float | None, setting_option("aug_clipping")] = None,
    aug_compression: Annotated[float | None, setting_option("aug_compression")] = None,
    aug_eq: Annotated[float | None, setting_option("aug_eq")] = None,
    aug_band_limit: Annotated[float | None, setting_option("aug_band_limit")] = None,
    aug_narrowband: Annotated[float | None, setting_option("aug_narrowband")] = None,
    aug_mu_law: Annotated[float | None, setting_option("aug_mu_law")] = None,
    aug_codec: Annotated[float | None, setting_option("aug_codec")] = None,
    aug_babble_snr_db: Annotated[str | None, setting_option("aug_babble_snr_db")] = None,
    aug_codecs: Annotated[str | None, setting_option("aug_codecs")] = None,
    average_checkpoints: Annotated[int | None, setting_option("average_checkpoints")] = None,
    sort_by_size: Annotated[bool, typer.Option(help="DeepSpeech's fixed shortest-first order.")] = False,
    feature_cache: Annotated[Path | None, typer.Option(help="Folder of cached features.")] = None,
    train_workers: Annotated[int | None, setting_option("train_workers", "--workers", min=0)] = None,
    reduce_lr_on_plateau: Annotated[bool, typer.Option(help="Divide the LR by 10 when dev stalls.")] = False,
    es_min_delta: Annotated[float, typer.Option(help="Smallest dev-loss drop that counts.")] = 0.0,
    env_file: EnvFileOption = None,
) -> None:
    """Train an acoustic model; resumes when the checkpoint dir holds a run. Works under torchrun."""
    from dsita.settings.options import alphabet_for, train_options
    from dsita.training.loop import train

    flags = {name: value for name, value in locals().items() if name in SETTING_FLAGS}
    settings = settings_from(ctx, env_file, **flags)
    alphabet = alphabet_for(settings)
    checkpoint_dir = checkpoint_dir or settings.data_dir / "checkpoints"
    options = train_options(
        settings,
        split_csvs(settings, train_files, "train"),
        split_csvs(settings, dev_files, "dev"),
        checkpoint_dir,
        load_checkpoint_dir=load_checkpoint_dir,
        sort_by_size=sort_by_size,
        feature_cache=feature_cache,
        reduce_lr_on_plateau=reduce_lr_on_plateau,
        es_min_delta=es_min_delta,
        show_progress=sys.stderr.isatty(),
    )
    distributed = distributed_from_environment()
    result = train(options, alphabet, distributed)
    console.print(f"best dev loss {result.best_dev_loss:.3f} after {result.epochs_completed} epochs")
    tests = split_csvs(settings, test_files, "test")
    if distributed.is_main and all(p.is_file() for p in tests):
        print_evaluation(result.best_checkpoint, tests, checkpoint_dir)


SETTING_FLAGS = (
    "batch_size", "epochs", "learning_rate", "n_hidden", "dropout", "model", "model_size", "augment",
    "aug_speed", "aug_specaugment", "aug_noise", "aug_gain", "aug_reverb", "aug_noise_dir", "aug_snr_db",
    "aug_gain_db", "aug_rt60", "aug_spec_time_ms", "aug_spec_time_masks", "aug_spec_freq_masks",
    "aug_spec_freq_share", "aug_vtlp", "aug_pitch", "aug_formant", "aug_tempo", "aug_vtlp_range",
    "aug_pitch_semitones", "aug_formant_range", "aug_tempo_range", "aug_babble", "aug_mic", "aug_clipping",
    "aug_compression", "aug_eq", "aug_band_limit", "aug_narrowband", "aug_mu_law", "aug_codec",
    "aug_babble_snr_db", "aug_codecs", "average_checkpoints", "train_workers",
)  # fmt: skip
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
    env_file: EnvFileOption = None,
) -> None:
    """WER and CER on test CSVs, with best, median and worst samples and a JSON report.

    Decoding is beam search with the scorer when there is one (--scorer, or DATA_DIR/lm/scorer), else greedy.
    """
    from dsita.lm.scorer import MANIFEST
    from dsita.settings.options import scorer_dir

    settings = settings_from(ctx, env_file)
    checkpoint = checkpoint or settings.data_dir / "checkpoints"
    if scorer is None and (scorer_dir(settings) / MANIFEST).is_file():
        scorer = scorer_dir(settings)
    scorer = None if greedy else scorer
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    options = decoder_options(beam_width, beam_threshold, token_beam, lexicon_free, alpha=alpha, beta=beta)
    test_csvs = split_csvs(settings, test_files, "test")
    print_evaluation(checkpoint, test_csvs, folder, scorer, options, workers, report)


def decoder_options(
    beam_width: int | None,
    beam_threshold: float | None,
    token_beam: int | None,
    lexicon_free: bool,
    **weights: Any,
) -> Any:
    """DecoderOptions from the beam flags; a flag not given keeps DecoderOptions' default."""
    from dsita.decoding.beam import DecoderOptions

    given = {"beam_width": beam_width, "beam_threshold": beam_threshold, "token_beam": token_beam, **weights}
    return DecoderOptions(lexicon_free=lexicon_free, **{k: v for k, v in given.items() if v is not None})


def print_evaluation(
    checkpoint: Path,
    test_csvs: list[Path],
    folder: Path,
    scorer_path: Path | None = None,
    options: Any = None,
    workers: int | None = None,
    report_path: Path | None = None,
) -> None:
    """Evaluate a checkpoint, save the report(s) in `folder` and print the best, median and worst clips."""
    from dsita.evaluation.evaluate import evaluate_checkpoint
    from dsita.lm.scorer import load_scorer

    scorer = load_scorer(scorer_path) if scorer_path is not None else None
    result = evaluate_checkpoint(
        checkpoint, test_csvs, scorer, options, workers or os.cpu_count() or 1, sys.stderr.isatty()
    )
    report = result.lm or result.greedy
    kind = "lm" if result.lm else "greedy"
    report_path = report_path or folder / f"test_report_{kind}.json"
    report.save(report_path)
    table = Table("", "WER", "CER", "reference", "hypothesis", title=f"{report.decoder} decoding")
    for label, s in report.best_median_worst():
        table.add_row(label, f"{s.wer:.1%}", f"{s.cer:.1%}", s.reference, s.hypothesis)
    out.print(table)
    greedy = result.greedy
    versus = f" (greedy: WER {greedy.wer:.2%}, CER {greedy.cer:.2%})" if result.lm else ""
    clips = len(result.samples)
    out.print(f"test WER {report.wer:.2%}, CER {report.cer:.2%}{versus} on {clips} clips", end="")
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
    cpu_ranks: Annotated[
        int,
        typer.Option(min=0, help="Train in N gloo processes on the CPU: the multi-GPU launch without a GPU."),
    ] = 0,
    env_file: EnvFileOption = None,
) -> None:
    """The whole pipeline, from DATA_DIR/sources/it.tar.gz to the release files, without a question asked.

    Steps that are up to date are skipped; after an interruption, the same command carries on. checks and
    alphabet always run. Trains on every visible GPU, one process each (NUM_GPUS limits it); under torchrun,
    on torchrun's ranks.
    """
    from dsita.pipeline import RunOptions
    from dsita.pipeline.launch import launch, plan_launch

    settings = settings_from(ctx, env_file)
    options = RunOptions.parse(steps, force or [], progress=sys.stderr.isatty())
    plan = plan_launch(settings.num_gpus, cpu_ranks)
    if plan.launches:
        launch(plan, run_rank, settings, options)
    else:
        run_rank(settings, options)


def run_rank(settings: Any, options: Any) -> None:
    """The pipeline in this process, one of its ranks (rank 0 runs the steps and prints the summary)."""
    from dsita.pipeline import run_pipeline

    if not logging.getLogger().handlers:  # a rank the launcher spawned: log as the command line does
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    result = run_pipeline(settings, options, distributed_from_environment())
    if result is not None:
        for table in result.tables:
            out.print(table)
        out.print(f"summary: {result.summary_path}; logs: {result.summary_path.parent}")


def distributed_from_environment() -> Any:
    """The process group torchrun (or `dsita run`'s launcher) describes in the environment."""
    from dsita.training.runtime import Distributed

    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    values = []
    for name in names:
        text = os.environ.get(name, "1" if "WORLD" in name else "0")
        if not text.isdigit():
            raise DsitaError(f"{name} must be a non-negative integer (torchrun sets it), got {text!r}")
        values.append(int(text))
    rank, world, local_rank, local_world = values
    if rank >= world or world < 1:
        raise DsitaError(f"RANK={rank} must be below WORLD_SIZE={world}")
    return Distributed(rank, world, local_rank, max(1, local_world))
