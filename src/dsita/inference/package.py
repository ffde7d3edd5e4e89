"""The model package that export writes and inference reads: its files, ONNX names and metadata keys.

A package is a zip (`it-it.zip`), a tar.xz (`model_it.tar.xz`) or a folder holding `model.onnx`,
`alphabet.txt`, `MODEL_CARD.md` and optionally `scorer/`; a bare `model.onnx` works too (its alphabet is in
its metadata). Archives are unpacked into a private temporary folder after every member is checked: no
absolute paths, no `..`, no links, and a cap on the unpacked size. Nothing here imports torch.
"""

from __future__ import annotations

import json
import lzma
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet

MODEL_FILE = "model.onnx"
ALPHABET_FILE = "alphabet.txt"
CARD_FILE = "MODEL_CARD.md"
SCORER_DIR = "scorer"
GRAPH_VERSION = 1  # bumped when the graph's inputs, outputs or metadata change meaning
LANGUAGE = "it-IT"
MAX_UNPACKED_BYTES = 8 << 30

# Graph inputs and outputs, named as in DeepSpeech's exported graphs. `logits` are unnormalised.
INPUT = "input_node"  # (batch, time, 494) context-stacked MFCCs, or (batch, time, n_mels) log-mels
STATE_IN_PREFIX, STATE_OUT_PREFIX = "previous_state_", "new_state_"  # + the model's state_names
STATE_C_IN, STATE_H_IN = "previous_state_c", "previous_state_h"  # (batch, n_hidden), DeepSpeech only
LOGITS = "logits"  # (batch, time, n_outputs), the CTC blank last
STATE_C_OUT, STATE_H_OUT = "new_state_c", "new_state_h"
# Whole-segment graphs (the conformer) take each item's valid frames and give its valid logit steps.
LENGTHS_IN, LENGTHS_OUT = "input_lengths", "output_lengths"  # (batch,) int64


def metadata_props(values: dict[str, object]) -> dict[str, str]:
    """ONNX metadata is string to string: strings stay as they are, anything else is written as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in values.items()}


@dataclass(frozen=True)
class ModelPackage:
    """An opened package: paths into its (possibly temporary) folder and its alphabet."""

    source: Path
    model_path: Path
    alphabet: Alphabet | None  # None for a bare model.onnx: the alphabet comes from its metadata
    scorer_path: Path | None
    # Keeps an unpacked archive's folder alive as long as the package is referenced.
    workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False, compare=False)


def open_package(path: str | Path) -> ModelPackage:
    """Open a package file or folder; any problem raises DsitaError naming the file."""
    path = Path(path)
    if path.is_dir():
        return _from_folder(path, path, None)
    if not path.is_file():
        raise DsitaError(f"{path}: model not found")
    if path.suffix == ".onnx":
        return ModelPackage(path, path, None, None)
    workdir = tempfile.TemporaryDirectory(prefix="dsita-model-")
    try:
        if path.suffix == ".zip" or zipfile.is_zipfile(path):
            _unpack_zip(path, Path(workdir.name))
        elif path.name.endswith((".tar", ".tar.xz", ".txz")) or _is_tar(path):
            _unpack_tar(path, Path(workdir.name))
        else:
            raise DsitaError(f"{path}: not a model package (expected a .zip, a .tar.xz, a folder or .onnx)")
        return _from_folder(path, Path(workdir.name), workdir)
    except BaseException:
        workdir.cleanup()
        raise


def _from_folder(source: Path, root: Path, workdir: tempfile.TemporaryDirectory[str] | None) -> ModelPackage:
    model = root / MODEL_FILE
    if not model.is_file():
        raise DsitaError(f"{source}: not a dsita model package: it has no {MODEL_FILE}")
    if not (root / ALPHABET_FILE).is_file():
        raise DsitaError(f"{source}: not a dsita model package: it has no {ALPHABET_FILE}")
    alphabet = Alphabet.load(root / ALPHABET_FILE)
    scorer = root / SCORER_DIR
    return ModelPackage(source, model, alphabet, scorer if scorer.is_dir() else None, workdir)


def _check_member(archive: Path, name: str, is_link: bool, is_special: bool) -> None:
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or ":" in name:
        raise DsitaError(f"{archive}: refusing unsafe member path {name!r}")
    if is_link or is_special:
        raise DsitaError(f"{archive}: refusing member {name!r}: links and special files are not allowed")


def _check_size(archive: Path, sizes: list[int]) -> None:
    if sum(sizes) > MAX_UNPACKED_BYTES:
        raise DsitaError(f"{archive}: unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB; refusing")


def _unpack_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix mode
                special = kind not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)
                _check_member(archive, info.filename, kind == stat.S_IFLNK, special)
            _check_size(archive, [info.file_size for info in infos])
            if MODEL_FILE not in {info.filename for info in infos}:
                raise DsitaError(f"{archive}: not a dsita model package: the zip has no {MODEL_FILE}")
            zf.extractall(dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DsitaError(f"{archive}: corrupt zip file ({exc})") from None


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, tarfile.TarError, EOFError):
        return False


def _unpack_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                special = not (member.isfile() or member.isdir() or member.issym() or member.islnk())
                _check_member(archive, member.name, member.issym() or member.islnk(), special)
            _check_size(archive, [member.size for member in members])
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError, ValueError) as exc:
        raise DsitaError(f"{archive}: corrupt archive ({exc})") from None
