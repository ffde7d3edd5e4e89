"""Each registered architecture at a size that builds and trains in seconds, for the tests parametrised over
the registry (`@pytest.mark.parametrize("architecture", architectures())`). A new architecture adds its
sizes here, or those tests fail with its name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsita.model import AcousticModel, build_model, new_model_config
from dsita.text.alphabet import Alphabet
from dsita.training.loop import TrainOptions

ITALIAN = Alphabet.italian()
N_OUTPUTS = len(ITALIAN) + 1

# The model fields of a freshly built tiny model.
TINY_FIELDS: dict[str, dict[str, int]] = {
    "deepspeech": {"n_hidden": 32},
    "conformer": {"d_model": 32, "n_layers": 2, "n_heads": 2, "subsampling_channels": 8},
}
# What the trainer is asked for: the conformer's tiny preset, narrowed.
TINY_TRAINING: dict[str, dict[str, Any]] = {
    "deepspeech": {"model_fields": {"n_hidden": 32, "dropout": 0.1}},
    "conformer": {"model_size": "tiny", "model_fields": {"d_model": 32}},
}


def tiny_model(architecture: str, dropout: float = 0.0) -> AcousticModel:
    """A tiny model of the Italian alphabet, initialised from seed 0, in eval mode."""
    torch.manual_seed(0)
    config = new_model_config(architecture, N_OUTPUTS, **TINY_FIELDS[architecture], dropout=dropout)
    return build_model(config).eval()


def tiny_train_options(
    corpus: Path, checkpoint_dir: Path, architecture: str = "deepspeech", **overrides: Any
) -> TrainOptions:
    """Two epochs of a tiny model on 48 clips of the sample corpus' train split, 8 of dev."""
    base = TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=checkpoint_dir,
        architecture=architecture,
        batch_size=8,
        epochs=2,
        learning_rate=1e-3,
        workers=0,
        max_train_clips=48,
        max_dev_clips=8,
        show_progress=False,
        device="cpu",  # the CPU even on a GPU machine: these tests compare runs exactly, gloo ranks need it
        settings_env="BATCH_SIZE=8\n",
        **TINY_TRAINING[architecture],
    )
    return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class Exported:
    """A small model of one architecture and its `dsita export` folder (the `exported` fixture)."""

    architecture: str
    checkpoint: Path
    release: Path
