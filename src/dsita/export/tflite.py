"""DeepSpeech 0.9's inference graph as a TensorFlow Lite flatbuffer, written without TensorFlow.

`write_tflite` writes `output_graph.tflite` (schema v3, "TFL3") for the clients built on TFLite:
`deepspeech-tflite==0.9.3` (TFLite 2.3) and Coqui `stt==1.4.0` (TFLite 2.9), whose `tflitemodelstate.cc`
looks tensors up by name:

- inputs `input_node` (1, n_steps, 19, 26), `previous_state_c`, `previous_state_h` (1, H), `input_samples`
  (512,); outputs `logits` (n_steps, n_outputs) softmax probabilities (its second dimension is checked
  against the alphabet size), `new_state_c`, `new_state_h` (1, H), `mfccs` (1, 1, 26) and the `metadata_*`
  tensors (int32 (1,) and the serialised alphabet as a one-element string tensor);
- the client runs three execution plans: the operators above `mfccs`, the one operator that produces each
  metadata tensor (so each is the output of a single GATHER of a constant: a constant tensor with no
  producing operator would leave that plan empty), and every other operator for the acoustic model;
- the client zero-fills `input_node` past the valid steps of a final partial window and reads only the
  valid rows of `logits`; there is no `input_lengths` input (as in DeepSpeech's own TFLite export).

Operators: RESHAPE, the custom AudioSpectrogram and Mfcc ops that TFLite's BuiltinOpResolver registers
(options as flexbuffer maps), FULLY_CONNECTED (a fused ReLU, then MINIMUM 20: the clipped ReLU), the
builtin UNIDIRECTIONAL_SEQUENCE_LSTM (see `_lstm` for how its in-place state meets the client's state
tensors), SOFTMAX and GATHER. DeepSpeech's converter unrolled the LSTM into per-step FULLY_CONNECTED, ADD,
SPLIT, LOGISTIC, TANH and MUL operators instead; that form also loads in both clients, but ran 5-7 times
slower on a 2-core machine (the clients give TFLite 4 threads, and each small multi-threaded matrix
product then spin-waits) for the same transcripts.

Weights: by default every weight matrix but the input layer's (the dense layers' and the LSTM's) is int8, one
symmetric scale per matrix, which TFLite runs as "hybrid" kernels (int8 weights, float32 activations): the
dynamic-range quantization DeepSpeech's export used. At N_HIDDEN=2048 that file is 50.3 MB (the original's
46 MB; the float32 input layer is 4 MB of it), against 189.0 MB with `int8_weights=False`; its probabilities
stay within 0.05 of float32's on the sample (dsita's int8 ONNX graph: 0.16), and `stt` 1.4.0 ran it 4-5
times faster (its float32 matrix products take TFLite's portable kernels in that build).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from dsita.audio import (
    MEL_HIGH_HZ,
    MEL_LOW_HZ,
    N_CONTEXT,
    N_MEL,
    N_MFCC,
    SAMPLE_RATE,
    STEP_SAMPLES,
    WINDOW_SAMPLES,
)
from dsita.export.tf_graph import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_N_STEPS,
    check_deepspeech,
    graph_metadata,
)
from dsita.fileio import atomic_write
from dsita.model.base import AcousticModel
from dsita.text.alphabet import Alphabet

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # schema.fbs: Buffer.data (force_align: 16)

# TensorType
FLOAT32, INT32, STRING, INT8 = 0, 2, 5, 9
_TYPES = {np.dtype(np.float32): FLOAT32, np.dtype(np.int32): INT32}

# BuiltinOperator codes and the BuiltinOptions union's type of each operator's options table.
FULLY_CONNECTED, RESHAPE, SOFTMAX, CUSTOM, GATHER, UNIDIRECTIONAL_SEQUENCE_LSTM, MINIMUM = (
    9,
    22,
    25,
    32,
    36,
    44,
    57,
)
FULLY_CONNECTED_OPTIONS, SOFTMAX_OPTIONS, RESHAPE_OPTIONS, GATHER_OPTIONS = 8, 9, 17, 23
MAXIMUM_MINIMUM_OPTIONS, UNIDIRECTIONAL_SEQUENCE_LSTM_OPTIONS = 39, 71
ACTIVATION_NONE, ACTIVATION_RELU, ACTIVATION_TANH = 0, 1, 4


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    type: int
    buffer: int  # 0: no data (an activation)
    variable: bool = False
    scale: float | None = None  # an int8 tensor's quantization scale (zero point 0)


@dataclass
class _Operator:
    opcode: int  # index into operator codes
    inputs: list[int]
    outputs: list[int]
    options_type: int = 0
    options: tuple[tuple[str, int, object], ...] = ()  # (kind, slot, value) of the options table's fields
    custom_options: bytes | None = None


@dataclass
class TfliteGraph:
    """Tensors, constant buffers, operators and operator codes of one subgraph; methods return tensor ids."""

    tensors: list[_Tensor] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])  # buffer 0: the empty sentinel
    codes: list[tuple[int, str | None]] = field(default_factory=list)
    operators: list[_Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    int8_weights: bool = False  # store weight matrices as int8 (see `weight`)

    def tensor(self, name: str, shape: Sequence[int], type_: int = FLOAT32, variable: bool = False) -> int:
        """An activation tensor (no data); a `variable` one keeps its value between invocations."""
        self.tensors.append(_Tensor(name, tuple(shape), type_, 0, variable))
        return len(self.tensors) - 1

    def const(self, name: str, value: np.ndarray) -> int:
        """A constant tensor holding `value` (float32 or int32), little-endian."""
        array = np.asarray(value, value.dtype.newbyteorder("<"))
        self.buffers.append(array.tobytes())
        self.tensors.append(_Tensor(name, array.shape, _TYPES[array.dtype], len(self.buffers) - 1))
        return len(self.tensors) - 1

    def weight(self, name: str, value: np.ndarray) -> int:
        """A weight matrix: float32, or with `int8_weights` symmetric per-tensor int8 (scale = max |w| / 127,
        zero point 0), which FULLY_CONNECTED and UNIDIRECTIONAL_SEQUENCE_LSTM run as "hybrid" kernels: int8
        weights, float32 inputs and outputs (TFLite's dynamic-range quantization, DeepSpeech's export)."""
        if not self.int8_weights:
            return self.const(name, value)
        largest = float(np.abs(value).max())
        scale = largest / 127 if largest > 0 else 1.0
        quantized = np.clip(np.rint(value / scale), -127, 127).astype(np.int8)
        self.buffers.append(quantized.tobytes())
        self.tensors.append(_Tensor(name, quantized.shape, INT8, len(self.buffers) - 1, scale=scale))
        return len(self.tensors) - 1

    def const_string(self, name: str, value: bytes) -> int:
        """A (1,) string tensor: TFLite's layout is int32 count, count + 1 int32 offsets, the bytes."""
        self.buffers.append(struct.pack("<3i", 1, 12, 12 + len(value)) + value)
        self.tensors.append(_Tensor(name, (1,), STRING, len(self.buffers) - 1))
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options_type: int = 0,
        options: tuple[tuple[str, int, object], ...] = (),
        custom: str | None = None,
        custom_options: bytes | None = None,
    ) -> None:
        """Append an operator; `custom` names a custom op (code CUSTOM)."""
        key = (code, custom)
        if key not in self.codes:
            self.codes.append(key)
        self.operators.append(
            _Operator(
                self.codes.index(key), list(inputs), list(outputs), options_type, options, custom_options
            )
        )


def _fully_connected(
    g: TfliteGraph, x: int, weight: np.ndarray, bias: np.ndarray, name: str, rows: int, relu: bool
) -> int:
    """x @ weight.T + bias: weight (out, in), as TFLite's FULLY_CONNECTED and torch's Linear store it."""
    # The input layer keeps float32 weights: a hybrid kernel quantizes its input per row, and an MFCC row's
    # first coefficient (~10x the others) would leave the rest a few int8 steps (as dsita's int8 ONNX graph
    # keeps that layer's computation in float32).
    weights = g.const(f"{name}/weights", weight) if name == "layer_1" else g.weight(f"{name}/weights", weight)
    inputs = [x, weights, g.const(f"{name}/bias", bias)]
    out = g.tensor(name, (rows, weight.shape[0]))
    activation = ACTIVATION_RELU if relu else ACTIVATION_NONE
    g.op(FULLY_CONNECTED, inputs, [out], FULLY_CONNECTED_OPTIONS, (("int8", 0, activation),))
    return out


def _dense(
    g: TfliteGraph, layer: str, x: int, model_state: dict[str, np.ndarray], rows: int, relu: bool
) -> int:
    """DeepSpeech's `dense`: x W + b, then min(relu(.), 20) for the hidden layers."""
    out = _fully_connected(
        g, x, model_state[f"{layer}.weight"], model_state[f"{layer}.bias"], layer, rows, relu
    )
    if not relu:
        return out
    clipped = g.tensor(f"{layer}/Minimum", (rows, model_state[f"{layer}.weight"].shape[0]))
    g.op(
        MINIMUM,
        [out, g.const(f"{layer}/clip", np.array([20.0], np.float32))],
        [clipped],
        MAXIMUM_MINIMUM_OPTIONS,
    )
    return clipped


def _features(g: TfliteGraph) -> None:
    """input_samples (512,) -> mfccs (1, 1, 26): AudioSpectrogram and Mfcc on one window."""
    samples = g.tensor("input_samples", (WINDOW_SAMPLES,))
    g.inputs.append(samples)
    column = g.tensor("input_samples/column", (WINDOW_SAMPLES, 1))
    shape = g.const("input_samples/shape", np.array([WINDOW_SAMPLES, 1], np.int32))
    g.op(RESHAPE, [samples, shape], [column], RESHAPE_OPTIONS, (("ints", 0, [WINDOW_SAMPLES, 1]),))
    n_bins = WINDOW_SAMPLES // 2 + 1
    spectrogram = g.tensor("AudioSpectrogram", (1, 1, n_bins))
    options = {"window_size": WINDOW_SAMPLES, "stride": STEP_SAMPLES, "magnitude_squared": True}
    g.op(
        CUSTOM, [column], [spectrogram], custom="AudioSpectrogram", custom_options=flexbuffers.Dumps(options)
    )
    # TFLite's Mfcc kernel reads every option with AsInt64, so the frequencies are whole Hz.
    mfcc_options = {
        "upper_frequency_limit": int(MEL_HIGH_HZ),
        "lower_frequency_limit": int(MEL_LOW_HZ),
        "filterbank_channel_count": N_MEL,
        "dct_coefficient_count": N_MFCC,
    }
    mfccs = g.tensor("mfccs", (1, 1, N_MFCC))
    rate = g.const("Mfcc/sample_rate", np.array([SAMPLE_RATE], np.int32))
    g.op(CUSTOM, [spectrogram, rate], [mfccs], custom="Mfcc", custom_options=flexbuffers.Dumps(mfcc_options))
    g.outputs.append(mfccs)


def _lstm(g: TfliteGraph, x: int, state: dict[str, np.ndarray], n_steps: int, hidden: int) -> int:
    """UNIDIRECTIONAL_SEQUENCE_LSTM (time-major, tanh, no peepholes, no projection, the trained biases
    and no added forget bias, as DeepSpeech's forget_bias=0) over (n_steps, 1, H); returns (n_steps, H).

    The op keeps its state in two variable tensors that it updates in place and has no state outputs. So
    those variables are the graph inputs `previous_state_c/h` themselves (the client writes them before
    every call), and `new_state_c/h` are RESHAPE copies of them taken after the LSTM has run.
    """
    series = g.tensor("lstm/input", (n_steps, 1, hidden))
    g.op(
        RESHAPE,
        [x, g.const("lstm/input_shape", np.array([n_steps, 1, hidden], np.int32))],
        [series],
        RESHAPE_OPTIONS,
        (("ints", 0, [n_steps, 1, hidden]),),
    )
    c = g.tensor("previous_state_c", (1, hidden), variable=True)
    h = g.tensor("previous_state_h", (1, hidden), variable=True)
    g.inputs += [c, h]
    bias = state["lstm.bias_ih_l0"] + state["lstm.bias_hh_l0"]
    gates = {"i": 0, "f": 1, "c": 2, "o": 3}  # torch's row blocks
    block = {k: slice(v * hidden, (v + 1) * hidden) for k, v in gates.items()}
    order = ("i", "f", "c", "o")  # TFLite's input order
    inputs = [series]
    inputs += [g.weight(f"lstm/input_to_{k}", state["lstm.weight_ih_l0"][block[k]]) for k in order]
    inputs += [g.weight(f"lstm/recurrent_to_{k}", state["lstm.weight_hh_l0"][block[k]]) for k in order]
    inputs += [-1, -1, -1]  # no peepholes
    inputs += [g.const(f"lstm/{k}_bias", bias[block[k]].copy()) for k in order]
    inputs += [-1, -1, h, c]  # no projection; the variable output (h) and cell (c) states
    out = g.tensor("lstm/output", (n_steps, 1, hidden))
    options = (("int8", 0, ACTIVATION_TANH), ("float32", 1, 0.0), ("float32", 2, 0.0), ("uint8", 3, 1))
    g.op(UNIDIRECTIONAL_SEQUENCE_LSTM, inputs, [out], UNIDIRECTIONAL_SEQUENCE_LSTM_OPTIONS, options)
    shape = g.const("new_state/shape", np.array([1, hidden], np.int32))
    for variable, name in ((c, "new_state_c"), (h, "new_state_h")):
        copy = g.tensor(name, (1, hidden))
        g.op(RESHAPE, [variable, shape], [copy], RESHAPE_OPTIONS, (("ints", 0, [1, hidden]),))
        g.outputs.append(copy)
    rows = g.tensor("lstm/rows", (n_steps, hidden))
    g.op(
        RESHAPE,
        [out, g.const("lstm/rows_shape", np.array([n_steps, hidden], np.int32))],
        [rows],
        RESHAPE_OPTIONS,
        (("ints", 0, [n_steps, hidden]),),
    )
    return rows


def _metadata(g: TfliteGraph, alphabet: Alphabet, beam_width: int) -> None:
    """Each `metadata_*` output is the GATHER of element 0 of a constant, its own single-operator plan."""
    index = g.const("metadata/index", np.array([0], np.int32))
    for name, value in graph_metadata(alphabet, beam_width).items():
        if isinstance(value, bytes):
            source, out = g.const_string(f"{name}/value", value), g.tensor(name, (1,), STRING)
        else:
            source, out = g.const(f"{name}/value", value), g.tensor(name, (1,), INT32)
        g.op(GATHER, [source, index], [out], GATHER_OPTIONS, (("int32", 0, 0),))
        g.outputs.append(out)


def build_tflite_graph(
    model: AcousticModel, alphabet: Alphabet, beam_width: int, n_steps: int, int8_weights: bool = False
) -> TfliteGraph:
    """The DeepSpeech 0.9 TFLite graph of `model` (see the module docstring)."""
    model = check_deepspeech(model, alphabet)
    state = {name: value.detach().cpu().float().numpy() for name, value in model.state_dict().items()}
    hidden, window = model.config.n_hidden, 2 * N_CONTEXT + 1
    g = TfliteGraph(int8_weights=int8_weights)
    features = g.tensor("input_node", (1, n_steps, window, N_MFCC))
    g.inputs.append(features)
    _features(g)
    # FULLY_CONNECTED flattens (1, n_steps, 19, 26) to (n_steps, 494) rows itself.
    x = features
    for layer in ("layer_1", "layer_2", "layer_3"):
        x = _dense(g, layer, x, state, n_steps, relu=True)
    x = _lstm(g, x, state, n_steps, hidden)
    x = _dense(g, "layer_5", x, state, n_steps, relu=True)
    x = _dense(g, "layer_6", x, state, n_steps, relu=False)
    logits = g.tensor("logits", (n_steps, model.config.n_outputs))
    g.op(SOFTMAX, [x], [logits], SOFTMAX_OPTIONS, (("float32", 0, 1.0),))
    g.outputs.insert(0, logits)
    _metadata(g, alphabet, beam_width)
    return g


# --- flatbuffer serialisation ----------------------------------------------------------------------------


def _int_vector(b: flatbuffers.Builder, values: Sequence[int]) -> int:
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependInt32(value)
    vector: int = b.EndVector()  # flatbuffers is untyped: its offsets are ints
    return vector


def _offset_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    vector: int = b.EndVector()
    return vector


def _byte_vector(b: flatbuffers.Builder, data: bytes, alignment: int) -> int:
    """A [ubyte] vector whose first byte is `alignment`-aligned, copied in one slice."""
    b.StartVector(1, len(data), alignment)
    b.head -= len(data)
    b.Bytes[b.head : b.head + len(data)] = data
    vector: int = b.EndVector()
    return vector


def _table(b: flatbuffers.Builder, n_slots: int, fields: Sequence[tuple[str, int, object]]) -> int:
    """A table from (kind, slot, value) fields; offsets ("offset") must already be built."""
    prepared = [
        (kind, slot, _int_vector(b, cast(Sequence[int], value)) if kind == "ints" else value)
        for kind, slot, value in fields
    ]
    b.StartObject(n_slots)
    for kind, slot, value in prepared:
        if kind in ("offset", "ints"):
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            b.PrependInt8Slot(slot, value, -1)  # a default of -1 never matches: always written
        elif kind == "uint8":
            b.PrependUint8Slot(slot, value, 0)
        elif kind == "int32":
            b.PrependInt32Slot(slot, value, -(1 << 31))
        elif kind == "uint32":
            b.PrependUint32Slot(slot, value, 0)
        elif kind == "float32":
            b.PrependFloat32Slot(slot, value, float("nan"))
        else:
            raise ValueError(f"unknown field kind {kind!r}")
    table: int = b.EndObject()
    return table


def _operator(b: flatbuffers.Builder, op: _Operator) -> int:
    """Operator: opcode_index 0, inputs 1, outputs 2, builtin_options_type 3, builtin_options 4,
    custom_options 5, custom_options_format 6 (0: flexbuffers)."""
    fields: list[tuple[str, int, object]] = [
        ("uint32", 0, op.opcode),
        ("offset", 1, _int_vector(b, op.inputs)),
        ("offset", 2, _int_vector(b, op.outputs)),
    ]
    if op.options_type:
        fields += [("uint8", 3, op.options_type), ("offset", 4, _table(b, 4, op.options))]
    if op.custom_options is not None:
        fields += [("offset", 5, _byte_vector(b, op.custom_options, 1)), ("int8", 6, 0)]
    return _table(b, 7, fields)


def _tensor(b: flatbuffers.Builder, tensor: _Tensor) -> int:
    """Tensor: shape 0, type 1, buffer 2, name 3, quantization 4 (QuantizationParameters: scale 2,
    zero_point 3), is_variable 5."""
    name = b.CreateString(tensor.name)
    shape = _int_vector(b, tensor.shape)
    fields = [
        ("offset", 0, shape),
        ("int8", 1, tensor.type),
        ("uint32", 2, tensor.buffer),
        ("offset", 3, name),
    ]
    if tensor.scale is not None:
        b.StartVector(4, 1, 4)
        b.PrependFloat32(tensor.scale)
        scale = b.EndVector()
        b.StartVector(8, 1, 8)
        b.PrependInt64(0)
        zero_point = b.EndVector()
        fields.append(("offset", 4, _table(b, 7, [("offset", 2, scale), ("offset", 3, zero_point)])))
    if tensor.variable:
        fields.append(("uint8", 5, 1))
    return _table(b, 6, fields)


def _operator_code(b: flatbuffers.Builder, code: int, custom: str | None) -> int:
    """OperatorCode: deprecated_builtin_code 0 (the byte old runtimes read), custom_code 1, version 2,
    builtin_code 3 (the int32 newer runtimes read, taking the larger of the two)."""
    fields: list[tuple[str, int, object]] = [("int8", 0, code), ("int32", 2, 1), ("int32", 3, code)]
    if custom is not None:
        fields.append(("offset", 1, b.CreateString(custom)))
    return _table(b, 4, fields)


def serialize(g: TfliteGraph, description: str) -> bytes:
    """The Model flatbuffer: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4."""
    b = flatbuffers.Builder(sum(len(data) for data in g.buffers) + (1 << 20))
    buffers = []
    for data in g.buffers:  # Buffer: data 0
        vector = _byte_vector(b, data, BUFFER_ALIGNMENT) if data else None
        buffers.append(_table(b, 1, [("offset", 0, vector)] if vector is not None else []))
    tensors = [_tensor(b, tensor) for tensor in g.tensors]
    operators = [_operator(b, op) for op in g.operators]
    subgraph = _table(
        b,
        5,
        [  # SubGraph: tensors 0, inputs 1, outputs 2, operators 3, name 4
            ("offset", 0, _offset_vector(b, tensors)),
            ("offset", 1, _int_vector(b, g.inputs)),
            ("offset", 2, _int_vector(b, g.outputs)),
            ("offset", 3, _offset_vector(b, operators)),
            ("offset", 4, b.CreateString("main")),
        ],
    )
    codes = [_operator_code(b, code, custom) for code, custom in g.codes]
    model = _table(
        b,
        5,
        [
            ("uint32", 0, SCHEMA_VERSION),
            ("offset", 1, _offset_vector(b, codes)),
            ("offset", 2, _offset_vector(b, [subgraph])),
            ("offset", 3, b.CreateString(description)),
            ("offset", 4, _offset_vector(b, buffers)),
        ],
    )
    b.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def write_tflite(
    model: AcousticModel,
    alphabet: Alphabet,
    path: Path,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    n_steps: int = DEFAULT_N_STEPS,
    int8_weights: bool = True,
) -> None:
    """Write `model` as DeepSpeech 0.9's `output_graph.tflite`, with float32 or int8 weight matrices; a model
    other than DeepSpeech, or an alphabet that does not fit its output layer, raises DsitaError."""
    graph = build_tflite_graph(model, alphabet, beam_width, n_steps, int8_weights)
    data = serialize(graph, "dsita DeepSpeech 0.9 inference graph")
    with atomic_write(path, "wb") as f:
        f.write(data)
