"""A training checkpoint without what only resuming needs: `slim_checkpoint.py IN.pt OUT.pt [--float32]`.

Keeps the model config, the weights (float16 unless --float32: half the bytes, and a float32 model loads
them), the alphabet and the settings the run used; drops the optimizer, scaler, RNG and training state. The
result loads with `dsita.training.checkpoint.load_trained_model` and starts a run with TRANSFER_LEARNING=1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dsita.training.checkpoint import load_checkpoint, save_checkpoint

KEPT = ("model_config", "alphabet", "settings_env")


def slim(source: Path, target: Path, dtype: torch.dtype) -> int:
    """Write the slim copy of `source` at `target`; returns its size in bytes."""
    checkpoint = load_checkpoint(source)
    weights = {
        name: value.to(dtype) if value.is_floating_point() else value
        for name, value in checkpoint["model"].items()
    }
    save_checkpoint(target, {**{key: checkpoint[key] for key in KEPT}, "model": weights})
    return target.stat().st_size


def main() -> None:
    """Parse the command line and slim one checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--float32", action="store_true", help="keep the weights in float32")
    args = parser.parse_args()
    size = slim(args.source, args.target, torch.float32 if args.float32 else torch.float16)
    print(f"{args.target}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
