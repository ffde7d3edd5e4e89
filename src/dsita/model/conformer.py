"""A Conformer-CTC acoustic model (Gulati et al., 2020) behind the same seam as DeepSpeech.

80 normalised log-mels every 10 ms -> two 3x3 stride-2 convolutions (x4 fewer steps, 40 ms each) -> N
conformer blocks (half feed-forward, self-attention, convolution, half feed-forward, LayerNorm) -> logits
over the alphabet + blank (blank last), trained with the same CTC loss.

Choices, where the paper leaves room or its choice would not fit here:
- Positions are rotary embeddings (RoPE) on queries and keys rather than Transformer-XL relative encodings:
  attention scores then depend on relative offsets only, the angles are computed from the sequence length
  in the graph (the ONNX time axis stays dynamic, with no maximum length), and nothing else is learnt.
- The convolution module normalises with LayerNorm rather than BatchNorm: batch statistics would mix items
  and their padding, and would differ between training batches and one-segment inference.
- Padding never reaches an item's valid steps: the subsampling zeroes the features past the item's length
  and the first convolution's output past its halved length before each convolution reads them, attention
  masks padded keys, and the depthwise convolution reads zeros past the item's end. An item's logits are
  the same whatever it is batched with.
- No streaming state: each call sees whole utterances (inference runs whole VAD segments).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsita.audio import LOG_MEL_FEATURES, LOG_MEL_STEP_SAMPLES, N_LOG_MEL, SAMPLE_RATE
from dsita.model.base import (
    AcousticModel,
    AcousticOutput,
    ModelConfig,
    State,
    host_to_device,
    register_architecture,
)
from dsita.model.features import LogMel

ROPE_BASE = 10000.0  # the angle of dimension pair i advances by ROPE_BASE ** (-i / pairs) per step


@dataclass(frozen=True)
class ConformerConfig(ModelConfig):
    """A conformer's sizes, named by presets (small, medium, tiny) or set field by field."""

    ARCHITECTURE: ClassVar[str] = "conformer"
    FEATURES: ClassVar[str] = LOG_MEL_FEATURES
    OUTPUT_STEP_SECONDS: ClassVar[float] = 4 * LOG_MEL_STEP_SAMPLES / SAMPLE_RATE  # x4 subsampling: 40 ms
    GRAPH: ClassVar[str] = "segment"
    LR_SCHEDULE: ClassVar[str] = "warmup-decay"  # as the Conformer and NeMo recipes
    # "small" is the field defaults (about Conformer-S's width at half its depth, with 2 heads of 72 rather
    # than 4 of 36: fused 16-bit attention kernels need a head width that is a multiple of 8); "medium" is
    # Conformer-M's shape; "tiny" is FAST_TRAIN's smoke-test model.
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "small": {},
        "medium": {
            "d_model": 256,
            "n_layers": 16,
            "n_heads": 4,
            "conv_kernel": 31,
            "subsampling_channels": 256,
        },
        "tiny": {"d_model": 48, "n_layers": 2, "n_heads": 2, "subsampling_channels": 32},
    }
    OPTION_FIELDS: ClassVar[tuple[str, ...]] = ("n_layers", "d_model", "n_heads")
    SIZE_FIELDS: ClassVar[tuple[str, ...]] = (
        "n_mels", "d_model", "n_layers", "n_heads", "ff_mult", "conv_kernel", "subsampling_channels",
    )  # fmt: skip

    n_mels: int = N_LOG_MEL
    d_model: int = 144
    n_layers: int = 8
    n_heads: int = 2
    ff_mult: int = 4  # feed-forward width as a multiple of d_model
    conv_kernel: int = 15  # depthwise convolution, in 40 ms steps
    subsampling_channels: int = 144
    dropout: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = ("n_mels", "d_model", "n_layers", "n_heads", "ff_mult", "subsampling_channels")
        if bad := [f"{name}={getattr(self, name)}" for name in sizes if getattr(self, name) < 1]:
            raise ValueError(f"sizes must be positive, got {', '.join(bad)}")
        if self.d_model % (2 * self.n_heads):
            # Rotary embeddings turn each head's dimensions in pairs.
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of 2 x n_heads ({self.n_heads})")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd (centred on its step), got {self.conv_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def describe(self) -> str:
        """The model in a few words, for the model card: blocks, width, heads and kernel."""
        return (
            f"a Conformer-CTC acoustic model ({self.n_layers} blocks of width {self.d_model}, {self.n_heads} "
            f"attention heads, convolution kernel {self.conv_kernel})"
        )


def _halve(lengths: Tensor) -> Tensor:
    """Steps out of a 3-wide, stride-2 convolution padded by 1 on each side: ceil(n / 2)."""
    return (lengths + 1) // 2


def _steps_below(lengths: Tensor, steps: int) -> Tensor:
    """(B, steps) bool: True where the step is before the item's length."""
    return torch.arange(steps, device=lengths.device) < lengths[:, None]


class Subsampling(nn.Module):
    """(B, T, n_mels) -> (B, ceil(T / 4), d_model): two 3x3 stride-2 convolutions with ReLU, then a linear
    projection of each step's channels x frequencies."""

    def __init__(self, n_mels: int, channels: int, d_model: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv_2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        frequencies = (n_mels + 3) // 4
        self.projection = nn.Linear(channels * frequencies, d_model)

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        """(B, T, n_mels) features and (B,) lengths -> (B, ceil(T / 4), d_model); padding never
        reaches a valid step.
        """
        # The first convolution's last valid step can read one frame past the item's end: make it zero
        # whatever the caller padded with, as it is for the item alone.
        features = features * _steps_below(lengths, features.shape[1]).unsqueeze(-1).to(features.dtype)
        x = F.relu(self.conv_1(features.unsqueeze(1)))  # (B, C, T/2, F/2)
        # Past an item's end the first convolution saw only zeros and holds its bias, which the second
        # convolution's last valid step would read.
        x = x * _steps_below(_halve(lengths), x.shape[2])[:, None, :, None].to(x.dtype)
        x = F.relu(self.conv_2(x))  # (B, C, T/4, F/4)
        batch, channels, steps, frequencies = x.shape
        flattened = x.permute(0, 2, 1, 3).reshape(batch, steps, channels * frequencies)
        projected: Tensor = self.projection(flattened)
        return projected


class FeedForward(nn.Module):
    """Pre-norm feed-forward module: LayerNorm, expansion by `ff_mult`, SiLU, projection, with dropout."""

    def __init__(self, d_model: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, ff_mult * d_model)
        self.down = nn.Linear(ff_mult * d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_model), the residual left to the caller."""
        x = F.dropout(F.silu(self.up(self.norm(x))), self.dropout, self.training)
        return F.dropout(self.down(x), self.dropout, self.training)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Turn each pair (x[i], x[i + half]) of the last dimension by the step's angle for pair i."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention with rotary positions and a key padding mask."""

    # Registered buffers, declared for the type checker (nn.Module's __getattr__ returns Tensor | Module).
    frequencies: Tensor

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout
        pairs = d_model // n_heads // 2
        frequencies = ROPE_BASE ** (-torch.arange(pairs, dtype=torch.float32) / pairs)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        """(B, T, d_model) and (B, 1, 1, T) bool, True for keys to attend to -> (B, T, d_model)."""
        batch, steps, width = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, steps, 3, self.n_heads, width // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head width)
        angles = torch.arange(steps, device=x.device, dtype=torch.float32)[:, None] * self.frequencies
        cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            _rotate(q, cos, sin), _rotate(k, cos, sin), v, attn_mask=key_mask, dropout_p=dropout
        )
        y = y.transpose(1, 2).reshape(batch, steps, width)
        return F.dropout(self.out(y), self.dropout, self.training)


class ConvModule(nn.Module):
    """Pointwise expansion with GLU, depthwise convolution in time, LayerNorm, SiLU, pointwise projection."""

    def __init__(self, d_model: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """(B, T, d_model) and (B, T, 1) bool, True on each item's valid steps."""
        x = F.glu(self.pointwise_in(self.norm(x)), dim=-1).masked_fill(~valid, 0.0)
        x = self.depthwise(x.transpose(1, 2)).transpose(1, 2)
        x = self.pointwise_out(F.silu(self.depthwise_norm(x)))
        return F.dropout(x, self.dropout, self.training)


class ConformerBlock(nn.Module):
    """One conformer block: half feed-forward, self-attention, convolution, half feed-forward,
    each residual, then LayerNorm.
    """

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__()
        d_model, dropout = config.d_model, config.dropout
        self.feed_forward_1 = FeedForward(d_model, config.ff_mult, dropout)
        self.attention = SelfAttention(d_model, config.n_heads, dropout)
        self.conv = ConvModule(d_model, config.conv_kernel, dropout)
        self.feed_forward_2 = FeedForward(d_model, config.ff_mult, dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, valid: Tensor, key_mask: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_model); `valid` (B, T, 1) marks valid steps, `key_mask`
        (B, 1, 1, T) the keys attention may read.
        """
        x = x + 0.5 * self.feed_forward_1(x)  # the macaron pair of half-step feed-forward modules
        x = x + self.attention(x, key_mask)
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.feed_forward_2(x)
        normed: Tensor = self.norm(x)
        return normed


@register_architecture
class Conformer(AcousticModel):
    """Conformer-CTC over log-mels: subsampling by 4, conformer blocks, a linear head (see the module)."""

    config_class = ConformerConfig
    config: ConformerConfig

    def __init__(self, config: ConformerConfig) -> None:
        super().__init__(config)
        self.featurizer = LogMel(config.n_mels)
        self.subsampling = Subsampling(config.n_mels, config.subsampling_channels, config.d_model)
        self.blocks = nn.ModuleList(ConformerBlock(config) for _ in range(config.n_layers))
        self.head = nn.Linear(config.d_model, config.n_outputs)
        self.transfer_layers = ("subsampling", *(f"blocks.{i}" for i in range(config.n_layers)), "head")

    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> State:
        """The empty state: a conformer carries nothing between calls."""
        return ()

    def output_lengths(self, feature_lengths: Tensor) -> Tensor:
        """Steps after the two stride-2 convolutions: ceil(ceil(n / 2) / 2)."""
        return _halve(_halve(feature_lengths))

    def forward(
        self, features: Tensor, feature_lengths: Tensor | None = None, state: State | None = None
    ) -> AcousticOutput:
        """Whole utterances: `state` is ignored and the returned state is empty."""
        batch, steps = features.shape[:2]
        if feature_lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=features.device)
        else:
            lengths = host_to_device(feature_lengths.long(), features.device)  # CPU lengths from training
        output_lengths = self.output_lengths(lengths)
        if steps == 0:  # the convolutions need at least one frame
            return AcousticOutput(features.new_zeros(batch, 0, self.n_outputs), output_lengths, ())
        x = self.subsampling(features, lengths)
        x = F.dropout(x, self.config.dropout, self.training)
        valid = _steps_below(output_lengths, x.shape[1])
        # An item with no valid step still attends to its first (padded) one: a row of scores that are all
        # masked would give NaN, and NaN times a zero weight is still NaN in the gradient.
        key_mask = _steps_below(output_lengths.clamp_min(1), x.shape[1])[:, None, None, :]
        for block in self.blocks:
            x = block(x, valid.unsqueeze(-1), key_mask)
        return AcousticOutput(self.head(x), output_lengths, ())
