"""`dsita run` starts one DDP process per GPU with torch's elastic launcher: here, gloo ranks on the CPU.

The CPU ranks take the launcher's whole path (elastic agent, c10d rendezvous, spawned children with RANK,
WORLD_SIZE and MASTER_ADDR set as torchrun sets them); only the device differs from a GPU machine.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dsita.errors import DsitaError
from dsita.pipeline.launch import LaunchPlan, launch, plan_launch
from dsita.pipeline.state import LOCK_FILE, MANIFEST_FILE
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import LAST, load_checkpoint
from dsita.training.options import TrainOptions
from tests.pipeline.test_pipeline import ENV_FILES, clean_environment, ok, status

ITALIAN = Alphabet.italian()


def test_the_plan_follows_num_gpus_torchrun_and_cpu_ranks() -> None:
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    plan = plan_launch(0, environ={})
    assert plan.processes == max(1, visible) and plan.launches == (visible > 1)
    assert plan.device == ("cuda" if visible else "cpu")
    seen = "1 GPU is" if visible == 1 else f"{visible} GPUs are"
    with pytest.raises(DsitaError, match=f"NUM_GPUS={visible + 1}, but {seen} visible") as error:
        plan_launch(visible + 1, environ={"CUDA_VISIBLE_DEVICES": ""})
    assert "CUDA_VISIBLE_DEVICES=" in str(error.value)
    assert plan_launch(0, cpu_ranks=2, environ={}) == LaunchPlan(2, "cpu")
    under_torchrun = plan_launch(2, cpu_ranks=2, environ={"RANK": "1", "WORLD_SIZE": "2"})
    assert under_torchrun.under_torchrun and not under_torchrun.launches


def train_rank(options: TrainOptions) -> dict[str, object]:
    """A launched rank: train as `dsita train` does under torchrun, and report who it was."""
    import torch.distributed as dist

    from dsita.commands.training import distributed_from_environment
    from dsita.training.loop import train

    distributed = distributed_from_environment()
    result = train(options, ITALIAN, distributed)
    weights = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    dist.destroy_process_group()
    return {"rank": distributed.rank, "world": distributed.world_size, "pid": os.getpid(), "weights": weights}


def test_launched_cpu_ranks_train_one_model_and_only_rank_zero_writes(
    sample_corpus: Path, tmp_path: Path
) -> None:
    options = TrainOptions(
        train_csvs=(sample_corpus / "train.csv",),
        dev_csvs=(sample_corpus / "dev.csv",),
        checkpoint_dir=tmp_path / "ckpt",
        batch_size=4,
        epochs=2,
        learning_rate=1e-3,
        model_fields={"n_hidden": 16},
        workers=0,
        max_train_clips=16,
        max_dev_clips=4,
        show_progress=False,
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    ranks = launch(LaunchPlan(2, "cpu"), train_rank, options)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the agent's handlers are removed
    assert sorted(ranks) == [0, 1]
    assert [ranks[i]["rank"] for i in (0, 1)] == [0, 1] and ranks[0]["world"] == 2
    assert len({ranks[0]["pid"], ranks[1]["pid"], os.getpid()}) == 3
    saved = load_checkpoint(options.checkpoint_dir / LAST)
    assert saved["train_state"]["step"] == 4  # 4 batches an epoch, 2 for each rank, for 2 epochs
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]) and torch.equal(value, saved["model"][key]), key
    metrics = (options.checkpoint_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]  # one writer, not two


def test_a_rank_that_fails_with_a_user_error_fails_the_launch_with_its_message(tmp_path: Path) -> None:
    options = TrainOptions(
        train_csvs=(tmp_path / "missing.csv",), dev_csvs=(tmp_path / "missing.csv",), checkpoint_dir=tmp_path
    )
    with pytest.raises(DsitaError, match=re.escape(str(tmp_path / "missing.csv"))):
        launch(LaunchPlan(2, "cpu"), train_rank, options)


def run_command(data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "dsita.cli", "--env-file", str(ENV_FILES / "fast_dev.env"), "run",
        "--steps", "import,train", "--cpu-ranks", "2",
    ]  # fmt: skip


def descendants(pid: int) -> set[int]:
    """Every living process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def still_alive(pids: set[int], seconds: float = 60) -> list[int]:
    """The processes of `pids` still running after up to `seconds` (DataLoader workers notice their parent's
    death within seconds)."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dsita_run_trains_in_ranks_and_a_killed_parent_takes_them_along(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = {"EPOCHS": "2", "CHECKPOINT_SECS": "1", "MAX_STEPS_PER_EPOCH": "0", "DATA_DIR": str(data_dir)}
    env = clean_environment(**settings, TMPDIR=str(tmp_path))  # what the killed launcher leaves in its temp
    with open(tmp_path / "killed.log", "w") as log:
        parent = subprocess.Popen(run_command(data_dir), env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while parent.poll() is None and time.monotonic() < deadline:
        if (data_dir / "checkpoints" / LAST).is_file():
            break
        time.sleep(0.05)
    ranks = descendants(parent.pid)
    assert parent.poll() is None and len(ranks) >= 2, (tmp_path / "killed.log").read_text()
    os.kill(parent.pid, signal.SIGKILL)  # the parent alone: it can neither catch this nor pass it on
    parent.wait()
    assert not still_alive(ranks)
    assert "train" not in json.loads((data_dir / MANIFEST_FILE).read_text())["steps"]

    result = ok(subprocess.run(run_command(data_dir), env=env, capture_output=True, text=True, timeout=600))
    assert "Training in 2 processes on the CPU (gloo)" in result.stderr
    assert status(result, "import") == "up to date" and status(result, "train") == "ran"
    train_log = (data_dir / "logs" / "05-train.log").read_text()
    assert "Resuming from" in train_log
    assert result.stderr.count("Epoch 2: train loss") == 1  # rank 1 logs warnings only
    # 64 clips in batches of 2: 32 batches an epoch, 16 for each of the two ranks.
    assert load_checkpoint(data_dir / "checkpoints" / LAST)["train_state"]["step"] == 2 * 16
    assert not (data_dir / LOCK_FILE).exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_dsita_run_stops_every_rank(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_environment(
        EPOCHS="50", MAX_STEPS_PER_EPOCH="0", DATA_DIR=str(data_dir), TMPDIR=str(tmp_path)
    )
    with open(tmp_path / "stopped.log", "w") as log:
        parent = subprocess.Popen(run_command(data_dir), env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while parent.poll() is None and time.monotonic() < deadline:
        if (data_dir / "checkpoints" / "metrics.jsonl").is_file():  # an epoch done: training is under way
            break
        time.sleep(0.05)
    ranks = descendants(parent.pid)
    assert parent.poll() is None and len(ranks) >= 2, (tmp_path / "stopped.log").read_text()
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=120) == 128 + signal.SIGTERM
    assert not still_alive(ranks)
    assert "Traceback" not in (tmp_path / "stopped.log").read_text()
