"""`dsita transcribe` and model packages: bad input, JSON output, streaming from stdin."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.export.release import RELEASE_FP32, RELEASE_ZIP
from dsita.inference.model import InferenceOptions, load_model
from dsita.text.alphabet import Alphabet

DSITA = [sys.executable, "-m", "dsita.cli"]


def dsita(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "300"}
    result = subprocess.run(
        [*DSITA, *args], input=stdin, capture_output=True, env=env, check=False, timeout=120
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


@pytest.fixture(scope="module")
def clips(sample_corpus: Path) -> list[Path]:
    return [s.wav_path for s in read_csv(sample_corpus / "test.csv")][:2]


def bad_audio(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {
        "not audio": folder / "notes.wav",
        "empty": folder / "empty.ogg",
        "no samples": folder / "zero.wav",
    }
    files["not audio"].write_text("these are not samples\n")
    files["empty"].write_bytes(b"")
    sf.write(files["no samples"], np.zeros(0, dtype=np.int16), SAMPLE_RATE)
    files["missing"] = folder / "missing.flac"
    return files


def test_bad_files_get_one_error_line_each_and_the_rest_is_transcribed(
    small_release: Path, clips: list[Path], tmp_path: Path
) -> None:
    bad = bad_audio(tmp_path)
    args = [str(clips[0]), *map(str, bad.values()), str(clips[1])]
    result = dsita("transcribe", *args, "--model", str(small_release / RELEASE_ZIP), "--no-lm")
    assert result.returncode == 1
    model = load_model(small_release / RELEASE_ZIP, InferenceOptions(use_lm=False))
    assert result.stdout.splitlines() == [f"{clip}: {model.transcribe(clip).text}" for clip in clips]
    errors = result.stderr.splitlines()
    assert len(errors) == len(bad)
    for line, path in zip(errors, bad.values(), strict=True):
        assert line.startswith(f"error: {path}: ")
    assert "is empty" in errors[1] and "no samples" in errors[2] and "not found" in errors[3]


def test_json_has_word_times_and_confidence(small_release: Path, clips: list[Path]) -> None:
    result = dsita(
        "transcribe", str(clips[0]), "--model", str(small_release / RELEASE_FP32), "--json", "--beam", "20"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["file"] == str(clips[0])
    assert [w["word"] for w in record["words"]] == record["text"].split() != []
    duration = sf.info(clips[0]).duration
    for word in record["words"]:
        assert 0 <= word["start"] < word["end"] <= duration + 0.02
        assert 0 < word["confidence"] <= 1


def test_stream_from_stdin_prints_partials_and_the_final(small_release: Path, sample_corpus: Path) -> None:
    samples = read_csv(sample_corpus / "test.csv")
    longest = max(samples, key=lambda s: s.duration or 0)
    pcm = (load_audio(longest.wav_path) * 32767).astype("<i2")
    model_path = str(small_release / RELEASE_ZIP)
    result = dsita("transcribe", "--stream", "-", "--model", model_path, "--no-lm", stdin=pcm.tobytes())
    assert result.returncode == 0, result.stderr
    final = load_model(model_path, InferenceOptions(use_lm=False)).transcribe(pcm).text
    assert result.stdout == final + "\n"
    partials = result.stderr.splitlines()
    assert partials and len(set(partials)) == len(partials)  # printed when they change


def package_folder(small_release: Path, folder: Path) -> Path:
    with zipfile.ZipFile(small_release / RELEASE_ZIP) as zf:
        zf.extractall(folder)
    return folder


def zip_of(folder: Path, path: Path, extra: dict[str, bytes] | None = None, link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_bad_models_are_refused_with_a_clear_error(small_release: Path, tmp_path: Path) -> None:
    good = package_folder(small_release, tmp_path / "good")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes((small_release / RELEASE_ZIP).read_bytes()[:5000])
    foreign = tmp_path / "photos.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("holiday/readme.txt", "not a model")
    mismatched = package_folder(small_release, tmp_path / "mismatched")
    Alphabet.english().save(mismatched / "scorer" / "alphabet.txt")
    not_onnx = package_folder(small_release, tmp_path / "not_onnx")
    (not_onnx / "model.onnx").write_bytes(b"\x00garbage" * 100)
    link_tar = tmp_path / "link.tar.xz"
    with tarfile.open(link_tar, "w:xz") as tf:
        tf.add(good / "model.onnx", "model.onnx")
        info = tarfile.TarInfo("alphabet.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)

    cases = {
        corrupt: "corrupt zip",
        foreign: "no model.onnx",
        zip_of(good, tmp_path / "escape.zip", extra={"../evil.txt": b"x"}): "unsafe member path",
        zip_of(good, tmp_path / "link.zip", link="scorer/extra.binary"): "links and special files",
        link_tar: "links and special files",
        zip_of(mismatched, tmp_path / "mismatched.zip"): "another alphabet",
        not_onnx: "cannot load the ONNX model",
        tmp_path / "absent.zip": "model not found",
    }
    for path, message in cases.items():
        with pytest.raises(DsitaError, match=message):
            load_model(path)
    assert not (tmp_path.parent / "evil.txt").exists()

    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    result = dsita("transcribe", str(clip), "--model", str(tmp_path / "mismatched.zip"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'mismatched.zip'}: its scorer was built for another alphabet than the model's"
    ]
