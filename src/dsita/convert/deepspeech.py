"""Mozilla DeepSpeech 0.9 TensorFlow checkpoints <-> dsita checkpoints, without TensorFlow.

Variable mapping (H = N_HIDDEN; LSTM = cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell):
    layer_N/weights (in, out)    -> layer_N.weight (out, in), transposed    N = 1, 2, 3, 5, 6
    layer_N/bias (out,)          -> layer_N.bias
    LSTM/kernel (H + H, 4H)      -> lstm.weight_ih_l0 (4H, H) and lstm.weight_hh_l0 (4H, H)
    LSTM/bias (4H,)              -> lstm.bias_ih_l0; lstm.bias_hh_l0 = 0
TF's LSTMBlockCell (LSTMBlockFusedCell, CudnnCompatibleLSTMCell) computes [x, h] @ kernel + bias with the
gate blocks ordered (i, c, f, o), c being the cell input that torch calls g; torch orders them (i, f, g, o)
and computes x @ W_ih^T + b_ih + h @ W_hh^T + b_hh, so the kernel is transposed, its gate blocks reordered
and its rows split at the input width. DeepSpeech builds the cell with forget_bias=0, so no constant is
folded into the forget gate. (A cuDNN-trained checkpoint stores the same layout: TF's saveable sums
cuDNN's two biases into the one.) Adam slots (`*/Adam`, `*/Adam_1`), beta1_power, beta2_power,
global_step and learning_rate are training state: read (and CRC-checked) but not converted.

The other way, `write_deepspeech_checkpoint` writes a dsita DeepSpeech model as the checkpoint DeepSpeech
0.9's training code saves (`best_dev-N` and `best_dev_checkpoint`): the mapping inverted (torch's two LSTM
biases summed into the one), plus the training state DeepSpeech's loader wants for every variable of its
training graph: zero Adam moments, beta1_power and beta2_power at Adam's first step, global_step N (dsita's
step count) and learning_rate. A fresh Adam state, because dsita's optimizer state does not carry over.
"""

from __future__ import annotations

import logging
import math
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from dsita.convert.tf_bundle import (
    READ_ERRORS,
    STATE_FILES,
    TfCheckpoint,
    check_member,
    checkpoint_folders,
    open_checked_archive,
    open_tf_checkpoint,
    write_bundle,
    write_state_file,
)
from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.model.base import build_model, count_parameters, model_config_to_dict
from dsita.model.deepspeech import DeepSpeechConfig
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import (
    BEST_DEV,
    LAST,
    load_checkpoint,
    model_from_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

log = logging.getLogger("dsita.convert.deepspeech")

LSTM_SCOPE = "cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
DENSE_LAYERS = ("layer_1", "layer_2", "layer_3", "layer_5", "layer_6")
TF_TO_TORCH_GATES = (0, 2, 1, 3)  # torch's (i, f, g, o) taken from TF's (i, c, f, o)
TORCH_TO_TF_GATES = (0, 2, 1, 3)  # TF's (i, c, f, o) taken from torch's (i, f, g, o): the same swap
BEST_DEV_STATE = "best_dev_checkpoint"  # the state file DeepSpeech's best-dev saver writes
DEEPSPEECH_N_MFCC, DEEPSPEECH_N_CONTEXT = 26, 9  # fixed in DeepSpeech 0.9 (no flags)
ALPHABET_FILE = "alphabet.txt"
ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar")
_TRAINING_STATE = re.compile(r".+/Adam(_1)?|beta1_power|beta2_power|global_step|learning_rate")
_FLOAT32 = 1  # TF's DT_FLOAT


@dataclass(frozen=True)
class ConversionReport:
    """What converting a DeepSpeech checkpoint read, converted, ignored and wrote."""

    source: str  # the checkpoint read
    checkpoint: Path  # the dsita checkpoint written
    alphabet: str  # where its labels came from
    tensors: dict[str, tuple[int, ...]]  # converted, with their shapes
    model_parameters: int  # of the dsita model written
    ignored: list[str] = field(default_factory=list)  # training state
    unused: list[str] = field(default_factory=list)  # other variables dsita's model has no place for

    @property
    def parameters(self) -> int:
        """Scalars in the converted tensors: 11 H^2 + (n_input + n_outputs + 8) H + n_outputs."""
        return sum(math.prod(shape) for shape in self.tensors.values())

    def lines(self) -> list[str]:
        """The report as lines for the console: tensors with shapes, what was ignored, parameter counts."""
        width = max(len(name) for name in self.tensors)
        adam = [name for name in self.ignored if name.endswith(("/Adam", "/Adam_1"))]
        other = [name for name in self.ignored if name not in adam]
        n_hidden = self.tensors["layer_1/bias"][0]
        extra = self.model_parameters - self.parameters
        return [
            f"read {self.source}",
            *(f"  {name:<{width}}  {tuple(shape)}" for name, shape in self.tensors.items()),
            f"ignored (training state): {len(adam)} Adam slots (*/Adam, */Adam_1)"
            + "".join(f", {name}" for name in other),
            *([f"ignored (not in dsita's model): {', '.join(self.unused)}"] if self.unused else []),
            f"alphabet: {self.alphabet}",
            f"parameters: {self.parameters:,} (dsita's model has {self.model_parameters:,}: "
            f"torch's LSTM adds a second bias of {extra:,} = 4 x {n_hidden} zeros)",
            f"wrote {self.checkpoint}",
        ]


def expected_shapes(n_input: int, n_hidden: int, n_outputs: int) -> dict[str, tuple[int, ...]]:
    """DeepSpeech 0.9's model variables and their shapes, input side first."""

    def dense(layer: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
        return {f"{layer}/weights": (n_in, n_out), f"{layer}/bias": (n_out,)}

    return {
        **dense("layer_1", n_input, n_hidden),
        **dense("layer_2", n_hidden, n_hidden),
        **dense("layer_3", n_hidden, n_hidden),
        f"{LSTM_SCOPE}/kernel": (2 * n_hidden, 4 * n_hidden),
        f"{LSTM_SCOPE}/bias": (4 * n_hidden,),
        **dense("layer_5", n_hidden, n_hidden),
        **dense("layer_6", n_hidden, n_outputs),
    }


def to_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """DeepSpeech's variables (see the module docstring) as a DeepSpeech model's state_dict."""
    state = {}
    for layer in DENSE_LAYERS:
        state[f"{layer}.weight"] = torch.from_numpy(np.ascontiguousarray(tensors[f"{layer}/weights"].T))
        state[f"{layer}.bias"] = torch.from_numpy(tensors[f"{layer}/bias"].copy())
    kernel, bias = tensors[f"{LSTM_SCOPE}/kernel"], tensors[f"{LSTM_SCOPE}/bias"]
    n_hidden = bias.shape[0] // 4
    n_input = kernel.shape[0] - n_hidden
    weight = _torch_gate_order(kernel.T, n_hidden)  # (4H, n_input + H): rows are gate units
    state["lstm.weight_ih_l0"] = torch.from_numpy(weight[:, :n_input].copy())
    state["lstm.weight_hh_l0"] = torch.from_numpy(weight[:, n_input:].copy())
    state["lstm.bias_ih_l0"] = torch.from_numpy(_torch_gate_order(bias, n_hidden))
    state["lstm.bias_hh_l0"] = torch.zeros(4 * n_hidden)
    return state


def _torch_gate_order(x: np.ndarray, n_hidden: int) -> np.ndarray:
    return np.concatenate([x[gate * n_hidden : (gate + 1) * n_hidden] for gate in TF_TO_TORCH_GATES])


def convert_deepspeech_checkpoint(
    source: Path,
    out_dir: Path,
    n_hidden: int,
    alphabet: Alphabet | None = None,
    fallback: Alphabet | None = None,
) -> ConversionReport:
    """Write `out_dir/best_dev.pt` from a DeepSpeech checkpoint folder or archive.

    `alphabet` is the one the checkpoint was trained with; by default the `alphabet.txt` beside it, else
    `fallback`, else DeepSpeech's English alphabet (the released checkpoints'). Shapes are checked against
    `n_hidden` and the alphabet before anything is written.
    """
    with open_tf_checkpoint(source) as checkpoint:
        alphabet, origin = _source_alphabet(checkpoint, alphabet, fallback)
        config = DeepSpeechConfig(n_outputs=len(alphabet) + 1, n_hidden=n_hidden)
        expected = expected_shapes(config.n_input, n_hidden, config.n_outputs)
        _check(checkpoint, expected, config)
        tensors = checkpoint.read(expected)
        names = sorted(checkpoint.entries)
        label = checkpoint.label
    model = build_model(config)
    model.load_state_dict(to_state_dict(tensors))  # strict: the mapping fills every parameter
    path = out_dir / BEST_DEV
    save_checkpoint(
        path,
        {
            "model_config": model_config_to_dict(config),
            "model": model.state_dict(),
            "alphabet": list(alphabet.labels),
        },
    )
    return ConversionReport(
        label,
        path,
        origin,
        {name: tuple(tensors[name].shape) for name in expected},
        count_parameters(model),
        [name for name in names if _TRAINING_STATE.fullmatch(name)],
        [name for name in names if name not in expected and not _TRAINING_STATE.fullmatch(name)],
    )


def _source_alphabet(
    checkpoint: TfCheckpoint, alphabet: Alphabet | None, fallback: Alphabet | None
) -> tuple[Alphabet, str]:
    if alphabet is not None:
        return alphabet, f"given, {len(alphabet)} labels"
    text = checkpoint.text(ALPHABET_FILE)
    if text is not None:
        found = Alphabet.from_text(text, f"{checkpoint.label}: {ALPHABET_FILE}")
        return found, f"{ALPHABET_FILE} beside the checkpoint, {len(found)} labels"
    if fallback is not None:
        return fallback, f"this run's ({len(fallback)} labels; no {ALPHABET_FILE} beside the checkpoint)"
    return Alphabet.english(), f"DeepSpeech's English ({len(Alphabet.english())} labels; no {ALPHABET_FILE})"


def _check(checkpoint: TfCheckpoint, expected: dict[str, tuple[int, ...]], config: DeepSpeechConfig) -> None:
    """Name every missing or misshapen variable at once, and variables dsita cannot reproduce."""
    entries = checkpoint.entries
    if layer_norm := sorted(name for name in entries if "/LayerNorm/" in name):
        raise DsitaError(
            f"{checkpoint.label}: trained with --layer_norm ({layer_norm[0]}), "
            "which dsita's model does not implement"
        )
    problems = []
    for name, shape in expected.items():
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{name} is missing")
        elif entry.shape != shape or entry.dtype != _FLOAT32:
            got = f"{entry.shape}" + ("" if entry.dtype == _FLOAT32 else f" of TF dtype {entry.dtype}")
            problems.append(f"{name} is {got}, expected {shape} float32")
    if problems:
        found = ""
        if f"{LSTM_SCOPE}/bias" in entries and "layer_6/bias" in entries:
            hidden, outputs = entries[f"{LSTM_SCOPE}/bias"].shape[0] // 4, entries["layer_6/bias"].shape[0]
            found = f" (the checkpoint has N_HIDDEN={hidden} and {outputs} outputs)"
        raise DsitaError(
            f"{checkpoint.label} does not fit N_HIDDEN={config.n_hidden} and {config.n_outputs} outputs "
            f"({config.n_outputs - 1} labels + blank){found}: " + "; ".join(problems)
        )


@dataclass(frozen=True)
class CheckpointSource:
    """What a transfer or export source holds: a dsita checkpoint, or a DeepSpeech TensorFlow one to convert.

    `kind` is "dsita" (`path` a dsita checkpoint file), "dsita-archive" (`path` a tar archive holding one, as
    `member`) or "deepspeech" (`path` a folder or tar archive holding a TensorFlow checkpoint).
    """

    path: Path
    kind: str
    member: str = ""


def find_checkpoint_source(source: Path) -> CheckpointSource:
    """The checkpoint `source` is or holds, dsita's first: a dsita checkpoint file, a folder with best_dev.pt
    or last.pt, a folder holding a DeepSpeech checkpoint, a tar archive (.tar.xz, .tar.gz, .tgz, .tar) of
    either (a release's checkpoint_it.tar.xz holds both: its best_dev.pt is taken), or a folder holding
    exactly one such archive or folder (a mounted folder). Anything else is one DsitaError line."""
    if source.is_file() and not _is_tar(source):
        return CheckpointSource(source, "dsita")  # loading it checks it
    if source.is_dir() and any((source / name).is_file() for name in (BEST_DEV, LAST)):
        return CheckpointSource(resolve_checkpoint(source), "dsita")
    if source.is_file() or _holds_tf_checkpoint(source):
        candidates = [source]
    elif source.is_dir():
        candidates = [
            path
            for path in sorted(source.iterdir())
            if _holds_tf_checkpoint(path)
            or (path.is_dir() and any((path / name).is_file() for name in (BEST_DEV, LAST)))
            or (path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES))
        ]
    else:
        raise DsitaError(f"{source}: not found (expected a checkpoint file, folder or archive)")
    if len(candidates) != 1:
        raise DsitaError(
            f"{source}: expected a dsita checkpoint ({BEST_DEV} or {LAST}) or one DeepSpeech checkpoint "
            f"(a folder with {' or '.join(STATE_FILES)} and *.index, or a {', '.join(ARCHIVE_SUFFIXES)} "
            "archive of one, such as checkpoint_it.tar.xz), found "
            + (", ".join(path.name for path in candidates) if candidates else "none")
        )
    found = candidates[0]
    if found.is_dir():
        return find_checkpoint_source(found) if found != source else CheckpointSource(found, "deepspeech")
    return _archive_source(found)


def _archive_source(archive: Path) -> CheckpointSource:
    """What a tar archive holds: its dsita checkpoint (best_dev.pt, else last.pt, else its only *.pt file: an
    export names the file it exported), else a TF checkpoint."""
    with open_checked_archive(archive) as (_, members):
        files = [m for m in members if m.isfile()]
        for name in (BEST_DEV, LAST, "*.pt"):
            found = sorted(m.name for m in files if PurePosixPath(m.name).match(name))
            if len(found) > 1:
                raise DsitaError(f"{archive}: holds {len(found)} {name} ({', '.join(found)}); expected one")
            if found:
                return CheckpointSource(archive, "dsita-archive", found[0])
        if not checkpoint_folders(files):
            raise DsitaError(
                f"{archive}: holds no checkpoint (expected {BEST_DEV}, {LAST}, or a DeepSpeech checkpoint: "
                f"{' or '.join(STATE_FILES)} and *.index)"
            )
    return CheckpointSource(archive, "deepspeech")


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


def extract_member(archive: Path, member: str, target: Path) -> Path:
    """Copy one member of a tar archive to `target` (atomically), nothing else: the archive is read in one
    forward pass up to that member, each member on the way checked (`check_member`)."""
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed below; only the opening is guarded here)
    except READ_ERRORS as exc:
        raise DsitaError(f"{archive}: not a readable tar archive ({exc})") from None
    with tar:
        while True:
            try:
                info = tar.next()
            except READ_ERRORS as exc:
                raise DsitaError(f"{archive}: cannot read it up to {member} ({exc})") from None
            if info is None:
                raise DsitaError(f"{archive}: {member} not found")
            check_member(archive, info)
            if info.name == member and info.isfile():
                return _copy_member(archive, tar, info, target)


def _copy_member(archive: Path, tar: tarfile.TarFile, info: tarfile.TarInfo, target: Path) -> Path:
    source = tar.extractfile(info)
    assert source is not None  # a regular file
    with source, atomic_write(target, "wb") as f:
        while True:
            try:  # only the reading: a full disk is the writer's error, not a damaged archive
                chunk = source.read(1 << 20)
            except READ_ERRORS as exc:
                raise DsitaError(f"{archive}: cannot read {info.name} ({exc})") from None
            if not chunk:
                return target
            f.write(chunk)


def ensure_dsita_checkpoint(
    source: Path,
    out_dir: Path,
    n_hidden: int,
    alphabet: Alphabet | None = None,
    architecture: str = DeepSpeechConfig.ARCHITECTURE,
    fallback: Alphabet | None = None,
) -> Path:
    """The dsita checkpoint file to start from: `source` itself, or what it holds written into `out_dir`.

    `source` is anything `find_checkpoint_source` takes. A dsita checkpoint inside an archive is extracted
    into `out_dir` as best_dev.pt (last.pt if that is its name); a DeepSpeech TensorFlow checkpoint is
    converted there (`n_hidden`, `alphabet` and `fallback` are as for `convert_deepspeech_checkpoint`), and
    can only start a model of the `deepspeech` `architecture` (see `check_transfer_source`). Redone on every
    call: for the 0.9.3 checkpoint the conversion takes about 10 s from a folder, 30 s from its .tar.gz (gzip
    is read more than once), 1 GB of memory at the peak.
    """
    found = find_checkpoint_source(source)
    if found.kind == "dsita":
        return found.path
    if found.kind == "dsita-archive":
        name = LAST if PurePosixPath(found.member).name == LAST else BEST_DEV  # what resolve_checkpoint finds
        target = extract_member(found.path, found.member, out_dir / name)
        log.info("Extracted %s from %s into %s", found.member, found.path, target)
        return target
    _check_architecture(found, architecture)
    report = convert_deepspeech_checkpoint(found.path, out_dir, n_hidden, alphabet, fallback)
    log.info("Converted the DeepSpeech checkpoint %s into %s", report.source, report.checkpoint)
    return report.checkpoint


def check_transfer_source(source: Path, architecture: str) -> CheckpointSource:
    """Find what `source` holds (see `find_checkpoint_source`), and refuse to start a model of another
    architecture than deepspeech from a TensorFlow checkpoint: the converter writes deepspeech models only.
    `dsita run` checks this before importing; it lists the archive's members (a .tar.xz is read through)."""
    found = find_checkpoint_source(source)
    _check_architecture(found, architecture)
    return found


def _check_architecture(found: CheckpointSource, architecture: str) -> None:
    if found.kind == "deepspeech" and architecture != DeepSpeechConfig.ARCHITECTURE:
        raise DsitaError(
            f"{found.path} holds no dsita checkpoint ({BEST_DEV} or {LAST}) to start MODEL={architecture} "
            "from; a DeepSpeech TensorFlow checkpoint can start MODEL=deepspeech only"
        )


def _holds_tf_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and (
        any((folder / name).is_file() for name in STATE_FILES) or any(folder.glob("*.index"))
    )


# --- dsita -> DeepSpeech --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfCheckpointOptions:
    """The training state written beside the weights: DeepSpeech 0.9's defaults (--learning_rate,
    --beta1, --beta2)."""

    learning_rate: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999


def from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A DeepSpeech model's state_dict as DeepSpeech 0.9's variables, float32: `to_state_dict` inverted."""

    def array(name: str) -> np.ndarray:
        return state[name].detach().to(torch.float32).cpu().numpy()

    tensors = {}
    for layer in DENSE_LAYERS:
        tensors[f"{layer}/bias"] = array(f"{layer}.bias")
        tensors[f"{layer}/weights"] = np.ascontiguousarray(array(f"{layer}.weight").T)
    n_hidden = state["lstm.weight_hh_l0"].shape[1]
    weight = np.concatenate([array("lstm.weight_ih_l0"), array("lstm.weight_hh_l0")], axis=1)
    tensors[f"{LSTM_SCOPE}/kernel"] = np.ascontiguousarray(_gate_order(weight, n_hidden, TORCH_TO_TF_GATES).T)
    bias = array("lstm.bias_ih_l0") + array("lstm.bias_hh_l0")
    tensors[f"{LSTM_SCOPE}/bias"] = _gate_order(bias, n_hidden, TORCH_TO_TF_GATES)
    return tensors


def _gate_order(x: np.ndarray, n_hidden: int, order: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([x[gate * n_hidden : (gate + 1) * n_hidden] for gate in order])


def training_state(
    variables: Mapping[str, np.ndarray], step: int, options: TfCheckpointOptions
) -> dict[str, np.ndarray]:
    """The rest of DeepSpeech's training graph's variables: a fresh Adam state, global_step, learning_rate.

    TF's Adam starts beta1_power and beta2_power at beta1 and beta2 and its moments at zero; DeepSpeech's
    loader restores every global variable of its graph (learning_rate excepted), so all must be present.
    """
    state = {
        f"{name}/{slot}": np.zeros_like(value)
        for name, value in variables.items()
        for slot in ("Adam", "Adam_1")
    }
    state["beta1_power"] = np.array(options.beta1, dtype=np.float32)
    state["beta2_power"] = np.array(options.beta2, dtype=np.float32)
    state["global_step"] = np.array(step, dtype=np.int64)
    state["learning_rate"] = np.array(options.learning_rate, dtype=np.float32)
    return state


def write_deepspeech_checkpoint(
    source: Path, out_dir: Path, options: TfCheckpointOptions = TfCheckpointOptions()
) -> Path:
    """Write a dsita DeepSpeech checkpoint (a .pt file, or a folder holding best_dev.pt or last.pt) into
    `out_dir` as a DeepSpeech 0.9 checkpoint: `best_dev-N.index`, `best_dev-N.data-00000-of-00001`,
    `best_dev_checkpoint` and `alphabet.txt`, N being dsita's step count. Returns the prefix.

    DeepSpeech loads it with `--load_checkpoint_dir OUT_DIR --n_hidden H --alphabet_config_path
    OUT_DIR/alphabet.txt` (and `--relu_clip` if the model's is not 20). Only a `deepspeech` model with
    DeepSpeech's 26 MFCCs and 9 frames of context each side fits DeepSpeech's graph.
    """
    path = resolve_checkpoint(source)
    checkpoint = load_checkpoint(path)
    model, alphabet = model_from_checkpoint(checkpoint)
    config = model.config
    if not isinstance(config, DeepSpeechConfig):
        raise DsitaError(
            f"{path}: a {config.ARCHITECTURE} model; only a deepspeech model has a DeepSpeech 0.9 checkpoint"
        )
    if (config.n_mfcc, config.n_context) != (DEEPSPEECH_N_MFCC, DEEPSPEECH_N_CONTEXT):
        raise DsitaError(
            f"{path}: {config.n_mfcc} MFCCs with {config.n_context} frames of context; "
            f"DeepSpeech 0.9's graph takes {DEEPSPEECH_N_MFCC} with {DEEPSPEECH_N_CONTEXT}"
        )
    step = int((checkpoint.get("train_state") or {}).get("step", 0))
    variables = from_state_dict(model.state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"best_dev-{step}"
    write_bundle(prefix, {**variables, **training_state(variables, step, options)})
    alphabet.save(out_dir / ALPHABET_FILE)
    write_state_file(out_dir, prefix.name, BEST_DEV_STATE)
    return prefix
