"""`dsita synth`: Common Voice layout, speaker- and sentence-disjoint splits, determinism, festival's Latin-1.

Tests marked `tts` run espeak-ng and festival on a tiny corpus; the others need neither.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dsita.cli import app
from dsita.data.sentences import Sentence, fortune_passages, prepare_sentences, split_sentences
from dsita.data.synth import (
    ENGINES,
    ESPEAK,
    ESPEAK_VARIANTS,
    FESTIVAL,
    FESTIVAL_VOICES,
    TOP_DIR,
    TSV_COLUMNS,
    PlannedClip,
    Prosody,
    Speaker,
    SynthOptions,
    SynthReport,
    SynthVariety,
    check_engines,
    espeak_command,
    festival_setup,
    plan_corpus,
    render_clip,
    spoken_text,
    synthesize_corpus,
    synthesize_speech,
)
from dsita.errors import DsitaError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "it-sample.tar.gz"
SPLITS = ("train", "dev", "test")
TTS_MISSING = shutil.which("espeak-ng") is None or shutil.which("text2wave") is None

TINY_SENTENCES = [
    "Perché la città è così bella d'estate?",
    "Il caffè costa 1,20 € al bar.",
    "L’anno prossimo andrò in Sicilia.",
    "«Non è colpa mia», disse il bambino.",
    "Il gatto dorme sul divano.",
    "Domani piove di sicuro.",
    "La biblioteca apre alle 9.",
    "Più ci penso, più mi piace.",
    "Ho perso le chiavi di casa.",
    "Il treno è in ritardo di 20 minuti.",
    "Mia sorella studia medicina a Padova.",
    "Un po’ di pazienza, per favore.",
    "Lunedì comincia la scuola.",
    "Il mare è calmo stamattina.",
    "È già ora di cena.",
    "Le pesche costano 3 euro al chilo.",
    "Abbiamo camminato fino al lago.",
    "Chi trova un amico trova un tesoro.",
    "La nonna prepara le lasagne.",
    "Il cane abbaia al postino.",
    "Stasera guardiamo un film.",
]
TINY_OPTIONS = SynthOptions(n_clips=16, seed=7, split_fractions=(0.5, 0.25, 0.25))


def needs_tts(test: Callable[..., Any]) -> Callable[..., Any]:
    skip = pytest.mark.skipif(TTS_MISSING, reason="needs espeak-ng and festival (text2wave)")
    return pytest.mark.tts(skip(test))


def read_archive(path: Path) -> tuple[list[str], dict[str, bytes], dict[str, bytes]]:
    """Member names, TSV bytes by file stem, MP3 bytes by file name."""
    tsvs: dict[str, bytes] = {}
    clips: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        names = tar.getnames()
        for member in tar.getmembers():
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is None:
                continue
            if member.name.endswith(".tsv"):
                tsvs[Path(member.name).stem] = extracted.read()
            elif member.name.endswith(".mp3"):
                clips[Path(member.name).name] = extracted.read()
    return names, tsvs, clips


def parse_tsv(data: bytes) -> list[dict[str, str]]:
    text = data.decode("utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))


def assert_common_voice_corpus(path: Path) -> dict[str, list[dict[str, str]]]:
    """Layout, headers and split disjointness of a Common Voice-format archive; returns the split rows."""
    names, tsvs, clips = read_archive(path)
    assert all(name.startswith("cv-corpus-synth-it") for name in names)
    assert f"{TOP_DIR}/clips" in names
    for stem in (*SPLITS, "validated", "other", "invalidated"):
        assert tsvs[stem].decode().split("\n", 1)[0].split("\t") == list(TSV_COLUMNS), stem
    splits = {split: parse_tsv(tsvs[split]) for split in SPLITS}
    validated = parse_tsv(tsvs["validated"])
    assert sorted(r["path"] for r in validated) == sorted(r["path"] for rows in splits.values() for r in rows)
    assert {r["path"] for r in validated} == set(clips)
    assert all(r["locale"] == "it" and r["sentence"] for r in validated)
    for field in ("client_id", "sentence"):
        seen: set[str] = set()
        for split in SPLITS:
            values = {r[field] for r in splits[split]}
            assert not values & seen, f"{field} shared between splits"
            seen |= values
    return splits


# --- no TTS needed -----------------------------------------------------------------------------------------


def test_committed_sample_is_small_and_well_formed() -> None:
    assert SAMPLE.stat().st_size <= 5_000_000
    splits = assert_common_voice_corpus(SAMPLE)
    assert sum(len(rows) for rows in splits.values()) >= 200
    assert all(len({r["client_id"] for r in rows}) >= 2 for rows in splits.values())


def fake_sentences(n: int) -> list[Sentence]:
    return [Sentence(f"Frase numero {i}.", f"frase numero {i}") for i in range(n)]


def test_plan_is_seeded_and_disjoint() -> None:
    options = SynthOptions(n_clips=200, seed=1)
    plan = plan_corpus(fake_sentences(500), options)
    assert plan == plan_corpus(fake_sentences(500), options)
    assert plan != plan_corpus(fake_sentences(500), replace(options, seed=2))
    assert len({c.sentence for c in plan}) == 200
    by_split = {split: [c for c in plan if c.split == split] for split in SPLITS}
    assert [len(clips) for clips in by_split.values()] == [160, 20, 20]
    speakers = [{c.speaker for c in clips} for clips in by_split.values()]
    variants = [{s.voice for s in group if s.engine == ESPEAK} for group in speakers]
    for a in range(3):
        assert {s.engine for s in speakers[a]} == set(ENGINES)
        for b in range(a + 1, 3):
            assert not speakers[a] & speakers[b] and not variants[a] & variants[b]


def test_shared_speakers_repeat_train_voices_with_unseen_sentences() -> None:
    options = SynthOptions(n_clips=300, seed=3, engines=(ESPEAK,), shared_speakers=True)
    plan = plan_corpus(fake_sentences(500), options)
    by_split = {split: [c for c in plan if c.split == split] for split in SPLITS}
    train_speakers = {c.speaker for c in by_split["train"]}
    assert len(train_speakers) == 30 and {s.engine for s in train_speakers} == {ESPEAK}
    for split in ("dev", "test"):
        assert {c.speaker for c in by_split[split]} <= train_speakers
        assert not {c.sentence for c in by_split[split]} & {c.sentence for c in by_split["train"]}


def test_variety_gives_each_speaker_a_vocal_tract_and_each_clip_its_prosody() -> None:
    plain_options = SynthOptions(n_clips=2000, seed=4)
    options = replace(plain_options, variety=SynthVariety())
    plan = plan_corpus(fake_sentences(2500), options)
    assert plan == plan_corpus(fake_sentences(2500), options)
    plain = plan_corpus(fake_sentences(2500), plain_options)
    # Sentences and splits are drawn first, so variety changes only voices and prosody.
    assert [(c.split, c.sentence) for c in plan] == [(c.split, c.sentence) for c in plain]
    speakers = {c.speaker for c in plan}
    variety = SynthVariety()
    for speaker in speakers:
        assert variety.formant[0] <= speaker.formant <= variety.formant[1]
        if speaker.engine == ESPEAK:
            assert variety.espeak_word_gap[0] <= speaker.word_gap <= variety.espeak_word_gap[1]
            assert speaker.pitch_range == 1.0
        else:
            low, high = variety.festival_pitch_range
            assert low <= speaker.pitch_range <= high and speaker.word_gap == 0
    # Without variety, speakers of one engine voice differ in speed and pitch only: 57 voices at most.
    plain_voices = {c.speaker.timbre for c in plain}
    assert len(plain_voices) <= len(ESPEAK_VARIANTS) + len(FESTIVAL_VOICES)
    assert len(speakers) == len({c.speaker for c in plain}) == 200
    assert len({s.timbre for s in speakers}) > 1.5 * len(plain_voices)
    prosodies = [c.prosody for c in plan]
    assert all(variety.speed[0] <= p.speed <= variety.speed[1] for p in prosodies)
    assert all(variety.pitch[0] <= p.pitch <= variety.pitch[1] for p in prosodies)
    assert len({p.amplitude for p in prosodies}) > 20 and {c.prosody for c in plain} == {Prosody()}


def test_plain_speakers_keep_their_keys_and_engine_settings(tmp_path: Path) -> None:
    espeak = Speaker(ESPEAK, "m1", 170, 50)
    assert espeak.key == "espeak-ng:m1:speed=170:pitch=50"  # as before variety: the same client ids
    assert espeak_command(espeak, Prosody(), "ciao", tmp_path / "a.wav") == [
        "espeak-ng", "-v", "it+m1", "-s", "170", "-p", "50", "-w", str(tmp_path / "a.wav"), "--", "ciao",
    ]  # fmt: skip
    varied = replace(espeak, word_gap=3, formant=1.1)
    assert varied.key == "espeak-ng:m1:speed=170:pitch=50:formant=1.1:word_gap=3"
    command = espeak_command(varied, Prosody(speed=1.05, pitch=1.1, amplitude=80), "ciao", tmp_path / "a.wav")
    assert command[3:11] == ["-s", "178", "-p", "55", "-g", "3", "-a", "80"]
    festival = Speaker(FESTIVAL, "pc_diphone", 1.1, 1.2)
    assert "pow" not in festival_setup(festival) and "Duration_Stretch 0.9091" in festival_setup(festival)
    ranged = festival_setup(replace(festival, pitch_range=1.4), Prosody(speed=0.9, pitch=1.05))
    assert "(pow (/ (cadr point) 100) 1.4)" in ranged and "(* 1.26 " in ranged
    assert f"Duration_Stretch {1 / (1.1 * 0.9):.4f}" in ranged


def test_options_and_plan_reject_impossible_requests() -> None:
    with pytest.raises(DsitaError, match="add up to 1"):
        SynthOptions(split_fractions=(0.8, 0.1, 0.2))
    with pytest.raises(DsitaError, match="choose among"):
        SynthOptions(engines=("say",))
    with pytest.raises(DsitaError, match="at least 2 clips"):
        plan_corpus(fake_sentences(20), SynthOptions(n_clips=10))
    with pytest.raises(DsitaError, match="only 5 qualify"):
        plan_corpus(fake_sentences(5), SynthOptions(n_clips=10))


def test_missing_engine_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DsitaError, match=re.escape("sudo apt-get install festival festvox-italp16k")):
        check_engines([FESTIVAL])


def test_engines_read_the_transcript_where_digits_or_symbols_would_differ() -> None:
    assert spoken_text(Sentence("L’anno «bello».", "l'anno bello")) == 'L\'anno "bello".'
    assert spoken_text(Sentence("Costa 3 €.", "costa tre euro")) == "costa tre euro"
    assert (
        spoken_text(Sentence("Il 40% è poco.", "il quaranta per cento è poco"))
        == "il quaranta per cento è poco"
    )


def test_fortune_cleaning_drops_attributions_and_headers() -> None:
    entry = "Ansia, s.f.:\n\tLa prima volta che non riesci.\n\t\t-- Anonimo\n- Come stai?\n- Bene.\n"
    assert fortune_passages(entry) == ["La prima volta che non riesci.", "- Come stai?", "- Bene."]
    assert split_sentences('- Sei qui? Sì. 2. Il Prof. Rossi dice: "Ciao.') == [
        "Sei qui?",
        "Sì.",
        "Il Prof. Rossi dice: Ciao.",
    ]


def test_prepare_sentences_filters_and_deduplicates() -> None:
    kept = prepare_sentences(
        ["Ciao a tutti.", "Ciao, a tutti!", "Usa la RAM.", "Vai su a@b.it ora", "Sì."], 2, 5
    )
    assert [s.text for s in kept] == ["Ciao a tutti."]


# --- with espeak-ng and festival ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, SynthReport]]:
    """The same tiny corpus generated twice."""
    folder = tmp_path_factory.mktemp("synth")
    return [
        (path, synthesize_corpus(TINY_SENTENCES, path, TINY_OPTIONS))
        for path in (folder / "a.tgz", folder / "b.tgz")
    ]


@needs_tts
def test_tiny_corpus_is_common_voice_with_every_engine_in_every_split(
    tiny_corpora: list[tuple[Path, SynthReport]],
) -> None:
    path, report = tiny_corpora[0]
    splits = assert_common_voice_corpus(path)
    assert [len(splits[s]) for s in SPLITS] == [8, 4, 4]
    assert all(stats.engines == ENGINES for stats in report.splits.values())
    assert report.size_bytes == path.stat().st_size
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


@needs_tts
def test_tiny_corpus_clips_are_48k_mono_audible_mp3(tiny_corpora: list[tuple[Path, SynthReport]]) -> None:
    _, tsvs, clips = read_archive(tiny_corpora[0][0])
    durations = {r["clip"]: int(r["duration[ms]"]) for r in parse_tsv(tsvs["clip_durations"])}
    for name, data in clips.items():
        assert data[:3] == b"ID3" or data[0] == 0xFF
        info = sf.info(io.BytesIO(data))
        assert (info.samplerate, info.channels) == (48000, 1)
        audio, _ = sf.read(io.BytesIO(data), dtype="float32")
        assert np.abs(audio).max() > 0.05
        assert abs(len(audio) / 48 - durations[name]) < 100


@needs_tts
def test_same_seed_gives_the_same_corpus(tiny_corpora: list[tuple[Path, SynthReport]]) -> None:
    (first, _), (second, _) = tiny_corpora
    assert read_archive(first)[1] == read_archive(second)[1]  # the TSVs
    assert first.read_bytes() == second.read_bytes()  # espeak-ng, festival and LAME are deterministic too


@needs_tts
def test_same_seed_gives_the_same_corpus_with_variety(tmp_path: Path) -> None:
    options = replace(TINY_OPTIONS, n_clips=8, variety=SynthVariety())
    reports = [synthesize_corpus(TINY_SENTENCES, tmp_path / name, options) for name in ("a.tgz", "b.tgz")]
    assert (tmp_path / "a.tgz").read_bytes() == (tmp_path / "b.tgz").read_bytes()  # the formant shift too
    planned = plan_corpus(prepare_sentences(TINY_SENTENCES, 3, 14), options)
    plain = plan_corpus(prepare_sentences(TINY_SENTENCES, 3, 14), replace(options, variety=None))
    assert (
        reports[0].voices == len({c.speaker.timbre for c in planned}) > len({c.speaker.timbre for c in plain})
    )


@needs_tts
@pytest.mark.parametrize("voice", FESTIVAL_VOICES)
def test_festival_speaks_accented_text_as_latin1(voice: str, tmp_path: Path) -> None:
    speaker = Speaker(FESTIVAL, voice, 1.1, 1.2)
    audio, rate = synthesize_speech(speaker, "Perché la città è già così bella?", tmp_path / "a.wav")
    assert rate > 0 and len(audio) > rate and np.abs(audio).max() > 0.05


@needs_tts
def test_a_sentence_festival_crashes_on_is_read_from_its_transcript(tmp_path: Path) -> None:
    text = "Perché i carabinieri hanno il cervello grosso come una pallina da ping-pong?"
    speaker = Speaker(FESTIVAL, "lp_diphone", 1.07, 1.22)
    with pytest.raises(DsitaError, match="no audible output"):  # festival's own crash, exit status 0
        synthesize_speech(speaker, text, tmp_path / "a.wav")
    sentence = prepare_sentences([text], 3, 20)[0]
    clip = PlannedClip("test", "common_voice_it_1.mp3", sentence, speaker)
    mp3, seconds = render_clip(clip, tmp_path)
    assert seconds > 2 and len(mp3) > 1000


def spectral_centroid(mp3: bytes) -> float:
    """Power-weighted mean frequency between 200 Hz and 6 kHz of a clip's long-term spectrum."""
    audio, rate = sf.read(io.BytesIO(mp3), dtype="float64")
    power = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(audio.size, 1 / rate)
    band = (frequencies > 200) & (frequencies < 6000)
    return float((frequencies[band] * power[band]).sum() / power[band].sum())


@needs_tts
def test_a_vocal_tract_is_baked_into_the_clip(tmp_path: Path) -> None:
    sentence = prepare_sentences(["Il mare è calmo stamattina, andiamo a fare il bagno."], 3, 20)[0]
    renders = {}
    for formant in (1.0, 1.15, 0.87):
        speaker = replace(Speaker(ESPEAK, "m3", 170, 50), formant=formant)
        renders[formant] = render_clip(PlannedClip("train", "a.mp3", sentence, speaker), tmp_path)
    for formant in (1.15, 0.87):
        assert renders[formant][1] == pytest.approx(renders[1.0][1], abs=0.01)  # same duration
        ratio = spectral_centroid(renders[formant][0]) / spectral_centroid(renders[1.0][0])
        assert (ratio - 1) * (formant - 1) > 0 and 0.03 < abs(ratio - 1) < 0.3  # the envelope moved


@needs_tts
def test_prosody_and_voice_settings_reach_the_engines(tmp_path: Path) -> None:
    sentence = prepare_sentences(["Abbiamo camminato fino al lago con i nostri amici."], 3, 20)[0]

    def seconds(speaker: Speaker, prosody: Prosody | None = None) -> float:
        clip = PlannedClip("train", "a.mp3", sentence, speaker, prosody or Prosody())
        return render_clip(clip, tmp_path)[1]

    espeak = Speaker(ESPEAK, "f2", 160, 50)
    assert seconds(replace(espeak, word_gap=5)) > seconds(espeak) + 0.2  # 8 gaps of 50 ms more
    festival = Speaker(FESTIVAL, "lp_diphone", 1.0, 1.0)
    plain = seconds(festival)
    assert seconds(festival, Prosody(speed=1.25)) == pytest.approx(plain / 1.25, rel=0.1)
    ranged = render_clip(
        PlannedClip("train", "a.mp3", sentence, replace(festival, pitch_range=1.5)), tmp_path
    )
    assert ranged[1] == pytest.approx(plain, rel=0.02)  # intonation only: the timing stays
    assert ranged[0] != render_clip(PlannedClip("train", "a.mp3", sentence, festival), tmp_path)[0]


@needs_tts
def test_silent_output_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DsitaError, match="no audible output"):
        synthesize_speech(Speaker(ESPEAK, "m1", 170, 50), " ", tmp_path / "a.wav")


@needs_tts
def test_every_espeak_variant_exists() -> None:
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    installed = set(re.findall(r"!v/(\S+)", listing.stdout))
    assert set(ESPEAK_VARIANTS) <= installed


@needs_tts
def test_cli_synth_writes_the_archive(tmp_path: Path) -> None:
    text = tmp_path / "frasi.txt"
    text.write_text("\n".join(TINY_SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "it.tar.gz"
    result = CliRunner().invoke(
        app, ["synth", "--clips", "20", "--text", str(text), "--out", str(out), "--variety"]
    )
    assert result.exit_code == 0, result.output
    assert "train" in result.output and len(assert_common_voice_corpus(out)["dev"]) == 2
    assert "voices" in result.output and "distinct speakers in" in result.output
