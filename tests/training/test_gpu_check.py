"""benchmarks/gpu_check.py runs to the end on the CPU (`--cpu-dry-run`, tiny sizes) and reports every section.

On a GPU it is run by hand (see BENCHMARKS.md); here it proves the plumbing: each section runs the library
code it checks, the training sections train and resume for real, and the report is one JSON file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECTIONS = [
    "env", "parity", "ctc", "lstm_kernels", "attention_kernels", "corpus", "train_amp", "train_resume",
    "train_conformer", "train_fp16", "rng_list_resume", "host_syncs", "ddp_nccl_world1",
    "throughput_deepspeech", "throughput_conformer",
]  # fmt: skip
NEEDS_CUDA = {"parity", "train_fp16"}


def test_the_gpu_check_dry_run_reports_every_section(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu_check.py"),
        "--cpu-dry-run",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the dry run, also on a GPU machine
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    sections = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert list(sections) == SECTIONS
    for name, entry in sections.items():
        if name in NEEDS_CUDA:
            assert entry["ok"] is None and "needs CUDA" in entry["skipped"], name
        else:
            assert entry["ok"] is True, (name, entry.get("error"), entry.get("trace"))
    results = {name: entry.get("result") for name, entry in sections.items()}
    assert results["ctc"]["grad_rel_diff"] == 0.0  # the CPU against itself
    assert results["train_amp"]["epochs_completed"] == 1
    assert results["train_resume"]["last_epoch"]["epoch"] == 2
    assert results["train_resume"]["resumed_from_step"] * 2 == results["train_resume"]["last_epoch"]["step"]
    assert (
        results["rng_list_resume"]["epochs_completed"] == 2
        and results["rng_list_resume"]["saved_states"] == 2
    )
    assert results["ddp_nccl_world1"]["backend"] == "gloo" and results["ddp_nccl_world1"]["steps"] > 0
    for name in ("throughput_deepspeech", "throughput_conformer"):
        assert results[name]["audio_seconds_per_second"] > 0, name
    assert {"best_dev.pt", "last.pt", "metrics.jsonl"} <= set(results["train_conformer"]["files"])
