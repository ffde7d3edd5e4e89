"""DeepSpeech 0.9's inference graph as TensorFlow files, written without TensorFlow.

`write_tf_graph` writes `output_graph.pb` (a frozen GraphDef) or `output_graph.pbmm` (the same graph in TF's
memory-mapped package format) that `deepspeech==0.9.3` loads. The graph follows the contract of
DeepSpeech's `create_inference_graph`/`export` (train.py) and the native client (`tfmodelstate.cc`):

- `input_samples` (512,) float -> AudioSpectrogram(512, 320, squared) -> Mfcc(16 kHz, 20-8000 Hz, 40
  channels, 26 coefficients) -> `mfccs` (1, 26): one feature frame per call, as the client computes them;
- `input_node` (1, n_steps, 19, 26) context windows, `input_lengths` (1,) int32, `previous_state_c/h`
  (1, H) -> 3 clipped-ReLU dense layers -> BlockLSTM (DeepSpeech's LSTMBlockFusedCell, forget_bias 0) ->
  dense -> dense -> `logits` (n_steps, 1, n_outputs), *softmax probabilities* (the client's CTC decoder
  takes probabilities), and `new_state_c/h` (1, H), the LSTM state after `input_lengths` steps;
- `metadata_version` (GRAPH_VERSION 6), `metadata_sample_rate`, `metadata_feature_win_len` and `_step` (ms),
  `metadata_beam_width` and `metadata_alphabet` (`serialize_alphabet`), one-element constants the client
  reads before anything else; `logits_shape` (the raw logits' reshape target) lets it check the alphabet
  size against the output layer.

Only ops whose kernels the 0.9.3 client links are used (native_client/BUILD lists them): Placeholder, Const,
ImmutableConst, Identity, ExpandDims, Reshape, MatMul, BiasAdd, Relu, Minimum, Max, Cast, BlockLSTM,
ConcatV2, Pack, GatherNd, Softmax, AudioSpectrogram, Mfcc. The client has no Add/Sub/Sigmoid kernels, hence
BlockLSTM and the state picked with GatherNd from [initial state, states...] at index `input_lengths`.

The protobuf messages (GraphDef, NodeDef, AttrValue, TensorProto, TensorShapeProto, and the memmapped
directory) are encoded here by hand from their .proto field numbers: the few fields used are listed by
the encoders below.

Memory-mapped format (TF's `convert_graphdef_memmapped_format`): every constant of at least
`MIN_MEMMAPPED_BYTES` becomes an `ImmutableConst` node reading region `memmapped_package://<name>`; the
regions (raw little-endian tensor bytes, each at an offset aligned to 64) come first, then the GraphDef as
region `memmapped_package://.`, then the directory proto and its offset as a little-endian uint64. Each
directory element has the region's offset, name and length: TF 2.3, the 0.9.3 client's runtime, takes the
length from that field (a package written without it loaded as an empty graph: "Session was not created with
a graph before Run()", CreateModel 0x2003), where older readers take the distance to the next region's
offset; the GraphDef goes last and unpadded so that both readers get it exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsita.audio import (
    MEL_HIGH_HZ,
    MEL_LOW_HZ,
    N_CONTEXT,
    N_MEL,
    N_MFCC,
    SAMPLE_RATE,
    STEP_MS,
    STEP_SAMPLES,
    WINDOW_MS,
    WINDOW_SAMPLES,
)
from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.model.base import AcousticModel
from dsita.model.deepspeech import DeepSpeech
from dsita.text.alphabet import Alphabet

GRAPH_VERSION = 6  # DeepSpeech 0.9's training/deepspeech_training/GRAPH_VERSION; the clients need >= 6
DEFAULT_N_STEPS = 16  # DeepSpeech's --n_steps: the time steps the client feeds per call
DEFAULT_BEAM_WIDTH = 500  # DeepSpeech's --export_beam_width default
MIN_MEMMAPPED_BYTES = 10_000  # convert_graphdef_memmapped_format's default --min_conversion_tensor_size
MEMMAPPED_PREFIX = "memmapped_package://"
MEMMAPPED_GRAPH = MEMMAPPED_PREFIX + "."
MEMMAPPED_ALIGNMENT = 64  # TF's Allocator::kAllocatorAlignment: ImmutableConst refuses unaligned regions
TF_GATES = (0, 2, 1, 3)  # TF's (i, c, f, o) gate blocks taken from torch's (i, f, g, o), and back
GRAPH_PRODUCER = 134  # the GraphDef version TF 1.15 (DeepSpeech 0.9's training TF) writes

# TF's DataType enum values used here.
DT_FLOAT, DT_INT32, DT_STRING, DT_INT64 = 1, 3, 7, 9
_DTYPES = {np.dtype(np.float32): DT_FLOAT, np.dtype(np.int32): DT_INT32, np.dtype(np.int64): DT_INT64}


def check_deepspeech(model: AcousticModel, alphabet: Alphabet) -> DeepSpeech:
    """`model` if it is a DeepSpeech model whose output layer fits `alphabet`, else DsitaError: the original
    clients run only that graph, and decode its outputs with the alphabet written into the file."""
    if not isinstance(model, DeepSpeech):
        raise DsitaError(
            f"cannot write DeepSpeech client files for {model.config.describe()}: "
            "the original clients only run the DeepSpeech graph"
        )
    if model.config.n_mfcc != N_MFCC or model.config.n_context != N_CONTEXT:
        raise DsitaError(
            f"the DeepSpeech clients need {N_MFCC} MFCCs and {N_CONTEXT} context frames, the model has "
            f"{model.config.n_mfcc} and {model.config.n_context}"
        )
    if model.config.n_outputs != len(alphabet) + 1:
        raise DsitaError(
            f"the model has {model.config.n_outputs} outputs but the alphabet has {len(alphabet)} labels "
            f"(expected {model.config.n_outputs - 1} labels + the blank)"
        )
    return model


def serialize_alphabet(alphabet: Alphabet) -> bytes:
    """The native client's `Alphabet::Serialize`: uint16 count, then per label uint16 index, uint16 byte
    length and the UTF-8 bytes, all little-endian."""
    out = [struct.pack("<H", len(alphabet))]
    for index, label in enumerate(alphabet.labels):
        data = label.encode("utf-8")
        out.append(struct.pack("<HH", index, len(data)) + data)
    return b"".join(out)


def graph_metadata(alphabet: Alphabet, beam_width: int) -> dict[str, np.ndarray | bytes]:
    """The `metadata_*` outputs: one-element int32 tensors, and the serialised alphabet."""
    if beam_width < 1:
        raise DsitaError(f"beam_width must be at least 1, got {beam_width}")
    values = {
        "metadata_version": GRAPH_VERSION,
        "metadata_sample_rate": SAMPLE_RATE,
        "metadata_feature_win_len": WINDOW_MS,
        "metadata_feature_win_step": STEP_MS,
        "metadata_beam_width": beam_width,
    }
    return {
        **{name: np.array([value], np.int32) for name, value in values.items()},
        "metadata_alphabet": serialize_alphabet(alphabet),
    }


@dataclass(frozen=True)
class TfWeights:
    """A DeepSpeech model's weights in TF's layout: dense kernels (in, out); the LSTM kernel (2H, 4H) over
    [x, h] with TF's gate order (i, c, f, o) and one bias (torch's two summed)."""

    dense: dict[str, tuple[np.ndarray, np.ndarray]]  # layer_1..3, layer_5, layer_6 -> (kernel, bias)
    lstm_kernel: np.ndarray
    lstm_bias: np.ndarray

    @property
    def n_hidden(self) -> int:
        """The LSTM's (and the hidden layers') width."""
        return int(self.lstm_bias.shape[0]) // 4


def tf_weights(model: DeepSpeech) -> TfWeights:
    """`model`'s weights as float32 numpy arrays in TF's layout (see TfWeights)."""
    state = {name: value.detach().cpu().float().numpy() for name, value in model.state_dict().items()}
    dense = {
        layer: (np.ascontiguousarray(state[f"{layer}.weight"].T), state[f"{layer}.bias"].copy())
        for layer in ("layer_1", "layer_2", "layer_3", "layer_5", "layer_6")
    }
    hidden = model.config.n_hidden
    weight = np.concatenate([state["lstm.weight_ih_l0"], state["lstm.weight_hh_l0"]], axis=1)  # (4H, 2H)
    bias = state["lstm.bias_ih_l0"] + state["lstm.bias_hh_l0"]
    kernel = np.ascontiguousarray(_gate_order(weight, hidden).T)  # (2H, 4H)
    return TfWeights(dense, kernel, _gate_order(bias, hidden))


def _gate_order(x: np.ndarray, hidden: int) -> np.ndarray:
    return np.concatenate([x[gate * hidden : (gate + 1) * hidden] for gate in TF_GATES])


# --- protobuf wire encoding ------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement varints
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _shape_proto(dims: Iterable[int]) -> bytes:
    """TensorShapeProto: dim = 2 (Dim: size = 1)."""
    return b"".join(_field_bytes(2, _field_varint(1, dim)) for dim in dims)


def _tensor_proto(value: np.ndarray | bytes) -> bytes:
    """TensorProto: dtype = 1, tensor_shape = 2, tensor_content = 4, string_val = 8 (a (1,) string)."""
    if isinstance(value, bytes):
        return _field_varint(1, DT_STRING) + _field_bytes(2, _shape_proto([1])) + _field_bytes(8, value)
    array = np.asarray(value, value.dtype.newbyteorder("<"))  # not ascontiguousarray: it makes scalars 1-d
    return (
        _field_varint(1, _DTYPES[array.dtype])
        + _field_bytes(2, _shape_proto(array.shape))
        + _field_bytes(4, array.tobytes())
    )


# AttrValue: s = 2, i = 3, f = 4, b = 5, type = 6, shape = 7, tensor = 8.
def attr_s(value: str) -> bytes:
    """A string attribute."""
    return _field_bytes(2, value.encode())


def attr_i(value: int) -> bytes:
    """An int attribute."""
    return _field_varint(3, value)


def attr_f(value: float) -> bytes:
    """A float attribute."""
    return _field_float(4, value)


def attr_b(value: bool) -> bytes:
    """A bool attribute."""
    return _field_varint(5, int(value))


def attr_type(dtype: int) -> bytes:
    """A DataType attribute."""
    return _field_varint(6, dtype)


def attr_shape(dims: Sequence[int]) -> bytes:
    """A TensorShapeProto attribute."""
    return _field_bytes(7, _shape_proto(dims))


def _node_proto(name: str, op: str, inputs: Sequence[str], attrs: dict[str, bytes]) -> bytes:
    """NodeDef: name = 1, op = 2, input = 3, attr = 5 (map entries: key = 1, value = 2)."""
    out = [_field_bytes(1, name.encode()), _field_bytes(2, op.encode())]
    out += [_field_bytes(3, source.encode()) for source in inputs]
    for key in sorted(attrs):
        out.append(_field_bytes(5, _field_bytes(1, key.encode()) + _field_bytes(2, attrs[key])))
    return b"".join(out)


@dataclass
class _Node:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, bytes]
    constant: np.ndarray | bytes | None = None  # a Const node's value


class GraphBuilder:
    """Collects the nodes of a GraphDef; each method returns the name of the node's output."""

    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def op(self, op: str, name: str, inputs: Sequence[str], **attrs: bytes) -> str:
        """Add a node running `op` on `inputs` (node names, `name:k` for output k)."""
        if any(node.name == name for node in self.nodes):
            raise ValueError(f"duplicate node name {name!r}")
        self.nodes.append(_Node(name, op, list(inputs), attrs))
        return name

    def const(self, name: str, value: np.ndarray | bytes) -> str:
        """A Const node; `bytes` is a one-element string tensor."""
        dtype = DT_STRING if isinstance(value, bytes) else _DTYPES[value.dtype]
        self.op("Const", name, [], dtype=attr_type(dtype), value=_field_bytes(8, _tensor_proto(value)))
        self.nodes[-1].constant = value
        return name

    def placeholder(self, name: str, dtype: int, shape: Sequence[int]) -> str:
        """A graph input."""
        return self.op("Placeholder", name, [], dtype=attr_type(dtype), shape=attr_shape(shape))

    def graph_def(self, memmapped: Collection[str] = ()) -> bytes:
        """GraphDef: node = 1, versions = 4 (VersionDef: producer = 1); the constants named in `memmapped`
        as ImmutableConst nodes reading the region `region_name(name)`."""
        out = []
        for node in self.nodes:
            if node.name in memmapped:
                assert isinstance(node.constant, np.ndarray)
                attrs = {
                    "dtype": attr_type(_DTYPES[node.constant.dtype]),
                    "shape": attr_shape(node.constant.shape),
                    "memory_region_name": attr_s(region_name(node.name)),
                }
                out.append(_field_bytes(1, _node_proto(node.name, "ImmutableConst", [], attrs)))
            else:
                out.append(_field_bytes(1, _node_proto(node.name, node.op, node.inputs, node.attrs)))
        out.append(_field_bytes(4, _field_varint(1, GRAPH_PRODUCER)))
        return b"".join(out)


def region_name(node_name: str) -> str:
    """The memmapped region of a constant: TF's converter keeps [A-Za-z0-9_.] and maps the rest to '_'."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in node_name)
    return MEMMAPPED_PREFIX + safe


def _f32(value: float | np.ndarray) -> np.ndarray:
    return np.asarray(value, np.float32)


def _i32(value: int | Sequence[int]) -> np.ndarray:
    return np.asarray(value, np.int32)


def _feature_graph(g: GraphBuilder) -> None:
    """input_samples -> mfccs, DeepSpeech's `audio_to_features` on one 512-sample window."""
    samples = g.op(
        "ExpandDims",
        "ExpandDims",
        [g.placeholder("input_samples", DT_FLOAT, [WINDOW_SAMPLES]), g.const("ExpandDims/dim", _i32(-1))],
        T=attr_type(DT_FLOAT),
        Tdim=attr_type(DT_INT32),
    )
    spectrogram = g.op(
        "AudioSpectrogram",
        "AudioSpectrogram",
        [samples],
        window_size=attr_i(WINDOW_SAMPLES),
        stride=attr_i(STEP_SAMPLES),
        magnitude_squared=attr_b(True),
    )
    mfcc = g.op(
        "Mfcc",
        "Mfcc",
        [spectrogram, g.const("Mfcc/sample_rate", _i32(SAMPLE_RATE))],
        upper_frequency_limit=attr_f(MEL_HIGH_HZ),
        lower_frequency_limit=attr_f(MEL_LOW_HZ),
        filterbank_channel_count=attr_i(N_MEL),
        dct_coefficient_count=attr_i(N_MFCC),
    )
    frames = _reshape(g, "mfccs/Reshape", mfcc, [-1, N_MFCC])
    g.op("Identity", "mfccs", [frames], T=attr_type(DT_FLOAT))


def _reshape(g: GraphBuilder, name: str, x: str, shape: Sequence[int], shape_name: str | None = None) -> str:
    target = g.const(shape_name or f"{name}/shape", _i32(shape))
    return g.op("Reshape", name, [x, target], T=attr_type(DT_FLOAT), Tshape=attr_type(DT_INT32))


def _dense(g: GraphBuilder, layer: str, x: str, weights: tuple[np.ndarray, np.ndarray], relu: bool) -> str:
    """DeepSpeech's `dense`: MatMul, BiasAdd, then min(relu(x), 20) for the hidden layers."""
    kernel, bias = weights
    t = attr_type(DT_FLOAT)
    product = g.op(
        "MatMul",
        f"{layer}/MatMul",
        [x, g.const(f"{layer}/weights", kernel)],
        T=t,
        transpose_a=attr_b(False),
        transpose_b=attr_b(False),
    )
    out = g.op(
        "BiasAdd",
        f"{layer}/BiasAdd",
        [product, g.const(f"{layer}/bias", bias)],
        T=t,
        data_format=attr_s("NHWC"),
    )
    if not relu:
        return out
    out = g.op("Relu", f"{layer}/Relu", [out], T=t)
    return g.op("Minimum", f"{layer}/Minimum", [out, g.const(f"{layer}/Minimum/y", _f32(20.0))], T=t)


def _lstm(g: GraphBuilder, x: str, weights: TfWeights, lengths: str, state_c: str, state_h: str) -> str:
    """BlockLSTM over (T, 1, H) inputs, as LSTMBlockFusedCell runs it; the new state is the one after
    `input_lengths` steps (DeepSpeech's `_gather_states` on [initial, states...]). Returns the outputs."""
    scope = "cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
    t, hidden = attr_type(DT_FLOAT), weights.n_hidden
    longest = g.op(
        "Max",
        f"{scope}/Max",
        [lengths, g.const(f"{scope}/Max/axis", _i32([0]))],
        T=attr_type(DT_INT32),
        Tidx=attr_type(DT_INT32),
        keep_dims=attr_b(False),
    )
    seq_len_max = g.op(
        "Cast",
        f"{scope}/Cast",
        [longest],
        SrcT=attr_type(DT_INT32),
        DstT=attr_type(DT_INT64),
        Truncate=attr_b(False),
    )
    zeros = _f32(np.zeros(hidden))  # no peepholes: BlockLSTM still takes their (unused) weights
    inputs = [
        seq_len_max,
        x,
        state_c,
        state_h,
        g.const(f"{scope}/kernel", weights.lstm_kernel),
        g.const(f"{scope}/wci", zeros),
        g.const(f"{scope}/wcf", zeros),
        g.const(f"{scope}/wco", zeros),
        g.const(f"{scope}/bias", weights.lstm_bias),
    ]
    lstm = g.op(
        "BlockLSTM",
        f"{scope}/BlockLSTM",
        inputs,
        T=t,
        forget_bias=attr_f(0.0),
        cell_clip=attr_f(-1.0),
        use_peephole=attr_b(False),
    )
    index = g.op(
        "Pack",
        f"{scope}/indices",
        [lengths, g.const(f"{scope}/batch_index", _i32([0]))],
        N=attr_i(2),
        T=attr_type(DT_INT32),
        axis=attr_i(1),
    )
    zero = g.const(f"{scope}/axis0", _i32(0))
    for output, initial, name in ((1, state_c, "new_state_c"), (6, state_h, "new_state_h")):
        first = g.op("ExpandDims", f"{scope}/{name}/initial", [initial, zero], T=t, Tdim=attr_type(DT_INT32))
        states = g.op(
            "ConcatV2",
            f"{scope}/{name}/states",
            [first, f"{lstm}:{output}", zero],
            N=attr_i(2),
            T=t,
            Tidx=attr_type(DT_INT32),
        )
        picked = g.op(
            "GatherNd", f"{scope}/{name}/GatherNd", [states, index], Tparams=t, Tindices=attr_type(DT_INT32)
        )
        g.op("Identity", name, [picked], T=t)
    return f"{lstm}:6"


def build_graph(model: DeepSpeech, alphabet: Alphabet, beam_width: int, n_steps: int) -> GraphBuilder:
    """The DeepSpeech 0.9 inference graph of `model` (see the module docstring)."""
    check_deepspeech(model, alphabet)
    weights = tf_weights(model)
    hidden, outputs = weights.n_hidden, model.config.n_outputs
    g = GraphBuilder()
    _feature_graph(g)
    window = 2 * N_CONTEXT + 1
    features = g.placeholder("input_node", DT_FLOAT, [1, n_steps, window, N_MFCC])
    lengths = g.placeholder("input_lengths", DT_INT32, [1])
    state_c = g.placeholder("previous_state_c", DT_FLOAT, [1, hidden])
    state_h = g.placeholder("previous_state_h", DT_FLOAT, [1, hidden])
    # Batch 1: the (batch, time) -> (time, batch) transpose DeepSpeech does first changes no byte.
    x = _reshape(g, "Reshape", features, [-1, window * N_MFCC], shape_name="Reshape/input_shape")
    for layer in ("layer_1", "layer_2", "layer_3"):
        x = _dense(g, layer, x, weights.dense[layer], relu=True)
    x = _reshape(g, "Reshape_1", x, [-1, 1, hidden])
    x = _lstm(g, x, weights, lengths, state_c, state_h)
    x = _reshape(g, "Reshape_2", x, [-1, hidden])
    x = _dense(g, "layer_5", x, weights.dense["layer_5"], relu=True)
    x = _dense(g, "layer_6", x, weights.dense["layer_6"], relu=False)
    x = _reshape(g, "raw_logits", x, [-1, 1, outputs], shape_name="logits_shape")
    g.op("Softmax", "logits", [x], T=attr_type(DT_FLOAT))
    for name, value in graph_metadata(alphabet, beam_width).items():
        g.const(name, value)
    return g


def _directory_element(offset: int, name: str, length: int) -> bytes:
    """MemmappedFileSystemDirectoryElement: offset = 1, name = 2, length = 3. TF 2.3 (the 0.9.3 client's)
    takes a region's length from `length`; older readers from the next region's offset."""
    return _field_varint(1, offset) + _field_bytes(2, name.encode()) + _field_varint(3, length)


def memmapped_package(graph: GraphBuilder, min_bytes: int = MIN_MEMMAPPED_BYTES) -> bytes:
    """The graph in TF's memmapped package format (see the module docstring)."""
    regions = [
        (node.name, node.constant)
        for node in graph.nodes
        if isinstance(node.constant, np.ndarray) and node.constant.nbytes >= min_bytes
    ]
    parts: list[bytes] = []
    offset = 0
    directory = []
    for name, constant in regions:
        pad = -offset % MEMMAPPED_ALIGNMENT
        parts.append(b"\0" * pad)
        offset += pad
        data = np.asarray(constant, constant.dtype.newbyteorder("<")).tobytes()
        directory.append(_directory_element(offset, region_name(name), len(data)))
        parts.append(data)
        offset += len(data)
    graph_def = graph.graph_def({name for name, _ in regions})
    directory.append(_directory_element(offset, MEMMAPPED_GRAPH, len(graph_def)))
    parts.append(graph_def)
    offset += len(graph_def)
    parts.append(b"".join(_field_bytes(1, element) for element in directory))
    parts.append(struct.pack("<Q", offset))
    return b"".join(parts)


def write_tf_graph(
    model: AcousticModel,
    alphabet: Alphabet,
    path: Path,
    memmapped: bool,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    n_steps: int = DEFAULT_N_STEPS,
) -> None:
    """Write `model` as DeepSpeech 0.9's `output_graph.pb` (frozen GraphDef) or, with `memmapped`,
    `output_graph.pbmm`. The 0.9.3 client memory-maps a file only when its name contains `.pbmm`."""
    graph = build_graph(check_deepspeech(model, alphabet), alphabet, beam_width, n_steps)
    data = memmapped_package(graph) if memmapped else graph.graph_def()
    with atomic_write(path, "wb") as f:
        f.write(data)
