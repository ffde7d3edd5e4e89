"""DATA_DIR's lock: no forked worker keeps it, workers die with their parent, and the standalone commands that
write into DATA_DIR (`dsita import`, `dsita lm build`) take it too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsita.errors import DsitaError
from dsita.pipeline.state import LOCK_FILE, run_lock

from .test_pipeline import clean_environment

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "it-sample.tar.gz"


def dsita(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(DATA_DIR=str(data_dir))
    command = [sys.executable, "-m", "dsita.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


ORPHAN_SCRIPT = """
import multiprocessing, os, signal, sys, time
from pathlib import Path
from dsita.pipeline.state import run_lock
with run_lock(Path(sys.argv[1])):
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
    child.start()
    print(child.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed holding the lock: its file stays, and the child lives on
"""


def test_an_orphaned_child_does_not_keep_the_lock_of_its_killed_parent(tmp_path: Path) -> None:
    """flock belongs to the open file, which a fork shares: a forked child that outlives a killed holder
    would keep DATA_DIR locked for good (the orphaned importers of a killed run did)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    parent.wait()
    try:
        assert Path(f"/proc/{orphan}").exists() and (tmp_path / LOCK_FILE).exists()
        # The child closes its copy in its first instant (at fork); on a loaded machine that instant may come
        # after the parent's death, so wait for it, bounded, rather than race it.
        deadline = time.monotonic() + 10
        while holds_open(orphan, tmp_path / LOCK_FILE) and time.monotonic() < deadline:
            time.sleep(0.02)
        with run_lock(tmp_path):  # refused if the orphan still held the lock
            pass
    finally:
        os.kill(orphan, signal.SIGKILL)


def holds_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())
    except OSError:
        return False


WORKERS_SCRIPT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from dsita.system import ParentWatch
pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"), initializer=ParentWatch())
pids = {pool.submit(os.getpid).result() for _ in range(8)}
print(" ".join(map(str, sorted(pids))), flush=True)
time.sleep(600)
"""


def test_pool_workers_die_with_a_parent_killed_by_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_SCRIPT], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and not zombie(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.02)


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_import_and_lm_build_refuse_a_data_dir_that_a_run_holds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with run_lock(data_dir):
        for args in (("import", "cv", str(SAMPLE)), ("lm", "build")):
            refused = dsita(data_dir, *args)
            assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
            message = " ".join(refused.stderr.split())
            assert f"dsita {' '.join(args[:2])}" in message and str(data_dir / LOCK_FILE) in message
            assert f"`dsita run` (pid {os.getpid()}" in message
        assert sorted(p.name for p in data_dir.iterdir()) == [LOCK_FILE]  # nothing written
        # Writing outside DATA_DIR needs no lock.
        elsewhere = dsita(data_dir, "import", "cv", str(SAMPLE), "--out", str(tmp_path / "elsewhere"))
        assert elsewhere.returncode == 0, elsewhere.stderr
    assert (tmp_path / "elsewhere" / "train.csv").is_file()


def test_the_refusal_names_the_command_that_holds_the_lock(tmp_path: Path) -> None:
    held = r"dsita run: `dsita lm build` \(pid \d+ on .+\) holds the lock"
    with run_lock(tmp_path, "dsita lm build"):
        with pytest.raises(DsitaError, match=held), run_lock(tmp_path):
            pass
        refused = dsita(tmp_path, "run", "--steps", "checks")
    assert refused.returncode == 2 and "`dsita lm build`" in refused.stderr
