"""dsita: DeepSpeech ITA, an Italian speech-to-text toolkit.

`dsita.load_model(path)` opens an exported model for transcription; it is imported on first use, so that
`import dsita` stays light and never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_model"]

if TYPE_CHECKING:
    from dsita.inference.model import load_model


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from dsita.inference.model import load_model

        return load_model
    raise AttributeError(f"module 'dsita' has no attribute {name!r}")
