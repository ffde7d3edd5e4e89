"""ONNX export of an acoustic model for inference, in fp32 and int8.

fp32 uses torch's TorchScript exporter (`dynamo=False`): it keeps the batch and time axes dynamic, where
the dynamo exporter froze the frame count. Two graph shapes, as the model's config declares (`GRAPH`):
- "streaming" (DeepSpeech): the model's plain path (every step valid) with its state as inputs and outputs,
  as DeepSpeech's exported graphs had, so a caller can stream chunk by chunk (`StreamingGraph`);
- "segment" (the conformer): padded features and their lengths in, logits and their lengths out, over whole
  segments (`SegmentGraph`).
int8 is onnxruntime's dynamic quantization (weights int8, activations quantized on the fly) of the matrix
products and the LSTM, after onnxruntime's pre-processing step (shape inference and graph cleanup); a dense
input layer on DeepSpeech's MFCCs keeps int8 weights but fp32 activations (see
`_int8_weights_fp32_compute`).

Every written graph passes `onnx.checker`, carries the release metadata in `metadata_props`, and the fp32
graph is checked against the torch model on random input before it is accepted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic
from torch import Tensor, nn

from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.inference.model import onnx_session
from dsita.inference.package import (
    INPUT,
    LENGTHS_IN,
    LENGTHS_OUT,
    LOGITS,
    STATE_IN_PREFIX,
    STATE_OUT_PREFIX,
    metadata_props,
)
from dsita.model.base import AcousticModel

_ONNXRUNTIME_DIR = str(Path(onnxruntime.__file__).parent)


@dataclass(frozen=True)
class ExportOptions:
    """How to export: the ONNX opset, int8 scale granularity, the traced example's size, and the
    largest logit difference the fp32 check accepts.
    """

    opset: int = 17
    per_channel: bool = False  # per-output-channel int8 scales; per-tensor measured as accurate and smaller
    example_batch: int = 2  # the traced example; batch and time stay dynamic in the graph
    example_steps: int = 16
    tolerance: float = 1e-4  # largest |torch - onnxruntime| logit difference an fp32 export may have


class StreamingGraph(nn.Module):
    """(features, previous_state_<name>...) -> (logits, new_state_<name>...), each state tensor batch first,
    named by the model's `state_names` (DeepSpeech: c and h, (batch, n_hidden) each, as its own graphs)."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model
        names = model.state_names
        self.input_names = (INPUT, *(f"{STATE_IN_PREFIX}{name}" for name in names))
        self.output_names = (LOGITS, *(f"{STATE_OUT_PREFIX}{name}" for name in names))
        self.dynamic_axes = {
            INPUT: {0: "batch", 1: "time"},
            LOGITS: {0: "batch", 1: "time"},
            **{name: {0: "batch"} for name in (*self.input_names[1:], *self.output_names[1:])},
        }

    def forward(self, features: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """Logits of `features` from the given state tensors, and the state after them, as tensors."""
        output = self.model(features, None, self.model.import_state(state))
        return (output.logits, *self.model.export_state(output.state))

    def example(self, batch: int, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Random features at MFCC scale and a non-zero state."""
        width = self.model.featurizer.n_features
        features = (rng.standard_normal((batch, steps, width)) * 5).astype(np.float32)
        shapes = [tuple(x.shape) for x in self.model.export_state(self.model.initial_state(batch))]
        return (features, *((rng.standard_normal(shape) * 0.5).astype(np.float32) for shape in shapes))


class SegmentGraph(nn.Module):
    """(features, input_lengths) -> (logits, output_lengths) for a model without streaming state."""

    input_names = (INPUT, LENGTHS_IN)
    output_names = (LOGITS, LENGTHS_OUT)
    dynamic_axes: ClassVar[dict[str, dict[int, str]]] = {
        INPUT: {0: "batch", 1: "time"},
        LENGTHS_IN: {0: "batch"},
        LOGITS: {0: "batch", 1: "steps"},
        LENGTHS_OUT: {0: "batch"},
    }

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Logits of a padded batch and each item's number of valid output steps."""
        output = self.model(features, lengths)
        return output.logits, output.lengths

    def example(self, batch: int, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Normalised-scale features, zero past each item's length; the first item is unpadded."""
        lengths = np.linspace(steps, max(steps // 4, 1), batch).astype(np.int64)
        features = rng.standard_normal((batch, steps, self.model.featurizer.n_features)).astype(np.float32)
        features *= np.arange(steps)[None, :, None] < lengths[:, None, None]
        return features, lengths


def onnx_graph(model: AcousticModel) -> StreamingGraph | SegmentGraph:
    """The graph the model's config declares: streaming with its state, or whole segments."""
    if model.config.GRAPH == "streaming":
        return StreamingGraph(model).eval()
    return SegmentGraph(model).eval()


def export_fp32(
    model: AcousticModel, path: Path, metadata: dict[str, object], options: ExportOptions = ExportOptions()
) -> float:
    """Write the fp32 graph to `path`; returns its largest output difference from torch on random input."""
    graph = onnx_graph(model)
    example = graph.example(options.example_batch, options.example_steps, np.random.default_rng(0))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer notes the empty-input branch it cannot record; the exported graph never takes it.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            tuple(torch.from_numpy(x) for x in example),
            buffer,  # type: ignore[arg-type]  # typed as a path; the TorchScript exporter takes a file too
            dynamo=False,
            opset_version=options.opset,
            input_names=list(graph.input_names),
            output_names=list(graph.output_names),
            dynamic_axes=graph.dynamic_axes,
        )
    _save(onnx.load_from_string(buffer.getvalue()), path, {**metadata, "precision": "fp32"})
    error = parity_error(graph, path)
    if not error <= options.tolerance:
        raise DsitaError(f"{path}: ONNX logits differ from torch by {error:.2e} (> {options.tolerance:g})")
    return error


def quantize_int8(
    fp32_path: Path, int8_path: Path, metadata: dict[str, object], options: ExportOptions = ExportOptions()
) -> None:
    """Dynamic int8 quantization of the MatMuls and the LSTM of an fp32 graph written by `export_fp32`; every
    dense weight matrix is stored in int8 (the conformer's convolutions stay fp32)."""
    with tempfile.TemporaryDirectory(dir=int8_path.parent, prefix=".quantize-") as tmp, _quiet_quantizer():
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "quantized.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        input_layer = _input_layer(onnx.load(prepared))
        quantize_dynamic(
            prepared,
            quantized,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm", "LSTM"],
            per_channel=options.per_channel,
            nodes_to_exclude=[input_layer.name] if input_layer else [],
        )
        model = onnx.load(quantized)
        if input_layer:
            _int8_weights_fp32_compute(model, input_layer.name)
        _save(model, int8_path, {**metadata, "precision": "int8"})


class _QuantizerChatter(logging.Filter):
    """Drops the INFO and DEBUG records onnxruntime's quantizer logs through the root logger itself
    (`logging.info`: one "Quantization parameters for tensor ... not specified" per tensor); its warnings and
    errors, and every other module's records, pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(_ONNXRUNTIME_DIR)


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """No progress chatter from onnxruntime's quantization in the console or the logs while the block runs."""
    root, named = logging.getLogger(), logging.getLogger("onnxruntime")  # shape inference logs to the latter
    chatter, level = _QuantizerChatter(), named.level
    root.addFilter(chatter)
    named.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeFilter(chatter)
        named.setLevel(level)


def _input_layer(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The MatMul that reads the features directly (DeepSpeech's layer_1), if there is one."""
    return next((n for n in model.graph.node if n.op_type == "MatMul" and n.input[0] == INPUT), None)


def _int8_weights_fp32_compute(model: onnx.ModelProto, node_name: str) -> None:
    """Store a MatMul's weight as int8 (one scale per output column) behind a DequantizeLinear, so it takes
    no more room than a quantized layer's while the MatMul still runs in fp32.

    Dynamic quantization scales a layer's input per tensor; the MFCCs' coefficients span ranges two orders
    of magnitude apart (c0 reaches ~250 in silence), so quantizing the input layer's activations loses the
    small coefficients. On the small test model this halves the int8 graph's mean logit error (0.064 to
    0.033) for 0.1% more bytes.
    """
    node = next(n for n in model.graph.node if n.name == node_name)
    initializers = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(initializers[node.input[1]])  # (inputs, outputs)
    scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127).astype(np.float32)
    quantized = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
    name = node.input[1]
    model.graph.initializer.remove(initializers[name])
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(quantized, f"{name}_int8"),
            numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros_like(quantized[0]), f"{name}_zero_point"),
        ]
    )
    dequantize = helper.make_node(
        "DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"], [name], axis=1
    )
    model.graph.node.insert(0, dequantize)


def _save(model: onnx.ModelProto, path: Path, metadata: dict[str, object]) -> None:
    del model.metadata_props[:]
    for key, value in metadata_props(metadata).items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "dsita"
    onnx.checker.check_model(model, full_check=True)
    with atomic_write(path, "wb") as f:
        f.write(model.SerializeToString())


def parity_error(graph: StreamingGraph | SegmentGraph, path: Path, batch: int = 3, steps: int = 37) -> float:
    """Largest |difference| between torch and onnxruntime outputs (logits, and the state or the lengths) on
    random input: from a non-zero state, or with padded items.

    The batch and step counts differ from the traced example's, so a frozen axis would fail here.
    """
    inputs = graph.example(batch, steps, np.random.default_rng(1))
    with torch.no_grad():
        expected = graph(*(torch.from_numpy(x) for x in inputs))
    got = onnx_session(path).run(None, dict(zip(graph.input_names, inputs, strict=True)))
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
