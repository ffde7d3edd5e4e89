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
from dsita.inference.package import write_manifest
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
    small_release: Path, test_clips: list[Path], tmp_path: Path
) -> None:
    bad = bad_audio(tmp_path)
    args = [str(test_clips[0]), *map(str, bad.values()), str(test_clips[1])]
    result = dsita("transcribe", *args, "--model", str(small_release / RELEASE_ZIP), "--no-lm")
    assert result.returncode == 1
    model = load_model(small_release / RELEASE_ZIP, InferenceOptions(use_lm=False))
    good = test_clips[:2]
    assert result.stdout.splitlines() == [f"{clip}: {model.transcribe(clip).text}" for clip in good]
    errors = result.stderr.splitlines()
    assert len(errors) == len(bad)
    for line, path in zip(errors, bad.values(), strict=True):
        assert line.startswith(f"error: {path}: ")
    assert "is empty" in errors[1] and "no samples" in errors[2] and "not found" in errors[3]


def test_json_has_word_times_and_confidence(small_release: Path, test_clips: list[Path]) -> None:
    clip, model = test_clips[0], str(small_release / RELEASE_FP32)
    result = dsita("transcribe", str(clip), "--model", model, "--json", "--beam", "20")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["file"] == str(clip)
    assert [w["word"] for w in record["words"]] == record["text"].split() != []
    duration = sf.info(clip).duration
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
    # Packages whose manifest agrees with members that are wrong: the checks behind the manifest's.
    mismatched = package_folder(small_release, tmp_path / "mismatched")
    Alphabet.english().save(mismatched / "scorer" / "alphabet.txt")
    write_manifest(mismatched)
    not_onnx = package_folder(small_release, tmp_path / "not_onnx")
    (not_onnx / "model.onnx").write_bytes(b"\x00garbage" * 100)
    write_manifest(not_onnx)
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


def test_nan_or_infinite_audio_is_refused_naming_the_file(small_release: Path, tmp_path: Path) -> None:
    """Such samples used to go through the features and decode as silence, without a word."""
    nan, inf = tmp_path / "nan.wav", tmp_path / "inf.wav"
    audio = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio[100:200] = np.nan
    sf.write(nan, audio, SAMPLE_RATE, subtype="FLOAT")
    audio = np.zeros(44100, dtype=np.float32)  # resampled on the way in
    audio[5000] = -np.inf
    sf.write(inf, audio, 44100, subtype="FLOAT")
    result = dsita("transcribe", str(nan), str(inf), "--model", str(small_release / RELEASE_ZIP), "--no-lm")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: NaN or infinite samples (expected finite values in [-1, 1])" for path in (nan, inf)
    ]
    model = load_model(small_release / RELEASE_ZIP, InferenceOptions(use_lm=False))
    samples = np.full(SAMPLE_RATE, np.nan, dtype=np.float32)
    with pytest.raises(DsitaError, match=r"^audio: NaN or infinite samples"):
        model.transcribe(samples)
    stream = model.stream()
    with pytest.raises(DsitaError, match=r"^audio: NaN or infinite samples"):
        stream.feed(np.r_[np.zeros(100, dtype=np.float32), np.inf])


def test_stream_from_a_missing_path_or_a_folder_is_one_line(tmp_path: Path) -> None:
    for source, what in ((tmp_path / "missing.pcm", "not found"), (tmp_path, "is a folder")):
        result = dsita("transcribe", "--stream", str(source), "--model", str(tmp_path / "never-opened.zip"))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            f"error: {source}: {what}; --stream reads raw 16 kHz 16-bit PCM from a file or - (stdin)"
        ]


def long_recording(clips: list[Path], path: Path, pause_s: float = 1.5) -> list[tuple[float, float]]:
    """The clips one after another with `pause_s` of silence after each, written to `path`; each clip's span
    in seconds."""
    pieces, spans, at = [], [], 0
    for clip in clips:
        audio = load_audio(clip)
        pieces += [audio, np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)]
        spans.append((at / SAMPLE_RATE, (at + audio.size) / SAMPLE_RATE))
        at += audio.size + pieces[-1].size
    sf.write(path, np.concatenate(pieces), SAMPLE_RATE)
    return spans


def srt_cues(text: str) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of each cue of an .srt file."""

    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.replace(",", ".").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(rest)

    cues = []
    for number, block in enumerate(text.strip().split("\n\n"), start=1):
        index, times, *lines = block.split("\n")
        assert index == str(number)
        start, end = times.split(" --> ")
        cues.append((seconds(start), seconds(end), lines))
    return cues


def test_output_formats_on_the_sample_and_a_long_recording(
    small_release: Path, sample_corpus: Path, tmp_path: Path
) -> None:
    tests = [s.wav_path for s in read_csv(sample_corpus / "test.csv")][:8]
    long = tmp_path / "long.wav"
    spans = long_recording(tests, long)
    model_path = small_release / RELEASE_ZIP
    out = tmp_path / "out"
    result = dsita("transcribe", str(tests[0]), str(long), "--model", str(model_path), "--no-lm",
                   "--output-format", "all", "--output-dir", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the files hold the transcripts
    names = {
        f"{stem}.{ext}" for stem in (tests[0].stem, "long") for ext in ("txt", "vtt", "srt", "tsv", "json")
    }
    assert {p.name for p in out.iterdir()} == names
    assert [line.split(", ")[0] for line in result.stderr.splitlines()] == [
        f"wrote {out / tests[0].stem}.txt", f"wrote {out}/long.txt"
    ]  # fmt: skip

    model = load_model(model_path, InferenceOptions(use_lm=False))
    transcript = model.transcribe(long)  # the Python API writes the same files
    written = {ext: (out / f"long.{ext}").read_text() for ext in ("srt", "vtt", "tsv", "txt", "json")}
    assert written == {
        "srt": transcript.to_srt(),
        "vtt": transcript.to_vtt(),
        "tsv": transcript.to_tsv(),
        "txt": transcript.to_txt(),
        "json": transcript.to_json(),
    }
    assert json.loads((out / "long.json").read_text())["text"] == transcript.text

    cues = srt_cues((out / "long.srt").read_text())
    assert " ".join(" ".join(lines) for _, _, lines in cues) == transcript.text
    assert len(cues) >= len(tests)  # the 1.5 s pauses after each clip end cues
    for start, end, lines in cues:
        assert start < end and 1 <= len(lines) <= 2 and all(len(line) <= 42 for line in lines)
        # No cue runs across a pause: it lies within one clip (a word may end a frame or two late).
        assert any(a - 0.05 <= start and end <= b + 0.1 for a, b in spans), (start, end, spans)
    assert (out / f"{tests[0].stem}.txt").read_text() == model.transcribe(tests[0]).to_txt()


def test_output_format_details(small_release: Path, test_clips: list[Path], tmp_path: Path) -> None:
    model, clip = str(small_release / RELEASE_ZIP), test_clips[0]
    # --output-format alone writes into the current folder, as whisper does; --json still prints its line.
    result = subprocess.run(
        [*DSITA, "transcribe", str(clip), "--model", model, "--no-lm", "-f", "srt", "--json"],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / f"{clip.stem}.srt").is_file() and not (tmp_path / f"{clip.stem}.txt").exists()
    assert json.loads(result.stdout)["file"] == str(clip)
    twin = tmp_path / "other" / clip.name
    twin.parent.mkdir()
    twin.write_bytes(clip.read_bytes())
    clash = dsita("transcribe", str(clip), str(twin), "--model", model, "-o", str(tmp_path / "o"))
    assert clash.returncode == 2 and not (tmp_path / "o").exists()
    assert clash.stderr.splitlines() == [
        f"error: {clip} and {twin} would both be written as {tmp_path / 'o' / clip.stem}.*: "
        "transcribe them into different --output-dir folders"
    ]
    bad = dsita("transcribe", str(clip), "--model", model, "--output-format", "docx")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "error: --output-format docx: expected one of txt, vtt, srt, tsv, json, or all"
    ]
