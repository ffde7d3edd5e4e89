"""A damaged checkpoint file is one DsitaError naming it, from `load_checkpoint` and from `dsita export`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsita.errors import DsitaError
from dsita.training.checkpoint import load_checkpoint, load_trained_model, save_checkpoint

SMALL_MODEL = Path(__file__).parents[1] / "fixtures" / "small_model.pt"


def test_damaged_checkpoint_files_are_one_line_errors(tmp_path: Path) -> None:
    data = SMALL_MODEL.read_bytes()
    cases = {
        "random.pt": random.Random(2).randbytes(5000),  # IndexError inside torch's unpickler
        "empty.pt": b"",  # IndexError on EOFError's empty message
        "truncated.pt": data[: len(data) // 2],
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DsitaError, match=rf"^{path}: not a readable dsita checkpoint \([^\n]+\)$"):
            load_checkpoint(path)


def test_a_checkpoint_with_missing_or_malformed_parts_is_refused_by_name(tmp_path: Path) -> None:
    good = torch.load(SMALL_MODEL, weights_only=True)
    broken = {
        "no-model.pt": {k: v for k, v in good.items() if k != "model"},
        "labels.pt": {**good, "alphabet": "abc"},
        "config.pt": {**good, "model_config": {**good["model_config"], "n_hidden": "wide"}},
        "weights.pt": {**good, "model": {k: v[..., :1] for k, v in good["model"].items()}},
    }
    messages = {}
    for name, checkpoint in broken.items():
        path = tmp_path / name
        save_checkpoint(path, {k: v for k, v in checkpoint.items() if k != "format_version"})
        with pytest.raises(DsitaError) as info:
            load_trained_model(path)
        messages[name] = str(info.value)
        assert messages[name].startswith(f"{path}: ") and "\n" not in messages[name]
    assert "its model_config, model or alphabet is malformed" in messages["no-model.pt"]
    assert "its model_config, model or alphabet is malformed" in messages["labels.pt"]
    assert "a damaged dsita checkpoint" in messages["config.pt"]
    assert "its weights do not fit its model_config" in messages["weights.pt"]


def test_dsita_export_of_a_corrupt_checkpoint_prints_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "best_dev.pt"
    corrupt.write_bytes(random.Random(2).randbytes(4096))  # an IndexError's traceback before
    result = subprocess.run(
        [sys.executable, "-m", "dsita.cli", "export", "--checkpoint", str(corrupt), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300", "DATA_DIR": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {corrupt}: not a readable dsita checkpoint (")
