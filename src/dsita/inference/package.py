"""The model package that export writes and inference reads: its files, ONNX names and metadata keys.

A package is a zip (`it-it.zip`), a tar.xz (`model_it.tar.xz`) or a folder holding `model.onnx`,
`alphabet.txt`, `MODEL_CARD.md`, `manifest.json` and optionally `scorer/`; a bare `model.onnx` works too (its
alphabet is in its metadata). Archives are unpacked into a private temporary folder after every member is
checked: no absolute paths, no `..`, no links, and a cap on the unpacked size. Nothing here imports torch.

`manifest.json` lists every other member with its size and SHA-256 (`with_manifest`, `write_manifest`);
opening a package checks them all, so a damaged or edited member is refused by name before onnxruntime or
KenLM read it (a flipped byte in a KenLM binary can crash the process). Packages written before the manifest
existed open without the check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import lzma
import re
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text
from dsita.text.alphabet import Alphabet

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
ALPHABET_FILE = "alphabet.txt"
CARD_FILE = "MODEL_CARD.md"
SCORER_DIR = "scorer"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "dsita-package"
MANIFEST_VERSION = 1
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


def metadata_props(values: Mapping[str, object]) -> dict[str, str]:
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

    def member_names(self, message: str) -> str:
        """`message` with every path into an unpacked archive's temporary folder written as the archive and
        the member, which is what the user has (the folder is deleted with the package)."""
        if self.workdir is None:
            return message
        root = re.escape(self.workdir.name)
        named = re.sub(root + r"/([^\s:'\",()]+)", lambda m: f"{self.source} (member {m.group(1)})", message)
        return re.sub(root, str(self.source), named)

    @contextlib.contextmanager
    def naming_members(self) -> Iterator[None]:
        """Re-raise a DsitaError raised inside the block with `member_names` applied to its message."""
        try:
            yield
        except DsitaError as exc:
            renamed = self.member_names(str(exc))
            if renamed == str(exc):
                raise
            raise DsitaError(renamed) from None


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
    check_manifest(source, root)
    scorer = root / SCORER_DIR
    package = ModelPackage(source, model, None, scorer if scorer.is_dir() else None, workdir)
    with package.naming_members():
        return replace(package, alphabet=Alphabet.load(root / ALPHABET_FILE))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest_text(files: Mapping[str, Path]) -> str:
    """The manifest of a package whose members (name -> the file that becomes it) are `files`."""
    listed = {
        name: {"size": path.stat().st_size, "sha256": _sha256(path)}
        for name, path in sorted(files.items())
        if name != MANIFEST_FILE
    }
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": listed}
    return json.dumps(manifest, ensure_ascii=False, indent=1) + "\n"


def with_manifest(files: Mapping[str, Path], folder: Path) -> dict[str, Path]:
    """`files` (archive member name -> source file) and a `manifest.json` member listing them, written into
    `folder` under a name of its own (an export writes several packages from one work folder)."""
    text = manifest_text(files)
    path = folder / f"manifest-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    atomic_write_text(path, text)
    return {**files, MANIFEST_FILE: path}


def write_manifest(folder: Path) -> Path:
    """Write `folder/manifest.json` for a package folder: every file under it, by its path inside."""
    path = folder / MANIFEST_FILE
    atomic_write_text(path, manifest_text(_package_files(folder)))
    return path


def _package_files(root: Path) -> dict[str, Path]:
    """Every file under a package folder, by its member name, the manifest aside."""
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    files.pop(MANIFEST_FILE, None)
    return files


def _read_by_loader(name: str) -> bool:
    return name in (MODEL_FILE, ALPHABET_FILE) or name.startswith(f"{SCORER_DIR}/")


def _listed_files(source: Path, path: Path) -> dict[str, tuple[int, str]]:
    """The manifest's members, name -> (size, SHA-256); a malformed manifest is a DsitaError."""
    where = f"{source}: its {MANIFEST_FILE}"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DsitaError(f"{where} is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise DsitaError(f"{where} is not a {MANIFEST_FORMAT} manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise DsitaError(f"{where} has version {data.get('version')!r}; this dsita reads {MANIFEST_VERSION}")
    files = data.get("files")
    listed: dict[str, tuple[int, str]] = {}
    for name, entry in files.items() if isinstance(files, dict) else [(None, None)]:
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not (isinstance(size, int) and isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise DsitaError(f"{where} has a malformed entry for {name!r} (expected a size and a SHA-256)")
        listed[str(name)] = (size, digest)  # a JSON object's keys are strings
    return listed


def check_manifest(source: Path, root: Path) -> None:
    """Every member of the package folder `root` is there with the size and SHA-256 its manifest lists, and
    every file the loader reads is listed. A package written before packages had a manifest is not checked."""
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        log.debug("%s: no %s (an older package): its members are not checked", source, MANIFEST_FILE)
        return
    listed = _listed_files(source, manifest)
    found = _package_files(root)
    # Files the loader never reads (a README beside an unpacked package) may be added; the others not.
    unlisted = sorted(name for name in found.keys() - listed.keys() if _read_by_loader(name))
    missing = sorted(listed.keys() - found.keys())
    if unlisted:
        raise DsitaError(
            f"{source}: member {unlisted[0]} is not listed in its {MANIFEST_FILE}: the package was altered"
        )
    if missing:
        raise DsitaError(f"{source}: member {missing[0]}, listed in its {MANIFEST_FILE}, is missing")
    for name, (size, digest) in sorted(listed.items()):
        path = found[name]
        if path.is_symlink() or path.stat().st_size != size or _sha256(path) != digest:
            raise DsitaError(
                f"{source}: member {name} is damaged or was altered (its size or SHA-256 differs from "
                f"{MANIFEST_FILE})"
            )


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
            for info in infos:
                try:
                    zf.extract(info, dest)
                except OSError as exc:  # the error names the temporary folder: name the member instead
                    raise DsitaError(
                        f"{archive}: cannot unpack member {_shown(info.filename)}: {exc.strerror}"
                    ) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DsitaError(f"{archive}: corrupt zip file ({exc})") from None


def _shown(name: str, limit: int = 80) -> str:
    """A member name fit for a one-line error: quoted, and cut short when it is too long to read."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}... ({len(name)} characters)"


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
            for member in members:
                try:
                    tf.extract(member, dest, filter="data")
                except OSError as exc:  # the error names the temporary folder: name the member instead
                    raise DsitaError(
                        f"{archive}: cannot unpack member {_shown(member.name)}: {exc.strerror}"
                    ) from None
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError, ValueError) as exc:
        raise DsitaError(f"{archive}: corrupt archive ({exc})") from None
