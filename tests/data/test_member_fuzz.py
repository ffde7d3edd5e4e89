"""Fuzzing the archive member checks: of the Common Voice importer (`dsita.data.commonvoice`) and of the model
package (`dsita.inference.package`). Any member name, type and link target gives a refusal with a reason (a
skip, or one DsitaError line) or a member that is safe to use; nothing is ever written outside the output
folder, whatever the archive holds."""

from __future__ import annotations

import io
import stat
import tarfile
import uuid
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsita.audio import SAMPLE_RATE
from dsita.data.clips import LINK_MEMBER, UNSAFE_MEMBER, ImportOptions
from dsita.data.commonvoice import _member_problem, import_common_voice
from dsita.errors import DsitaError
from dsita.inference.package import _check_member, open_package
from dsita.text.alphabet import Alphabet

FIXTURES = [HealthCheck.function_scoped_fixture]  # tmp_path is shared by the examples, each in its own folder
OPTIONS = ImportOptions(Alphabet.italian(), workers=1, progress=False)
PIECE = st.sampled_from(
    ["..", ".", "", "clips", "it", "a.mp3", "x", "C:", "\\", "..\\..", "\x00", "é", " ", "~"]
)
NAME = st.one_of(
    st.lists(PIECE, min_size=1, max_size=5).map("/".join),
    st.lists(PIECE, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.text(max_size=30),
)
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.FIFOTYPE, tarfile.CONTTYPE]  # fmt: skip
LINK = st.sampled_from(["", "/etc/passwd", "../../x", "clips/a.mp3", "a.mp3", "/"])


def unsafe(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return name.startswith(("/", "\\")) or ".." in parts or "\\" in name


@settings(max_examples=1000, deadline=None)
@given(name=NAME, kind=st.sampled_from(KINDS), link=LINK)
def test_common_voice_member_check_refuses_with_a_reason_or_passes_a_safe_member(
    name: str, kind: bytes, link: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    problem = _member_problem(member)
    if problem is None:
        assert not unsafe(name) and (member.isfile() or member.isdir())
    else:
        assert problem[0] in (UNSAFE_MEMBER, LINK_MEMBER) and problem[1]


@settings(max_examples=1000, deadline=None)
@given(name=NAME, link=st.booleans(), special=st.booleans())
def test_package_member_check_refuses_in_one_line_or_passes_a_safe_member(
    name: str, link: bool, special: bool
) -> None:
    archive = Path("it-it.zip")
    try:
        _check_member(archive, name, link, special)
    except DsitaError as exc:
        assert "\n" not in str(exc) and str(archive) in str(exc)
        return
    assert not unsafe(name) and ":" not in name and not link and not special


@pytest.fixture(scope="module")
def mp3() -> bytes:
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / SAMPLE_RATE)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, tone, SAMPLE_RATE, format="MP3")
    return buffer.getvalue()


def add(tar: tarfile.TarFile, name: str, kind: bytes, data: bytes = b"", link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else 0
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def files_outside(root: Path, allowed: set[Path]) -> list[Path]:
    return [p for p in root.rglob("*") if not any(p == a or a in p.parents for a in allowed)]


ZIP_MODES = {tarfile.SYMTYPE: stat.S_IFLNK, tarfile.DIRTYPE: stat.S_IFDIR, tarfile.FIFOTYPE: stat.S_IFIFO}
TSV = "client_id\tpath\tsentence\nc\tcommon_voice_it_1.mp3\tbuongiorno a tutti\n"
HOSTILE = st.lists(st.tuples(NAME, st.sampled_from(KINDS), LINK), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(members=HOSTILE, tsvs_first=st.booleans())
def test_a_common_voice_archive_never_writes_outside_its_output_folder(
    tmp_path: Path, mp3: bytes, members: list[tuple[str, bytes, str]], tsvs_first: bool
) -> None:
    root = tmp_path / uuid.uuid4().hex
    root.mkdir()
    archive, out = root / "it.tar.gz", root / "work" / "out"
    with tarfile.open(archive, "w:gz") as tar:
        clip = [("cv/it/clips/common_voice_it_1.mp3", tarfile.REGTYPE, mp3)]
        tables = [(f"cv/it/{split}.tsv", tarfile.REGTYPE, TSV.encode()) for split in ("train", "dev", "test")]
        for name, kind, data in (tables + clip) if tsvs_first else (clip + tables):
            add(tar, name, kind, data)
        for name, kind, link in members:
            add(tar, name, kind, b"not audio" if kind == tarfile.REGTYPE else b"", link)
    try:
        report = import_common_voice(archive, out, OPTIONS)
    except DsitaError as exc:
        assert "\n" not in str(exc)
    else:
        assert report.total_kept == 1  # the one real clip, once, whatever else the archive holds
    assert files_outside(root, {archive, out}) == [root / "work"]
    assert all(not p.is_symlink() and (p.is_file() or p.is_dir()) for p in out.rglob("*"))


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(members=HOSTILE, zip_form=st.booleans())
def test_a_model_package_never_unpacks_outside_its_folder(
    tmp_path: Path, members: list[tuple[str, bytes, str]], zip_form: bool
) -> None:
    root = tmp_path / uuid.uuid4().hex
    root.mkdir()
    archive = root / ("it-it.zip" if zip_form else "model_it.tar.xz")
    entries = [("model.onnx", tarfile.REGTYPE, ""), ("alphabet.txt", tarfile.REGTYPE, ""), *members]
    if zip_form:
        with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # duplicate names are part of the test
            for name, kind, link in entries:
                info = zipfile.ZipInfo(name.split("\x00")[0] or "x")  # zip names end at a NUL
                info.external_attr = (ZIP_MODES.get(kind, stat.S_IFREG) | 0o644) << 16
                zf.writestr(info, link if kind == tarfile.SYMTYPE else "a\nb\n")
    else:
        with tarfile.open(archive, "w:xz") as tar:
            for name, kind, link in entries:
                add(tar, name, kind, b"a\nb\n" if kind == tarfile.REGTYPE else b"", link)
    try:
        package = open_package(archive)
    except DsitaError as exc:
        assert "\n" not in str(exc)
    else:
        workdir = Path(package.model_path).parent
        assert root not in workdir.parents  # unpacked into a private temporary folder
        assert all(not p.is_symlink() for p in workdir.rglob("*"))
    assert files_outside(root, {archive}) == []
