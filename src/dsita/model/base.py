"""The seam between the trainer and any acoustic model: one interface, one config type, one factory.

The trainer, exporter and decoders only ever see `AcousticModel`, `Featurizer` and `ModelConfig`; the
architecture name stored in a checkpoint's config picks the class that rebuilds it (like whisper's
`checkpoint["dims"]`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from dsita.errors import DsitaError

# Recurrent or cache state carried between streaming chunks; its layout belongs to the architecture.
State = tuple[Tensor, ...]
GRAPHS = ("streaming", "segment")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's modules; subclasses add their own fields with defaults.

    `n_outputs` is the alphabet size + 1: the CTC blank is the LAST index, as in DeepSpeech.
    """

    ARCHITECTURE: ClassVar[str] = ""
    # The input features, by the names `dsita.audio` gives them (MFCC_FEATURES, LOG_MEL_FEATURES).
    FEATURES: ClassVar[str] = ""
    # Seconds of audio per output step (per logit frame): what word times, alignment and the model card use.
    OUTPUT_STEP_SECONDS: ClassVar[float] = 0.0
    # The exported graph: "streaming" carries the model's state between chunks (its `state_names`);
    # "segment" runs whole padded segments with their lengths and has no state.
    GRAPH: ClassVar[str] = "segment"
    # The learning rate schedule a run takes with LR_SCHEDULE=auto.
    LR_SCHEDULE: ClassVar[str] = "constant"
    # Named sizes (MODEL_SIZE): field values, the first preset being the default. An architecture without
    # presets (DeepSpeech) is sized by its option fields alone.
    PRESETS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # The fields training options may set (N_HIDDEN, CONFORMER_DIM, ...); the others keep the preset's value.
    OPTION_FIELDS: ClassVar[tuple[str, ...]] = ()
    # The fields that make the model what it is, as a resumed run must match and the model card reports.
    SIZE_FIELDS: ClassVar[tuple[str, ...]] = ()

    n_outputs: int

    def __post_init__(self) -> None:
        if self.GRAPH not in GRAPHS:
            raise ValueError(f"{type(self).__name__}.GRAPH must be one of {GRAPHS}, got {self.GRAPH!r}")
        if self.n_outputs < 2:
            raise ValueError(f"n_outputs must be at least 2 (one symbol and the blank), got {self.n_outputs}")

    @property
    def blank(self) -> int:
        """The CTC blank's index: the last output."""
        return self.n_outputs - 1

    def size(self) -> dict[str, Any]:
        """The architecture and its size fields: equal for two configs whose models can share a run."""
        return {"architecture": self.ARCHITECTURE, **{name: getattr(self, name) for name in self.SIZE_FIELDS}}

    def describe(self) -> str:
        """The model in a few words, for the model card."""
        sizes = ", ".join(f"{name} {getattr(self, name)}" for name in self.SIZE_FIELDS)
        return f"a {self.ARCHITECTURE} acoustic model ({sizes})"


class AcousticOutput(NamedTuple):
    """What `AcousticModel.forward` returns: logits, valid output steps, and the state after them."""

    logits: Tensor  # (B, T_out, n_outputs), batch-first, unnormalised
    lengths: Tensor  # (B,) valid output steps per item
    state: State  # state after each item's last valid step, to feed the next chunk


class Featurizer(nn.Module, ABC):
    """Turns a padded batch of 16 kHz waveforms into the model's input features, on the input's device."""

    n_features: int
    # Values per underlying frame: n_features, or less when each step stacks context frames (DeepSpeech's
    # 19 frames of 26 MFCCs). SpecAugment masks whole frames and coefficients with it.
    frame_size: int
    step_samples: int  # samples between consecutive feature frames

    @abstractmethod
    def frame_lengths(self, sample_lengths: Tensor) -> Tensor:
        """Valid feature frames for each item's number of samples."""

    @abstractmethod
    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, samples) waveforms and (B,) sample lengths -> (B, T, n_features) features and (B,) lengths.

        Frames past an item's length are zero, so padding never changes an item's features.
        """


class AcousticModel(nn.Module, ABC):
    """Features in, per-step logits over the alphabet + blank out, with streaming state."""

    config_class: ClassVar[type[ModelConfig]]
    # Submodule names (`layer_6`, `blocks.3`) that transfer learning may re-initialise, input side first:
    # DeepSpeech's `--drop_source_layers N` re-initialises the last N. A class attribute, or set per instance
    # when the count depends on the config.
    transfer_layers: tuple[str, ...]
    featurizer: Featurizer
    # A streaming model's state as the exported graph names it (`previous_state_<name>` in,
    # `new_state_<name>` out), each tensor batch first; see `export_state`.
    state_names: tuple[str, ...] = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = config

    @property
    def n_outputs(self) -> int:
        """Outputs per step: the alphabet's labels and the blank."""
        return self.config.n_outputs

    @property
    def blank(self) -> int:
        """The CTC blank's index: the last output."""
        return self.config.blank

    @abstractmethod
    def forward(
        self, features: Tensor, feature_lengths: Tensor | None = None, state: State | None = None
    ) -> AcousticOutput:
        """(B, T, n_features) features -> logits; `feature_lengths=None` means every step is valid.

        `state=None` starts from `initial_state`; passing the returned state with the next chunk gives
        the same logits as one call on the whole sequence.
        """

    @abstractmethod
    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> State:
        """The state before the first frame."""

    @abstractmethod
    def output_lengths(self, feature_lengths: Tensor) -> Tensor:
        """Valid output steps for each item's valid feature frames (CTC input lengths)."""

    def export_state(self, state: State) -> tuple[Tensor, ...]:
        """The state as the exported graph's tensors, in `state_names` order, batch first."""
        return tuple(state)

    def import_state(self, tensors: tuple[Tensor, ...]) -> State:
        """Inverse of `export_state`."""
        return tuple(tensors)


M = TypeVar("M", bound=type[AcousticModel])

_ARCHITECTURES: dict[str, type[AcousticModel]] = {}


def register_architecture(model_class: M) -> M:
    """Class decorator: make `build_model` and `model_config_from_dict` know this architecture."""
    name = model_class.config_class.ARCHITECTURE
    if not name:
        raise ValueError(f"{model_class.__name__}.config_class has no ARCHITECTURE name")
    if name in _ARCHITECTURES and _ARCHITECTURES[name] is not model_class:
        raise ValueError(f"architecture {name!r} is already registered by {_ARCHITECTURES[name].__name__}")
    _ARCHITECTURES[name] = model_class
    return model_class


def architectures() -> tuple[str, ...]:
    """The names of the registered architectures, sorted."""
    return tuple(sorted(_ARCHITECTURES))


def model_config_class(name: str) -> type[ModelConfig]:
    """The config class of a registered architecture."""
    return _model_class(name).config_class


def _model_class(name: str) -> type[AcousticModel]:
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(architectures()) or "none"
        raise DsitaError(f"unknown model architecture {name!r} (MODEL; known: {known})") from None


def build_model(config: ModelConfig) -> AcousticModel:
    """A freshly initialised model of the architecture `config` belongs to."""
    return _model_class(config.ARCHITECTURE)(config)


def new_model_config(
    architecture: str, n_outputs: int, preset: str | None = None, **fields: Any
) -> ModelConfig:
    """The named architecture's config with `n_outputs` (alphabet + blank): its preset's values (None: the
    first preset), then `fields`. `preset` is ignored by an architecture without presets."""
    presets = model_config_class(architecture).PRESETS
    values: Mapping[str, Any] = {}
    if presets:
        name = preset if preset is not None else next(iter(presets))
        if name not in presets:
            known = ", ".join(presets)
            raise DsitaError(f"unknown {architecture} size {name!r} (MODEL_SIZE; known: {known})")
        values = presets[name]
    return model_config_from_dict({"architecture": architecture, "n_outputs": n_outputs, **values, **fields})


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-friendly dict, with the architecture name, to store in checkpoints."""
    return {"architecture": config.ARCHITECTURE, **dataclasses.asdict(config)}


def model_config_from_dict(data: Mapping[str, Any]) -> ModelConfig:
    """Inverse of `model_config_to_dict`; unknown keys are an error rather than silently dropped."""
    fields = dict(data)
    if "architecture" not in fields:
        raise DsitaError("model config has no 'architecture' entry")
    config_class = _model_class(str(fields.pop("architecture"))).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    if unknown := sorted(set(fields) - known):
        raise DsitaError(f"model config for {config_class.ARCHITECTURE!r} has unknown fields: {unknown}")
    try:
        return config_class(**fields)
    except (TypeError, ValueError) as exc:
        raise DsitaError(f"invalid {config_class.ARCHITECTURE!r} model config: {exc}") from None


def host_to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """`tensor` on `device`, without making the host wait for the device: a copy from pageable CPU memory
    to a GPU first waits for every kernel queued before it, a copy from pinned memory does not (the caching
    host allocator keeps the pinned copy alive until the transfer is done)."""
    if tensor.device.type == "cpu" and device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (works on meta-device models)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
