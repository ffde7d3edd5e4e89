"""`dsita synth --exclude`: another corpus's sentences never spoken (the demo model never hears its test)."""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsita.cli import app
from dsita.data.synth import held_out_sentences
from dsita.errors import DsitaError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "it-sample.tar.gz"
TTS_MISSING = shutil.which("espeak-ng") is None or shutil.which("text2wave") is None
HEADER = "client_id\tpath\tsentence\tup_votes\n"


def tsv(*sentences: str) -> bytes:
    return (
        HEADER + "".join(f"c\tcommon_voice_it_{i}.mp3\t{s}\t2\n" for i, s in enumerate(sentences))
    ).encode()


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_every_tsv_of_an_archive_counts_and_sentences_compare_normalized(tmp_path: Path) -> None:
    archive = write_archive(
        tmp_path / "it.tar.gz",
        {
            "cv/it/clips/common_voice_it_0.mp3": b"\xff\xfb",
            "cv/it/test.tsv": tsv("Il gatto dorme sul divano.", "«Domani piove», disse."),
            "cv/it/dev.tsv": tsv("Ho perso le CHIAVI di casa!"),
            "cv/it/other.tsv": tsv("Chi trova un amico trova un tesoro."),
            "cv/it/clip_durations.tsv": b"clip\tduration[ms]\ncommon_voice_it_0.mp3\t1200\n",
        },
    )
    assert held_out_sentences([archive]) == {
        "il gatto dorme sul divano",
        "domani piove disse",
        "ho perso le chiavi di casa",
        "chi trova un amico trova un tesoro",
    }


def test_tsv_and_deepspeech_csv_files(tmp_path: Path) -> None:
    table = tmp_path / "test.tsv"
    table.write_bytes(tsv("Il mare è calmo stamattina."))
    deepspeech = tmp_path / "dev.csv"
    with open(deepspeech, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(
            [("wav_filename", "wav_filesize", "transcript"), ("a.wav", "44", "è già ora")]
        )
    assert held_out_sentences([table, deepspeech]) == {"il mare è calmo stamattina", "è già ora"}


def test_the_committed_sample_gives_one_sentence_per_clip() -> None:
    assert len(held_out_sentences([SAMPLE])) == 400


def test_unusable_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DsitaError, match="not found"):
        held_out_sentences([tmp_path / "missing.tsv"])
    (tmp_path / "notes.txt").write_text("Il gatto.\n", encoding="utf-8")
    with pytest.raises(DsitaError, match=r"expected a Common Voice archive \(.tar.gz\), a .tsv"):
        held_out_sentences([tmp_path / "notes.txt"])
    (tmp_path / "other.csv").write_text("path,text\na.wav,ciao\n", encoding="utf-8")
    with pytest.raises(DsitaError, match=r"other\.csv: no transcript column; columns found: path, text"):
        held_out_sentences([tmp_path / "other.csv"])
    (tmp_path / "bad.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DsitaError, match=r"bad\.tar\.gz: cannot read the archive"):
        held_out_sentences([tmp_path / "bad.tar.gz"])
    empty = write_archive(tmp_path / "empty.tar.gz", {"cv/it/readme.txt": b"nothing"})
    with pytest.raises(DsitaError, match=r"no \.tsv file in the archive"):
        held_out_sentences([empty])


@pytest.mark.tts
@pytest.mark.skipif(TTS_MISSING, reason="needs espeak-ng and festival (text2wave)")
def test_cli_never_speaks_an_excluded_sentence(tmp_path: Path) -> None:
    sentences = [
        "Il gatto dorme sul divano.", "Domani piove di sicuro.", "Ho perso le chiavi di casa.",
        "Il mare è calmo stamattina.", "Lunedì comincia la scuola.", "La nonna prepara le lasagne.",
        "Il cane abbaia al postino.", "Stasera guardiamo un film.", "Mia sorella studia a Padova.",
        "Abbiamo camminato fino al lago.", "Chi trova un amico trova un tesoro.", "È già ora di cena.",
        "Un po' di pazienza, per favore.", "Il treno è in ritardo.", "La biblioteca apre presto.",
        "Più ci penso, più mi piace.", "Perché la città è così bella?", "Il pane è ancora caldo.",
        "Le rondini tornano in primavera.", "Il vento soffia da nord.", "Suona il campanello.",
        "Vorrei un bicchiere d'acqua.",
    ]  # fmt: skip
    text = tmp_path / "frasi.txt"
    text.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    held_out = tmp_path / "test.tsv"
    held_out.write_bytes(tsv("IL GATTO dorme sul divano!", "Il cane abbaia al postino"))
    out = tmp_path / "it.tar.gz"
    command = ["synth", "--clips", "20", "--text", str(text), "--out", str(out), "--exclude", str(held_out)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "2 usable sentences left out" in result.output
    with tarfile.open(out) as tar:
        extracted = tar.extractfile("cv-corpus-synth-it/it/validated.tsv")
        assert extracted is not None
        rows = list(csv.DictReader(io.StringIO(extracted.read().decode()), delimiter="\t"))
    spoken = {row["sentence"] for row in rows}
    assert spoken == set(sentences) - {"Il gatto dorme sul divano.", "Il cane abbaia al postino."}
    too_many = CliRunner().invoke(app, [*command[:2], "21", *command[3:]])
    assert too_many.exit_code != 0 and "only 20 qualify" in str(too_many.exception)
