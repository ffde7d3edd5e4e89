"""The steps of `dsita run` that measure and ship the model: test, export, lm-optimize, package."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from dsita.errors import DsitaError
from dsita.export.release import RELEASE_CHECKPOINT, RELEASE_FP32, RELEASE_ZIP
from dsita.fileio import atomic_write
from dsita.pipeline.context import Context, Report

log = logging.getLogger(__name__)

RELEASE_FILES = (RELEASE_ZIP, RELEASE_FP32, RELEASE_CHECKPOINT)


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
    return evaluate_test(ctx, greedy=True)


def no_test_split(ctx: Context) -> str | None:
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
    return {"files": {str(p): size for p, size in report.files.items()}, "parity_error": report.parity_error}


def export_model(ctx: Context) -> Report:
    return _release(ctx)


def model_files(ctx: Context) -> list[Path]:
    return [ctx.layout.models / name for name in RELEASE_FILES]


def optimize_lm(ctx: Context) -> Report:
    from dsita.evaluation.tune import OptimizeOptions, optimize_checkpoint

    box = ctx.settings.lm_evaluate_range
    assert box is not None  # the step is skipped without a range
    options = OptimizeOptions(
        box.max_alpha, box.max_beta, box.n_trials, box.pairs, workers=ctx.workers, seed=ctx.settings.seed
    )
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
    return None if ctx.settings.lm_evaluate_range else "LM_EVALUATE_RANGE is empty"


def package(ctx: Context) -> Report:
    """Publish the release files from models/ into DATA_DIR, each under a temporary name first."""
    from dsita.inference.package import open_package

    files = {}
    for name in RELEASE_FILES:
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
    return [ctx.layout.root / name for name in RELEASE_FILES]
