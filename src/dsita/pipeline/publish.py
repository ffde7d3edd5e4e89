"""The steps of `dsita run` that measure and ship the model: test, export, lm-optimize, package."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from dsita.errors import DsitaError
from dsita.export.card import RELEASE_CHECKPOINT, RELEASE_FP32, RELEASE_ZIP
from dsita.export.release import RELEASE_FILES
from dsita.fileio import atomic_write
from dsita.pipeline.context import Context, Report
from dsita.pipeline.state import Layout
from dsita.settings import Settings

log = logging.getLogger(__name__)

FAST_TRAIN_SEARCH_TRIALS = 6  # FAST_TRAIN's short alpha/beta search: a smoke test of it, seconds long

# Every release has these; model_tensorflow_it.tar.xz (in RELEASE_FILES too) only a DeepSpeech model's.
CORE_FILES = (RELEASE_ZIP, RELEASE_FP32, RELEASE_CHECKPOINT)


def evaluate_test(ctx: Context, greedy: bool) -> Report:
    """Test WER/CER with the LM (and greedy), saved next to the checkpoint, where export reads them."""
    from dsita.evaluation.evaluate import evaluate_checkpoint
    from dsita.lm.scorer import load_scorer
    from dsita.training.checkpoint import resolve_checkpoint

    checkpoint = resolve_checkpoint(ctx.layout.checkpoints)
    scorer = ctx.scorer()
    result = evaluate_checkpoint(
        checkpoint,
        [ctx.layout.split_csv("test")],
        load_scorer(scorer) if scorer else None,
        workers=ctx.workers,
        show_progress=ctx.progress,
    )
    report: Report = {"checkpoint": str(checkpoint), "clips": len(result.samples)}
    if greedy:
        result.greedy.save(ctx.layout.checkpoints / "test_report_greedy.json")
        report["greedy"] = {"wer": result.greedy.wer, "cer": result.greedy.cer}
    if result.lm is not None:
        result.lm.save(ctx.layout.checkpoints / "test_report_lm.json")
        report["lm"] = {"wer": result.lm.wer, "cer": result.lm.cer, "decoder": result.lm.decoder}
    log.info(
        "Test on %d clips: %s",
        len(result.samples),
        {k: v for k, v in report.items() if k in ("greedy", "lm")},
    )
    return report


def evaluate_model(ctx: Context) -> Report:
    """The test step: a short alpha/beta search on dev first when they were never tuned, then the test."""
    searched = short_lm_search(ctx)
    return {**evaluate_test(ctx, greedy=True), **({"short_search": searched} if searched else {})}


def short_lm_search(ctx: Context) -> Report | None:
    """Alpha and beta by a short search on dev (`dsita.evaluation.tune.short_search`), written into the
    scorer, unless LM_EVALUATE_RANGE asks for the long search, LM_ALPHA or LM_BETA was given, or a long
    search chose them. A re-run of the test step (a new model, a new LM) searches again."""
    from dsita.evaluation.tune import (
        SHORT_CLIPS,
        SHORT_SEARCH,
        SHORT_TRIALS,
        optimize_checkpoint,
        short_search,
    )
    from dsita.lm.scorer import load_scorer

    folder, dev = ctx.scorer(), ctx.layout.split_csv("dev")
    if folder is None or not dev.is_file() or ctx.settings.lm_evaluate_range:
        return None
    given = {"lm_alpha", "lm_beta"} & ctx.settings.model_fields_set
    tuning = load_scorer(folder).tuning  # an earlier short search's values are searched again
    if given or (tuning and tuning.get("search") != SHORT_SEARCH):
        why = "LM_ALPHA or LM_BETA is given" if given else "a LM_EVALUATE_RANGE search chose them"
        log.info("No short alpha/beta search: %s", why)
        return None
    trials = FAST_TRAIN_SEARCH_TRIALS if ctx.settings.fast_train else SHORT_TRIALS
    limit = ctx.settings.max_dev_clips  # as training's dev loss; 0: no limit
    clips = min(SHORT_CLIPS, limit) if limit else SHORT_CLIPS
    options = short_search(ctx.workers, ctx.settings.seed, ctx.progress, trials, clips)
    log.info(
        "Alpha and beta were never tuned: a short search on dev (%d trials, %d clips and %.0f s at most; "
        "LM_EVALUATE_RANGE runs the long one)",
        *(options.n_trials, options.max_clips, options.timeout_s),
    )
    result = optimize_checkpoint(folder, ctx.layout.checkpoints, [dev], options)
    log.info(
        "Short search: alpha %.3f, beta %.3f after %d trials: dev WER %.2f%% before, %.2f%% after",
        *(result.alpha, result.beta, result.trials_complete),
        *(100 * result.dev_wer_before, 100 * result.dev_wer_after),
    )
    keys = ("alpha", "beta", "trials_complete", "dev_wer_before", "dev_wer_after")
    return {key.removesuffix("_complete"): getattr(result, key) for key in keys}


def no_test_split(ctx: Context) -> str | None:
    """Why the test step is skipped: no test split was imported (None: it runs)."""
    return None if ctx.layout.split_csv("test").is_file() else "no test split imported"


def _release(ctx: Context) -> Report:
    from dsita.export.release import make_release
    from dsita.settings.options import model_info

    train_csvs = [p for p in ctx.train_csvs() if p.is_file()]
    scorer = ctx.scorer()
    if scorer is None:
        log.warning("No scorer in %s: the release decodes greedily", ctx.layout.scorer)
    info, env = model_info(ctx.settings), ctx.settings.to_env_text()
    report = make_release(
        ctx.layout.checkpoints, ctx.layout.models, info, scorer, train_csvs, settings_env=env
    )
    log.info("fp32 ONNX vs torch: largest logit difference %.2e", report.parity_error)
    return {
        "files": {str(p): size for p, size in report.files.items()},
        "parity_error": report.parity_error,
        "no_client_files": report.no_client_files,
    }


def export_model(ctx: Context) -> Report:
    """The export step: write the release files into models/; reports their sizes and the ONNX parity."""
    return _release(ctx)


def release_names(folder: Path) -> list[str]:
    """The release files a folder should hold: the core three, and model_tensorflow_it.tar.xz if it is there
    (the export writes it for a DeepSpeech model only, and removes an older one otherwise)."""
    return [name for name in RELEASE_FILES if name in CORE_FILES or (folder / name).is_file()]


def model_files(ctx: Context) -> list[Path]:
    """The release files the export writes in models/ (the export and lm-optimize products)."""
    return [ctx.layout.models / name for name in release_names(ctx.layout.models)]


def export_checkpoint(settings: Settings, layout: Layout) -> Path:
    """The checkpoint ONLY_EXPORT exports: checkpoints/best_dev.pt (or last.pt), or else the checkpoint an
    original pipeline left in checkpoints/ (a DeepSpeech 0.9 TensorFlow checkpoint, or a checkpoint_it.tar.xz)
    written there as a dsita checkpoint: converted (N_HIDDEN; the alphabet.txt beside it, else this run's
    alphabet), or extracted. Later runs find that best_dev.pt; delete it to convert again."""
    from dsita.convert.deepspeech import ensure_dsita_checkpoint, find_checkpoint_source
    from dsita.settings.options import alphabet_for
    from dsita.training.checkpoint import BEST_DEV, LAST

    folder = layout.checkpoints
    if not folder.is_dir() or not any(folder.iterdir()):
        raise DsitaError(
            f"ONLY_EXPORT=1 but {folder} holds no checkpoint ({BEST_DEV} or {LAST}, a DeepSpeech 0.9 "
            f"checkpoint, or a {RELEASE_CHECKPOINT}): train first (ONLY_EXPORT=0), or put one there"
        )
    try:
        found = find_checkpoint_source(folder)
    except DsitaError as exc:
        raise DsitaError(f"ONLY_EXPORT=1: {exc}") from None
    if found.kind == "dsita":
        return found.path
    if found.kind == "deepspeech":
        log.info("ONLY_EXPORT=1: %s holds a DeepSpeech TensorFlow checkpoint; converting it", found.path)
    else:
        log.info("ONLY_EXPORT=1: %s holds %s inside %s; extracting it", folder, found.member, found.path.name)
    return ensure_dsita_checkpoint(
        folder, folder, settings.n_hidden, architecture=settings.model, fallback=alphabet_for(settings)
    )


def optimize_lm(ctx: Context) -> Report:
    """The lm-optimize step: search alpha and beta in LM_EVALUATE_RANGE on dev, evaluate the test
    split with the LM when one was imported, and export again with the new defaults.
    """
    from dsita.evaluation.tune import OptimizeOptions, optimize_checkpoint

    box = ctx.settings.lm_evaluate_range
    assert box is not None  # the step is skipped without a range
    options = OptimizeOptions(box.max_alpha, box.max_beta, box.n_trials, box.pairs, workers=ctx.workers)
    options = replace(options, seed=ctx.settings.seed, progress=ctx.progress)
    scorer = ctx.scorer()
    if scorer is None:
        raise DsitaError(f"no scorer in {ctx.layout.scorer}: the lm step builds it")
    result = optimize_checkpoint(scorer, ctx.layout.checkpoints, [ctx.layout.split_csv("dev")], options)
    log.info(
        "alpha %.4f, beta %.4f after %d trials: dev WER %.2f%% before, %.2f%% after",
        *(result.alpha, result.beta, result.trials_complete),
        *(100 * result.dev_wer_before, 100 * result.dev_wer_after),
    )
    tested = evaluate_test(ctx, greedy=False) if ctx.layout.split_csv("test").is_file() else {}
    release = _release(ctx)
    return {
        "alpha": result.alpha,
        "beta": result.beta,
        "trials": result.trials_complete,
        "dev_wer_before": result.dev_wer_before,
        "dev_wer_after": result.dev_wer_after,
        "test_lm": tested.get("lm"),
        **release,
    }


def no_range(ctx: Context) -> str | None:
    """Why lm-optimize is skipped: LM_EVALUATE_RANGE is empty (None: it runs)."""
    return None if ctx.settings.lm_evaluate_range else "LM_EVALUATE_RANGE is empty"


def package(ctx: Context) -> Report:
    """Publish the release files from models/ into DATA_DIR, each under a temporary name first."""
    from dsita.inference.package import open_package

    files = {}
    names = release_names(ctx.layout.models)
    for stale in (ctx.layout.root / name for name in RELEASE_FILES if name not in names):
        if stale.is_file():
            log.info("Removing %s: this release has none (see the export step's log)", stale)
            stale.unlink()
    for name in names:
        source, target = ctx.layout.models / name, ctx.layout.root / name
        if not source.is_file():
            raise DsitaError(f"{source} not found: the export step writes it")
        temporary = target.with_name(f".{name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        try:  # the same bytes, no copy: export replaces the files in models/ by renaming new ones there
            os.link(source, temporary)
        except OSError:
            with open(source, "rb") as src, atomic_write(temporary, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(temporary, target)
        files[str(target)] = target.stat().st_size
    package_ = open_package(ctx.layout.root / RELEASE_ZIP)  # the deployable file opens as a model package
    log.info("%s holds %s", RELEASE_ZIP, "a scorer" if package_.scorer_path else "no scorer")
    return {"files": files}


def release_products(ctx: Context) -> list[Path]:
    """The release files the package step publishes in DATA_DIR."""
    return [ctx.layout.root / name for name in release_names(ctx.layout.models)]
