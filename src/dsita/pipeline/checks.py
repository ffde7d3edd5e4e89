"""The `checks` step: what `dsita run` verifies before it writes anything.

DATA_DIR writable, free disk space against an estimate, the GPU, KenLM's programs, the corpus to import (and
its SHA-256 when CV_SHA256 is set), the checkpoint that ONLY_EXPORT or TRANSFER_LEARNING needs. Each
failure is one line that says what to do. The one thing written here: for ONLY_EXPORT, an original
pipeline's checkpoint in checkpoints/ converted to best_dev.pt.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsita.errors import DsitaError
from dsita.pipeline.state import Layout, Manifest
from dsita.settings import Settings
from dsita.system import format_bytes, free_bytes

log = logging.getLogger(__name__)

CV_DOWNLOAD = "https://commonvoice.mozilla.org/it/datasets"
GB = 1 << 30
# What the disk check counts besides the estimates of `disk_needs`: the logs and reports of a run, and a
# margin for the CSVs, skipped lists and file system blocks that the estimates leave out.
LOG_BYTES = 1 << 20
REPORT_BYTES = 1 << 20  # the test step's JSON reports
MARGIN = 1.1
SCORER_PER_BUILD_BYTE = 1 / 6  # a built scorer against the build's peak (1.5 MB of 9.8 MB, default corpus)


def prepare_data_dir(root: Path) -> None:
    """Create DATA_DIR if needed and prove it writable, before the lock file goes into it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as exc:
        raise DsitaError(
            f"DATA_DIR {root} is not a writable folder for user id {os.getuid()} ({exc.strerror}); "
            f"in Docker, mount a folder this user may write to (or run with --user $(id -u))"
        ) from None


def missing_archive_message(archive: Path) -> str:
    """The error for a missing Common Voice archive: where to download it and where to save it."""
    return (
        f"{archive} not found: download Common Voice Italian from {CV_DOWNLOAD} and save the archive as "
        f"{archive} (or set FAST_TRAIN=1 to try the pipeline on the bundled sample corpus)"
    )


def find_source(settings: Settings, layout: Layout) -> Path | None:
    """The Common Voice archive to import; None when ONLY_EXPORT runs without one."""
    if layout.archive.exists():
        return layout.archive
    if settings.fast_train:
        if not settings.sample_archive.is_file():
            raise DsitaError(
                f"FAST_TRAIN=1 and no {layout.archive}, but the bundled sample {settings.sample_archive} "
                "(SAMPLE_ARCHIVE) is missing too"
            )
        return settings.sample_archive
    if settings.only_export:
        return None
    raise DsitaError(missing_archive_message(layout.archive))


def transfer_folder(settings: Settings) -> Path:
    """TRANSFER_CHECKPOINT_DIR, which TRANSFER_LEARNING starts from: a folder, or an archive such as a
    release's checkpoint_it.tar.xz; the train step converts or extracts what it holds."""
    folder = settings.transfer_checkpoint_path
    if not folder.exists():
        raise DsitaError(
            f"TRANSFER_LEARNING=1 but {folder} (TRANSFER_CHECKPOINT_DIR) does not exist: put the checkpoint "
            "to start from there (a dsita best_dev.pt or last.pt, a DeepSpeech 0.9 checkpoint, or a "
            "checkpoint_it.tar.xz)"
        )
    return folder


def run_checks(
    settings: Settings, layout: Layout, manifest: Manifest, selected: frozenset[str], pending: frozenset[str]
) -> dict[str, Any]:
    """Check what the selected steps need; `pending` are those that never ran (or are forced).

    Returns what was found, for the log and the summary.
    """
    report: dict[str, Any] = {"data_dir": str(layout.root.resolve())}
    if "import" in pending:
        source = find_source(settings, layout)
        report["source"] = str(source) if source else None
        log.info("Corpus to import: %s", source or "none (ONLY_EXPORT=1)")
        if source == layout.archive and settings.cv_sha256:
            _verify_archive(layout.archive, settings.cv_sha256, manifest)
    if settings.only_export and selected & {"test", "export", "lm-optimize", "package"}:
        from dsita.pipeline.publish import export_checkpoint

        # An original pipeline's TensorFlow checkpoint (or a checkpoint_it.tar.xz) is written as best_dev.pt
        # here, before the steps that read checkpoints/: the one thing this step writes.
        report["checkpoint"] = str(export_checkpoint(settings, layout))
        log.info("ONLY_EXPORT=1: exporting %s", report["checkpoint"])
    if "train" in pending and settings.transfer_learning and not settings.only_export:
        from dsita.convert.deepspeech import check_transfer_source

        source = transfer_folder(settings)
        check_transfer_source(source, settings.model)
        report["transfer_from"] = str(source)
        log.info("Transfer learning from %s", report["transfer_from"])
    if "lm" in pending:
        from dsita.lm.build import TOOLS, kenlm_tool

        report["kenlm"] = str(kenlm_tool(TOOLS[0], settings.kenlm_bin).parent)
        log.info("KenLM programs in %s", report["kenlm"])
    report["gpus"] = _gpus()
    log.info("GPU: %s", ", ".join(report["gpus"]) or "none; training runs on the CPU")
    report["disk_needed_gb"], report["disk_free_gb"] = _check_disk(settings, layout, pending)
    return report


def _verify_archive(archive: Path, expected: str, manifest: Manifest) -> None:
    log.info("Checking the SHA-256 of %s (%.1f GB)", archive, archive.stat().st_size / GB)
    actual = manifest.digest(archive)
    if actual != expected.lower():
        raise DsitaError(
            f"{archive}: SHA-256 mismatch (CV_SHA256): expected {expected.lower()}, got {actual}; "
            "nothing was imported. Download the archive again, or correct CV_SHA256"
        )


def _gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    devices = (torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count()))
    return [f"{p.name} ({p.total_memory / GB:.0f} GB)" for p in devices]


def _check_disk(settings: Settings, layout: Layout, pending: frozenset[str]) -> tuple[float, float]:
    """Stop when the steps still to run need more space than DATA_DIR's disk has free."""
    needs = disk_needs(settings, layout, pending)
    needed = int(sum(needs.values()) * MARGIN)
    free = free_bytes(layout.root)
    parts = ", ".join(f"{step} {format_bytes(size)}" for step, size in needs.items())
    log.info(
        "Disk: %s free in %s, about %s needed by the steps to run (%s)",
        *(format_bytes(free), layout.root, format_bytes(needed), parts),
    )
    if needed > free:
        raise DsitaError(
            f"{layout.root}: {format_bytes(free)} free, but the steps to run need about "
            f"{format_bytes(needed)} ({parts}); free some space or point DATA_DIR at a larger disk"
        )
    return round(needed / GB, 3), round(free / GB, 3)


def disk_needs(settings: Settings, layout: Layout, steps: Iterable[str]) -> dict[str, int]:
    """About what each of `steps` writes into DATA_DIR at its peak, in bytes, and the logs: WAVs measured on
    the corpus's own clips, the LM build's text and ARPA files from the corpus's size, checkpoints and
    release files from the model's parameter count."""
    from dsita.lm.build import build_disk_bytes

    steps = set(steps)
    needs: dict[str, int] = {}
    if "import" in steps:
        needs["import"] = _import_bytes(settings, layout)
    lm_build = build_disk_bytes(list(settings.lm_corpus) or None) if steps & {"lm", "export"} else 0
    if "lm" in steps:
        needs["lm"] = lm_build
    checkpoint = _parameter_count(settings) * 4 * 3 if steps & {"train", "export", "lm-optimize"} else 0
    if "train" in steps:
        # weights and Adam's two moments: best_dev, last, MAX_TO_KEEP epochs, one being written
        needs["train"] = checkpoint * (settings.max_to_keep + 3) + checkpoint * settings.transfer_learning
    if "test" in steps:
        needs["test"] = REPORT_BYTES
    if steps & {"export", "lm-optimize"}:
        scorer = folder_bytes(layout.scorer) or int(lm_build * SCORER_PER_BUILD_BYTE)
        needs["export"] = export_disk_bytes(checkpoint, scorer)
    needs["logs"] = LOG_BYTES
    return needs


def export_disk_bytes(checkpoint: int, scorer: int) -> int:
    """What an export writes from a checkpoint of `checkpoint` bytes (weights and Adam's two moments) and a
    scorer of `scorer` bytes: fp32 and int8 graphs, their archives with the scorer, the checkpoint's
    archive, and the temporary copies (measured about 1.2 times below this on the FAST_TRAIN model)."""
    weights = checkpoint // 3
    return 4 * scorer + 7 * weights + checkpoint


def _import_bytes(settings: Settings, layout: Layout) -> int:
    from dsita.data.commonvoice import import_disk_bytes
    from dsita.data.own_csv import import_disk_bytes as table_disk_bytes
    from dsita.settings.options import import_options

    source = find_source(settings, layout)
    max_clips = import_options(settings, 1, False).max_clips
    total = import_disk_bytes(source, max_clips) if source is not None else 0
    return total + sum(table_disk_bytes(table) for table in settings.extra_corpora if table.is_file())


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _parameter_count(settings: Settings) -> int:
    """The size of the model this run trains, built on the meta device (no memory, no time). An invalid
    model size (CONFORMER_DIM against CONFORMER_HEADS) stops the run here, before anything is written."""
    import torch

    from dsita.model.base import build_model, count_parameters
    from dsita.settings.options import alphabet_for, train_options
    from dsita.training.loop import model_config

    options = train_options(settings, (), (), Path())  # no data or folder needed for the size
    config = model_config(options, len(alphabet_for(settings)) + 1)
    with torch.device("meta"):
        model = build_model(config)
    return count_parameters(model)
