"""The DeepSpeech 0.9 acoustic model (`create_model` in DeepSpeech's train.py), in PyTorch.

494 inputs a step -> 3 dense layers -> one unidirectional LSTM -> 1 dense layer -> logits over the
alphabet + blank (blank last). Dense layers use a ReLU clipped at 20 followed by dropout; the LSTM has
no dropout, as in 0.9.

Differences from the TensorFlow original that do not change what the network computes:
- torch's LSTM has two bias vectors (`bias_ih_l0`, `bias_hh_l0`) where TF's fused cell has one, so there
  are 4 * n_hidden more (redundant, zero-initialised) parameters; gate order is torch's (i, f, g, o).
- DeepSpeech's dropout had a rate per layer (all defaulting to `--dropout_rate`); here one rate.
- DeepSpeech's `--layer_norm` option (off by default) is not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dsita.audio import MFCC_FEATURES, N_CONTEXT, N_MFCC, SAMPLE_RATE, STEP_SAMPLES
from dsita.model.base import (
    AcousticModel,
    AcousticOutput,
    ModelConfig,
    State,
    host_to_device,
    register_architecture,
)
from dsita.model.features import ContextMfcc


@dataclass(frozen=True)
class DeepSpeechConfig(ModelConfig):
    """DeepSpeech 0.9's sizes: hidden width, dropout, ReLU clip, MFCCs and context frames."""

    ARCHITECTURE: ClassVar[str] = "deepspeech"
    FEATURES: ClassVar[str] = MFCC_FEATURES
    OUTPUT_STEP_SECONDS: ClassVar[float] = STEP_SAMPLES / SAMPLE_RATE  # one logit per 20 ms MFCC frame
    GRAPH: ClassVar[str] = "streaming"
    OPTION_FIELDS: ClassVar[tuple[str, ...]] = ("n_hidden", "dropout")
    SIZE_FIELDS: ClassVar[tuple[str, ...]] = ("n_hidden",)

    n_hidden: int = 2048  # DeepSpeech 0.9's --n_hidden
    dropout: float = 0.0  # training passes its recipe's rate (DROPOUT); 0 for inference and conversion
    relu_clip: float = 20.0
    n_mfcc: int = N_MFCC
    n_context: int = N_CONTEXT

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_hidden < 1:
            raise ValueError(f"n_hidden must be positive, got {self.n_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.relu_clip <= 0:
            raise ValueError(f"relu_clip must be positive, got {self.relu_clip}")
        if self.n_mfcc < 1 or self.n_context < 0:
            raise ValueError(f"need n_mfcc >= 1 and n_context >= 0, got {self.n_mfcc}, {self.n_context}")

    @property
    def n_input(self) -> int:
        """Features per step: (2 n_context + 1) n_mfcc, 494 by default."""
        return (2 * self.n_context + 1) * self.n_mfcc

    def describe(self) -> str:
        """The model in a few words, for the model card."""
        return f"a DeepSpeech 0.9 acoustic model ({self.n_hidden} hidden units)"


def clipped_relu(x: Tensor, clip: float) -> Tensor:
    """min(max(x, 0), clip): DeepSpeech's `tf.minimum(tf.nn.relu(x), relu_clip)`."""
    return torch.clamp(x, 0.0, clip)


@register_architecture
class DeepSpeech(AcousticModel):
    """DeepSpeech 0.9's network over context-stacked MFCCs, with the LSTM state for streaming."""

    config_class = DeepSpeechConfig
    transfer_layers = ("layer_2", "layer_3", "lstm", "layer_5", "layer_6")  # 0.9 never dropped layer_1
    state_names = ("c", "h")  # DeepSpeech's graph: previous_state_c, previous_state_h, each (batch, n_hidden)
    config: DeepSpeechConfig

    def __init__(self, config: DeepSpeechConfig) -> None:
        super().__init__(config)
        hidden = config.n_hidden
        self.featurizer = ContextMfcc(config.n_mfcc, config.n_context)
        self.layer_1 = nn.Linear(config.n_input, hidden)
        self.layer_2 = nn.Linear(hidden, hidden)
        self.layer_3 = nn.Linear(hidden, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
        self.layer_5 = nn.Linear(hidden, hidden)
        self.layer_6 = nn.Linear(hidden, config.n_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DeepSpeech's initialisation: Glorot-uniform weights, zero biases (so a forget-gate bias of 0)."""
        for layer in (self.layer_1, self.layer_2, self.layer_3, self.layer_5, self.layer_6):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        # TF's fused LSTM cell has one kernel of shape (n_input + n_hidden, 4 n_hidden) drawn from Glorot-
        # uniform as a whole; torch splits it into weight_ih and weight_hh, so both use that kernel's bound
        # rather than the (larger) per-matrix bounds xavier_uniform_ would give each.
        hidden = self.lstm.hidden_size
        bound = math.sqrt(6.0 / (self.lstm.input_size + hidden + 4 * hidden))
        for name, parameter in self.lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.uniform_(parameter, -bound, bound)
            else:
                nn.init.zeros_(parameter)

    def _dense(self, layer: nn.Linear, x: Tensor) -> Tensor:
        x = clipped_relu(layer(x), self.config.relu_clip)
        return F.dropout(x, self.config.dropout, self.training)

    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> State:
        """Zero LSTM state as torch's (h, c), each (1, batch_size, n_hidden)."""
        shape = (1, batch_size, self.config.n_hidden)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def output_lengths(self, feature_lengths: Tensor) -> Tensor:
        """One output step per feature frame: the lengths unchanged."""
        return feature_lengths

    def export_state(self, state: State) -> tuple[Tensor, ...]:
        """torch's (h, c) state as the graph's (c, h), each (batch, n_hidden)."""
        h, c = state  # torch's (h, c), each (1, batch, n_hidden)
        return c.squeeze(0), h.squeeze(0)

    def import_state(self, tensors: tuple[Tensor, ...]) -> State:
        """The graph's (c, h), each (batch, n_hidden), as torch's (h, c) state."""
        c, h = tensors
        return h.unsqueeze(0), c.unsqueeze(0)

    def forward(
        self, features: Tensor, feature_lengths: Tensor | None = None, state: State | None = None
    ) -> AcousticOutput:
        """Logits of (B, T, n_input) features from `state`, and the LSTM state after each item's
        last valid step.

        With lengths, the LSTM stops at each item's length (packed); an empty chunk returns the state
        unchanged.
        """
        batch, steps = features.shape[:2]
        h0, c0 = state if state is not None else self.initial_state(batch, features.device, features.dtype)
        if feature_lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=features.device)
        else:
            lengths = host_to_device(feature_lengths.long(), features.device)  # CPU lengths from training
        if steps == 0:  # an empty streaming chunk: nothing to run, state unchanged
            return AcousticOutput(features.new_zeros(batch, 0, self.n_outputs), lengths, (h0, c0))

        x = self._dense(self.layer_1, features)
        x = self._dense(self.layer_2, x)
        x = self._dense(self.layer_3, x)
        if feature_lengths is None:
            # The plain path (every step valid) is the one streaming inference and ONNX export use.
            x, (h, c) = self._lstm(x.float(), (h0, c0))
        else:
            x, (h, c) = self._packed_lstm(x, feature_lengths, h0, c0)
        x = self._dense(self.layer_5, x)
        return AcousticOutput(self.layer_6(x), self.output_lengths(lengths), (h, c))

    def _lstm(self, x: Any, state: tuple[Tensor, Tensor]) -> tuple[Any, tuple[Tensor, Tensor]]:
        """The LSTM on float32 input (a tensor or a packed sequence), whatever autocast chose for the dense
        layers: cuDNN's RNN under autocast runs in fp16, which bf16 training does not loss-scale; fp32 (TF32
        on tensor cores) is safe, and the LSTM's products are a small share of the model's work."""
        h0, c0 = state
        with torch.autocast(h0.device.type, enabled=False):
            output: tuple[Any, tuple[Tensor, Tensor]] = self.lstm(x, (h0.float(), c0.float()))
            return output

    def _packed_lstm(
        self, x: Tensor, lengths: Tensor, h0: Tensor, c0: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """LSTM that stops at each item's length, like TF's fused cell with `sequence_length`.

        Packing keeps padding out of the returned state (needed to carry state across chunks) and skips
        the padded work on cuDNN. Packed sequences are awkward to export to ONNX, hence the unpacked path
        for export; masking the state update step by step would export too, but needs a loop over time.
        LSTM outputs past an item's length are zero, as TF's were.
        """
        # Packing reads the lengths on the CPU: pass them there (the trainer does) to spare a device sync.
        cpu_lengths = lengths.to("cpu", torch.long)
        empty = host_to_device(cpu_lengths == 0, x.device)  # packing needs >= 1 step: one padded, undone
        packed = pack_padded_sequence(
            x.float(), cpu_lengths.clamp_min(1), batch_first=True, enforce_sorted=False
        )
        out, (h, c) = self._lstm(packed, (h0, c0))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        out = out.masked_fill(empty.view(-1, 1, 1), 0.0)
        unchanged = empty.view(1, -1, 1)
        return out, (torch.where(unchanged, h0, h), torch.where(unchanged, c0, c))
