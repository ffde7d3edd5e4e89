"""`dsita import cv` on a small Common Voice archive built here, holding one of each trap."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsita.audio import SAMPLE_RATE
from dsita.data import clips
from dsita.data.clips import ImportOptions, ImportReport
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet

TOP = "cv-corpus-21.0-2025-03-14/it"
MP3_RATE = 48000
NEW_COLUMNS = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
               "age", "gender", "accents", "variant", "locale", "segment"]  # fmt: skip
OLD_COLUMNS = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent"]
OUTSIDE = "dsita-test-escaped-file"


def _tone(secs: float, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(secs * MP3_RATE)) / MP3_RATE
    x = (amp * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


# clip number -> (split, sentence, audio: array, bytes for a corrupt file, or None for a missing clip)
CLIPS: dict[int, tuple[str, str, np.ndarray | bytes | None]] = {
    1: ("train", "Buongiorno a tutti", _tone(1.5)),
    2: ("train", "La casa è bella", _tone(1.5, channels=2)),
    3: ("train", "Questo file è rotto", bytes(range(256)) * 20),
    4: ("train", "Questo file manca", None),
    5: ("train", "Ho 3 gatti e 12 cani", _tone(2.0)),
    6: ("dev", "L’albero è all’ombra", _tone(1.5)),
    7: ("train", "Silenzio per favore", np.zeros(int(1.5 * MP3_RATE), np.float32)),
    8: ("train", "Questa è lunga", _tone(4.0)),
    9: ("train", "Questa frase è decisamente troppo lunga per un audio così breve", _tone(0.3)),
    10: ("test", 'Lui disse "arrivederci', _tone(1.5)),
    12: ("train", "Привет мир", _tone(1.5)),
    13: ("train", "Questo è un collegamento", None),  # a symlink member in the archive
    14: ("other", "Non in una partizione", _tone(1.5)),
}
KEPT = {"train": {1: "buongiorno a tutti", 2: "la casa è bella", 5: "ho tre gatti e dodici cani"},
        "dev": {6: "l'albero è all'ombra"}, "test": {10: "lui disse arrivederci"}}  # fmt: skip
BAD_UTF8_ROW = b"client\tcommon_voice_it_11.mp3\tid\tcaff\xe8 corretto\t\t2\t0\t\t\t\t\tit\t\n"


@pytest.fixture(scope="session")
def mp3s(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """Each clip's file bytes, encoded once per session (MP3 encoding is the slow part)."""
    folder = tmp_path_factory.mktemp("mp3")
    files = {}
    for number, (_, _, audio) in CLIPS.items():
        if isinstance(audio, np.ndarray):
            sf.write(folder / f"{number}.mp3", audio, MP3_RATE, format="MP3")
            files[number] = (folder / f"{number}.mp3").read_bytes()
        elif isinstance(audio, bytes):
            files[number] = audio
    return files


def _tsv(split: str, old: bool) -> bytes:
    columns = OLD_COLUMNS if old else NEW_COLUMNS
    lines = ["\t".join(columns)]
    for number, (clip_split, sentence, _) in CLIPS.items():
        if clip_split == split:
            name = f"common_voice_it_{number}" + ("" if old else ".mp3")
            values = {"client_id": "c", "path": name, "sentence": sentence, "locale": "it", "up_votes": "2"}
            lines.append("\t".join(values.get(c, "") for c in columns))
    data = ("\n".join(lines) + "\n").encode()
    return data + BAD_UTF8_ROW if split == "dev" and not old else data


def _files(mp3s: dict[int, bytes], old: bool = False) -> dict[str, bytes]:
    files = {f"{TOP}/{split}.tsv": _tsv(split, old) for split in ("train", "dev", "test", "other")}
    files |= {f"{TOP}/clips/common_voice_it_{n}.mp3": data for n, data in mp3s.items()}
    return files


def make_archive(path: Path, mp3s: dict[int, bytes], tsv_first: bool = False, old: bool = False) -> Path:
    files = _files(mp3s, old)
    order = sorted(files, key=lambda name: name.endswith(".tsv") != tsv_first)
    with tarfile.open(path, "w:gz") as tar:
        for name in order:
            _add(tar, tarfile.TarInfo(name), files[name])
        _add(tar, tarfile.TarInfo(f"../{OUTSIDE}"), b"escaped")
        _add(tar, tarfile.TarInfo(f"{TOP}/clips/../../../{OUTSIDE}.mp3"), b"escaped")
        _add(tar, tarfile.TarInfo(f"/tmp/{OUTSIDE}"), b"escaped")
        _add(tar, _link(f"{TOP}/clips/common_voice_it_13.mp3", tarfile.SYMTYPE, "/etc/passwd"))
        _add(tar, _link(f"{TOP}/clips/hard.mp3", tarfile.LNKTYPE, f"{TOP}/clips/common_voice_it_1.mp3"))
        _add(tar, _link(f"{TOP}/null", tarfile.CHRTYPE, ""))
    return path


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.size = len(data or b"")
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_folder(root: Path, mp3s: dict[int, bytes]) -> Path:
    for name, data in _files(mp3s).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def options(**overrides: object) -> ImportOptions:
    values: dict = {"alphabet": Alphabet.italian(), "max_secs": 3.0, "workers": 1, "progress": False}
    return ImportOptions(**(values | overrides))


def skipped_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reasons(report: ImportReport) -> dict[tuple[str, str], int]:
    return dict(report.skipped)


def check_kept(out: Path) -> None:
    for split, kept in KEPT.items():
        samples = read_csv(out / f"{split}.csv")
        assert [s.wav_path.name for s in samples] == [f"common_voice_it_{n}.wav" for n in kept]
        assert [s.transcript for s in samples] == list(kept.values())
        for sample in samples:
            info = sf.info(sample.wav_path)
            assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
            assert sample.wav_filesize == sample.wav_path.stat().st_size
            assert sample.duration == pytest.approx(info.frames / SAMPLE_RATE, abs=1e-3)
    assert read_csv(out / "train.csv")[0].duration == pytest.approx(1.5, abs=0.1)


TRAIN_SKIPS = {
    (clips.UNDECODABLE, 3), (clips.NOT_FOUND, 4), (clips.SILENT, 7), (clips.TOO_LONG, 8),
    (clips.TOO_SHORT, 9), (clips.TRANSCRIPT_REJECTED, 12), (clips.NOT_FOUND, 13),
}  # fmt: skip


@pytest.mark.parametrize("tsv_first", [False, True], ids=["clips-first", "tsv-first"])
def test_archive_import_handles_every_trap(tmp_path: Path, mp3s: dict[int, bytes], tsv_first: bool) -> None:
    archive = make_archive(tmp_path / "it.tar.gz", mp3s, tsv_first=tsv_first)
    out = tmp_path / "work" / "out"
    before = {p for p in tmp_path.rglob("*")}
    report = import_common_voice(archive, out, options())

    check_kept(out)
    assert dict(report.kept) == {split: len(kept) for split, kept in KEPT.items()}
    assert report.total_hours == pytest.approx(sum(report.seconds.values()) / 3600)
    rows = skipped_rows(out / "skipped.csv")
    train = {(r["reason"], int(r["row"]) - 1) for r in rows if r["split"] == "train"}  # row 1 is the header
    assert train == {(reason, list(_numbers("train")).index(n) + 1) for reason, n in TRAIN_SKIPS}
    assert [(r["reason"], r["row"]) for r in rows if r["split"] == "dev"] == [(clips.INVALID_UTF8, "3")]
    assert "caff\\xe8" in next(r["detail"] for r in rows if r["split"] == "dev")
    archive_rows = {(r["reason"], r["source"]) for r in rows if r["split"] == "archive"}
    assert archive_rows == {
        (clips.UNSAFE_MEMBER, f"../{OUTSIDE}"),
        (clips.UNSAFE_MEMBER, f"{TOP}/clips/../../../{OUTSIDE}.mp3"),
        (clips.UNSAFE_MEMBER, f"/tmp/{OUTSIDE}"),
        (clips.LINK_MEMBER, f"{TOP}/clips/common_voice_it_13.mp3"),
        (clips.LINK_MEMBER, f"{TOP}/clips/hard.mp3"),
        (clips.LINK_MEMBER, f"{TOP}/null"),
    }
    assert reasons(report)[("archive", clips.UNSAFE_MEMBER)] == 3
    assert sum(report.skipped.values()) == len(rows)

    # Nothing outside OUT, no scratch copies left, and the clip of other.tsv is never converted.
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(p == out.parent or out in (p, *p.parents) for p in written)
    assert not Path("/tmp", OUTSIDE).exists()
    assert not (out / "mp3").exists()
    wavs = sorted(p.name for p in (out / "clips").iterdir())
    assert "common_voice_it_14.wav" not in wavs
    assert report.converted == len(wavs) == 6  # the kept five and the too-short one


def _numbers(split: str) -> list[int]:
    return [n for n, (s, _, _) in CLIPS.items() if s == split]


def test_stereo_clip_becomes_mono_16k(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    import_common_voice(make_archive(tmp_path / "it.tar.gz", mp3s), tmp_path / "out", options())
    audio, rate = sf.read(tmp_path / "out" / "clips" / "common_voice_it_2.wav", always_2d=True)
    assert rate == SAMPLE_RATE and audio.shape[1] == 1
    assert 0.1 < np.abs(audio).max() < 0.3  # the mean of 0.3 and 0.15 amplitude channels


def test_old_release_columns_and_paths_without_extension(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    report = import_common_voice(
        make_archive(tmp_path / "it.tar.gz", mp3s, old=True), tmp_path / "o", options()
    )
    check_kept(tmp_path / "o")
    assert dict(report.kept) == {split: len(kept) for split, kept in KEPT.items()}


def test_extracted_folder(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    root = make_folder(tmp_path / "extracted", mp3s)
    report = import_common_voice(root, tmp_path / "out", options(sha256="0" * 64))
    check_kept(tmp_path / "out")
    assert reasons(report)[("dev", clips.INVALID_UTF8)] == 1
    assert reasons(report)[("train", clips.NOT_FOUND)] == 2
    assert any("SHA-256 not checked" in note for note in report.notes)


def test_sha256_mismatch_writes_nothing(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    archive = make_archive(tmp_path / "it.tar.gz", mp3s)
    actual = hashlib.sha256(archive.read_bytes()).hexdigest()
    with pytest.raises(DsitaError) as error:
        import_common_voice(archive, tmp_path / "out", options(sha256="ab" * 32))
    assert str(archive) in str(error.value) and "ab" * 32 in str(error.value) and actual in str(error.value)
    assert not (tmp_path / "out").exists()
    report = import_common_voice(archive, tmp_path / "out", options(sha256=actual.upper()))
    assert report.total_kept == 5


def test_rerun_converts_nothing_and_writes_identical_csvs(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    archive = make_archive(tmp_path / "it.tar.gz", mp3s)
    out = tmp_path / "out"
    first = import_common_voice(archive, out, options(workers=2))
    csvs = {p.name: p.read_bytes() for p in out.glob("*.csv")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    second = import_common_voice(archive, out, options(workers=2))
    assert (first.converted, first.reused) == (6, 0)
    assert (second.converted, second.reused) == (0, 6)
    assert {p.name: p.read_bytes() for p in out.glob("*.csv")} == csvs
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == mtimes
    assert second.kept == first.kept and second.skipped == first.skipped


def test_damaged_wav_is_converted_again(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    root = make_folder(tmp_path / "extracted", mp3s)
    import_common_voice(root, tmp_path / "out", options())
    (tmp_path / "out" / "clips" / "common_voice_it_1.wav").write_bytes(b"RIFF")
    report = import_common_voice(root, tmp_path / "out", options())
    assert (report.converted, report.reused) == (1, 5)


def test_truncated_archive_is_an_error_and_a_rerun_resumes(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    archive = make_archive(tmp_path / "it.tar.gz", mp3s)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(DsitaError, match=r"cut\.tar\.gz: cannot read the archive"):
        import_common_voice(cut, tmp_path / "out", options(workers=2))
    assert not (tmp_path / "out" / "train.csv").exists()
    report = import_common_voice(archive, tmp_path / "out", options())
    assert report.total_kept == 5 and report.converted + report.reused == 6


def test_missing_column_names_the_file(tmp_path: Path) -> None:
    locale = tmp_path / "it"
    locale.mkdir()
    (locale / "train.tsv").write_text("client_id\tfilename\tsentence\n")
    with pytest.raises(DsitaError, match=r"train\.tsv: no path column; columns found: client_id, filename"):
        import_common_voice(tmp_path, tmp_path / "out", options())


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAX_SECS", "CV_SHA256", "DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "dsita.cli", "import", "cv", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_cli_exit_codes(tmp_path: Path, mp3s: dict[int, bytes]) -> None:
    archive = make_archive(tmp_path / "it.tar.gz", mp3s)
    ok = _cli(archive, "--out", tmp_path / "out", "--max-secs", "3", "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert "total" in ok.stdout and clips.TOO_LONG in ok.stdout
    assert len(read_csv(tmp_path / "out" / "train.csv")) == 3

    broken = {n: mp3s[3] for n in mp3s}  # every clip corrupt: nothing usable
    bad = _cli(make_archive(tmp_path / "bad.tar.gz", broken), "--out", tmp_path / "bad", "--workers", "1")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: nothing usable")
    assert (tmp_path / "bad" / "skipped.csv").is_file()

    missing = _cli(tmp_path / "nope.tar.gz", "--out", tmp_path / "never")
    assert missing.returncode != 0
    expected = "not found; expected a Common Voice it.tar.gz or its extracted folder"
    assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.tar.gz'}: {expected}"]
    assert not (tmp_path / "never").exists()
