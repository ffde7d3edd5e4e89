"""SIGKILL of `dsita run` (and of `dsita import cv`) at several points of every step leaves nothing behind.

Only the parent is killed, as `kill -9 PID` does (not `docker kill`, which kills the whole group): its pool
workers, DataLoader workers and KenLM programs must die with it and must not keep DATA_DIR's lock, so that
the next run goes on from the step that was killed. One DATA_DIR serves every kill: each run starts at the
step the previous one was killed in, since the earlier steps are up to date.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dsita.pipeline.state import LOCK_FILE, MANIFEST_FILE

from .test_pipeline import ENV_FILES, RELEASE, clean_environment, manifest, ok, status

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "it-sample.tar.gz"
STEPS_WITH_WORKERS = ("import", "lm", "train", "test")  # the steps that fork pools or start programs
DEADLINE = 240.0  # seconds for one run to reach a kill point, on a busy machine


def dsita(*args: str) -> list[str]:
    return [sys.executable, "-m", "dsita.cli", *args]


def start(command: list[str], data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """A dsita command in a session of its own (its session id is its pid: its workers are easy to find)."""
    env = clean_environment(DATA_DIR=str(data_dir))
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive_in(session: int, data_dir: Path) -> list[str]:
    """Processes (zombies aside) of `session`, or whose command line names `data_dir`: what a kill left."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, session, ...
        if fields[0] == "Z":
            continue
        if int(fields[3]) == session or str(data_dir) in cmdline:
            left.append(f"{proc.name} (ppid {fields[1]}): {cmdline[:160]}")
    return left


def assert_nothing_left(session: int, data_dir: Path) -> None:
    """Within a few seconds of the kill, no process of the run is left and the lock is free."""
    deadline = time.monotonic() + 10
    while (left := alive_in(session, data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], "processes outlived the killed run:\n" + "\n".join(left)
    lock = data_dir / LOCK_FILE
    if lock.exists():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if anyone still holds it
        finally:
            os.close(fd)


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[subprocess.Popen[bytes]], bool]) -> bool:
    """SIGKILL the process (itself only) as soon as `ready(process)`; False if it ended first."""
    deadline = time.monotonic() + DEADLINE
    while process.poll() is None and time.monotonic() < deadline:
        if ready(process):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.001)
    assert process.poll() is not None, "the run reached no kill point in time"
    return False


class RunLog:
    """What DATA_DIR/logs/run.log has said since `mark()`: the runner logs '<step>: running' at each step."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "logs" / "run.log"
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def says(self, text: str) -> bool:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                return text.encode() in f.read()
        except FileNotFoundError:
            return False


Point = Callable[[subprocess.Popen[bytes], float], bool]  # (the run, when its step started) -> kill now?


def at_start(process: subprocess.Popen[bytes], since: float) -> bool:
    return True


def with_workers(process: subprocess.Popen[bytes], since: float) -> bool:
    return bool(children(process.pid))


def a_moment_in(process: subprocess.Popen[bytes], since: float) -> bool:
    return time.monotonic() > since + 0.3


class StepPoint:
    """Ready once the run log says the step is running and then `point` says so."""

    def __init__(self, log: RunLog, step: str, point: Point) -> None:
        self.log, self.step, self.point = log, step, point
        self.since: float | None = None

    def __call__(self, process: subprocess.Popen[bytes]) -> bool:
        if self.since is None and self.log.says(f"{self.step}: running"):
            self.since = time.monotonic()
        return self.since is not None and self.point(process, self.since)


def test_kill_9_at_every_step_leaves_no_process_and_the_next_run_finishes(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "runs.log"
    command = dsita("--env-file", str(ENV_FILES / "fast_dev.env"), "run")
    log = RunLog(data_dir)
    landed = []
    for step in ("import", "lm", "train", "test", "export", "package"):
        # At the step's start, then once it has forked its workers (or, without workers, a moment in).
        later: list[Point] = [with_workers] if step in STEPS_WITH_WORKERS else [a_moment_in]
        for point in [at_start, *later] if step != "package" else [at_start]:
            log.mark()
            process = start(command, data_dir, out)
            if not kill_when(process, StepPoint(log, step, point)):
                # Only the last, short steps may finish between two looks at the log.
                assert step in ("export", "package") and process.returncode == 0, out.read_text()[-3000:]
            assert_nothing_left(process.pid, data_dir)
            if not (data_dir / MANIFEST_FILE).exists() or step not in manifest(data_dir):
                landed.append(step)
    # The kills landed inside the steps that have workers; a short step may have finished just before.
    assert set(STEPS_WITH_WORKERS) <= set(landed), landed

    env = clean_environment(DATA_DIR=str(data_dir))
    result = ok(subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False))
    for step in ("import", "lm", "train", "test", "export", "package"):
        assert status(result, step) in ("ran", "up to date")
    assert all((data_dir / name).is_file() for name in RELEASE)
    assert not (data_dir / LOCK_FILE).exists()


def test_kill_9_of_dsita_import_cv_leaves_no_worker_and_no_lock(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "import.log"
    command = dsita("import", "cv", str(SAMPLE), "--workers", "2")  # into DATA_DIR/extracted: locked
    clips = data_dir / "extracted" / "clips"
    for point in (lambda p: bool(children(p.pid)), lambda p: any(clips.glob("*.wav"))):
        process = start(command, data_dir, out)
        assert kill_when(process, point), out.read_text()[-3000:]
        assert_nothing_left(process.pid, data_dir)
    converted = len(list(clips.glob("*.wav")))
    assert converted > 0
    env = clean_environment(DATA_DIR=str(data_dir))
    result = ok(subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False))
    assert f"{converted} reused" in " ".join(result.stdout.split())  # every WAV of the killed runs was whole
    assert len(list(clips.glob("*.wav"))) == 400
    assert not (data_dir / LOCK_FILE).exists()
