"""`dsita import cv`: Common Voice (releases 3 to today) from `it.tar.gz` or its extracted folder.

Output: OUT/clips/<clip>.wav (16 kHz mono 16-bit PCM), OUT/{train,dev,test}.csv, OUT/skipped.csv.

The archive is read once, as a stream. Every member is checked first: absolute paths, `..`, links and
special files are refused and reported, and nothing is ever written under a member's own path (clips are
written under their checked base name). The split TSVs are small and kept in memory. They may come before
or after the clips. Once train/dev/test.tsv have been read, each wanted clip's bytes go straight to a
worker and the other clips are skipped. Clips that come before the TSVs are copied (in 1 MiB chunks) to the
scratch folder OUT/mp3/ and converted once the TSVs are known. OUT/mp3/ is removed when the import ends,
whether it succeeds or fails (a full disk); a killed run leaves it, and the next run overwrites it. Memory
stays bounded: only a few batches of clips are in flight at a time (see `ClipPool`).

Clip lengths are checked against MAX_SECS from each clip's header before it is decoded (see
`dsita.data.clips`); a full or read-only output disk is one error line with the space the import needs
(`import_disk_bytes`, which `dsita run`'s checks use too).

Resume: a clip whose WAV already exists and is valid (see `existing_wav`) is neither copied nor decoded.
A clip listed in several splits (which CV never does) stays in the first of test, dev, train, so that no
evaluation clip leaks into training; its other rows are skipped as duplicates.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from dsita.data.clips import (
    BEYOND_LIMIT,
    DUPLICATE,
    LINK_MEMBER,
    UNSAFE_MEMBER,
    UNSAFE_PATH,
    ClipJob,
    ClipOutcome,
    ClipPool,
    Entry,
    ImportOptions,
    ImportReport,
    Skip,
    check_transcript,
    existing_wav,
    finish_import,
    read_table,
    wav_size,
)
from dsita.errors import DsitaError
from dsita.progress import Progress
from dsita.system import disk_errors

log = logging.getLogger("dsita.data")
SPLITS = ("train", "dev", "test")
DIGEST_NAMES = {"sha256": "SHA-256", "sha1": "SHA-1"}
PRIORITY = ("test", "dev", "train")  # where a clip listed in several splits is kept
TSV_NAMES = {f"{split}.tsv": split for split in SPLITS}
MB = 1e6
MAX_IN_MEMORY = 16 << 20  # a wanted clip member up to this size goes to a worker without a scratch copy
SAMPLED_BYTES = 8 << 20  # of an archive, read to measure its clips' WAV size per archive byte
SAMPLED_CLIPS = 200  # of a folder, measured likewise
WAV_PER_ARCHIVE_BYTE = 9.2  # the bundled sample's (32 kb/s MP3): for an archive whose clips cannot be read
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=@-]{0,200}")

Tables = dict[str, tuple[str, bytes]]  # split -> (where the TSV came from, its bytes)


def import_common_voice(path: str | Path, out_dir: str | Path, options: ImportOptions) -> ImportReport:
    """Import a Common Voice release into DeepSpeech CSVs; see the module docstring for the rules.

    A full or read-only output disk is one DsitaError naming the folder and about what the import needs.
    """
    path, out_dir = Path(path), Path(out_dir)
    if not path.exists():
        raise DsitaError(f"{path}: not found; expected a Common Voice it.tar.gz or its extracted folder")
    with disk_errors(out_dir, lambda: import_disk_bytes(path, options.max_clips), "the import"):
        return _import(path, out_dir, options)


def _import(path: Path, out_dir: Path, options: ImportOptions) -> ImportReport:
    notes = []
    digests = {name: value for name, value in (("sha256", options.sha256), ("sha1", options.sha1)) if value}
    if path.is_dir():
        for name in digests:
            notes.append(f"{DIGEST_NAMES[name]} not checked: {path} is a folder, not the archive")
        tables, entries, skips, outcomes = _import_folder(path, out_dir, options)
    else:
        for name, expected in digests.items():
            verify_digest(path, name, expected, options.progress)
        tables, entries, skips, outcomes = _import_archive(path, out_dir, options)
    missing = [f"{split}.tsv" for split in SPLITS if split not in tables]
    if missing:
        notes.append(f"no {', '.join(missing)} in {path}")
    csv_files = {split: out_dir / f"{split}.csv" for split in SPLITS if split in tables}
    report = ImportReport(out_dir, csv_files, out_dir / "skipped.csv", notes=notes)
    return finish_import(report, entries, outcomes, skips)


def import_disk_bytes(path: Path, max_clips: int | None = None) -> int:
    """About what importing `path` (an archive or its folder) writes: every clip as a 16 kHz 16-bit WAV.

    Measured, not assumed: the WAV bytes per archive byte of the clips in its first few MB (Common Voice's
    MP3s have been 32 to 64 kb/s, which become 8 to 4 times their size), times the archive's size. A fixed
    subset (`max_clips`, FAST_TRAIN) writes at most that many average clips per split.
    """
    if path.is_dir():
        clips = sorted((_find_locale(path) / "clips").glob("*"))
        total = sum(p.stat().st_size for p in clips)
        sampled = [(p.stat().st_size, wav_size(p)) for p in clips[:SAMPLED_CLIPS]]
        spanned, wav = sum(s for s, w in sampled if w), sum(w for _, w in sampled if w)
        count = sum(1 for _, w in sampled if w)
    else:
        total = path.stat().st_size
        spanned, wav, count = _sample_archive(path)
    per_byte = wav / spanned if spanned and wav else WAV_PER_ARCHIVE_BYTE
    estimate = int(total * per_byte)
    if max_clips is not None and count:
        estimate = min(estimate, len(SPLITS) * max_clips * wav // count)
    return estimate


def _sample_archive(path: Path) -> tuple[int, int, int]:
    """(compressed bytes spanned, WAV bytes, clips) for the clips in the first SAMPLED_BYTES of an archive."""
    spanned = wav = count = 0
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            start = None
            for member in tar:
                tar.members = []  # type: ignore[attr-defined]  # undocumented, so not in typeshed
                if (raw.tell() > SAMPLED_BYTES and count) or raw.tell() > 8 * SAMPLED_BYTES:
                    break  # enough clips measured, or an archive that starts with large TSVs
                name = PurePosixPath(member.name)
                if not member.isfile() or name.parent.name != "clips" or member.size > MAX_IN_MEMORY:
                    continue
                start = raw.tell() if start is None else start
                size = wav_size(_read_member(tar, member))
                if size:
                    wav, count, spanned = wav + size, count + 1, raw.tell() - start
    except (tarfile.TarError, EOFError, zlib.error, OSError, DsitaError):
        pass  # the import itself says what is wrong with the archive
    return spanned, wav, count


def verify_digest(path: Path, algorithm: str, expected: str, show_progress: bool) -> None:
    """Stop unless the file's `algorithm` (sha256, sha1) digest is `expected` (hex)."""
    digest = hashlib.new(algorithm)
    with Progress(show_progress, log) as progress, open(path, "rb") as f:
        size = path.stat().st_size / MB
        task = progress.task(f"checking the {DIGEST_NAMES[algorithm]} of {path.name}", size, "MB")
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            task.advance(len(chunk) / MB)
    if digest.hexdigest() != expected.lower():
        raise DsitaError(
            f"{path}: {DIGEST_NAMES[algorithm]} mismatch: expected {expected.lower()}, "
            f"got {digest.hexdigest()}"
        )


def _entries(tables: Tables, out_dir: Path, options: ImportOptions) -> tuple[list[Entry], list[Skip]]:
    """Rows that pass the text checks, and the skips of the others. Columns are found by name."""
    entries: list[Entry] = []
    skips: list[Skip] = []
    first_split: dict[str, str] = {}
    for split in (s for s in PRIORITY if s in tables):
        where, data = tables[split]
        source = f"{split}.tsv"
        header, rows, row_skips = read_table(data, source, split, "\t", csv.QUOTE_NONE)
        missing = [c for c in ("path", "sentence") if c not in header]
        if missing:
            raise DsitaError(f"{where}: no {' or '.join(missing)} column; columns found: {', '.join(header)}")
        skips += row_skips
        if options.max_clips is not None:  # a fixed subset: the first rows of the table (FAST_TRAIN)
            skips += [Skip(split, source, row, BEYOND_LIMIT, "") for row, _ in rows[options.max_clips :]]
            rows = rows[: options.max_clips]
        for row, fields in rows:
            name = fields["path"].strip()
            if not SAFE_NAME.fullmatch(name):
                skips.append(Skip(split, source, row, UNSAFE_PATH, name))
                continue
            key = name.removesuffix(".mp3")  # releases before 4 list paths without the extension
            if key in first_split:
                skips.append(Skip(split, source, row, DUPLICATE, f"{name} is already in {first_split[key]}"))
                continue
            first_split[key] = split
            sentence = fields["sentence"]
            text = check_transcript(sentence, options.alphabet, split, source, row, options.max_secs)
            if isinstance(text, Skip):
                skips.append(text)
            else:
                entries.append(Entry(split, source, row, key, out_dir / "clips" / f"{key}.wav", text))
    return entries, skips


def _find_locale(root: Path) -> Path:
    """The folder holding train.tsv: the root itself or up to three levels down (cv-corpus-N/it/)."""
    for depth in range(4):
        found = sorted(root.glob("/".join(["*"] * depth + ["train.tsv"])))
        if len(found) > 1:
            raise DsitaError(f"{root}: several train.tsv files: {', '.join(str(p) for p in found)}")
        if found:
            return found[0].parent
    raise DsitaError(
        f"{root}: no train.tsv found; expected a Common Voice locale folder such as cv-corpus-*/it/"
    )


def _import_folder(
    root: Path, out_dir: Path, options: ImportOptions
) -> tuple[Tables, list[Entry], list[Skip], dict[str, ClipOutcome]]:
    locale = _find_locale(root)
    tables = {
        split: (str(locale / name), (locale / name).read_bytes())
        for name, split in TSV_NAMES.items()
        if (locale / name).is_file()
    }
    entries, skips = _entries(tables, out_dir, options)
    progress = Progress(options.progress, log)
    with ClipPool(options, progress) as pool, progress:
        for entry in entries:
            src = locale / "clips" / f"{entry.key}.mp3"
            if not src.is_file() and (locale / "clips" / entry.key).is_file():
                src = locale / "clips" / entry.key
            pool.submit(entry.key, ClipJob(src, entry.wav, options.max_secs))
        outcomes = pool.finish()
    return tables, entries, skips, outcomes


def _member_problem(member: tarfile.TarInfo) -> tuple[str, str] | None:
    """Why a member must not be used, or None: only plain files and folders with relative inner paths."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or "\\" in member.name:
        return UNSAFE_MEMBER, "path escapes the output folder"
    if member.issym() or member.islnk():
        return LINK_MEMBER, f"link to {member.linkname}"
    if not (member.isfile() or member.isdir()):
        return LINK_MEMBER, "device, fifo or other special file"
    return None


def _import_archive(
    path: Path, out_dir: Path, options: ImportOptions
) -> tuple[Tables, list[Entry], list[Skip], dict[str, ClipOutcome]]:
    progress = Progress(options.progress, log)
    spool = out_dir / "mp3"
    try:
        return _scan_archive(path, out_dir, options, progress)
    finally:
        # Scratch copies only: a failed import (a full disk) leaves none; a killed one, the next run removes.
        shutil.rmtree(spool, ignore_errors=True)


def _scan_archive(
    path: Path, out_dir: Path, options: ImportOptions, progress: Progress
) -> tuple[Tables, list[Entry], list[Skip], dict[str, ClipOutcome]]:
    with ClipPool(options, progress) as pool, progress, open(path, "rb") as raw:
        scan = _ArchiveScan(out_dir, options, pool)
        reading = progress.task(f"reading {path.name}", path.stat().st_size / MB, "MB")
        try:
            with tarfile.open(fileobj=raw, mode="r|gz") as tar:
                for member in tar:
                    # Stream mode keeps every TarInfo otherwise: memory grows with it. `members` is
                    # undocumented, so typeshed leaves it out.
                    tar.members = []  # type: ignore[attr-defined]
                    scan.add(tar, member)
                    reading.advance(raw.tell() / MB - reading.completed)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DsitaError(f"{path}: cannot read the archive as .tar.gz ({exc})") from None
        locales = [folder for folder, tables in scan.by_folder.items() if "train" in tables]
        if len(locales) != 1:
            found = ", ".join(str(f / "train.tsv") for f in locales) or "none"
            raise DsitaError(f"{path}: expected one train.tsv in the archive, found: {found}")
        tables = scan.by_folder[locales[0]]
        if scan.entries is None:
            scan.read_tables(tables)
        outcomes = pool.finish()
    return tables, scan.entries or [], scan.skips, outcomes


class _ArchiveScan:
    """What streaming the archive has found so far; clips go to the pool as soon as they are known wanted."""

    def __init__(self, out_dir: Path, options: ImportOptions, pool: ClipPool) -> None:
        self.out_dir, self.options, self.pool = out_dir, options, pool
        self.spool = out_dir / "mp3"
        self.by_folder: dict[PurePosixPath, Tables] = {}
        self.skips: list[Skip] = []
        self.entries: list[Entry] | None = None  # known once one folder's three split TSVs are read
        self.wanted: dict[str, Entry] = {}
        self.deferred: dict[str, ClipOutcome | Path | bytes] = {}  # clips seen before the TSVs

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        problem = _member_problem(member)
        if problem is not None:
            self.skips.append(Skip("archive", member.name, None, *problem))
            return
        name = PurePosixPath(member.name)
        if not member.isfile():
            return
        if name.name in TSV_NAMES:
            tables = self.by_folder.setdefault(name.parent, {})
            tables[TSV_NAMES[name.name]] = (member.name, _read_member(tar, member))
            if self.entries is None and len(tables) == len(SPLITS):
                self.read_tables(tables)
        elif name.parent.name == "clips":
            if not SAFE_NAME.fullmatch(name.name):
                self.skips.append(Skip("archive", member.name, None, UNSAFE_MEMBER, "unsafe file name"))
                return
            key = name.name.removesuffix(".mp3")
            if self.entries is not None and key not in self.wanted:
                return  # listed in validated/other/invalidated only
            wav = self.out_dir / "clips" / f"{key}.wav"
            reused = existing_wav(wav)
            if reused is not None:
                clip: ClipOutcome | Path | bytes = reused
            elif self.entries is None or member.size > MAX_IN_MEMORY:
                clip = _spool(tar, member, self.spool / name.name)
            else:
                clip = _read_member(tar, member)  # wanted now: straight to a worker, no scratch copy
            if self.entries is None:
                self.deferred[key] = clip
            else:
                self._convert(key, clip)

    def read_tables(self, tables: Tables) -> None:
        self.entries, row_skips = _entries(tables, self.out_dir, self.options)
        self.skips += row_skips
        self.wanted = {e.key: e for e in self.entries}
        for key, clip in self.deferred.items():
            if key in self.wanted:
                self._convert(key, clip)
        self.deferred.clear()  # the unwanted copies go with the spool folder at the end

    def _convert(self, key: str, clip: ClipOutcome | Path | bytes) -> None:
        if not isinstance(clip, ClipOutcome):
            self.pool.submit(key, ClipJob(clip, self.wanted[key].wav, self.options.max_secs))
        else:
            self.pool.record(key, clip)


def _open_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    f = tar.extractfile(member)
    if f is None:  # only for links and special files, which are refused before
        raise DsitaError(f"{member.name}: cannot read this archive member")
    return f


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    with _open_member(tar, member) as f:
        return f.read()


def _spool(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> Path:
    """Copy one member in bounded chunks. No fsync: the scratch copy only has to outlive this run."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    with _open_member(tar, member) as f, open(part, "wb") as dst:
        shutil.copyfileobj(f, dst, 1 << 20)
    part.replace(target)
    return target
