"""The `checks` step: what `dsita run` verifies before it writes anything.

DATA_DIR writable, free disk space against an estimate, the GPU, KenLM's programs, the corpus to import (and
its SHA-256 when CV_SHA256 is set), the checkpoint that ONLY_EXPORT or TRANSFER_LEARNING needs. Each
failure is one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dsita.errors import DsitaError
from dsita.pipeline.state import Layout, Manifest
from dsita.settings import Settings
from dsita.training.checkpoint import resolve_checkpoint

log = logging.getLogger(__name__)

CV_DOWNLOAD = "https://commonvoice.mozilla.org/it/datasets"
WAV_PER_ARCHIVE_BYTE = 6  # Common Voice MP3 (about 48 kb/s) becomes 16 kHz 16-bit WAV (256 kb/s)
LM_BYTES = 2 << 30  # the LM build's temporary ARPA files and the scorer, for a Common Voice-sized corpus
GB = 1 << 30


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
    """TRANSFER_CHECKPOINT_DIR, which TRANSFER_LEARNING starts from; the train step converts what it holds."""
    folder = settings.transfer_checkpoint_path
    if not folder.exists():
        raise DsitaError(
            f"TRANSFER_LEARNING=1 but {folder} (TRANSFER_CHECKPOINT_DIR) does not exist: put the checkpoint "
            "to start from there (a dsita best_dev.pt or last.pt, or a DeepSpeech 0.9 checkpoint)"
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
        try:
            report["checkpoint"] = str(resolve_checkpoint(layout.checkpoints))
            log.info("ONLY_EXPORT=1: exporting %s", report["checkpoint"])
        except DsitaError:
            raise DsitaError(
                f"ONLY_EXPORT=1 but {layout.checkpoints} holds no checkpoint (best_dev.pt or last.pt): train "
                "first (ONLY_EXPORT=0), or unpack a checkpoint_it.tar.xz there"
            ) from None
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
    needed = 0
    source = layout.archive if layout.archive.exists() else None
    if "import" in pending and source is not None:
        needed += source.stat().st_size * WAV_PER_ARCHIVE_BYTE
    if "lm" in pending and not settings.fast_train:
        needed += LM_BYTES
    weights = _parameter_count(settings) * 4
    if "train" in pending:
        needed += weights * 3 * (settings.max_to_keep + 2)  # weights and Adam's two moments, per file
    if pending & {"export", "lm-optimize"}:
        needed += weights * 3  # fp32 graph, its archive, the checkpoint archive (int8 is a quarter)
    free = shutil.disk_usage(layout.root).free
    log.info(
        "Disk: %.1f GB free in %s, about %.1f GB needed by the steps to run",
        free / GB,
        layout.root,
        needed / GB,
    )
    if needed > free:
        raise DsitaError(
            f"{layout.root}: {free / GB:.1f} GB free, but the steps to run need about {needed / GB:.1f} GB; "
            "free some space or point DATA_DIR at a larger disk"
        )
    return round(needed / GB, 2), round(free / GB, 2)


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
