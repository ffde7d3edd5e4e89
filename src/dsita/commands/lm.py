"""Commands that build the KenLM scorer and tune alpha and beta."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from dsita.commands.base import (
    CsvList,
    EnvFileOption,
    lm_app,
    out,
    setting_option,
    settings_from,
    split_csvs,
)
from dsita.commands.data import WorkersOption
from dsita.commands.training import (
    BeamThresholdOption,
    BeamWidthOption,
    DecodeWorkersOption,
    LexiconFreeOption,
    ReportOption,
    ScorerOption,
    TokenBeamOption,
    decoder_options,
    print_evaluation,
)
from dsita.errors import DsitaError


@lm_app.command("build")
def lm_build_command(
    ctx: typer.Context,
    corpus: Annotated[
        list[Path] | None, typer.Argument(help="Text files, plain, .gz or .xz (default: fortunes-it).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Scorer folder (default: DATA_DIR/lm/scorer).")
    ] = None,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            help="CSV whose sentences stay out of the LM (default: DATA_DIR/extracted dev and test)."
        ),
    ] = None,
    top_k: Annotated[int | None, setting_option("lm_top_k", min=1)] = None,
    memory: Annotated[str | None, setting_option("lm_memory")] = None,
    workers: WorkersOption = None,
    env_file: EnvFileOption = None,
) -> None:
    """Build the KenLM scorer: normalize the corpus, keep the top-k words, lmplz, filter, build_binary."""
    from dsita.lm.build import build_scorer
    from dsita.lm.corpus import evaluation_sentences
    from dsita.pipeline.state import lock_when_inside
    from dsita.settings.options import alphabet_for, lm_build_options, scorer_dir

    settings = settings_from(ctx, env_file, lm_top_k=top_k, lm_memory=memory)
    if exclude is None:
        exclude = [
            p for p in split_csvs(settings, None, "dev") + split_csvs(settings, None, "test") if p.is_file()
        ]
    options = replace(lm_build_options(settings, workers=workers), progress=sys.stderr.isatty())
    out_dir = out_dir or scorer_dir(settings)
    alphabet = alphabet_for(settings)
    with lock_when_inside(settings.data_dir, [out_dir], "dsita lm build"):
        report = build_scorer(out_dir, alphabet, options, corpus or None, evaluation_sentences(exclude))
    stats = report.corpus
    out.print(f"corpus: {', '.join(stats.sources)}", markup=False)
    excluded_from = ", ".join(map(str, exclude)) or "no CSV"
    out.print(
        f"{stats.kept} of {stats.lines} lines kept ({stats.rejected} rejected by the normalizer, "
        f"{stats.excluded} excluded as sentences of {excluded_from}), {stats.words} words",
        markup=False,
    )
    fallback = " (with --discount_fallback)" if report.discount_fallback else ""
    out.print(
        f"scorer {report.scorer.folder}: {report.scorer.vocabulary_size} words, n-grams {list(report.ngrams)}"
        f"{fallback}, {report.scorer.size_bytes() / 1e6:.1f} MB, alpha {report.scorer.alpha:g}, "
        f"beta {report.scorer.beta:g}, built in {report.seconds:.1f} s",
        markup=False,
    )


@lm_app.command("optimize")
def lm_optimize_command(
    ctx: typer.Context,
    checkpoint: Annotated[Path | None, typer.Option(help="Checkpoint file or folder.")] = None,
    dev_files: CsvList = None,
    test_files: CsvList = None,
    scorer: ScorerOption = None,
    evaluate_range: Annotated[
        str | None, typer.Option("--range", help="MAX_ALPHA,MAX_BETA,N_TRIALS (LM_EVALUATE_RANGE).")
    ] = None,
    beam_width: BeamWidthOption = None,
    beam_threshold: BeamThresholdOption = None,
    token_beam: TokenBeamOption = None,
    lexicon_free: LexiconFreeOption = False,
    workers: DecodeWorkersOption = None,
    report: ReportOption = None,
    env_file: EnvFileOption = None,
) -> None:
    """Tune alpha and beta on dev WER (Optuna TPE), save them as the scorer's defaults, report test WER.

    The study is kept beside the scorer: run the same command again to resume an interrupted search.
    """
    from dsita.evaluation.tune import OptimizeOptions, optimize_checkpoint
    from dsita.settings.options import scorer_dir

    settings = settings_from(ctx, env_file, lm_evaluate_range=evaluate_range)
    box = settings.lm_evaluate_range
    if box is None:
        raise DsitaError(
            "LM_EVALUATE_RANGE is empty: set it (or --range) to MAX_ALPHA,MAX_BETA,N_TRIALS, e.g. 5,5,600"
        )
    checkpoint = checkpoint or settings.data_dir / "checkpoints"
    scorer = scorer or scorer_dir(settings)
    decoder = decoder_options(beam_width, beam_threshold, token_beam, lexicon_free)
    processes = workers or os.cpu_count() or 1
    options = OptimizeOptions(box.max_alpha, box.max_beta, box.n_trials, box.pairs, decoder, processes)
    options = replace(options, seed=settings.seed, progress=sys.stderr.isatty())
    result = optimize_checkpoint(scorer, checkpoint, split_csvs(settings, dev_files, "dev"), options)
    out.print(
        f"best alpha {result.alpha:.4f}, beta {result.beta:.4f} after {result.trials_complete} trials "
        f"({result.trials_run} in this run): dev WER {result.dev_wer_before:.2%} before, "
        f"{result.dev_wer_after:.2%} after; saved as the defaults of {result.scorer.folder}"
    )
    tests = split_csvs(settings, test_files, "test")
    if all(p.is_file() for p in tests):
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        print_evaluation(checkpoint, tests, folder, scorer, decoder, workers, report)
