"""Full and read-only disks, on real small file systems (tmpfs, as root): every step stops with one line that
names the folder and the space needed, and leaves no partial file; the checks' estimate counts what a run
really writes."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dsita.data.clips import ImportOptions, existing_wav
from dsita.data.commonvoice import import_common_voice
from dsita.data.own_csv import import_own_csv
from dsita.errors import DsitaError
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.pipeline.state import LOCK_FILE
from dsita.system import format_bytes
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import save_checkpoint

from .test_pipeline import ENV_FILES, clean_environment

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "it-sample.tar.gz"
KENLM_BIN = REPO / ".cache" / "kenlm" / "bin"
OPTIONS = ImportOptions(Alphabet.italian(), workers=2, progress=False)
TEMPORARY = re.compile(r"^\..*\.(tmp|part)$|^\.(scorer\.build|scorer\.old|export|quantize)-")
SIZE = re.compile(r"([\d.]+) (kB|MB|GB)")
UNITS = {"kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


class SmallDisks:
    """Small file systems mounted for one test: tmpfs, else a loop-mounted ext4 image; skipped when neither
    can be mounted (mounting needs root, which CI has)."""

    def __init__(self, root: Path) -> None:
        self.root, self.mounts = root, []

    def mount(self, size: str) -> Path:
        target = self.root / f"disk{len(self.mounts)}"
        target.mkdir()
        tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if tmpfs.returncode != 0:
            image = self.root / f"disk{len(self.mounts)}.img"
            steps = (["truncate", "-s", size.upper(), str(image)], ["mkfs.ext4", "-q", str(image)],
                     ["mount", "-o", "loop", str(image), str(target)])  # fmt: skip
            for step in steps:
                if shutil.which(step[0]) is None or subprocess.run(step, capture_output=True).returncode:
                    pytest.skip(
                        f"cannot mount a small file system here ({tmpfs.stderr.strip()}): run as root"
                    )
        self.mounts.append(target)
        return target

    def read_only(self, target: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)

    def unmount(self) -> None:
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[SmallDisks]:
    disks = SmallDisks(tmp_path)
    try:
        yield disks
    finally:
        disks.unmount()


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte with one file (the disk may be full already)."""
    filler = disk / "filler"
    try:
        with open(filler, "ab") as f:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return filler


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMPORARY.match(p.name) or p.name == "mp3"]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command, which must be its only output on stderr."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: "), result.stderr
    return lines[-1]


def dsita(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(DATA_DIR=str(data_dir), COLUMNS="1000")  # one error, one terminal line
    return subprocess.run([sys.executable, "-m", "dsita.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def test_sizes_print_in_kb_mb_or_gb() -> None:
    assert [format_bytes(n) for n in (0, 300 << 10, 12 << 20, (3 << 30) + (1 << 29), 40 << 30)] == [
        "0 kB", "300 kB", "12.0 MB", "3.50 GB", "40.0 GB",
    ]  # fmt: skip


def test_a_run_on_a_12_mb_disk_stops_at_the_checks_with_the_space_needed(disks: SmallDisks) -> None:
    data_dir = disks.mount("12m") / "data"
    message = one_line(dsita(data_dir, "--env-file", str(ENV_FILES / "fast_dev.env"), "run"))
    assert f"{data_dir}: 12.0 MB free, but the steps to run need about" in message
    needed = [float(n) * UNITS[unit] for n, unit in SIZE.findall(message)]
    assert needed[1] > 30 << 20  # the sample's WAVs alone are 33 MB
    assert "0.0 GB" not in message
    assert sorted(p.name for p in data_dir.iterdir()) == ["logs"]


@pytest.mark.slow
def test_the_estimate_counts_what_a_fast_run_really_writes(disks: SmallDisks) -> None:
    disk = disks.mount("200m")
    data_dir = disk / "data"
    command = [sys.executable, "-m", "dsita.cli", "--env-file", str(ENV_FILES / "fast_dev.env"), "run"]
    process = subprocess.Popen(command, env=clean_environment(DATA_DIR=str(data_dir)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    peak = 0
    while process.poll() is None:
        stat = os.statvfs(disk)
        peak = max(peak, (stat.f_blocks - stat.f_bfree) * stat.f_frsize)
        time.sleep(0.002)
    assert process.returncode == 0
    log = (data_dir / "logs" / "01-checks.log").read_text()
    line = next(line for line in log.splitlines() if "Disk:" in line)
    _, (needed, needed_unit), *_ = SIZE.findall(line)
    estimate = float(needed) * UNITS[needed_unit]
    assert peak <= estimate <= 2 * peak, (format_bytes(peak), line)


def test_import_cv_on_a_full_disk_is_one_line_and_leaves_no_partial_file(disks: SmallDisks) -> None:
    out = disks.mount("4m") / "out"
    with pytest.raises(DsitaError) as caught:
        import_common_voice(SAMPLE, out, OPTIONS)
    message = str(caught.value)
    assert message.startswith(str(out)) and "the disk is full" in message
    assert "the import needs about 3" in message  # 33 MB of WAVs, measured on the archive's own clips
    assert leftovers(out) == []
    assert all(existing_wav(wav) is not None for wav in out.rglob("*.wav"))  # whole clips only

    again = one_line(dsita(out.parent, "import", "cv", str(SAMPLE), "--out", str(out)))
    assert f"error: {out}" in again and "the disk is full" in again


def test_import_cv_into_a_read_only_folder_is_one_line(disks: SmallDisks) -> None:
    disk = disks.mount("4m")
    disks.read_only(disk)
    message = one_line(dsita(disk, "import", "cv", str(SAMPLE), "--out", str(disk / "out")))
    assert "read-only" in message and str(disk) in message


def test_import_csv_on_a_full_disk_is_one_line(disks: SmallDisks, sample_corpus: Path) -> None:
    out = disks.mount("2m") / "out"
    with pytest.raises(DsitaError, match=r"the disk is full .*the import needs about"):
        import_own_csv(sample_corpus / "train.csv", out, OPTIONS)
    assert leftovers(out) == []


def test_lm_build_on_a_full_or_read_only_disk_is_one_line(disks: SmallDisks) -> None:
    disk = disks.mount("3m")
    options = LmBuildOptions(memory="5%", kenlm_bin=KENLM_BIN, workers=1)
    with pytest.raises(DsitaError, match=rf"^{disk}: the disk is full .*the LM build needs about 9"):
        build_scorer(disk / "scorer", Alphabet.italian(), options)  # lmplz's own ENOSPC
    assert list(disk.iterdir()) == []
    disks.read_only(disk)
    message = one_line(dsita(disk, "lm", "build", "--out", str(disk / "scorer")))
    assert "read-only" in message and str(disk) in message


def test_a_checkpoint_on_a_full_or_read_only_disk_is_one_line(disks: SmallDisks) -> None:
    disk = disks.mount("300k")
    checkpoint = {"model": {"weight": torch.zeros(200_000)}}  # 800 kB
    with pytest.raises(DsitaError, match=rf"^{disk / 'ckpt'}: the disk is full .*last.pt needs about 781 kB"):
        save_checkpoint(disk / "ckpt" / "last.pt", checkpoint)  # torch.save's inline_container.cc error
    assert list((disk / "ckpt").iterdir()) == []
    disks.read_only(disk)
    with pytest.raises(DsitaError, match="read-only"):
        save_checkpoint(disk / "ckpt" / "last.pt", checkpoint)


def test_export_on_a_full_disk_is_one_line(disks: SmallDisks) -> None:
    out = disks.mount("1m") / "release"
    model = REPO / "tests" / "fixtures" / "small_model.pt"
    message = one_line(
        dsita(out.parent, "export", "--checkpoint", str(model), "--no-scorer", "--out", str(out))
    )
    assert f"error: {out}: the disk is full" in message and "the export needs about" in message
    assert leftovers(out.parent) == [] and list(out.iterdir()) == []


def test_a_full_disk_for_the_logs_and_the_lock_is_one_line(disks: SmallDisks) -> None:
    disk = disks.mount("1m")
    (disk / "data").mkdir()
    fill(disk)
    message = one_line(dsita(disk / "data", "run", "--steps", "checks"))
    assert f"{disk / 'data'}" in message and "the disk is full" in message
    assert not (disk / "data" / LOCK_FILE).exists()


@pytest.mark.slow
def test_a_disk_that_fills_during_a_run_stops_it_in_one_line_and_the_run_resumes(disks: SmallDisks) -> None:
    """Another program fills the disk while the run trains or exports: the step stops with one line, its
    temporary files go, and once there is room again the run finishes."""
    disk = disks.mount("80m")  # what the checks ask for, with 30 MB to spare
    data_dir = disk / "data"
    command = [sys.executable, "-m", "dsita.cli", "--env-file", str(ENV_FILES / "fast_dev.env"), "run"]
    env = clean_environment(DATA_DIR=str(data_dir), COLUMNS="1000")
    for step in ("train", "export"):
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        run_log = data_dir / "logs" / "run.log"
        start = run_log.stat().st_size if run_log.exists() else 0
        while process.poll() is None and f"{step}: running" not in read_from(run_log, start):
            time.sleep(0.002)
        filler = fill(disk)
        stdout, stderr = process.communicate(timeout=600)
        message = one_line(subprocess.CompletedProcess(command, process.returncode, stdout, stderr))
        assert message.startswith("error: step ") and "the disk is full" in message, message
        assert leftovers(data_dir) == []
        filler.unlink(missing_ok=True)
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stderr
    assert (data_dir / "it-it.zip").is_file()


def read_from(path: Path, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return ""
