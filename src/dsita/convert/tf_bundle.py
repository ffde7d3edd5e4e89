"""Read and write TensorFlow 1 checkpoints (tensor bundles) without TensorFlow; read from a folder or a tar.

A checkpoint PREFIX is `PREFIX.index` plus the data shards `PREFIX.data-0000K-of-0000N`; a state file
(`checkpoint`, or DeepSpeech's `best_dev_checkpoint`, tried first as DeepSpeech does) names the prefix.

The index is a LevelDB-style sorted table, as TF's `table_builder` writes it:
  file   data blocks, a metaindex block, an index block, then a 48-byte footer: the metaindex and index
         block handles (varint64 offset and size each), zero padding to 40 bytes, the fixed64 magic
         0xdb4775248b80fb57;
  block  entries, then the restart offsets (fixed32 each) and their count (fixed32); each block is followed
         by a 5-byte trailer: its compression type (0, none) and the masked CRC-32C of block + type byte;
  entry  varint32 key bytes shared with the previous key, varint32 unshared key bytes, varint32 value size,
         the unshared key bytes, the value; the entry at a restart offset shares nothing;
  the index block has one entry per data block, whose value is that block's handle.
The empty key holds a `BundleHeaderProto` (num_shards, endianness, VersionDef); every other key names a
tensor and holds a `BundleEntryProto` (dtype, shape, shard_id, offset, size, masked crc32c, slices), both
decoded by a minimal protobuf reader. A tensor is `size` raw little-endian bytes at `offset` in its shard.
Every tensor's CRC-32C is checked as it is read.

`write_bundle` writes what TF's `Saver` (SaveV2, one shard) writes, byte for byte: the tensors in key order,
back to back, in one data shard; the index as TF's `TableBuilder` lays it out (data blocks cut at 256 KiB,
a restart every 16 entries, an empty metaindex block, an index block with a restart at every entry whose
keys are the shortest separators between blocks and the last block's short successor); protobuf fields in
field order with proto3 defaults left out, except that a scalar's empty shape is written.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import lzma
import math
import re
import tarfile
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TypeVar, cast

import numpy as np

from dsita.convert.crc32c import crc32c, mask
from dsita.errors import DsitaError
from dsita.fileio import atomic_write, atomic_write_text

STATE_FILES = ("best_dev_checkpoint", "checkpoint")
TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
READER_VERSION = 1  # TF's kTensorBundleVersion: the consumer version a bundle's VersionDef is checked against
# TF's DataType enum -> NumPy, for the number types checkpoints of weights and training state hold
_TF_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 9: "<i8", 19: "<f2"}
DTYPES = {code: np.dtype(name) for code, name in _TF_DTYPES.items()}
READ_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError)
_T = TypeVar("_T", int, bytes)


class _Malformed(Exception):
    """A problem in an index file; the caller adds the file's name."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's entry in a TF checkpoint's index: where its bytes are in which data shard."""

    name: str
    dtype: int  # TF DataType enum value
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int  # bytes
    crc32c: int  # masked, as stored


@dataclass(frozen=True)
class _File:
    size: int
    open: Callable[[], io.BufferedIOBase]  # readinto: a buffered binary file


# --- protobuf -------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
    raise _Malformed("varint longer than 10 bytes")


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: ints for varint and fixed fields, else bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        wire = key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        else:
            raise _Malformed(f"protobuf wire type {wire} where a bundle never has one")
        if pos > len(buf):
            raise _Malformed("truncated protobuf message")
        yield key >> 3, value


def _ints(value: int | bytes) -> list[int]:
    """A repeated integer field's value: one varint, or a packed run of them."""
    if isinstance(value, int):
        return [value]
    values, pos = [], 0
    while pos < len(value):
        number, pos = _varint(value, pos)
        values.append(number)
    return values


def _as(value: int | bytes, kind: type[_T]) -> _T:
    if not isinstance(value, kind):
        raise _Malformed("a protobuf field with the wrong wire type")
    return value


def _check_header(value: bytes) -> int:
    """The number of data shards, after TF's `CheckVersions` for a reader of version READER_VERSION."""
    fields = dict(_proto_fields(value))
    if _as(fields.get(2, 0), int) != 0:
        raise _Malformed("the checkpoint is big-endian; only little-endian checkpoints are supported")
    min_consumer, bad_consumers = 0, []
    for number, field in _proto_fields(_as(fields.get(3, b""), bytes)):
        if number == 2:
            min_consumer = _as(field, int)
        elif number == 3:
            bad_consumers += _ints(field)
    if min_consumer > READER_VERSION:
        raise _Malformed(
            f"unknown bundle version: it needs a reader of version >= {min_consumer}, "
            f"this one is {READER_VERSION}"
        )
    if READER_VERSION in bad_consumers:
        raise _Malformed(f"unknown bundle version: it rules out readers of version {READER_VERSION}")
    num_shards = _as(fields.get(1, 0), int)
    if num_shards < 1:
        raise _Malformed(f"the header names {num_shards} data shards")
    return num_shards


def _parse_entry(name: str, value: bytes) -> TensorEntry:
    fields: dict[int, int | bytes] = {}
    for number, field in _proto_fields(value):
        if number == 7:
            raise _Malformed(f"tensor {name} is stored as slices (a partitioned variable): not supported")
        fields[number] = field
    shape = []
    for number, dim in _proto_fields(_as(fields.get(2, b""), bytes)):
        if number == 2:
            size = _as(dict(_proto_fields(_as(dim, bytes))).get(1, 0), int)
            if size >= 1 << 63:
                raise _Malformed(f"tensor {name} has a negative dimension")
            shape.append(size)
    dtype, shard, offset, size, crc = (_as(fields.get(n, 0), int) for n in (1, 3, 4, 5, 6))
    return TensorEntry(name, dtype, tuple(shape), shard, offset, size, crc)


# --- sorted table ---------------------------------------------------------------------------------------


def _block(data: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size + BLOCK_TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise _Malformed(f"the {what} block at byte {offset} runs past the end of the table (truncated?)")
    kind = data[offset + size]
    if mask(crc32c(data[offset : offset + size + 1])) != int.from_bytes(data[end - 4 : end], "little"):
        raise _Malformed(f"corrupt: the {what} block at byte {offset} fails its CRC-32C check")
    if kind != 0:
        raise _Malformed(f"the {what} block is compressed (type {kind}); TensorFlow bundles never are")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed("a block too short for its restart count")
    n_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * n_restarts
    if n_restarts < 1 or limit < 0:
        raise _Malformed(f"a block with a bad restart count ({n_restarts})")
    restarts = {int.from_bytes(block[i : i + 4], "little") for i in range(limit, len(block) - 4, 4)}
    key, pos, starts = b"", 0, set()
    while pos < limit:
        starts.add(pos)
        at_restart = pos in restarts
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        if shared > len(key) or (at_restart and shared) or pos + unshared + size > limit:
            raise _Malformed(f"a malformed entry at byte {min(pos, limit)} of a block")
        key = key[:shared] + block[pos : pos + unshared]
        yield key, block[pos + unshared : pos + unshared + size]
        pos += unshared + size
    if limit and not restarts <= starts:
        raise _Malformed("restart points that do not fall on entries")


def read_table(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of a LevelDB-format table held in memory, in key order."""
    if len(data) < FOOTER_SIZE:
        raise _Malformed(f"{len(data)} bytes, shorter than a table footer (truncated?)")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise _Malformed("bad magic number: not a TensorFlow checkpoint index, or truncated")
    _, pos = _varint(footer, 0)  # the metaindex block: empty in bundles
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries: list[tuple[bytes, bytes]] = []
    for _, handle in _block_entries(_block(data, index_offset, index_size, "index")):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        entries += _block_entries(_block(data, offset, size, "data"))
    if any(a[0] >= b[0] for a, b in itertools.pairwise(entries)):
        raise _Malformed("keys out of order")
    return entries


def read_index(data: bytes) -> tuple[int, dict[str, TensorEntry]]:
    """A bundle index: its number of data shards and its tensors by name."""
    table = read_table(data)
    if not table or table[0][0] != b"":
        raise _Malformed("no bundle header: not a TensorFlow checkpoint index")
    num_shards = _check_header(table[0][1])
    entries = {}
    for key, value in table[1:]:
        entry = _parse_entry(key.decode("utf-8", "replace"), value)
        if entry.shard >= num_shards:
            raise _Malformed(f"tensor {entry.name} is in shard {entry.shard} of {num_shards}")
        entries[entry.name] = entry
    return num_shards, entries


# --- checkpoints ----------------------------------------------------------------------------------------


class TfCheckpoint:
    """An open checkpoint: its tensors' index entries, and the files beside it."""

    def __init__(self, where: str, files: dict[str, _File]) -> None:
        self.prefix = _prefix(where, files)
        self.label = f"{where} ({self.prefix})"
        self._files = files
        index_name = f"{self.prefix}.index"
        try:
            num_shards, self.entries = read_index(_read_file(where, files, index_name))
        except _Malformed as exc:
            raise DsitaError(f"{where}: {index_name}: {exc}") from None
        self._shards = [f"{self.prefix}.data-{k:05d}-of-{num_shards:05d}" for k in range(num_shards)]
        for name in self._shards:
            if name not in files:
                raise DsitaError(f"{where}: data shard {name} is missing")
        for entry in self.entries.values():
            shard = self._shards[entry.shard]
            if entry.offset + entry.size > files[shard].size:
                raise DsitaError(
                    f"{where}: {shard} is truncated: {files[shard].size} bytes, but tensor {entry.name} "
                    f"ends at byte {entry.offset + entry.size}"
                )

    def text(self, name: str) -> str | None:
        """A UTF-8 file beside the checkpoint (e.g. `alphabet.txt`), or None if there is none."""
        if name not in self._files:
            return None
        try:
            return _read_file(self.label, self._files, name).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DsitaError(f"{self.label}: {name} is not UTF-8 text (byte {exc.start})") from None

    def read(self, wanted: Collection[str]) -> dict[str, np.ndarray]:
        """Read every tensor in file order, checking each CRC-32C; return the arrays of `wanted`."""
        arrays = {}
        for shard, name in enumerate(self._shards):
            entries = sorted((e for e in self.entries.values() if e.shard == shard), key=lambda e: e.offset)
            try:
                with self._files[name].open() as f:
                    for entry in entries:
                        f.seek(entry.offset)  # forward only, in file order: cheap even inside a .tar.gz
                        buffer = bytearray(entry.size)
                        if f.readinto(buffer) != entry.size:
                            raise DsitaError(f"{self.label}: {name} is truncated inside tensor {entry.name}")
                        if mask(crc32c(buffer)) != entry.crc32c:
                            raise DsitaError(
                                f"{self.label}: tensor {entry.name} is corrupt: its CRC-32C does not match "
                                f"(bytes {entry.offset}-{entry.offset + entry.size} of {name})"
                            )
                        if entry.name in wanted:
                            arrays[entry.name] = self._array(entry, buffer)
            except READ_ERRORS as exc:
                raise DsitaError(f"{self.label}: cannot read {name} ({exc})") from None
        return arrays

    def _array(self, entry: TensorEntry, buffer: bytearray) -> np.ndarray:
        dtype = DTYPES.get(entry.dtype)
        if dtype is None:
            raise DsitaError(
                f"{self.label}: tensor {entry.name} has TF dtype {entry.dtype}, which dsita does not read"
            )
        if entry.size != math.prod(entry.shape) * dtype.itemsize:
            raise DsitaError(
                f"{self.label}: tensor {entry.name} holds {entry.size} bytes, not the "
                f"{math.prod(entry.shape) * dtype.itemsize} its shape {entry.shape} needs"
            )
        return np.frombuffer(buffer, dtype).reshape(entry.shape)


def _read_file(where: str, files: dict[str, _File], name: str) -> bytes:
    try:
        with files[name].open() as f:
            return f.read()
    except READ_ERRORS as exc:
        raise DsitaError(f"{where}: cannot read {name} ({exc})") from None


def _prefix(where: str, files: dict[str, _File]) -> str:
    """The checkpoint a folder holds: the one its state file names (best dev first), else its only index."""
    for state in STATE_FILES:
        if state in files:
            text = _read_file(where, files, state).decode("utf-8", "replace")
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.MULTILINE)
            if match is None:
                raise DsitaError(f"{where}: {state} names no model_checkpoint_path")
            prefix = re.split(r"[/\\]", match.group(1))[-1]  # paths are the training machine's
            if f"{prefix}.index" not in files:
                raise DsitaError(f"{where}: {state} names {prefix}, but {prefix}.index is missing")
            return prefix
    indexes = sorted(name.removesuffix(".index") for name in files if name.endswith(".index"))
    if len(indexes) != 1:
        raise DsitaError(
            f"{where}: no TensorFlow checkpoint (expected a {' or '.join(STATE_FILES)} file, or one *.index; "
            f"found {len(indexes)} *.index)"
        )
    return indexes[0]


@contextlib.contextmanager
def open_tf_checkpoint(path: Path) -> Iterator[TfCheckpoint]:
    """The checkpoint in a folder, or in a tar archive (read in place: nothing is extracted)."""
    if path.is_dir():
        files = {
            p.name: _File(p.stat().st_size, partial(_open_binary, p)) for p in path.iterdir() if p.is_file()
        }
        yield TfCheckpoint(str(path), files)
    elif path.is_file():
        with _archive_files(path) as files:
            yield TfCheckpoint(str(path), files)
    else:
        raise DsitaError(f"{path}: not found (expected a DeepSpeech checkpoint folder or .tar.gz archive)")


@contextlib.contextmanager
def open_checked_archive(path: Path) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
    """A tar archive (any compression) and its members, every one checked first: no absolute path, no `..`,
    no link or special file. Listing the members reads the whole archive (decompressing a .tar.xz)."""
    with contextlib.ExitStack() as stack:
        try:
            tar = stack.enter_context(tarfile.open(path, "r:*"))
            members = tar.getmembers()
        except READ_ERRORS as exc:
            raise DsitaError(f"{path}: not a readable tar archive ({exc})") from None
        for member in members:
            check_member(path, member)
        yield tar, members


def check_member(path: Path, member: tarfile.TarInfo) -> None:
    """Refuse an archive member that would land outside the folder it is unpacked into, or a link."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or "\\" in member.name:
        raise DsitaError(f"{path}: unsafe archive: member {member.name} escapes the archive's folder")
    if not (member.isfile() or member.isdir()):
        raise DsitaError(f"{path}: unsafe archive: member {member.name} is a link or special file")


def checkpoint_folders(members: Collection[tarfile.TarInfo]) -> set[PurePosixPath]:
    """The folders of an archive that hold a TensorFlow checkpoint (a state file or an index)."""
    return {
        PurePosixPath(m.name).parent
        for m in members
        if m.isfile() and (PurePosixPath(m.name).name in STATE_FILES or m.name.endswith(".index"))
    }


@contextlib.contextmanager
def _archive_files(path: Path) -> Iterator[dict[str, _File]]:
    """The files of the one folder in the archive that holds a checkpoint; links and `..` are refused."""
    with open_checked_archive(path) as (tar, members):
        regular = [m for m in members if m.isfile()]
        folders = checkpoint_folders(regular)
        if len(folders) != 1:
            found = ", ".join(sorted(str(f) for f in folders)) or "none"
            raise DsitaError(f"{path}: expected one folder holding a TensorFlow checkpoint, found: {found}")
        folder = folders.pop()
        yield {
            PurePosixPath(m.name).name: _File(m.size, partial(_extract, tar, m))
            for m in regular
            if PurePosixPath(m.name).parent == folder
        }


def _open_binary(path: Path) -> io.BufferedIOBase:
    return path.open("rb")


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo) -> io.BufferedIOBase:
    f = tar.extractfile(member)
    if f is None:
        raise tarfile.TarError(f"{member.name} is not a regular file")
    return cast(io.BufferedIOBase, f)  # tarfile's ExFileObject, an io.BufferedReader; typeshed says IO[bytes]


# --- writing --------------------------------------------------------------------------------------------

BUNDLE_VERSION = 1  # TF's kTensorBundleVersion, written as the producer version
BLOCK_SIZE = 262_144  # TF's table::Options: block_size and block_restart_interval
RESTART_INTERVAL = 16
TF_DTYPE_CODES = {np.dtype(name): code for code, name in _TF_DTYPES.items()}


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint for an int, length-delimited for bytes."""
    if isinstance(value, int):
        return _encode_varint(number << 3) + _encode_varint(value)
    return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value


def _entry_proto(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    """A BundleEntryProto (shard 0); zero offset and size are proto3 defaults, so they are left out."""
    dims = b"".join(_field(2, _field(1, dim) if dim else b"") for dim in shape)
    proto = _field(1, dtype) + _field(2, dims)
    proto += (_field(4, offset) if offset else b"") + (_field(5, size) if size else b"")
    return proto + _encode_varint(6 << 3 | 5) + crc.to_bytes(4, "little")  # crc32c: fixed32


class _BlockBuilder:
    """Entries with their keys prefix-compressed against the previous one, and a restart every `interval`."""

    def __init__(self, interval: int) -> None:
        self._interval = interval
        self._buffer = bytearray()
        self._restarts = [0]
        self._count = 0
        self._last = b""

    @property
    def empty(self) -> bool:
        return not self._buffer

    def size_estimate(self) -> int:
        return len(self._buffer) + 4 * len(self._restarts) + 4

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self._count < self._interval:
            limit = min(len(key), len(self._last))
            while shared < limit and key[shared] == self._last[shared]:
                shared += 1
        else:
            self._restarts.append(len(self._buffer))
            self._count = 0
        self._buffer += (
            _encode_varint(shared) + _encode_varint(len(key) - shared) + _encode_varint(len(value))
        )
        self._buffer += key[shared:] + value
        self._last = key
        self._count += 1

    def finish(self) -> bytes:
        restarts = b"".join(offset.to_bytes(4, "little") for offset in self._restarts)
        return bytes(self._buffer) + restarts + len(self._restarts).to_bytes(4, "little")


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key >= start and < limit (TF's FindShortestSeparator)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """A short key >= key (TF's FindShortSuccessor)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_table(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A LevelDB-format table of (key, value) entries, keys increasing, as TF's TableBuilder writes it."""
    out = bytearray()

    def block(builder: _BlockBuilder) -> bytes:
        contents = builder.finish() + b"\0"  # the trailer's compression type: none
        handle = _encode_varint(len(out)) + _encode_varint(len(contents) - 1)
        out.extend(contents + mask(crc32c(contents)).to_bytes(4, "little"))
        return handle

    data, index = _BlockBuilder(RESTART_INTERVAL), _BlockBuilder(1)
    pending: bytes | None = None  # the handle of a finished block whose index key waits for the next key
    last = b""
    for number, (key, value) in enumerate(entries):
        if number and key <= last:
            raise ValueError(f"table keys must increase: {key!r} after {last!r}")
        if pending is not None:
            index.add(_shortest_separator(last, key), pending)
            pending = None
        last = key
        data.add(key, value)
        if data.size_estimate() >= BLOCK_SIZE:
            pending, data = block(data), _BlockBuilder(RESTART_INTERVAL)
    if not data.empty:
        pending = block(data)
    metaindex = block(_BlockBuilder(RESTART_INTERVAL))
    if pending is not None:
        index.add(_short_successor(last), pending)
    footer = (metaindex + block(index)).ljust(FOOTER_SIZE - 8, b"\0")
    return bytes(out) + footer + TABLE_MAGIC.to_bytes(8, "little")


def write_bundle(prefix: Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Write `PREFIX.index` and `PREFIX.data-00000-of-00001`: a one-shard bundle of numeric tensors.

    The data shard is written first and the index last, each atomically, so that an index is never seen
    without its data.
    """
    names = sorted(tensors, key=lambda name: name.encode("utf-8"))
    entries = [(b"", _field(1, 1) + _field(3, _field(1, BUNDLE_VERSION)))]  # one shard, little-endian
    offset = 0
    with atomic_write(prefix.parent / f"{prefix.name}.data-00000-of-00001", "wb") as data:
        for name in names:
            array = np.asarray(tensors[name])
            code = TF_DTYPE_CODES.get(array.dtype.newbyteorder("<"))
            if code is None:
                raise DsitaError(f"tensor {name}: dtype {array.dtype} has no TensorFlow bundle dtype here")
            raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            data.write(raw)
            crc = mask(crc32c(raw))
            entries.append((name.encode("utf-8"), _entry_proto(code, array.shape, offset, len(raw), crc)))
            offset += len(raw)
    with atomic_write(prefix.parent / f"{prefix.name}.index", "wb") as index:
        index.write(write_table(entries))


def write_state_file(folder: Path, prefix_name: str, state_file: str = "checkpoint") -> None:
    """The CheckpointState text file that names the checkpoint, by a path relative to its folder."""
    quoted = prefix_name.replace("\\", "\\\\").replace('"', '\\"')
    text = f'model_checkpoint_path: "{quoted}"\nall_model_checkpoint_paths: "{quoted}"\n'
    atomic_write_text(folder / state_file, text)
