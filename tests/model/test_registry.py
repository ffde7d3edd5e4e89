"""A third architecture plugs in through the seam alone: a tiny one registered here trains, exports and
transcribes with no code of dsita's knowing it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from dsita.audio import LOG_MEL_FEATURES, LOG_MEL_STEP_SAMPLES, SAMPLE_RATE
from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_ZIP, make_release
from dsita.inference.model import InferenceOptions, load_model
from dsita.model import base
from dsita.model.base import AcousticModel, AcousticOutput, ModelConfig, State, register_architecture
from dsita.model.features import LogMel
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import BEST_DEV, load_trained_model
from dsita.training.loop import TrainOptions, train

ITALIAN = Alphabet.italian()


@dataclass(frozen=True)
class TinyConfig(ModelConfig):
    ARCHITECTURE: ClassVar[str] = "tiny-test"
    FEATURES: ClassVar[str] = LOG_MEL_FEATURES
    OUTPUT_STEP_SECONDS: ClassVar[float] = 2 * LOG_MEL_STEP_SAMPLES / SAMPLE_RATE  # stride 2: 20 ms
    GRAPH: ClassVar[str] = "segment"
    OPTION_FIELDS: ClassVar[tuple[str, ...]] = ("width",)
    SIZE_FIELDS: ClassVar[tuple[str, ...]] = ("width",)

    width: int = 32
    n_mels: int = 24


class Tiny(AcousticModel):
    """Log-mels -> a stride-2 convolution -> logits."""

    config_class = TinyConfig
    transfer_layers = ("conv", "head")
    config: TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.featurizer = LogMel(config.n_mels)
        self.conv = nn.Conv1d(config.n_mels, config.width, 3, stride=2, padding=1)
        self.head = nn.Linear(config.width, config.n_outputs)

    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> State:
        return ()

    def output_lengths(self, feature_lengths: Tensor) -> Tensor:
        return (feature_lengths + 1) // 2

    def forward(
        self, features: Tensor, feature_lengths: Tensor | None = None, state: State | None = None
    ) -> AcousticOutput:
        batch, steps = features.shape[:2]
        lengths = torch.full((batch,), steps) if feature_lengths is None else feature_lengths
        lengths = lengths.to(device=features.device, dtype=torch.long)
        hidden = torch.relu(self.conv(features.transpose(1, 2))).transpose(1, 2)
        return AcousticOutput(self.head(hidden), self.output_lengths(lengths), ())


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dummy architecture in a copy of the registry, so that no other test sees it."""
    monkeypatch.setattr(base, "_ARCHITECTURES", dict(base._ARCHITECTURES))
    register_architecture(Tiny)


def test_a_registered_architecture_trains_exports_and_transcribes(
    registered: None, sample_corpus: Path, sample_scorer: Path, tmp_path: Path
) -> None:
    options = TrainOptions(
        train_csvs=(sample_corpus / "train.csv",),
        dev_csvs=(sample_corpus / "dev.csv",),
        checkpoint_dir=tmp_path / "checkpoints",
        architecture="tiny-test",
        model_fields={"width": 24, "n_hidden": 999},  # n_hidden is not Tiny's: ignored
        batch_size=8,
        epochs=1,
        learning_rate=1e-3,
        workers=0,
        max_train_clips=32,
        max_dev_clips=8,
        show_progress=False,
        device="cpu",
    )
    result = train(options, ITALIAN)
    model, _ = load_trained_model(tmp_path / "checkpoints" / BEST_DEV)
    assert isinstance(model, Tiny) and model.config.width == 24 and result.epochs_completed == 1
    report = make_release(tmp_path / "checkpoints", tmp_path / "release", None, sample_scorer)
    assert report.metadata["architecture"] == "tiny-test" and report.metadata["output_step_ms"] == 20
    assert report.parity_error < 1e-4
    speech = load_model(tmp_path / "release" / RELEASE_ZIP, InferenceOptions(use_lm=False))
    clip = read_csv(sample_corpus / "test.csv")[0]
    assert speech.step_seconds == pytest.approx(0.02)
    transcript = speech.transcribe(clip.wav_path)
    assert all(0 <= w.start < w.end <= clip.duration + 0.02 for w in transcript.words)
    # Its config round-trips through a checkpoint's dict, and a field it does not have is refused.
    saved = base.model_config_to_dict(model.config)
    assert base.model_config_from_dict(saved) == model.config
    with pytest.raises(DsitaError, match="unknown fields"):
        base.model_config_from_dict({**saved, "n_hidden": 2048})
