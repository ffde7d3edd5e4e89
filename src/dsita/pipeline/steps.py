"""The steps of `dsita run`, in order: each a plain function over the run's `Context`, declared in `STEPS`.

checks, alphabet, import, lm and train are here; test, export, lm-optimize and package in `publish`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsita.errors import DsitaError
from dsita.pipeline.checks import find_source, run_checks, transfer_folder
from dsita.pipeline.context import Context, Report, Step, extra_names
from dsita.pipeline.publish import (
    evaluate_model,
    export_model,
    model_files,
    no_range,
    no_test_split,
    optimize_lm,
    package,
    release_products,
)
from dsita.pipeline.summary import render_text
from dsita.settings.options import (
    TRAIN_KEY_SETTINGS,
    alphabet_for,
    import_options,
    lm_build_options,
    train_options,
)
from dsita.text.alphabet import Alphabet

if TYPE_CHECKING:
    from dsita.model.base import ModelConfig
    from dsita.training.options import TrainOptions

log = logging.getLogger(__name__)

METADATA_SETTINGS = ("model_name", "model_author", "model_version", "model_license")


def checks(ctx: Context) -> Report:
    """The checks step: check what the selected steps need (see `run_checks`) and report it."""
    return run_checks(ctx.settings, ctx.layout, ctx.manifest, ctx.selected, ctx.pending)


def alphabet(ctx: Context) -> Report:
    """The alphabet step: write the settings' alphabet unless the file exists; an existing different
    one is kept (with a warning). Reports the label count and the path.
    """
    wanted = alphabet_for(ctx.settings)
    path = ctx.layout.alphabet
    if not path.is_file():
        wanted.save(path)
        log.info("Wrote %s: %d labels (%s)", path, len(wanted), ctx.settings.language_alphabet)
    found = Alphabet.load(path)
    if found != wanted:
        log.warning(
            "%s (%d labels) is not the %s alphabet of these settings; it is used as it is "
            "(delete it to get the default)",
            *(path, len(found), ctx.settings.language_alphabet),
        )
    return {"labels": len(found), "path": str(path)}


def _import_inputs(ctx: Context) -> list[Any]:
    extras = [ctx.manifest.identity(p) for p in ctx.settings.extra_corpora]
    record = ctx.manifest.record("import")
    archive = ctx.layout.relative(ctx.layout.archive)
    if record and record["report"]["source"] == archive and not ctx.layout.archive.exists():
        return [record["report"]["source_identity"], *extras]  # deleted after its import, which stands
    source = find_source(ctx.settings, ctx.layout)
    return [ctx.manifest.identity(source) if source else None, *extras]


def import_corpora(ctx: Context) -> Report:
    """The import step: import Common Voice (or the FAST_TRAIN sample) and EXTRA_CORPORA into
    DATA_DIR/extracted; reports hours and clips per split.

    A DsitaError when there is nothing to import, the archive's SHA-256 is not CV_SHA256, or a corpus
    yields no usable clip.
    """
    from dsita.data.clips import report_tables
    from dsita.data.commonvoice import import_common_voice
    from dsita.data.own_csv import import_own_csv

    source = find_source(ctx.settings, ctx.layout)
    if source is None:
        raise DsitaError(f"nothing to import: {ctx.layout.archive} not found")
    settings = ctx.settings
    if (
        source == ctx.layout.archive
        and settings.cv_sha256
        and ctx.manifest.digest(source) != settings.cv_sha256.lower()
    ):
        raise DsitaError(f"{source}: SHA-256 mismatch (CV_SHA256); nothing was imported")
    options = import_options(settings, ctx.workers, ctx.progress)
    # The checks step verified the archive's digests.
    options = replace(options, alphabet=ctx.alphabet(), sha256="", sha1="")
    log.info("Importing %s into %s", source, ctx.layout.extracted)
    reports = {"common voice": import_common_voice(source, ctx.layout.extracted, options)}
    for name, table in zip(extra_names(settings), settings.extra_corpora, strict=True):
        log.info("Importing %s into %s", table, ctx.layout.extracted / "extra" / name)
        reports[name] = import_own_csv(table, ctx.layout.extracted / "extra" / name, options, split=name)
    hours: dict[str, float] = {}
    clips: dict[str, int] = {}
    for corpus, report in reports.items():
        for item in report_tables(report):
            log.info("%s: %s", corpus, render_text(item))
        if report.total_kept == 0:
            raise DsitaError(f"nothing usable was imported into {report.out_dir}: see {report.skipped_csv}")
        for split in report.csv_files:
            label = split if corpus == "common voice" else f"train ({split})"
            hours[label] = round(report.seconds[split] / 3600, 4)
            clips[label] = report.kept[split]
    return {
        "source": ctx.layout.relative(source),
        "source_identity": ctx.manifest.identity(source),
        "hours": hours,
        "clips": clips,
    }


def build_lm(ctx: Context) -> Report:
    """The lm step: build the scorer from the LM corpus, leaving out the dev and test sentences;
    reports the corpus, vocabulary size, n-gram counts and size.
    """
    from dsita.lm.build import build_scorer
    from dsita.lm.corpus import evaluation_sentences

    options = replace(lm_build_options(ctx.settings, workers=ctx.workers), progress=ctx.progress)
    held_out = [p for p in (ctx.layout.split_csv("dev"), ctx.layout.split_csv("test")) if p.is_file()]
    corpus = list(ctx.settings.lm_corpus) or None
    report = build_scorer(ctx.layout.scorer, ctx.alphabet(), options, corpus, evaluation_sentences(held_out))
    stats = report.corpus
    log.info(
        "%d of %d lines kept (%d rejected, %d excluded as dev/test sentences); vocabulary %d; n-grams %s",
        *(stats.kept, stats.lines, stats.rejected, stats.excluded),
        *(report.scorer.vocabulary_size, list(report.ngrams)),
    )
    return {
        "corpus": list(stats.sources),
        "vocabulary": report.scorer.vocabulary_size,
        "ngrams": list(report.ngrams),
        "bytes": report.scorer.size_bytes(),
    }


def _lm_products(ctx: Context) -> list[Path]:
    from dsita.lm.scorer import LM_FILE, VOCABULARY_FILE

    # Not the manifest: lm-optimize rewrites its alpha and beta, which must not mark the LM as rebuilt.
    return [ctx.layout.scorer / LM_FILE, ctx.layout.scorer / VOCABULARY_FILE]


def _transfer_inputs(ctx: Context) -> list[Any]:
    if not ctx.settings.transfer_learning:
        return []
    source = transfer_folder(ctx.settings)
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    return [ctx.manifest.identity(p) for p in files]


def train_model(ctx: Context) -> Report:
    """The train step: train (or resume) the acoustic model on the train CSVs, from a converted
    DeepSpeech checkpoint with TRANSFER_LEARNING; reports the best checkpoint and dev loss.
    """
    from dsita.convert.deepspeech import ensure_dsita_checkpoint
    from dsita.training.checkpoint import LAST
    from dsita.training.loop import model_config, train

    options = train_options(
        ctx.settings,
        ctx.train_csvs(),
        [ctx.layout.split_csv("dev")],
        ctx.layout.checkpoints,
        show_progress=ctx.progress,
    )
    for csv in (*options.train_csvs, *options.dev_csvs):
        if not csv.is_file():
            raise DsitaError(f"{csv} not found: the import step writes it (dsita run --steps import)")
    n_outputs = len(ctx.alphabet()) + 1
    wanted = model_config(options, n_outputs)
    resuming = (ctx.layout.checkpoints / LAST).is_file()
    if resuming and ctx.distributed.is_main:
        _check_resumable(ctx.layout.checkpoints / LAST, wanted, options, ctx.settings.fast_train)
    transfer = None
    if ctx.settings.transfer_learning and resuming:
        log.info("Resuming this run's own training: TRANSFER_LEARNING applies to a fresh start only")
    elif ctx.settings.transfer_learning:
        # A DeepSpeech TensorFlow checkpoint is converted (each rank writes the same file, atomically).
        source = transfer_folder(ctx.settings)
        transfer = ensure_dsita_checkpoint(
            source, ctx.layout.converted_transfer, ctx.settings.n_hidden, architecture=options.architecture
        )
        options = replace(options, load_checkpoint_dir=transfer)
    result = train(options, ctx.alphabet(), ctx.distributed)
    return {
        "checkpoint": str(result.best_checkpoint),
        "epochs": result.epochs_completed,
        "best_dev_loss": round(result.best_dev_loss, 4),
        "stopped_early": result.stopped_early,
        **wanted.size(),  # the architecture and its size fields (DeepSpeech: n_hidden)
        "transfer_from": str(transfer) if transfer else None,
    }


def _check_resumable(last: Path, wanted: ModelConfig, options: TrainOptions, fast_train: bool) -> None:
    """A run in checkpoints/ resumes as it was built: refuse one of another architecture or size rather than
    ignore MODEL or N_HIDDEN; and say so when it has nothing left to do (new data or settings do not restart
    a finished run)."""
    from dsita.model.base import model_config_from_dict
    from dsita.training.checkpoint import load_checkpoint

    saved = load_checkpoint(last)
    size = model_config_from_dict(saved["model_config"]).size()
    if size != wanted.size():
        fast = " (FAST_TRAIN=1 trains a tiny model)" if fast_train else ""
        raise DsitaError(
            f"{last.parent} holds a run of {_describe_size(size)}, but this run trains "
            f"{_describe_size(wanted.size())}{fast}: move {last.parent} away to start a new training run, "
            "or keep that run's settings"
        )
    if saved["train_state"]["epoch"] >= options.epochs:
        log.warning(
            "%s holds a run that finished its %d epochs: nothing more to train. Raise EPOCHS to train it "
            "longer, or move %s away to train again from scratch",
            *(last.parent, saved["train_state"]["epoch"], last.parent),
        )


def _describe_size(size: dict[str, Any]) -> str:
    """`deepspeech with n_hidden=64`, from `ModelConfig.size()`."""
    fields = ", ".join(f"{name}={value}" for name, value in size.items() if name != "architecture")
    return f"{size['architecture']} with {fields}"


def _checkpoint_products(ctx: Context) -> list[Path]:
    from dsita.training.checkpoint import BEST_DEV, LAST

    best, last = ctx.layout.checkpoints / BEST_DEV, ctx.layout.checkpoints / LAST
    return [best if best.is_file() or not last.is_file() else last]


def _only_export(ctx: Context) -> str | None:
    return "ONLY_EXPORT=1" if ctx.settings.only_export else None


def _no_source(ctx: Context) -> str | None:
    if ctx.layout.archive.exists() or ctx.settings.fast_train or not ctx.settings.only_export:
        return None
    return f"no {ctx.layout.archive} (ONLY_EXPORT=1)"


STEPS = (
    Step("checks", checks, always=True),
    Step("alphabet", alphabet, products=lambda ctx: [ctx.layout.alphabet], always=True),
    Step(
        "import",
        import_corpora,
        settings=("max_secs", "cv_sha256", "cv_sha1", "extra_corpora", "import_max_clips", "fast_train"),
        uses=("alphabet",),
        inputs=_import_inputs,
        products=lambda ctx: [ctx.layout.split_csv(s) for s in ("train", "dev", "test")] + ctx.extra_csvs(),
        skip=_no_source,
    ),
    Step(
        "lm",
        build_lm,
        settings=("lm_top_k", "lm_alpha", "lm_beta", "lm_corpus", "lm_memory"),
        uses=("alphabet", "import"),
        inputs=lambda ctx: [ctx.manifest.identity(p) for p in ctx.settings.lm_corpus],
        products=_lm_products,
    ),
    Step(
        "train",
        train_model,
        settings=TRAIN_KEY_SETTINGS,
        uses=("alphabet", "import"),
        inputs=_transfer_inputs,
        products=_checkpoint_products,
        skip=_only_export,
    ),
    Step(
        "test",
        evaluate_model,
        settings=("lm_alpha", "lm_beta"),
        uses=("train", "lm", "import"),
        products=lambda ctx: [ctx.layout.checkpoints / "test_report_greedy.json"],
        skip=no_test_split,
    ),
    Step(
        "export",
        export_model,
        settings=(*METADATA_SETTINGS, "lm_alpha", "lm_beta"),
        uses=("train", "lm", "test", "import"),
        products=model_files,
    ),
    Step(
        "lm-optimize",
        optimize_lm,
        settings=("lm_evaluate_range", "lm_alpha", "lm_beta", "seed"),
        uses=("train", "lm", "import"),
        products=model_files,
        skip=no_range,
    ),
    Step("package", package, uses=("export", "lm-optimize"), products=release_products),
)
STEP_NAMES = tuple(step.name for step in STEPS)
BY_NAME = {step.name: step for step in STEPS}
