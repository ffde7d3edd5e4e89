"""What `dsita run` keeps in DATA_DIR between runs: the folder layout, the lock, and the step manifest.

The lock is an exclusive `flock` on DATA_DIR/dsita-run.lock, so the kernel releases it when its process
dies, even by SIGKILL or with its container: the file a killed run leaves behind never blocks the next
run. No other process keeps it: the descriptor is O_CLOEXEC, and every forked child closes its copy at
once (`os.register_at_fork`), whichever pool forked it. (POSIX record locks are not inherited by a fork,
but a process loses them when it closes any descriptor of the file, and never conflicts with itself.)
`dsita import` and `dsita lm build` take the same lock when they write into DATA_DIR.

The manifest (DATA_DIR/dsita-run.json) records, for every finished step, the key it ran with and what it
reported. File digests are cached by size and modification time, so that large files are hashed
once per version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text

log = logging.getLogger(__name__)

LOCK_FILE = "dsita-run.lock"
MANIFEST_FILE = "dsita-run.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Layout:
    """The folders and files of a DATA_DIR, as in the original image."""

    root: Path

    @property
    def sources(self) -> Path:
        """DATA_DIR/sources: the downloaded archive goes here."""
        return self.root / "sources"

    @property
    def archive(self) -> Path:
        """DATA_DIR/sources/it.tar.gz: the Common Voice Italian archive."""
        return self.sources / "it.tar.gz"

    @property
    def extracted(self) -> Path:
        """DATA_DIR/extracted: the imported clips and split CSVs."""
        return self.root / "extracted"

    @property
    def lm(self) -> Path:
        """DATA_DIR/lm: the language model's folder, which holds the scorer."""
        return self.root / "lm"

    @property
    def scorer(self) -> Path:
        """DATA_DIR/lm/scorer: the scorer the lm step builds."""
        return self.lm / "scorer"

    @property
    def checkpoints(self) -> Path:
        """DATA_DIR/checkpoints: the training run's checkpoints and test reports."""
        return self.root / "checkpoints"

    @property
    def converted_transfer(self) -> Path:
        """Where a DeepSpeech checkpoint found in TRANSFER_CHECKPOINT_DIR is converted to."""
        return self.root / "transfer-converted"

    @property
    def models(self) -> Path:
        """DATA_DIR/models: the export's release files."""
        return self.root / "models"

    @property
    def alphabet(self) -> Path:
        """DATA_DIR/models/alphabet.txt: the alphabet every later step reads."""
        return self.models / "alphabet.txt"

    @property
    def logs(self) -> Path:
        """DATA_DIR/logs: a log file per step and the run's summary."""
        return self.root / "logs"

    def split_csv(self, split: str) -> Path:
        """The imported CSV of `split` (train, dev or test) in DATA_DIR/extracted."""
        return self.extracted / f"{split}.csv"

    def relative(self, path: Path) -> str:
        """How the manifest names a path: relative to DATA_DIR when inside it, so a moved DATA_DIR works."""
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path.resolve())


_HELD_LOCKS: set[int] = set()  # this process's lock descriptors


def _close_locks_in_child() -> None:
    """A forked child (a pool worker, a DataLoader worker) must not keep the lock's open file alive: flock
    belongs to the open file, which every inherited copy of the descriptor keeps, so one orphaned worker
    would hold the lock for good. O_CLOEXEC does the same for programs started with exec (KenLM's)."""
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_locks_in_child)


@contextlib.contextmanager
def run_lock(data_dir: Path, command: str = "dsita run") -> Iterator[Path]:
    """Hold DATA_DIR's lock for the duration; another holder makes this raise, naming the lock file.

    `command` is what the lock file says holds it (`dsita run`, `dsita import cv`, `dsita lm build`).
    """
    path = data_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DsitaError(
                f"{command}: {holder} holds the lock {path}; wait for it to finish, or stop it. "
                "Two commands writing into one DATA_DIR would overwrite each other's files."
            ) from None
        # The previous holder may have removed the file between our open and our flock: lock the new one.
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
    _HELD_LOCKS.add(fd)
    previous = _read_holder(fd)
    if previous:
        log.info("A previous command (%s) ended without releasing %s; taking it over", previous, path)
    our_holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(our_holder) + "\n").encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def lock_when_inside(data_dir: Path, targets: Iterable[Path], command: str) -> Iterator[None]:
    """Hold DATA_DIR's lock while a standalone command writes into DATA_DIR (its default output folders), so
    that it never overwrites the files of a `dsita run` in progress; writing elsewhere needs no lock."""
    root = data_dir.resolve()
    if not any(target.resolve().is_relative_to(root) for target in targets):
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with run_lock(root, command):
        yield


def _read_holder(fd: int) -> str:
    """Who holds (or held) a lock: '`dsita run` (pid N on HOST since TIME)', or '' for an empty file."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        if not data:
            return ""
        command = data.get("command", "dsita run")
        return f"`{command}` (pid {data['pid']} on {data['host']} since {data['started']})"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "an unknown command"


class Manifest:
    """DATA_DIR/dsita-run.json: each finished step's key and report, and the file digest cache."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.path = layout.root / MANIFEST_FILE
        self.steps: dict[str, dict[str, Any]] = {}
        self.digests: dict[str, list[Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise DsitaError(
                    f"{self.path}: not valid JSON ({exc}); delete it to re-run every step"
                ) from None
            if data.get("version") == MANIFEST_VERSION:
                self.steps, self.digests = dict(data["steps"]), dict(data["digests"])
            else:
                log.warning("%s: another format version; every step will run again", self.path)

    def record(self, step: str) -> dict[str, Any] | None:
        """What the manifest holds for `step` (key, finish time, seconds, report), or None."""
        return self.steps.get(step)

    def finish(self, step: str, key: str, report: dict[str, Any], seconds: float) -> None:
        """Record `step` as finished now with its key and report, and save the manifest."""
        finished = time.strftime("%Y-%m-%d %H:%M:%S")
        self.steps[step] = {"key": key, "finished": finished, "seconds": round(seconds, 1), "report": report}
        self.save()

    def forget(self, step: str) -> None:
        """Drop `step`'s record so that it runs again, saving the manifest if there was one."""
        if self.steps.pop(step, None) is not None:
            self.save()

    def save(self) -> None:
        """Write the manifest to DATA_DIR/dsita-run.json, atomically."""
        data = {"version": MANIFEST_VERSION, "steps": self.steps, "digests": self.digests}
        atomic_write_text(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    def digest(self, path: Path) -> str | None:
        """SHA-256 of a file (None when missing), rehashed only when its size or modification time moved."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        name = self.layout.relative(path)
        cached = self.digests.get(name)
        if cached and cached[:2] == [stat.st_size, stat.st_mtime_ns]:
            return str(cached[2])
        with open(path, "rb") as f:
            value = hashlib.file_digest(f, "sha256").hexdigest()
        self.digests[name] = [stat.st_size, stat.st_mtime_ns, value]
        return value

    def digests_of(self, paths: Iterable[Path]) -> dict[str, str | None]:
        """`digest` of each path, keyed by its name in the manifest (`Layout.relative`)."""
        return {self.layout.relative(p): self.digest(p) for p in paths}

    def identity(self, path: Path) -> list[Any]:
        """A cheap identity for inputs too large to hash on every run (a Common Voice archive)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return [self.layout.relative(path), None]
        return [self.layout.relative(path), stat.st_size, stat.st_mtime_ns]


def make_key(parts: dict[str, Any]) -> str:
    """A short (16 hex digits) SHA-256 of `parts` as sorted JSON: a step's key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
