"""Fuzzing the model package loader: every input is refused with a one-line DsitaError, or transcribes as the
real package does; nothing else, and no temporary folder is left behind.

Inputs are random bytes, truncations and flipped bytes of the real it-it.zip and model_it.tar.xz, and zips
rebuilt from the real members with members dropped, added (odd names, links, special files), replaced or
cut, and manifests rewritten. DSITA_FUZZ_EXAMPLES sets the number of inputs (BENCHMARKS.md has the counts).
"""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_FP32, RELEASE_ZIP
from dsita.inference.model import InferenceOptions, load_model
from dsita.inference.package import MANIFEST_FILE

EXAMPLES = int(os.environ.get("DSITA_FUZZ_EXAMPLES", "150"))
OPTIONS = InferenceOptions(beam_width=30)
ODD_NAMES = (
    "../escape.txt", "/absolute.txt", "scorer/../../up.txt", "a\\b.txt", "C:drive.txt", "scorer/extra.binary",
    "scorer/", "deep/" * 40 + "x", "model.onnx", "MANIFEST.JSON", "ünïcödé.txt", "x" * 300, ".hidden",
)  # fmt: skip


@dataclass(frozen=True)
class Real:
    """The real packages' bytes and members, and what each transcribes a clip as (int8 and fp32 differ)."""

    zip_bytes: bytes
    tar_bytes: bytes
    members: dict[str, bytes]
    clip: Path
    texts: dict[str, str]  # suffix -> transcript


@pytest.fixture(scope="module")
def real(small_release: Path, sample_corpus: Path) -> Real:
    package, fp32 = small_release / RELEASE_ZIP, small_release / RELEASE_FP32
    with zipfile.ZipFile(package) as zf:
        files = {info.filename: zf.read(info) for info in zf.infolist()}
    clip = min(read_csv(sample_corpus / "test.csv"), key=lambda s: s.duration or 0).wav_path
    texts = {
        suffix: load_model(path, OPTIONS).transcribe(clip).text
        for suffix, path in ((".zip", package), (".tar.xz", fp32))
    }
    return Real(package.read_bytes(), fp32.read_bytes(), files, clip, texts)


@pytest.fixture(scope="module")
def private_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary folder of the loader's own, to see that it leaves nothing behind."""
    folder = tmp_path_factory.mktemp("loader-tmp")
    saved, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved


def _flip(data: bytes, positions: list[int], mask: int) -> bytes:
    out = bytearray(data)
    for position in positions:
        out[position % len(out)] ^= mask
    return bytes(out)


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are one of the odd cases
        for info, data in entries:
            zf.writestr(info, data)
    return buffer.getvalue()


def _one_entry_manifest(name: str, size: int) -> str:
    entry = {"size": size, "sha256": "0" * 64}
    return json.dumps({"format": "dsita-package", "version": 1, "files": {name: entry}})


def _odd_info(name: str, kind: str) -> zipfile.ZipInfo | str:
    if kind == "plain":
        return name
    info = zipfile.ZipInfo(name)
    mode = {"link": stat.S_IFLNK, "fifo": stat.S_IFIFO, "device": stat.S_IFCHR}[kind]
    info.external_attr = (mode | 0o644) << 16
    return info


@st.composite
def rebuilt_zips(draw: st.DrawFn, files: dict[str, bytes]) -> bytes:
    """The real members with a few changes: dropped, replaced, cut, added under odd names, manifest edits."""
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = list(files.items())
    names = sorted(files)
    for _ in range(draw(st.integers(1, 3))):
        change = draw(st.sampled_from(("drop", "replace", "cut", "add", "manifest")))
        if change == "drop":
            gone = draw(st.sampled_from(names))
            entries = [entry for entry in entries if entry[0] != gone]
        elif change in ("replace", "cut"):
            index = draw(st.integers(0, len(entries) - 1))
            info, data = entries[index]
            new = (
                draw(st.binary(max_size=512))
                if change == "replace"
                else data[: draw(st.integers(0, len(data)))]
            )
            entries[index] = (info, new)
        elif change == "add":
            name = draw(st.sampled_from(ODD_NAMES) | st.text(min_size=1, max_size=30))
            kind = draw(st.sampled_from(("plain", "plain", "link", "fifo", "device")))
            entries.append((_odd_info(name, kind), draw(st.binary(max_size=64))))
        else:
            text = draw(
                st.sampled_from(("", "{}", "[]", "null", '{"format": "dsita-package", "version": 1}'))
                | st.text(max_size=200)
                | st.builds(_one_entry_manifest, st.sampled_from(names), st.integers(-1, 10**6))
            )
            entries = [e for e in entries if e[0] != MANIFEST_FILE] + [(MANIFEST_FILE, text.encode())]
    return _zip(entries)


def inputs(real: Real) -> st.SearchStrategy[tuple[str, bytes]]:
    """(file suffix, bytes) of one input."""
    damaged = st.sampled_from((real.zip_bytes, real.tar_bytes)).flatmap(
        lambda data: st.one_of(
            st.integers(0, len(data) - 1).map(lambda n: data[:n]),
            st.builds(
                _flip, st.just(data), st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=100),
                st.integers(1, 255),
            ),
        ).map(lambda out: (".zip" if data is real.zip_bytes else ".tar.xz", out))
    )  # fmt: skip
    return st.one_of(
        st.tuples(st.sampled_from((".zip", ".tar.xz", ".bin")), st.binary(max_size=4096)),
        damaged,
        rebuilt_zips(real.members).map(lambda data: (".zip", data)),
    )


@pytest.mark.slow
def test_the_loader_gives_one_line_errors_or_the_right_transcript(real: Real, private_tmp: Path) -> None:
    work = private_tmp.parent / "fuzz-inputs"
    work.mkdir(exist_ok=True)
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        suffix, content = data.draw(inputs(real))
        path = work / f"input{suffix}"
        path.write_bytes(content)
        try:
            model = load_model(path, OPTIONS)
        except DsitaError as exc:
            message = str(exc)
            assert message and "\n" not in message, message
            assert "dsita-model-" not in message, message  # the member, not the deleted temporary folder
            outcomes[_kind(message)] += 1
            return
        text = model.transcribe(real.clip).text
        if _without_manifest(content):
            # An older package (no manifest) loads unchecked by design: a member dropped or changed with it
            # can load and read differently (no scorer, an emptied vocabulary), so only a transcript is asked.
            assert isinstance(text, str)
            outcomes["loaded unchecked (no manifest)"] += 1
            return
        assert text == real.texts[suffix]
        outcomes["loaded, right transcript"] += 1

    check()
    assert not list(private_tmp.iterdir()), "the loader left temporary files"
    print(f"\npackage loader fuzz: {sum(outcomes.values())} inputs: {dict(outcomes.most_common())}")


def _without_manifest(content: bytes) -> bool:
    """Whether `content` is a zip with no manifest member: a package of before manifests."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            return MANIFEST_FILE not in zf.namelist()
    except zipfile.BadZipFile:
        return False


def _kind(message: str) -> str:
    """An error message without its file names, for the tally."""
    for words in ("corrupt", "unsafe", "links and special", "not listed", "is missing", "damaged", "manifest",
                  "no model.onnx", "no alphabet.txt", "not a model package", "ONNX", "alphabet"):  # fmt: skip
        if words in message:
            return words
    return message[-60:]
