"""One training process per GPU: `dsita run` starts them itself with torch's elastic launcher.

The launcher is the engine of `torchrun` (`torch.distributed.launcher.api.elastic_launch`), started from
within, so that a plain `docker run --gpus all ... dsita` trains on every visible GPU, as the original's
two-GPU setup did. The process that runs `dsita run` becomes the launcher's agent: it starts one child per
GPU and waits. The children are the ranks of one DDP run, each with RANK, WORLD_SIZE, LOCAL_RANK and
MASTER_ADDR/PORT set as `torchrun` sets them, and each runs the pipeline as it does under `torchrun`: rank 0
runs every step and the others wait for it at the training step (`runner.TrainGate`), train with it, and
exit. So the steps other than training run once, on rank 0.

NUM_GPUS limits the GPUs (0: all visible; CUDA_VISIBLE_DEVICES also limits what is visible). Under
`torchrun` (RANK or WORLD_SIZE set) nothing is relaunched. On a machine without a GPU nothing changes: one
process, on the CPU. `cpu_ranks` starts that many gloo ranks on the CPU instead: the same path without a GPU,
which the tests take.

A kill of the launching process kills its children: SIGTERM or SIGINT reaches the agent, which stops them;
a SIGKILL (or the OOM killer) cannot be caught, so every child also asks the kernel for a SIGKILL when its
parent dies (`PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsita.errors import DsitaError

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_USER_ERROR = 2  # what the CLI exits with on a DsitaError
# The signals the elastic agent turns into a stop of every rank (its default list).
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


@dataclass(frozen=True)
class LaunchPlan:
    """How many training processes `dsita run` starts, and on what."""

    processes: int  # 1: this process trains (or is already one of torchrun's ranks)
    device: str  # "cuda", or "cpu" (no GPU, or gloo ranks asked for)
    under_torchrun: bool = False

    @property
    def launches(self) -> bool:
        """Whether this process starts child processes rather than running the pipeline itself."""
        return self.processes > 1 and not self.under_torchrun


def plan_launch(num_gpus: int, cpu_ranks: int = 0, environ: Mapping[str, str] | None = None) -> LaunchPlan:
    """The processes for NUM_GPUS (0: every visible GPU), or for `cpu_ranks` gloo ranks on the CPU."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in TORCHRUN_VARIABLES):
        if num_gpus or cpu_ranks:
            log.warning("Under torchrun: NUM_GPUS and --cpu-ranks are ignored (torchrun starts the ranks)")
        return LaunchPlan(1, "cuda" if _visible_gpus() else "cpu", under_torchrun=True)
    if cpu_ranks < 0:
        raise DsitaError(f"--cpu-ranks must be 0 or more, got {cpu_ranks}")
    if cpu_ranks:
        log.info("Training in %d processes on the CPU (gloo), one DDP rank each", cpu_ranks)
        return LaunchPlan(cpu_ranks, "cpu")
    visible = _visible_gpus()
    shown = environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else ""
    if num_gpus > visible:
        hint = "" if visible else ": run the container with --gpus all (and the NVIDIA container toolkit)"
        seen = "1 GPU is" if visible == 1 else f"{visible} GPUs are"
        raise DsitaError(f"NUM_GPUS={num_gpus}, but {seen} visible{where}{hint}")
    if not visible:
        return LaunchPlan(1, "cpu")
    count = num_gpus or visible
    each = ", one DDP process each" if count > 1 else ""
    limit = f" (NUM_GPUS={num_gpus})" if num_gpus else ""
    log.info("Training on %d of %d visible GPUs%s%s%s", count, visible, where, each, limit)
    return LaunchPlan(count, "cuda")


def _visible_gpus() -> int:
    import torch

    # Counting creates no CUDA context: this process only waits for its children, which use the GPUs.
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch(plan: LaunchPlan, entrypoint: Callable[..., Any], *args: Any) -> dict[int, Any]:
    """Run `entrypoint(*args)` in `plan.processes` ranks on this machine; returns each rank's result.

    `entrypoint` must be a module-level function (the children are spawned, not forked, so that no CUDA or
    thread state of this process reaches them). A DsitaError in a rank becomes this process's DsitaError;
    any other failure is torch's ChildFailedError, which names the rank and holds its traceback.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    with tempfile.TemporaryDirectory(prefix="dsita-launch-") as folder:
        errors = Path(folder) / "errors"
        errors.mkdir()
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=plan.processes,
            run_id=uuid.uuid4().hex,
            # torchrun --standalone: a rendezvous store on a free local port, in this process.
            rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0",
            max_restarts=0,  # a rank that fails stops the run; `dsita run` again resumes it
            start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=str(Path(folder) / "elastic")),
        )
        quiet = _QuietWhenReported(errors)
        agent_log = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
        agent_log.addFilter(quiet)
        handlers = {number: signal.getsignal(number) for number in HANDLED_SIGNALS}
        try:
            results: dict[int, Any] = elastic_launch(config, _child)(
                os.getpid(), plan.device, errors, entrypoint, *args
            )
            return results
        except ChildFailedError as failed:
            message = _first_error(errors)
            if message is None:
                raise
            raise DsitaError(message) from failed
        except SignalException as signalled:
            # The agent has stopped the ranks; end as a process stopped by that signal would.
            if signalled.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise SystemExit(128 + int(signalled.sigval)) from None
        finally:
            agent_log.removeFilter(quiet)
            if threading.current_thread() is threading.main_thread():
                for number, handler in handlers.items():  # the agent installed its own and leaves them
                    signal.signal(number, handler)


class _QuietWhenReported(logging.Filter):
    """Drops the agent's traceback of a rank's exit once the rank reported a DsitaError, said in one line."""

    def __init__(self, errors: Path) -> None:
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not any(self.errors.iterdir())


def _child(parent: int, device: str, errors: Path, entrypoint: Callable[..., Any], *args: Any) -> Any:
    """One rank: dies with its parent, stays off the GPUs for CPU ranks, and reports a DsitaError."""
    _die_with_parent(parent)
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before anything initialises CUDA in this process
    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does: the ranks share the CPUs
        import torch

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    try:
        return entrypoint(*args)
    except DsitaError as exc:
        (errors / f"{int(os.environ.get('RANK', '0')):06d}.txt").write_text(str(exc), encoding="utf-8")
        raise SystemExit(EXIT_USER_ERROR) from None


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies, however the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): a killed parent may leave it running",
                    ctypes.get_errno())  # fmt: skip
    if os.getppid() != parent:  # the parent died before the request
        os._exit(1)


def _first_error(errors: Path) -> str | None:
    """The message of the lowest rank that failed with a DsitaError, if any did."""
    reports = sorted(errors.glob("*.txt"))
    return reports[0].read_text(encoding="utf-8") if reports else None
