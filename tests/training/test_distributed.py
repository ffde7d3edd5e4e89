"""DistributedDataParallel on the CPU with gloo: two real processes train one model, of each architecture."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dsita.model import architectures
from dsita.training.checkpoint import LAST, load_checkpoint
from dsita.training.loop import Distributed, TrainOptions, train
from tests.architectures import ITALIAN, tiny_train_options


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world: int, options: TrainOptions, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(options, ITALIAN, Distributed(rank, world, rank))
    torch.save(result.model.state_dict(), out / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("architecture", architectures())
def test_two_gloo_ranks_end_with_identical_weights(
    architecture: str, sample_corpus: Path, tmp_path: Path
) -> None:
    options = tiny_train_options(
        sample_corpus, tmp_path / "ckpt", architecture, batch_size=4, max_train_clips=16
    )
    mp.spawn(ddp_worker, args=(2, options, free_port(), tmp_path), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
    # Each rank trained 2 of the 4 batches per epoch; the checkpoint (rank 0 only) holds the final weights.
    saved = load_checkpoint(tmp_path / "ckpt" / LAST)
    assert saved["train_state"]["epoch"] == 2 and saved["train_state"]["step"] == 4
    for key, value in rank0.items():
        assert torch.equal(value, saved["model"][key]), key
    single = train(dataclasses.replace(options, checkpoint_dir=tmp_path / "single", epochs=1), ITALIAN)
    assert any(not torch.equal(single.model.state_dict()[k], v) for k, v in rank0.items())


def test_torchrun_cli_runs_two_processes_and_only_rank_zero_writes(
    sample_corpus: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_port", str(free_port()),
        "-m", "dsita.cli", "train", "--train-files", str(sample_corpus / "train.csv"),
        "--dev-files", str(sample_corpus / "dev.csv"), "--test-files", str(tmp_path / "none.csv"),
        "--checkpoint-dir", str(ckpt), "--workers", "0",
    ]  # fmt: skip
    env = {**os.environ, "FAST_TRAIN": "1", "BATCH_SIZE": "2", "EPOCHS": "1", "OMP_NUM_THREADS": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo ranks on the CPU, also on a GPU machine
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "best_dev.pt",
        "epoch-0001.pt",
        "last.pt",
        "metrics.jsonl",
        "settings.env",
    ]
    assert result.stderr.count("Epoch 1: train loss") == 1  # rank 1 logs warnings only
