"""`dsita run` across two hosts with torchrun: two network namespaces on this machine, one shared DATA_DIR.

Each "host" is a network namespace with one end of a veth pair; their addresses exist only inside them, so
the two torchrun agents meet over that link as two machines would (c10d rendezvous, gloo between the
ranks). The second host sees DATA_DIR read-only (a private read-only bind mount): had its rank written a
checkpoint, a log or the manifest, its run would fail. Needs root and iproute2; skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dsita.training.checkpoint import LAST, load_checkpoint
from tests.pipeline.test_pipeline import ENV_FILES, clean_environment

pytestmark = pytest.mark.slow

SUBNET = "10.213.77"  # /24 inside the two namespaces only
PORT = 29400  # the rendezvous store, on the first host
# A private mount namespace in which DATA_DIR ($1) is read-only, then the command ("$@" after it).
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'


@dataclass(frozen=True)
class Host:
    namespace: str
    interface: str
    address: str


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    """Two namespaces joined by a veth pair, each with its own address; removed afterwards."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs Linux, iproute2 and root for network namespaces")
    tag = uuid.uuid4().hex[:6]
    pair = (
        Host(f"dsita-a-{tag}", f"dsa{tag}", f"{SUBNET}.1"),
        Host(f"dsita-b-{tag}", f"dsb{tag}", f"{SUBNET}.2"),
    )
    try:
        for host in pair:
            made = ip("netns", "add", host.namespace)
            if made.returncode != 0:
                pytest.skip(f"ip netns add is not permitted here: {made.stderr.strip()}")
        link = ip("link", "add", pair[0].interface, "type", "veth", "peer", "name", pair[1].interface)
        if link.returncode != 0:
            pytest.skip(f"cannot make a veth pair here: {link.stderr.strip()}")
        for host in pair:
            steps = (
                ("link", "set", host.interface, "netns", host.namespace),
                ("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface),
                ("-n", host.namespace, "link", "set", host.interface, "up"),
                ("-n", host.namespace, "link", "set", "lo", "up"),
            )
            for step in steps:
                done = ip(*step)
                assert done.returncode == 0, done.stderr
        yield pair
    finally:
        for host in pair:
            ip("netns", "delete", host.namespace)  # takes its end of the pair, and so the pair, along


def torchrun(*options: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", *options, "--monitor-interval", "0.5",
        "-m", "dsita.cli", "--env-file", str(ENV_FILES / "fast_dev.env"), "run", "--steps", "import,train",
    ]  # fmt: skip


def start_host(
    host: Host, first: Host, index: int, data_dir: Path, log: Path, **settings: str
) -> subprocess.Popen:
    """This host's torchrun agent (rank `index`), in its namespace; the second one sees DATA_DIR read-only."""
    command = torchrun(
        "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"{first.address}:{PORT}", "--rdzv-id", "dsita-test",
        "--rdzv-conf", f"is_host={int(index == 0)}", "--local-addr", host.address, "--max-restarts", "3",
    )  # fmt: skip
    if index:
        command = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            READ_ONLY,
            "sh",
            str(data_dir),
            *command,
        ]
    env = {
        "GLOO_SOCKET_IFNAME": host.interface,  # gloo on the link, not on the hostname's address
        # The agents' shared store loses a replaced host's next rendezvous (pytorch/pytorch#135712, #147064):
        # the README's multi-node recipe sets this too.
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        **settings,
    }
    return spawn(["ip", "netns", "exec", host.namespace, *command], data_dir, log, **env)


def spawn(command: list[str], data_dir: Path, log: Path, **settings: str) -> subprocess.Popen:
    """`command` in its own session (so that its whole group can be killed), its output to `log`."""
    env = clean_environment(DATA_DIR=str(data_dir), CUDA_VISIBLE_DEVICES="", **settings)
    with open(log, "w") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def finish(processes: list[subprocess.Popen], logs: list[Path], timeout: float = 600) -> None:
    """Wait for every process to succeed; the first to fail (or the deadline) ends the wait, and the rest."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            for process, log in zip(processes, logs, strict=True):
                code = process.poll()
                assert code in (None, 0), f"{log.name} exited with {code}:\n{log.read_text()[-6000:]}"
            time.sleep(0.2)
        for process, log in zip(processes, logs, strict=True):
            assert process.poll() == 0, f"{log.name}: {process.poll()}\n{log.read_text()[-6000:]}"
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def power_off(host: Host) -> None:
    """SIGKILL every process of the host's namespace, as a machine that loses power (torchrun's ranks run in
    sessions of their own: killing the agent alone would leave its rank training)."""
    deadline = time.monotonic() + 30
    while (pids := ip("netns", "pids", host.namespace).stdout.split()) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.1)
    assert not pids, f"{host.namespace}: still running: {pids}"


def weights(data_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(data_dir / "checkpoints" / LAST)["model"]


def test_two_hosts_train_the_model_one_host_trains_and_only_the_first_writes(
    hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    first, shared, single = hosts[0], tmp_path / "shared", tmp_path / "single"
    shared.mkdir()  # the second host's read-only view is of a folder that exists
    logs = [tmp_path / "host0.log", tmp_path / "host1.log"]
    nodes = [start_host(host, first, i, shared, logs[i]) for i, host in enumerate(hosts)]
    # The same run as two processes on one host, for comparison.
    one_host = spawn(torchrun("--standalone", "--nproc-per-node", "2"), single, tmp_path / "single.log")
    finish([*nodes, one_host], [*logs, tmp_path / "single.log"])

    two_hosts = weights(shared)
    assert two_hosts.keys() == weights(single).keys()
    for key, value in weights(single).items():
        assert torch.equal(two_hosts[key], value), key
    saved = load_checkpoint(shared / "checkpoints" / LAST)["train_state"]
    assert saved == load_checkpoint(single / "checkpoints" / LAST)["train_state"]
    text = [log.read_text() for log in logs]
    assert "Epoch 2: train loss" in text[0] and "Epoch 2: train loss" not in text[1]
    assert (shared / "checkpoints" / "metrics.jsonl").read_text().count("\n") == 2  # one writer
    assert not (shared / "dsita-run.lock").exists()


def test_a_killed_host_restarts_and_training_resumes_from_the_last_checkpoint(
    hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    first, second = hosts
    shared = tmp_path / "shared"
    # All 320 train clips (FAST_TRAIN keeps 64) in 80 steps an epoch per rank: long enough to kill.
    slower = {"EPOCHS": "3", "CHECKPOINT_SECS": "1", "MAX_TRAIN_CLIPS": "0", "MAX_STEPS_PER_EPOCH": "0"}
    shared.mkdir()
    logs = [tmp_path / "host0.log", tmp_path / "host1.log", tmp_path / "host1-again.log"]
    nodes = [start_host(host, first, i, shared, logs[i], **slower) for i, host in enumerate(hosts)]
    deadline = time.monotonic() + 300
    while not (shared / "checkpoints" / LAST).is_file() and time.monotonic() < deadline:
        assert all(node.poll() is None for node in nodes), logs[0].read_text()[-4000:]
        time.sleep(0.05)
    killed = load_checkpoint(shared / "checkpoints" / LAST)["train_state"]
    power_off(second)  # the second host goes down: its agent, its rank and the rank's loader workers
    nodes[1].wait()
    assert killed["epoch"] < 3, "the kill must land during training"
    again = start_host(second, first, 1, shared, logs[2], **slower)
    finish([nodes[0], again], [logs[0], logs[2]])

    # The first host's torchrun ran its rank twice: its agent restarted it (one of --max-restarts).
    assert logs[0].read_text().count("dsita run in ") == 2
    train_log = (shared / "logs" / "05-train.log").read_text()
    assert "Resuming from" in train_log and str(shared / "checkpoints" / LAST) in train_log
    final = load_checkpoint(shared / "checkpoints" / LAST)["train_state"]
    assert final["epoch"] == 3 and final["step"] == 3 * 80
