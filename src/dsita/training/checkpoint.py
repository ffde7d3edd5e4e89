"""Checkpoint files: the model's config, weights, alphabet and training state in one torch file.

Files are written to a temporary name and renamed, and read with `torch.load(weights_only=True)`, so a
checkpoint can never run code. A checkpoint rebuilds its own model (as whisper's `checkpoint["dims"]`).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import torch

from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.model.base import AcousticModel, build_model, model_config_from_dict, model_config_to_dict
from dsita.system import disk_errors
from dsita.text.alphabet import Alphabet
from dsita.training.runtime import rng_state

log = logging.getLogger("dsita.training")

FORMAT_VERSION = 1
BEST_DEV = "best_dev.pt"
LAST = "last.pt"  # the newest state, mid-epoch or end of epoch: what a restart resumes from
EPOCH_PATTERN = re.compile(r"^epoch-(\d+)\.pt$")


def epoch_checkpoint_name(epoch: int) -> str:
    """The file name of the checkpoint kept at the end of `epoch`: `epoch-0007.pt`."""
    return f"epoch-{epoch:04d}.pt"


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint atomically; a full or read-only disk is one DsitaError and leaves no partial file
    (torch.save's own error on a full disk, `inline_container.cc`, says neither where nor why)."""
    needed = tensor_bytes(checkpoint)
    with disk_errors(path.parent, needed, f"the checkpoint {path.name}"), atomic_write(path, "wb") as f:
        torch.save({"format_version": FORMAT_VERSION, **checkpoint}, f)


def tensor_bytes(value: Any) -> int:
    """The bytes of every tensor in a nested checkpoint dict: about the size of its file."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's dict, loaded on the CPU without running code (`weights_only`).

    A missing, unreadable, other-format or damaged file is a DsitaError naming it.
    """
    if not path.is_file():
        raise DsitaError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DsitaError(f"{path}: not a readable dsita checkpoint ({_first_line(exc)})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format_version") != FORMAT_VERSION:
        raise DsitaError(f"{path}: not a dsita checkpoint of format version {FORMAT_VERSION}")
    _check_contents(path, checkpoint)
    return checkpoint


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line; of torch's long weights-only refusal, only the unpickler's reason
    (its advice to load with weights_only=False would run the file's code)."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _check_contents(path: Path, checkpoint: dict[str, Any]) -> None:
    """The model's config, weights and alphabet are there and well formed, so that a damaged file is refused
    here, by name, rather than deep inside the model's construction."""
    weights, labels = checkpoint.get("model"), checkpoint.get("alphabet")
    if not (
        isinstance(checkpoint.get("model_config"), dict)
        and isinstance(weights, dict)
        and all(isinstance(v, torch.Tensor) for v in weights.values())
        and isinstance(labels, list)
        and all(isinstance(label, str) for label in labels)
    ):
        raise DsitaError(
            f"{path}: a damaged dsita checkpoint: its model_config, model or alphabet is malformed"
        )
    try:
        model_config_from_dict(checkpoint["model_config"])
        Alphabet(tuple(labels))
    except (DsitaError, KeyError, TypeError, ValueError) as exc:
        raise DsitaError(f"{path}: a damaged dsita checkpoint ({_first_line(exc)})") from None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or the one to use from a folder: best_dev, else the newest state."""
    if path.is_file():
        return path
    for name in (BEST_DEV, LAST):
        if (path / name).is_file():
            return path / name
    raise DsitaError(f"{path}: no checkpoint found (expected {BEST_DEV} or {LAST})")


def snapshot(
    model: AcousticModel,
    alphabet: Alphabet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    train_state: Any,
    settings_env: str,
) -> dict[str, Any]:
    """A training run's whole state as one checkpoint dict: what `dsita.training.loop` resumes from."""
    return {
        "model_config": model_config_to_dict(model.config),
        "model": model.state_dict(),
        "alphabet": list(alphabet.labels),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(device),
        "train_state": dataclasses.asdict(train_state),
        "settings_env": settings_env,
    }


def model_from_checkpoint(
    checkpoint: dict[str, Any], source: Path | str = "the checkpoint"
) -> tuple[AcousticModel, Alphabet]:
    """The model a checkpoint (from `load_checkpoint`) describes, with its weights, and its alphabet; weights
    that do not fit the model are a DsitaError naming `source`."""
    model = build_model(model_config_from_dict(checkpoint["model_config"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as exc:
        raise DsitaError(f"{source}: its weights do not fit its model_config ({_first_line(exc)})") from None
    return model, Alphabet(tuple(checkpoint["alphabet"]))


def load_trained_model(path: Path) -> tuple[AcousticModel, Alphabet]:
    """The model and alphabet stored in a checkpoint file or folder, in eval mode on the CPU."""
    path = resolve_checkpoint(path)
    model, alphabet = model_from_checkpoint(load_checkpoint(path), path)
    return model.eval(), alphabet


def rotate_epoch_checkpoints(folder: Path, keep: int) -> None:
    """Keep only the `keep` newest epoch checkpoints (best_dev and last are separate files)."""
    epochs = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := EPOCH_PATTERN.match(p.name)))
    for _, path in epochs[:-keep]:
        path.unlink()


def transfer_weights(model: AcousticModel, source_path: Path, drop_layers: int) -> None:
    """Load another run's weights, re-initialising the last `drop_layers` of the model's transfer layers.

    Kept layers must match in shape; a mismatch (e.g. another alphabet size with nothing dropped) is an error.
    """
    source = load_checkpoint(source_path)
    source_architecture = model_config_from_dict(source["model_config"]).ARCHITECTURE
    if source_architecture != model.config.ARCHITECTURE:
        raise DsitaError(
            f"{source_path}: a {source_architecture} checkpoint cannot start a {model.config.ARCHITECTURE} "
            "model: transfer learning needs a checkpoint of the same architecture (MODEL)"
        )
    order = model.transfer_layers
    if drop_layers > len(order):
        raise DsitaError(f"DROP_SOURCE_LAYERS must be at most {len(order)} for this model, got {drop_layers}")
    dropped = order[len(order) - drop_layers :]
    own = model.state_dict()
    mismatches = []
    for key, value in source["model"].items():
        if key.startswith(tuple(f"{layer}." for layer in dropped)) or key not in own:
            continue
        if own[key].shape != value.shape:
            mismatches.append(f"{key}: source {tuple(value.shape)}, model {tuple(own[key].shape)}")
        own[key] = value
    if mismatches:
        raise DsitaError(
            f"{source_path}: cannot transfer with DROP_SOURCE_LAYERS={drop_layers}: " + "; ".join(mismatches)
        )
    model.load_state_dict(own)
    log.info("Transferred weights from %s; re-initialised: %s", source_path, ", ".join(dropped) or "none")
