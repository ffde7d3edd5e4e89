"""What only the conformer has: its size presets, its settings, its 40 ms steps without state and the names
of its transfer layers. The seam's tests run for it too (tests/model/test_model.py and the other folders'
tests parametrised over `architectures()`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsita.errors import DsitaError
from dsita.model import Conformer, ConformerConfig, build_model, count_parameters, new_model_config
from dsita.settings import Settings
from dsita.settings.options import train_options
from dsita.training.loop import model_config
from tests.architectures import N_OUTPUTS, tiny_model


def test_presets_sizes_and_parameter_counts() -> None:
    counts = {}
    for preset in ("tiny", "small", "medium"):
        with torch.device("meta"):
            counts[preset] = count_parameters(build_model(new_model_config("conformer", N_OUTPUTS, preset)))
    assert counts == {"tiny": 152_551, "small": 4_475_991, "medium": 26_280_743}
    assert new_model_config("conformer", N_OUTPUTS) == ConformerConfig(n_outputs=N_OUTPUTS)  # small
    medium = new_model_config("conformer", N_OUTPUTS, "medium", n_layers=12)
    assert isinstance(medium, ConformerConfig)
    assert (medium.d_model, medium.n_layers, medium.conv_kernel) == (256, 12, 31)
    with pytest.raises(DsitaError, match="unknown conformer size 'huge'"):
        new_model_config("conformer", N_OUTPUTS, "huge")
    # DeepSpeech has no presets: its size is N_HIDDEN whatever MODEL_SIZE says.
    assert new_model_config("deepspeech", N_OUTPUTS, "medium", n_hidden=64).size() == {
        "architecture": "deepspeech",
        "n_hidden": 64,
    }


def test_unknown_architectures_and_sizes_are_refused_naming_the_setting(tmp_path: Path) -> None:
    for settings, message in (
        (Settings(model="wav2vec"), r"architecture 'wav2vec' \(MODEL; known: conformer, deepspeech"),
        (Settings(model="conformer", model_size="huge"), r"unknown conformer size 'huge' \(MODEL_SIZE"),
    ):
        with pytest.raises(DsitaError, match=message):
            model_config(train_options(settings, (), (), tmp_path), N_OUTPUTS)


def test_every_preset_has_a_kernel_friendly_head_width() -> None:
    # Fused 16-bit attention (flash, memory-efficient) needs a head width that is a multiple of 8.
    for name in ConformerConfig.PRESETS:
        config = new_model_config("conformer", N_OUTPUTS, name)
        assert (config.d_model // config.n_heads) % 8 == 0, name


def test_training_options_apply_only_to_their_architecture(tmp_path: Path) -> None:
    settings = Settings(model="conformer", model_size="medium", conformer_layers=3, n_hidden=99, dropout=0.3)
    config = model_config(train_options(settings, (), (), tmp_path), N_OUTPUTS)
    assert isinstance(config, ConformerConfig)
    assert (config.d_model, config.n_layers, config.n_heads, config.dropout) == (256, 3, 4, 0.1)
    # FAST_TRAIN trains the tiny preset unless the settings ask for a size themselves (a preset, as AUGMENT).
    fast = Settings(model="conformer", fast_train=True)
    assert model_config(train_options(fast, (), (), tmp_path), 9) == new_model_config("conformer", 9, "tiny")
    asked = Settings(model="conformer", model_size="medium", conformer_dim=512, fast_train=True)
    assert model_config(train_options(asked, (), (), tmp_path), 9).size()["d_model"] == 512
    deepspeech = model_config(train_options(Settings(fast_train=True), (), (), tmp_path), 9)
    assert deepspeech.size() == {"architecture": "deepspeech", "n_hidden": 64}
    with pytest.raises(DsitaError, match="multiple of 2 x n_heads"):
        model_config(train_options(Settings(model="conformer", conformer_dim=102), (), (), tmp_path), 9)


def test_an_output_step_is_four_log_mel_frames_and_carries_no_state() -> None:
    model = tiny_model("conformer")
    assert isinstance(model, Conformer)
    step_seconds = model.config.OUTPUT_STEP_SECONDS
    assert model.featurizer.step_samples == 160 and step_seconds == pytest.approx(0.04)
    with torch.no_grad():
        out = model(torch.randn(1, 41, 80))
    assert out.lengths.tolist() == [11] and model.initial_state(3) == () and out.state == ()


def test_transfer_layers_are_the_subsampling_each_block_and_the_head() -> None:
    assert tiny_model("conformer").transfer_layers == ("subsampling", "blocks.0", "blocks.1", "head")
