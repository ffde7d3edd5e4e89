"""What the operating system can do to a run: fill or write-protect its disk, or kill it under its workers.

Disks: `disk_errors(folder, needed, what)` turns ENOSPC, EDQUOT and EROFS, and torch.save's C++ error on a
full disk (`inline_container.cc`, which carries no errno), into one DsitaError line that names the folder,
the space free there and the space the work needs. Sizes print in kB, MB or GB, whichever fits.

Workers: every process dsita forks or starts to help it (clip converters, corpus normalizers, beam
decoders, DataLoader workers, KenLM's programs) calls a `ParentWatch` first: Linux kills it (SIGKILL, via
prctl's PR_SET_PDEATHSIG) the moment its parent dies, even by SIGKILL, so that no orphan keeps converting
clips into, or holding files of, a DATA_DIR whose next run has begun. Where prctl does not exist, a daemon
thread polls the parent's pid instead (pools only: a program started with `exec` loses that thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dsita.errors import DsitaError

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# torch.save writes through a C++ stream whose failure is a RuntimeError with one of these, and no errno.
TORCH_WRITE_ERRORS = ("inline_container.cc", "PytorchStreamWriter", "file write failed")
NEARLY_FULL = 1 << 20  # below this much free space, a write error without an errno is taken for a full disk
PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 1.0


def format_bytes(size: float) -> str:
    """A size for people: '512 kB', '12.3 MB', '4.56 GB' (powers of 1024, as df -h counts)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20)):
        if size >= scale:
            return f"{size / scale:.{2 if unit == 'GB' and size < 10 * scale else 1}f} {unit}"
    return f"{max(size, 0) / 1024:.0f} kB"


def _existing(folder: Path) -> Path:
    """The folder, or its nearest existing parent (a folder about to be created lives on that disk)."""
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_bytes(folder: Path) -> int:
    """Bytes free to this user on the disk that holds (or will hold) `folder`."""
    stat = os.statvfs(_existing(folder))
    return stat.f_bavail * stat.f_frsize


def is_read_only(folder: Path) -> bool:
    """Whether the disk that holds (or will hold) `folder` is mounted read-only."""
    return bool(os.statvfs(_existing(folder)).f_flag & os.ST_RDONLY)


def disk_message(folder: Path | None, code: int, needed: int | None = None, what: str = "this step") -> str:
    """The one line for a full (ENOSPC), over-quota (EDQUOT) or read-only (EROFS) `folder` (None: unknown)."""
    need = f"{what} needs about {format_bytes(needed)}" if needed else f"{what} needs more"
    where = f"{folder}: " if folder is not None else "a folder written to: "
    if code == errno.EROFS:
        return (
            f"{where}the file system is read-only ({need} there); mount it writable, "
            "or choose a folder on a writable disk"
        )
    try:
        free = f"{format_bytes(free_bytes(folder))} free, " if folder is not None else ""
    except OSError:
        free = ""
    problem = "your disk quota is exceeded" if code == errno.EDQUOT else "the disk is full"
    return f"{where}{problem} ({free}{need}); free some space, or choose a folder on a larger disk"


Needed = int | Callable[[], int] | None  # bytes, or how to estimate them (only once a write has failed)


def disk_error(
    exc: BaseException, folder: Path | None, needed: Needed = None, what: str = "this step"
) -> DsitaError | None:
    """The DsitaError for a write that failed because `folder`'s disk is full or read-only, else None.

    An OSError that names its file says where better than `folder` does, when that file lies inside it (or
    when `folder` is None); a RuntimeError (torch.save's) counts when `folder`'s disk is read-only or full.
    """
    code = None
    if callable(needed):
        needed = _estimate(needed) if _is_disk_error(exc) else None
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        code = exc.errno
    elif isinstance(exc, RuntimeError) and folder is not None and _torch_write_error(exc):
        try:
            if is_read_only(folder):
                code = errno.EROFS
            elif free_bytes(folder) < max(NEARLY_FULL, int(needed or 0)):
                code = errno.ENOSPC
        except OSError:
            return None
    if code is None:
        return None
    if isinstance(exc, OSError) and exc.filename:
        parent = Path(os.path.abspath(os.fsdecode(exc.filename))).parent
        if folder is None or parent.is_relative_to(os.path.abspath(folder)):
            folder = parent
    return DsitaError(disk_message(folder, code, int(needed or 0) or None, what))


def _estimate(needed: Callable[[], int]) -> int | None:
    try:
        return needed()
    except (OSError, DsitaError, ValueError):  # the estimate is a courtesy: the message stands without it
        return None


def _is_disk_error(exc: BaseException) -> bool:
    return (isinstance(exc, OSError) and exc.errno in DISK_ERRNOS) or (
        isinstance(exc, RuntimeError) and _torch_write_error(exc)
    )


def _torch_write_error(exc: RuntimeError) -> bool:
    return any(marker in str(exc) for marker in TORCH_WRITE_ERRORS)


@contextlib.contextmanager
def disk_errors(folder: Path | None, needed: Needed = None, what: str = "this step") -> Iterator[None]:
    """Turn a full or read-only disk under the block into one DsitaError line (see `disk_error`)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        translated = disk_error(exc, folder, needed, what)
        if translated is None:
            raise
        raise translated from None


def _load_prctl() -> Callable[..., int] | None:
    """Linux's prctl, looked up once when this module is imported: a child between fork and exec (a
    `preexec_fn`) must not dlopen anything, since another thread of the parent may have held the loader's
    lock at the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _arm_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where prctl is not available."""
    return _PRCTL is not None and int(_PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill's answer stands


def _watch(parent: int, direct: bool) -> None:
    while (os.getppid() == parent) if direct else _alive(parent):
        time.sleep(WATCH_SECONDS)
    os._exit(1)


class ParentWatch:
    """Makes the process it is called in die with `parent`, the process that started it.

    Construct it in the parent (`ParentWatch()` records os.getpid()), and call it first thing in the child:
    as a pool's `initializer`, a DataLoader's `worker_init_fn` (which passes the worker's id), or a
    subprocess's `preexec_fn`. A parent that died before the call is noticed too: then the child exits.
    A child started by a fork server (whose parent is that server, not `parent`) is watched by a thread.
    """

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, *_: object) -> None:
        """Arm the watch in the calling child; exits at once if the parent is already gone.

        Arguments are ignored, so the instance fits any initializer signature. A direct child gets the
        kernel's parent-death signal where it exists; otherwise a daemon thread polls the parent.
        """
        direct = os.getppid() == self.parent
        if direct:
            armed = _arm_parent_death_signal()
            if os.getppid() != self.parent:  # orphaned before the signal was armed
                os._exit(1)
            if armed:
                return
        elif not _alive(self.parent):
            os._exit(1)
        thread = threading.Thread(target=_watch, args=(self.parent, direct), daemon=True, name="dsita-parent")
        thread.start()
