"""int8 export keeps onnxruntime's quantizer chatter out of the console and the logs, and its warnings in."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime.quantization
import pytest

from dsita.export.onnx import export_fp32, quantize_int8
from dsita.training.checkpoint import load_trained_model

SMALL_MODEL = Path(__file__).parents[1] / "fixtures" / "small_model.pt"
QUANTIZER = str(Path(onnxruntime.quantization.__file__).parent / "onnx_quantizer.py")


def test_quantization_logs_no_per_tensor_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, alphabet = load_trained_model(SMALL_MODEL)
    metadata: dict[str, object] = {"alphabet": list(alphabet.labels)}
    export_fp32(model, tmp_path / "fp32.onnx", metadata)
    with caplog.at_level(logging.DEBUG):
        quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", metadata)
        # What the quantizer logs at WARNING and above still reaches the logs (here: as it would log it).
        record = logging.LogRecord("root", logging.WARNING, QUANTIZER, 1, "a real problem", None, None)
        logging.getLogger().handle(record)
    assert (tmp_path / "int8.onnx").stat().st_size > 0
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Quantization parameters" in m or "shape inference" in m], messages
    assert "a real problem" in messages
    # Outside the export, onnxruntime's records are left alone.
    with caplog.at_level(logging.INFO):
        logging.getLogger().handle(logging.LogRecord("root", logging.INFO, QUANTIZER, 1, "later", None, None))
    assert caplog.records[-1].getMessage() == "later"
