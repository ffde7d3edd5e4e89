"""Model packages: the manifest of member SHA-256s, and damaged members named by package and member."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest

from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_FP32, RELEASE_ZIP
from dsita.inference.model import InferenceOptions, load_model
from dsita.inference.package import MANIFEST_FILE, write_manifest

LM, VOCABULARY, MODEL = "scorer/lm.binary", "scorer/vocabulary.txt", "model.onnx"
FAST = InferenceOptions(beam_width=50)


def members(package: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def repack(package: Path, out: Path, changes: dict[str, bytes | None]) -> Path:
    """`package` (a zip) with members replaced or added (bytes) or removed (None)."""
    files = {**members(package), **changes}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            if data is not None:
                zf.writestr(name, data)
    return out


def flipped(data: bytes, start: int, end: int, count: int, seed: int) -> bytes:
    """`data` with `count` bytes of [start, end) inverted."""
    out = bytearray(data)
    for i in random.Random(seed).sample(range(start, end), count):
        out[i] ^= 0xFF
    return bytes(out)


def flipped_weights(model: bytes) -> bytes:
    """The ONNX model with 100 bytes inverted inside its largest weight tensor: a graph that still loads."""
    graph = onnx.load_from_string(model).graph
    largest = max(graph.initializer, key=lambda tensor: len(tensor.raw_data)).raw_data
    start = model.find(largest)
    assert start > 0
    return flipped(model, start, start + len(largest), 100, seed=3)


def damaged_members(package: Path) -> dict[str, tuple[str, bytes | None]]:
    """Case -> (member, its new bytes), as issue 13 found them."""
    files = members(package)
    lm = files[LM]
    return {
        "random lm.binary": (LM, random.Random(1).randbytes(len(lm))),
        "truncated lm.binary": (LM, lm[: len(lm) // 2]),
        "bit-flipped lm.binary": (LM, flipped(lm, 200, len(lm), 100, seed=2)),
        "non-UTF-8 vocabulary": (VOCABULARY, "perché\n".encode("latin-1") + files[VOCABULARY]),
        "empty vocabulary": (VOCABULARY, b""),
        "100 flipped bytes in model.onnx": (MODEL, flipped_weights(files[MODEL])),
    }


@pytest.fixture(scope="module")
def package(small_release: Path) -> Path:
    return small_release / RELEASE_ZIP


@pytest.fixture(scope="module")
def clip(sample_corpus: Path) -> Path:
    return read_csv(sample_corpus / "test.csv")[0].wav_path


def test_the_manifest_lists_every_member_with_its_size_and_sha256(small_release: Path) -> None:
    with zipfile.ZipFile(small_release / RELEASE_ZIP) as zf:
        in_zip = {name: zf.read(name) for name in zf.namelist()}
    with tarfile.open(small_release / RELEASE_FP32) as tf:
        in_tar = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for files in (in_zip, in_tar):
        manifest = json.loads(files.pop(MANIFEST_FILE))
        assert manifest["format"] == "dsita-package" and manifest["version"] == 1
        assert {MODEL, LM, VOCABULARY, "alphabet.txt"} <= set(files)
        assert manifest["files"] == {
            name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files.items()
        }


def test_a_damaged_member_is_refused_naming_the_package_and_the_member(package: Path, tmp_path: Path) -> None:
    for number, (case, (member, data)) in enumerate(damaged_members(package).items()):
        damaged = repack(package, tmp_path / f"{number}.zip", {member: data})
        with pytest.raises(DsitaError) as info:
            load_model(damaged)
        assert str(info.value) == (
            f"{damaged}: member {member} is damaged or was altered (its size or SHA-256 differs from "
            "manifest.json)"
        ), case
    added = repack(package, tmp_path / "added.zip", {"scorer/extra.binary": b"x"})
    with pytest.raises(DsitaError, match=rf"^{added}: member scorer/extra\.binary is not listed in its"):
        load_model(added)
    removed = repack(package, tmp_path / "removed.zip", {VOCABULARY: None})
    with pytest.raises(
        DsitaError, match=rf"^{removed}: member {VOCABULARY}, listed in its manifest.json, is"
    ):
        load_model(removed)
    bad_manifest = repack(package, tmp_path / "manifest.zip", {MANIFEST_FILE: b'{"format": "dsita-package"'})
    with pytest.raises(DsitaError, match=rf"^{bad_manifest}: its manifest.json is not valid JSON"):
        load_model(bad_manifest)


def test_the_command_line_prints_the_damaged_member_on_one_line(
    package: Path, clip: Path, tmp_path: Path
) -> None:
    member, data = damaged_members(package)["bit-flipped lm.binary"]
    damaged = repack(package, tmp_path / "it-it.zip", {member: data})
    result = subprocess.run(
        [sys.executable, "-m", "dsita.cli", "transcribe", str(clip), "--model", str(damaged)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {damaged}: member {LM} is damaged or was altered (its size or SHA-256 differs from "
        "manifest.json)"
    ]


def test_a_package_without_a_manifest_loads_and_names_damaged_members(
    package: Path, clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A package written before the manifest existed: loaded without the check, with a debug line; what the
    scorer checks still catch is named by member, never by the deleted temporary folder."""
    old = repack(package, tmp_path / "old.zip", {MANIFEST_FILE: None})
    with caplog.at_level(logging.DEBUG, logger="dsita.inference.package"):
        model = load_model(old, FAST)
    note = f"{old}: no manifest.json (an older package): its members are not checked"
    assert [r.getMessage() for r in caplog.records if r.name == "dsita.inference.package"] == [note]
    assert model.transcribe(clip) == load_model(package, FAST).transcribe(clip)

    damaged = damaged_members(package)
    expected = {
        "random lm.binary": f"(member {LM}): not a KenLM binary",
        "truncated lm.binary": f"(member {LM}): KenLM cannot read it (End of file",
        "non-UTF-8 vocabulary": f"(member {VOCABULARY}): not UTF-8 text (byte 5)",
        "empty vocabulary": f"(member {VOCABULARY}): the vocabulary is empty",
    }  # a bit-flipped KenLM binary can crash KenLM itself: only the manifest's SHA-256 keeps it out
    for case, message in expected.items():
        member, data = damaged[case]
        path = repack(package, tmp_path / f"{case}.zip", {MANIFEST_FILE: None, member: data})
        with pytest.raises(DsitaError) as info:
            load_model(path)
        text = str(info.value)
        assert text.startswith(f"{path} {message}"), text
        assert "\n" not in text and "dsita-model-" not in text
    # What the manifest is for: without it, flipped weights load and transcribe without a word of warning.
    member, data = damaged["100 flipped bytes in model.onnx"]
    silent = repack(package, tmp_path / "onnx.zip", {MANIFEST_FILE: None, member: data})
    assert isinstance(load_model(silent, FAST).transcribe(clip).text, str)


def test_a_package_folder_is_checked_and_write_manifest_lists_it(package: Path, tmp_path: Path) -> None:
    folder = tmp_path / "package"
    with zipfile.ZipFile(package) as zf:
        zf.extractall(folder)
    load_model(folder)
    (folder / "README.txt").write_text("notes beside the package are not read, and allowed\n")
    load_model(folder)
    vocabulary = folder / VOCABULARY
    vocabulary.write_text(vocabulary.read_text().replace("\n", "\n\n", 1))
    with pytest.raises(DsitaError, match=rf"^{folder}: member {VOCABULARY} is damaged or was altered"):
        load_model(folder)
    write_manifest(folder)  # a deliberate change, packaged again
    listed = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    assert "README.txt" in listed and VOCABULARY in listed
    load_model(folder)
    shutil.rmtree(folder / "scorer")
    with pytest.raises(
        DsitaError, match=r"member scorer/alphabet\.txt, listed in its manifest\.json, is missing"
    ):
        load_model(folder)
