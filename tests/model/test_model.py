"""The DeepSpeech 0.9 acoustic model, and the architecture seam for every registered architecture."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dsita.audio import N_INPUT, SAMPLE_RATE
from dsita.errors import DsitaError
from dsita.model import (
    AcousticModel,
    DeepSpeech,
    DeepSpeechConfig,
    architectures,
    build_model,
    clipped_relu,
    count_parameters,
    model_config_from_dict,
    model_config_to_dict,
    new_model_config,
)
from tests.architectures import N_OUTPUTS, tiny_model


def tiny(n_hidden: int = 32, n_outputs: int = 6, dropout: float = 0.0, seed: int = 0) -> DeepSpeech:
    torch.manual_seed(seed)
    model = build_model(DeepSpeechConfig(n_outputs=n_outputs, n_hidden=n_hidden, dropout=dropout))
    assert isinstance(model, DeepSpeech)
    return model.eval()


def test_layer_names_match_deepspeech() -> None:
    assert list(tiny().state_dict()) == [
        "layer_1.weight",
        "layer_1.bias",
        "layer_2.weight",
        "layer_2.bias",
        "layer_3.weight",
        "layer_3.bias",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.bias_ih_l0",
        "lstm.bias_hh_l0",
        "layer_5.weight",
        "layer_5.bias",
        "layer_6.weight",
        "layer_6.bias",
    ]


def test_parameter_count_at_2048() -> None:
    with torch.device("meta"):
        model = build_model(DeepSpeechConfig(n_outputs=29))
    h, n_in, n_out = 2048, N_INPUT, 29
    dense = (n_in * h + h) + 3 * (h * h + h) + (h * n_out + n_out)
    lstm = 2 * (4 * h * h) + 2 * (4 * h)  # weight_ih, weight_hh, bias_ih, bias_hh
    assert count_parameters(model) == dense + lstm == 47_233_053
    # TF's fused LSTM cell has a single bias: the original graph's 47,224,861 trainable values
    assert count_parameters(model) - 4 * h == 47_224_861


def test_clipped_relu_at_20() -> None:
    x = torch.tensor([-5.0, 0.0, 3.0, 20.0, 25.0, 1e6])
    assert clipped_relu(x, 20.0).tolist() == [0.0, 0.0, 3.0, 20.0, 20.0, 20.0]
    # end to end: layer_1 pre-activations of 50 and 1000 both clip to 20, so the logits agree
    model = tiny()
    features = torch.randn(1, 7, N_INPUT)
    with torch.no_grad():
        model.layer_1.weight.zero_()
        model.layer_1.bias.fill_(50.0)
        at_50 = model(features).logits
        model.layer_1.bias.fill_(1000.0)
        at_1000 = model(features).logits
        model.layer_1.bias.fill_(10.0)
        at_10 = model(features).logits
    torch.testing.assert_close(at_50, at_1000)
    assert not torch.allclose(at_10, at_50)


def test_outputs_are_alphabet_plus_blank_last() -> None:
    model = tiny(n_outputs=29)
    assert model.n_outputs == 29
    assert model.blank == model.config.blank == 28
    out = model(torch.randn(2, 11, N_INPUT))
    assert out.logits.shape == (2, 11, 29)
    assert out.lengths.tolist() == [11, 11]


def test_glorot_uniform_weights_and_zero_biases() -> None:
    model = tiny(n_hidden=256, n_outputs=29)
    for name in ("layer_1", "layer_2", "layer_3", "layer_5", "layer_6"):
        layer = getattr(model, name)
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.95 * bound
        assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert (layer.bias == 0).all()
    # one Glorot bound for the whole TF kernel of shape (n_input + n_hidden, 4 n_hidden)
    bound = math.sqrt(6.0 / (256 + 256 + 4 * 256))
    for weight in (model.lstm.weight_ih_l0, model.lstm.weight_hh_l0):
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.95 * bound
    assert (model.lstm.bias_ih_l0 == 0).all()
    assert (model.lstm.bias_hh_l0 == 0).all()


def test_streaming_chunks_equal_one_pass() -> None:
    model = tiny()
    features = torch.randn(2, 30, N_INPUT)
    with torch.no_grad():
        whole = model(features)
        state = model.initial_state(2)
        pieces = []
        for start, stop in ((0, 7), (7, 7), (7, 20), (20, 30)):  # includes an empty chunk
            out = model(features[:, start:stop], state=state)
            pieces.append(out.logits)
            state = out.state
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole.logits, rtol=1e-5, atol=1e-5)
    for carried, final in zip(state, whole.state, strict=True):
        assert carried.shape == (1, 2, 32)
        torch.testing.assert_close(carried, final, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", architectures())
def test_output_lengths_are_exact_for_every_length(architecture: str) -> None:
    model = tiny_model(architecture)
    n_features = model.featurizer.n_features
    # Feature frames an output step spans: DeepSpeech's 20 ms frames one each, the conformer's 10 ms four.
    frames_per_step = round(model.config.OUTPUT_STEP_SECONDS * SAMPLE_RATE / model.featurizer.step_samples)
    with torch.no_grad():
        for steps in range(1, 42):
            out = model(torch.randn(1, steps, n_features))
            assert out.logits.shape[1] == out.lengths.item() == model.output_lengths(torch.tensor(steps))
            assert out.lengths.item() == -(-steps // frames_per_step)
        empty = model(torch.zeros(2, 0, n_features))
    assert empty.logits.shape == (2, 0, N_OUTPUTS) and empty.lengths.tolist() == [0, 0]


@pytest.mark.parametrize("architecture", architectures())
def test_padded_items_match_items_alone(architecture: str) -> None:
    model = tiny_model(architecture)
    lengths = [57, 33, 9, 1, 0]
    batch = torch.randn(5, 57, model.featurizer.n_features) * 5  # the padding is garbage on purpose
    with torch.no_grad():
        out = model(batch, torch.tensor(lengths))
        assert out.lengths.tolist() == model.output_lengths(torch.tensor(lengths)).tolist()
        for i, n in enumerate(lengths):
            alone = model(batch[i : i + 1, :n])
            steps = int(out.lengths[i])
            torch.testing.assert_close(out.logits[i, :steps], alone.logits[0], rtol=0, atol=1e-5)
            # A recurrent state is (layers, batch, units): each item's row is its own.
            for batched, single in zip(out.state, alone.state, strict=True):
                torch.testing.assert_close(batched[:, i], single[:, 0], rtol=0, atol=1e-5)
    for final, initial in zip(out.state, model.initial_state(len(lengths)), strict=True):
        assert torch.equal(final[:, -1], initial[:, -1])  # an empty item keeps its initial state


@pytest.mark.parametrize("architecture", architectures())
def test_config_round_trip_rebuilds_the_same_model(architecture: str) -> None:
    model = tiny_model(architecture, dropout=0.25)
    stored = json.loads(json.dumps(model_config_to_dict(model.config)))
    assert stored["architecture"] == architecture
    config = model_config_from_dict(stored)
    assert config == model.config
    rebuilt = build_model(config)
    assert isinstance(rebuilt, AcousticModel)
    rebuilt.load_state_dict(model.state_dict())
    features = torch.randn(2, 23, model.featurizer.n_features)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(features).logits, model(features).logits)
    modules = dict(model.named_modules())
    assert all(name in modules for name in model.transfer_layers)


@pytest.mark.parametrize("architecture", architectures())
def test_mixed_precision_runs_and_every_parameter_learns(architecture: str) -> None:
    """What AMP does on a GPU, in bfloat16 on the CPU; DDP also needs a gradient for every parameter."""
    model = tiny_model(architecture, dropout=0.1).train()
    waveforms = torch.randn(3, 16_000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, lengths = model.featurizer(waveforms, torch.tensor([16_000, 12_000, 5_000]))
        out = model(features, lengths)
    assert features.dtype == torch.float32 and out.logits.dtype == torch.bfloat16
    out.logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_new_model_config_and_transfer_layers() -> None:
    config = new_model_config("deepspeech", 29, n_hidden=64, dropout=0.4)
    assert config == DeepSpeechConfig(n_outputs=29, n_hidden=64, dropout=0.4)
    with pytest.raises(DsitaError):
        new_model_config("deepspeech", 29, d_model=64)
    model = build_model(config)
    assert model.transfer_layers == ("layer_2", "layer_3", "lstm", "layer_5", "layer_6")
    modules = dict(model.named_children())
    assert all(name in modules for name in model.transfer_layers)


@pytest.mark.parametrize(
    "data",
    [
        {"n_outputs": 9},
        {"architecture": "transformer", "n_outputs": 9},
        {"architecture": "conformer", "n_outputs": 9, "d_model": 100, "n_heads": 4},
        {"architecture": "deepspeech", "n_outputs": 9, "n_layers": 4},
        {"architecture": "deepspeech"},
        {"architecture": "deepspeech", "n_outputs": 9, "dropout": 1.5},
    ],
)
def test_bad_stored_configs_are_user_errors(data: dict[str, object]) -> None:
    with pytest.raises(DsitaError):
        model_config_from_dict(data)


def test_featurizer_feeds_the_model() -> None:
    model = tiny()
    waveforms = torch.randn(2, 6000) * 0.1
    features, lengths = model.featurizer(waveforms, torch.tensor([6000, 4000]))
    assert features.shape[-1] == model.featurizer.n_features == model.config.n_input == N_INPUT
    out = model(features, lengths)
    assert out.logits.shape == (2, 18, 6)
    assert out.lengths.tolist() == [18, 11]


def test_ctc_training_steps_reduce_the_loss() -> None:
    model = tiny(n_hidden=32, n_outputs=6, dropout=0.05).train()
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 25, N_INPUT, generator=generator)
    feature_lengths = torch.tensor([25, 20])
    targets = torch.tensor([[0, 1, 2, 3, 1], [4, 2, 2, 0, 0]])  # labels < blank (5)
    target_lengths = torch.tensor([5, 3])
    ctc = torch.nn.CTCLoss(blank=model.blank, zero_infinity=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = model(features, feature_lengths)
        log_probs = out.logits.log_softmax(-1).transpose(0, 1)  # CTCLoss wants (T, B, C)
        loss = ctc(log_probs, targets, out.lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)
@pytest.mark.parametrize("architecture", architectures())
def test_cuda_matches_cpu(architecture: str) -> None:
    model = tiny_model(architecture)
    waveforms = torch.randn(3, 9_000) * 0.1
    lengths = torch.tensor([9_000, 6_000, 2_000])
    with torch.no_grad():
        expected = model(*model.featurizer(waveforms, lengths))
        gpu = model.cuda()
        features, feature_lengths = gpu.featurizer(waveforms.cuda(), lengths.cuda())
        assert features.is_cuda
        got = gpu(features, feature_lengths)
    torch.testing.assert_close(got.logits.cpu(), expected.logits, rtol=1e-3, atol=1e-3)
    assert got.lengths.tolist() == expected.lengths.tolist()
