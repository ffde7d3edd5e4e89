"""Acoustic models behind one seam (`AcousticModel`), their featurizers, and the architecture registry."""

from dsita.model.base import (
    AcousticModel,
    AcousticOutput,
    Featurizer,
    ModelConfig,
    State,
    architectures,
    build_model,
    count_parameters,
    model_config_class,
    model_config_from_dict,
    model_config_to_dict,
    new_model_config,
    register_architecture,
)
from dsita.model.conformer import Conformer, ConformerConfig
from dsita.model.deepspeech import DeepSpeech, DeepSpeechConfig, clipped_relu
from dsita.model.features import ContextMfcc, LogMel, Mfcc, context_windows, n_frames

__all__ = [
    "AcousticModel",
    "AcousticOutput",
    "Conformer",
    "ConformerConfig",
    "ContextMfcc",
    "DeepSpeech",
    "DeepSpeechConfig",
    "Featurizer",
    "LogMel",
    "Mfcc",
    "ModelConfig",
    "State",
    "architectures",
    "build_model",
    "clipped_relu",
    "context_windows",
    "count_parameters",
    "model_config_class",
    "model_config_from_dict",
    "model_config_to_dict",
    "n_frames",
    "new_model_config",
    "register_architecture",
]
