"""Speech to text with an exported model, on onnxruntime and numpy only: nothing here imports torch.

`load_model`, `SpeechModel` and `InferenceOptions` are imported on first use from `dsita.inference.model`, so
that `dsita.inference.package` and the numpy features stay light to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["InferenceOptions", "SpeechModel", "load_model"]

if TYPE_CHECKING:
    from dsita.inference.model import InferenceOptions, SpeechModel, load_model


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dsita.inference import model

        return getattr(model, name)
    raise AttributeError(f"module 'dsita.inference' has no attribute {name!r}")
