"""`dsita import csv`: a user's own table of WAV/FLAC/OGG clips at other sample rates."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsita.audio import SAMPLE_RATE
from dsita.data import clips
from dsita.data.clips import ImportOptions
from dsita.data.csvs import read_csv
from dsita.data.own_csv import import_own_csv
from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet

OPTIONS = ImportOptions(Alphabet.italian(), max_secs=10.0, workers=1, progress=False)


def _tone(secs: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    return np.stack([x, x], axis=1) if channels == 2 else x


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """a.wav at 22.05 kHz, sub/b.flac stereo at 44.1 kHz, c.ogg at 8 kHz, and an absolute path elsewhere."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", _tone(1.0, 22050), 22050)
    sf.write(root / "sub" / "b.flac", _tone(1.2, 44100, channels=2), 44100)
    sf.write(root / "c.ogg", _tone(0.8, 8000), 8000, format="OGG", subtype="VORBIS")
    (tmp_path / "elsewhere").mkdir()
    sf.write(tmp_path / "elsewhere" / "d.wav", _tone(1.0, 16000), 16000)
    return root


def _write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_auto_detected_columns_and_formats(corpus: Path, tmp_path: Path) -> None:
    rows = [
        ["a.wav", "Ciao, mondo"],
        ["sub/b.flac", "Sono le 10"],
        ["c.ogg", "Un’altra frase"],
        [str(tmp_path / "elsewhere" / "d.wav"), "Fuori dalla cartella"],
        ["missing.wav", "Non esiste"],
        ["a.wav", "Di nuovo"],
    ]
    table = _write(corpus / "mine.csv", ["ID", "File", "Text"], [[str(i), *r] for i, r in enumerate(rows)])
    out = tmp_path / "out"
    report = import_own_csv(table, out, OPTIONS)

    samples = read_csv(out / "mine.csv")
    assert [s.transcript for s in samples] == [
        "ciao mondo",
        "sono le dieci",
        "un'altra frase",
        "fuori dalla cartella",
    ]
    assert [s.wav_path.name for s in samples[:3]] == ["a.wav", "b.flac.wav", "c.ogg.wav"]
    assert samples[1].wav_path == out / "clips" / "mine" / "sub" / "b.flac.wav"
    assert samples[3].wav_path.parent == out / "clips" / "mine" / "external"
    for sample, secs in zip(samples, [1.0, 1.2, 0.8, 1.0], strict=True):
        info = sf.info(sample.wav_path)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert sample.duration == pytest.approx(secs, abs=0.01)
    assert dict(report.kept) == {"mine": 4}
    assert dict(report.skipped) == {("mine", clips.NOT_FOUND): 1, ("mine", clips.DUPLICATE): 1}
    with open(out / "mine.skipped.csv", newline="", encoding="utf-8") as f:
        skipped = list(csv.DictReader(f))
    assert [(r["row"], r["reason"]) for r in skipped] == [("6", clips.NOT_FOUND), ("7", clips.DUPLICATE)]


def test_tsv_with_common_voice_names(corpus: Path, tmp_path: Path) -> None:
    table = corpus / "train.tsv"
    table.write_text('path\tsentence\na.wav\tLui disse "ciao\nc.ogg\tSecondo\n', encoding="utf-8")
    report = import_own_csv(table, tmp_path / "out", OPTIONS, split="extra")
    assert [s.transcript for s in read_csv(tmp_path / "out" / "extra.csv")] == ["lui disse ciao", "secondo"]
    assert report.total_kept == 2 and report.skipped_csv == tmp_path / "out" / "extra.skipped.csv"


def test_explicit_columns_and_semicolons(corpus: Path, tmp_path: Path) -> None:
    rows = [["a.wav", "not this", "Prima frase"], ["c.ogg", "nor this", "Seconda frase"]]
    table = _write(corpus / "list.csv", ["audio_loc", "text", "words"], rows, delimiter=";")
    import_own_csv(table, tmp_path / "out", OPTIONS, audio_column="Audio_Loc", text_column="words")
    assert [s.transcript for s in read_csv(tmp_path / "out" / "list.csv")] == ["prima frase", "seconda frase"]


def test_missing_column_is_one_line_error(corpus: Path, tmp_path: Path) -> None:
    table = _write(corpus / "bad.csv", ["name", "text"], [["a.wav", "Ciao"]])
    with pytest.raises(DsitaError) as error:
        import_own_csv(table, tmp_path / "out", OPTIONS)
    assert str(error.value).startswith(f"{table}: no audio column (looked for wav_filename, path")
    assert str(error.value).endswith("columns found: name, text") and "\n" not in str(error.value)
    with pytest.raises(DsitaError, match=r"no column 'transcript'; columns found: name, text"):
        import_own_csv(table, tmp_path / "out", OPTIONS, audio_column="name", text_column="transcript")
    assert not (tmp_path / "out").exists()
