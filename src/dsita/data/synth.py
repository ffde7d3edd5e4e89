"""`dsita synth`: a deterministic Common Voice–format `it.tar.gz` spoken by espeak-ng and festival.

The archive holds `cv-corpus-synth-it/it/` with `clips/*.mp3` (48 kHz mono) and the release TSVs.
A speaker is one voice setting: (engine, voice, speed, pitch). As in Common Voice, the splits share no
speaker and no sentence. espeak-ng variants are partitioned between the splits, so dev and test hear
unseen voices; festival has only two Italian voices, so every split uses both, and its festival speakers
differ from the other splits' by speaking rate and pitch only.

`shared_speakers` instead has every split spoken by one pool of speakers (sentences stay disjoint): a test
of unseen sentences in voices the model heard. With `engines` limited to one engine, two archives give a
leave-one-engine-out benchmark: train on espeak-ng variants, test on the festival voices.

With `variety` (a `SynthVariety`), each speaker also gets a vocal tract of its own, a formant factor baked
into its clips after synthesis (`dsita.data.augmentation.speaker.formant_shift`), and an espeak-ng word gap
or a festival pitch range; and each clip varies its speaker's speed, pitch and (espeak-ng) amplitude a
little, as a person does from one sentence to the next. Speakers that share an engine voice then differ in
timbre, not only in speed and pitch: the report counts these distinct voices. `espeak_variants` limits the
espeak-ng variants, so that a benchmark can keep a family of them out of training.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import math
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from dsita.audio import SAMPLE_RATE, to_mono_16k
from dsita.data.clips import Quoting, read_table
from dsita.data.sentences import Sentence, prepare_sentences
from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.progress import Progress
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import Rejection, normalize

log = logging.getLogger(__name__)

ESPEAK = "espeak-ng"
FESTIVAL = "festival"
ENGINES = (ESPEAK, FESTIVAL)
ENGINE_BINARIES = {ESPEAK: "espeak-ng", FESTIVAL: "text2wave"}
INSTALL_COMMANDS = {
    ESPEAK: "sudo apt-get install espeak-ng",
    FESTIVAL: "sudo apt-get install festival festvox-italp16k festvox-itapc16k",
}
# Human-sounding variants of espeak-ng-data/voices/!v; robotic, whispered and non-Italian ones are left out.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Alex", "Andrea", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee", "Mario", "Michael", "Mike",
    "adam", "antonio", "aunty", "belinda", "benjamin", "boris", "david", "edward", "grandma", "grandpa",
    "gustave", "john", "klatt", "klatt2", "klatt3", "linda", "marcelo", "max", "michel", "norbert",
    "pablo", "paul", "pedro", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor", "zac",
)  # fmt: skip
FESTIVAL_VOICES = ("lp_diphone", "pc_diphone")
ESPEAK_WORDS_PER_MINUTE = (140, 195)
ESPEAK_PITCH = (30, 70)  # espeak-ng's 0-99 scale; 50 is the voice's own
FESTIVAL_RATE = (0.85, 1.2)  # speaking rate relative to the voice's own
FESTIVAL_PITCH = (0.85, 1.25)  # factor on the voice's F0 targets
# The F0 about which a festival pitch range scales each voice's intonation: lp_diphone speaks with the
# Italian module's female targets (220 to 180 Hz), pc_diphone with the male ones (140 to 60 Hz).
FESTIVAL_F0_CENTRE = {"lp_diphone": 200.0, "pc_diphone": 100.0}
ESPEAK_PITCH_LIMITS = (0, 99)
FORMANT_JND = 0.04  # listeners tell formant frequencies apart from about 3-5 % (Flanagan, 1955)

SPLITS = ("train", "dev", "test")
CORPUS_DIR = "cv-corpus-synth-it"
TOP_DIR = f"{CORPUS_DIR}/it"
TSV_COLUMNS = (
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
    "age", "gender", "accents", "variant", "locale", "segment",
)  # fmt: skip
CV_SAMPLE_RATE = 48000
# Constant 32 kb/s, the MP3 floor at 48 kHz: the engines' output has nothing above 11 kHz to lose.
MP3_OPTIONS = {"format": "MP3", "bitrate_mode": "CONSTANT", "compression_level": 0.99}
CLIP_ID_BASE = 90_000_000
ARCHIVE_MTIME = 1_700_000_000  # fixed, so that the same clips give the same archive bytes
MIN_PEAK = 0.01  # below this a clip is silence: the engine read nothing

# Typographic marks festival's Latin-1 input cannot carry, and their plain equivalents.
_TO_LATIN1 = str.maketrans(
    {"’": "'", "‘": "'", "“": '"', "”": '"', "«": '"', "»": '"', "–": "-", "—": "-", "…": "..."}
)
# Digits and symbols are read by each engine its own way; the transcript has the normalizer's way.
_READ_AS_NORMALIZED = re.compile(r"[0-9%€$£&+=°§×]")


@dataclass(frozen=True)
class SynthVariety:
    """Ranges of the per-speaker voice transforms and the per-clip prosody, for more distinct speakers.

    Factors are drawn log-uniformly, the rest uniformly. A formant factor above 1 is a shorter vocal tract
    (formants higher, as a child's or a smaller adult's), below 1 a longer one.
    """

    formant: tuple[float, float] = (0.87, 1.15)  # per speaker: factor on the spectral envelope
    espeak_word_gap: tuple[int, int] = (0, 4)  # per speaker: espeak-ng -g, pause between words in 10 ms
    festival_pitch_range: tuple[float, float] = (0.6, 1.5)  # per speaker: intonation range around its F0
    speed: tuple[float, float] = (0.92, 1.08)  # per clip: factor on the speaker's speed
    pitch: tuple[float, float] = (0.94, 1.06)  # per clip: factor on the speaker's pitch
    espeak_amplitude: tuple[int, int] = (70, 130)  # per clip: espeak-ng -a (100: its own)

    def __post_init__(self) -> None:
        for name in ("formant", "festival_pitch_range", "speed", "pitch"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise DsitaError(f"variety {name} {(low, high)}: need 0 < min <= max")
        for name, (lowest, highest) in (("espeak_word_gap", (0, 100)), ("espeak_amplitude", (1, 200))):
            low, high = getattr(self, name)
            if not lowest <= low <= high <= highest:
                raise DsitaError(f"variety {name} {(low, high)}: need {lowest} <= min <= max <= {highest}")


@dataclass(frozen=True)
class SynthOptions:
    """What to generate. Sentences have `min_words`..`max_words` words once normalized."""

    n_clips: int = 300
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, dev, test
    engines: tuple[str, ...] = ENGINES
    clips_per_speaker: int = 10
    min_words: int = 3
    max_words: int = 14
    workers: int = 2
    shared_speakers: bool = False  # every split drawn from the same speakers (sentences still disjoint)
    variety: SynthVariety | None = None  # None: engine voices, speeds and pitches only, as before
    espeak_variants: tuple[str, ...] = ESPEAK_VARIANTS  # e.g. all but a family a benchmark holds out
    exclude: frozenset[str] = frozenset()  # normalized transcripts never spoken (see `held_out_sentences`)
    progress: bool = False  # a bar in a terminal; a log line every 30 s in any case (`dsita.progress`)

    def __post_init__(self) -> None:
        if self.n_clips < 1 or self.clips_per_speaker < 1 or self.workers < 1:
            raise DsitaError("clips, clips per speaker and workers must be positive")
        if len(self.split_fractions) != 3 or any(f <= 0 for f in self.split_fractions):
            raise DsitaError(f"split fractions {self.split_fractions}: need three positive numbers")
        if not math.isclose(sum(self.split_fractions), 1.0):
            raise DsitaError(f"split fractions {self.split_fractions} must add up to 1")
        if not self.engines or set(self.engines) - set(ENGINES) or len(set(self.engines)) < len(self.engines):
            raise DsitaError(f"engines {self.engines}: choose among {', '.join(ENGINES)}")
        if not 1 <= self.min_words <= self.max_words:
            raise DsitaError(f"word range {self.min_words}..{self.max_words} is empty")
        unknown = sorted(set(self.espeak_variants) - set(ESPEAK_VARIANTS))
        if not self.espeak_variants or unknown:
            raise DsitaError(
                f"espeak-ng variants {unknown or '()'}: choose among {', '.join(ESPEAK_VARIANTS)}"
            )


@dataclass(frozen=True)
class Speaker:
    """One voice setting. `speed`: espeak-ng words per minute, or festival rate factor; `pitch`: espeak-ng
    0-99, or festival F0 factor; `formant`: factor on the spectral envelope, applied after synthesis;
    `word_gap`: espeak-ng's pause between words (10 ms units); `pitch_range`: festival's intonation range."""

    engine: str
    voice: str
    speed: float
    pitch: float
    formant: float = 1.0
    word_gap: int = 0
    pitch_range: float = 1.0

    @property
    def key(self) -> str:
        """The settings as a string (`espeak-ng:it:speed=150:pitch=50`); `client_id` hashes it."""
        key = f"{self.engine}:{self.voice}:speed={self.speed:g}:pitch={self.pitch:g}"
        # Only settings away from the engine's own, so that plain speakers keep their keys (and client ids).
        for name, neutral in (("formant", 1.0), ("word_gap", 0), ("pitch_range", 1.0)):
            if getattr(self, name) != neutral:
                key += f":{name}={getattr(self, name):g}"
        return key

    @property
    def timbre(self) -> tuple[str, str, int]:
        """What tells voices apart beyond speed and pitch: the engine voice, and the vocal tract in steps of
        a just noticeable difference (formant factors 4 % apart or less sound alike)."""
        return self.engine, self.voice, round(math.log(self.formant) / math.log(1 + FORMANT_JND))

    @property
    def client_id(self) -> str:
        """The Common Voice-style `client_id` of this speaker: the SHA-512 hex digest of its key."""
        return hashlib.sha512(self.key.encode()).hexdigest()


@dataclass(frozen=True)
class Prosody:
    """One clip's variation on its speaker: factors on speed and pitch, and espeak-ng's amplitude."""

    speed: float = 1.0
    pitch: float = 1.0
    amplitude: int = 100


@dataclass(frozen=True)
class PlannedClip:
    """One clip to synthesize: its split, its mp3 file name, the sentence, and who says it how."""

    split: str
    filename: str
    sentence: Sentence
    speaker: Speaker
    prosody: Prosody = Prosody()


@dataclass(frozen=True)
class SplitStats:
    """The clips, speakers, engines and seconds of audio of one split of a synthesized corpus."""

    clips: int
    speakers: int  # distinct voice settings (client ids)
    engines: tuple[str, ...]
    seconds: float
    voices: int = 0  # distinct timbres: engine voice and vocal tract, in noticeable steps (`Speaker.timbre`)


@dataclass(frozen=True)
class SynthReport:
    """What `dsita synth` wrote: the archive, the sentences it drew from, and each split's stats."""

    out_path: Path
    size_bytes: int
    candidate_sentences: int
    usable_sentences: int
    splits: dict[str, SplitStats]
    elapsed_s: float

    speakers: int = 0  # distinct speakers in the whole corpus
    voices: int = 0  # distinct timbres in the whole corpus
    excluded_sentences: int = 0  # usable sentences left out because `SynthOptions.exclude` holds them

    @property
    def hours(self) -> float:
        """Hours of audio over all splits."""
        return sum(s.seconds for s in self.splits.values()) / 3600


def check_engines(engines: Iterable[str]) -> None:
    """Raise DsitaError, with the install command, for the first engine whose program is not on PATH."""
    for engine in engines:
        if shutil.which(ENGINE_BINARIES[engine]) is None:
            raise DsitaError(
                f"{ENGINE_BINARIES[engine]} not found; install {engine} with: {INSTALL_COMMANDS[engine]}"
            )


def split_sizes(n_clips: int, options: SynthOptions) -> tuple[int, int, int]:
    """(train, dev, test) clip counts from `options.split_fractions`; DsitaError when a split
    would get fewer clips than there are engines.
    """
    dev, test = (round(n_clips * f) for f in options.split_fractions[1:])
    sizes = (n_clips - dev - test, dev, test)
    if min(sizes) < len(options.engines):
        raise DsitaError(
            f"{n_clips} clips split {options.split_fractions} gives {sizes}: every split needs at least "
            f"{len(options.engines)} clips, one per engine"
        )
    return sizes


def plan_speakers(
    sizes: Sequence[int], options: SynthOptions, rng: random.Random
) -> dict[str, list[Speaker]]:
    """Speakers of each split, alternating engines, all distinct; espeak-ng variants never shared, unless
    `options.shared_speakers`, where every split uses one pool drawn from all variants."""
    variants = list(options.espeak_variants)
    rng.shuffle(variants)
    if options.shared_speakers:
        n_speakers = max(len(options.engines), math.ceil(sum(sizes) / options.clips_per_speaker))
        pool: list[Speaker] = []
        for index in range(n_speakers):
            engine = options.engines[index % len(options.engines)]
            nth = index // len(options.engines)
            pool.append(_draw_new_speaker(engine, nth, variants, {s.key for s in pool}, rng, options.variety))
        return dict.fromkeys(SPLITS, pool)
    n_dev, n_test = (max(1, round(len(variants) * f)) for f in options.split_fractions[1:])
    variant_pools = {
        "dev": variants[:n_dev],
        "test": variants[n_dev : n_dev + n_test],
        "train": variants[n_dev + n_test :],
    }
    taken: set[str] = set()
    speakers: dict[str, list[Speaker]] = {}
    for split, size in zip(SPLITS, sizes, strict=True):
        n_speakers = min(size, max(len(options.engines), math.ceil(size / options.clips_per_speaker)))
        speakers[split] = []
        for index in range(n_speakers):
            engine = options.engines[index % len(options.engines)]
            nth = index // len(options.engines)
            speaker = _draw_new_speaker(engine, nth, variant_pools[split], taken, rng, options.variety)
            taken.add(speaker.key)
            speakers[split].append(speaker)
    return speakers


def _draw_new_speaker(
    engine: str,
    nth: int,
    variants: list[str],
    taken: set[str],
    rng: random.Random,
    variety: SynthVariety | None,
) -> Speaker:
    for _ in range(1000):
        if engine == ESPEAK:
            speaker = Speaker(
                ESPEAK,
                variants[nth % len(variants)],
                rng.randint(*ESPEAK_WORDS_PER_MINUTE),
                rng.randint(*ESPEAK_PITCH),
            )
        else:
            speaker = Speaker(
                FESTIVAL,
                FESTIVAL_VOICES[nth % len(FESTIVAL_VOICES)],
                round(rng.uniform(*FESTIVAL_RATE), 2),
                round(rng.uniform(*FESTIVAL_PITCH), 2),
            )
        if variety is not None:
            speaker = _with_voice_transforms(speaker, variety, rng)
        if speaker.key not in taken:
            return speaker
    raise DsitaError(f"ran out of distinct {engine} voice settings; raise the clips per speaker")


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _with_voice_transforms(speaker: Speaker, variety: SynthVariety, rng: random.Random) -> Speaker:
    """The speaker with a vocal tract of its own, and a word gap (espeak-ng) or a pitch range (festival)."""
    formant = round(_log_uniform(rng, *variety.formant), 3)
    if speaker.engine == ESPEAK:
        return replace(speaker, formant=formant, word_gap=rng.randint(*variety.espeak_word_gap))
    return replace(
        speaker, formant=formant, pitch_range=round(_log_uniform(rng, *variety.festival_pitch_range), 2)
    )


def draw_prosody(variety: SynthVariety, rng: random.Random) -> Prosody:
    """One clip's variation on its speaker's speed, pitch and amplitude."""
    return Prosody(
        speed=round(_log_uniform(rng, *variety.speed), 3),
        pitch=round(_log_uniform(rng, *variety.pitch), 3),
        amplitude=rng.randint(*variety.espeak_amplitude),
    )


def plan_corpus(sentences: Sequence[Sentence], options: SynthOptions) -> list[PlannedClip]:
    """Pick sentences, speakers and splits from `options.seed` alone: the same inputs give the same plan."""
    if len(sentences) < options.n_clips:
        raise DsitaError(
            f"{options.n_clips} clips need as many distinct sentences, but only {len(sentences)} qualify "
            f"({options.min_words}-{options.max_words} words); add text files or ask for fewer clips"
        )
    rng = random.Random(options.seed)
    chosen = rng.sample(list(sentences), options.n_clips)
    sizes = split_sizes(options.n_clips, options)
    speakers = plan_speakers(sizes, options, rng)
    clips: list[PlannedClip] = []
    start = 0
    for split, size in zip(SPLITS, sizes, strict=True):
        for index, sentence in enumerate(chosen[start : start + size]):
            speaker = speakers[split][index % len(speakers[split])]
            # Drawn last, so that sentences and speakers are those of the same seed without variety.
            prosody = draw_prosody(options.variety, rng) if options.variety is not None else Prosody()
            filename = f"common_voice_it_{CLIP_ID_BASE + len(clips)}.mp3"
            clips.append(PlannedClip(split, filename, sentence, speaker, prosody))
        start += size
    return clips


def spoken_text(sentence: Sentence) -> str:
    """What the engine reads: the written sentence in Latin-1 marks, or the transcript where they could
    disagree (digits, symbols, letters outside Latin-1)."""
    plain = sentence.text.translate(_TO_LATIN1)
    try:
        plain.encode("latin-1")
    except UnicodeEncodeError:
        return sentence.normalized
    return sentence.normalized if _READ_AS_NORMALIZED.search(plain) else plain


def festival_setup(speaker: Speaker, prosody: Prosody = Prosody()) -> str:
    """Scheme run before synthesis: the voice, its rate, and its own F0 target function scaled by `pitch`,
    its excursions from the voice's centre F0 scaled by `pitch_range`."""
    pitch = speaker.pitch * prosody.pitch
    f0 = "(cadr point)"
    if speaker.pitch_range != 1.0:
        centre = FESTIVAL_F0_CENTRE[speaker.voice]
        f0 = f"(* {centre:g} (pow (/ {f0} {centre:g}) {speaker.pitch_range:g}))"
    return (
        f"(begin (voice_{speaker.voice}) "
        f"(Parameter.set 'Duration_Stretch {1 / (speaker.speed * prosody.speed):.4f}) "
        "(set! dsita_voice_targ_func (cadr (assoc 'targ_func int_general_params))) "
        "(set! int_general_params (list (list 'targ_func (lambda (utt syl) (mapcar (lambda (point) "
        f"(list (car point) (* {pitch:g} {f0}))) (dsita_voice_targ_func utt syl)))))))"
    )


def espeak_command(speaker: Speaker, prosody: Prosody, text: str, wav_path: Path) -> list[str]:
    """espeak-ng's command line; word gap and amplitude only where they differ from espeak-ng's own."""
    low, high = ESPEAK_PITCH_LIMITS
    pitch = min(high, max(low, round(speaker.pitch * prosody.pitch)))
    command = ["espeak-ng", "-v", f"it+{speaker.voice}", "-s", f"{round(speaker.speed * prosody.speed)}"]
    command += ["-p", f"{pitch}"]
    if speaker.word_gap:
        command += ["-g", str(speaker.word_gap)]
    if prosody.amplitude != Prosody().amplitude:
        command += ["-a", str(prosody.amplitude)]
    return [*command, "-w", str(wav_path), "--", text]


def synthesize_speech(
    speaker: Speaker, text: str, wav_path: Path, prosody: Prosody = Prosody()
) -> tuple[np.ndarray, int]:
    """Run the engine into `wav_path`; return its mono audio and rate, or raise if it is empty or silent."""
    if speaker.engine == ESPEAK:
        command = espeak_command(speaker, prosody, text, wav_path)
        stdin = b""
    else:
        # festival reads Latin-1; UTF-8 input gives an empty WAV and exit status 0.
        command = ["text2wave", "-eval", festival_setup(speaker, prosody), "-o", str(wav_path), "-"]
        stdin = text.encode("latin-1")
    result = subprocess.run(command, input=stdin, capture_output=True, timeout=300, check=False)
    failure = f"{speaker.key} failed on {text!r}"
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()[-500:]
        raise DsitaError(f"{failure}: exit status {result.returncode}: {stderr}")
    try:
        audio, rate = sf.read(wav_path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError):
        audio, rate = np.zeros((0, 1), dtype=np.float32), 0
    finally:
        wav_path.unlink(missing_ok=True)
    if audio.size == 0 or float(np.abs(audio).max()) < MIN_PEAK:
        hint = "; festival needs Latin-1 text and its Italian voices" if speaker.engine == FESTIVAL else ""
        raise DsitaError(f"{failure}: no audible output (install: {INSTALL_COMMANDS[speaker.engine]}){hint}")
    return audio.mean(axis=1), rate


def render_clip(clip: PlannedClip, workdir: Path) -> tuple[bytes, float]:
    """The clip as 48 kHz mono MP3 bytes, and its duration in seconds."""
    text = spoken_text(clip.sentence)
    wav_path = workdir / f"{clip.filename}.wav"
    try:
        audio, rate = synthesize_speech(clip.speaker, text, wav_path, clip.prosody)
    except DsitaError:
        if text == clip.sentence.normalized:
            raise
        # festival's intonation rules crash on a few punctuated sentences (SIOD "wrong type of argument",
        # exit status 0, empty WAV); the transcript itself, without punctuation, reads fine.
        audio, rate = synthesize_speech(clip.speaker, clip.sentence.normalized, wav_path, clip.prosody)
    if clip.speaker.formant != 1.0:
        audio, rate = apply_vocal_tract(audio, rate, clip.speaker.formant), SAMPLE_RATE
    audio = np.clip(to_mono_16k(audio, rate, CV_SAMPLE_RATE), -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, audio, CV_SAMPLE_RATE, **MP3_OPTIONS)
    return buffer.getvalue(), len(audio) / CV_SAMPLE_RATE


def apply_vocal_tract(audio: np.ndarray, rate: int, formant: float) -> np.ndarray:
    """The engine's output at 16 kHz (the rate models hear) with its spectral envelope moved by `formant`."""
    # Imported here: the CLI imports this module for its options, and torch takes a second to load.
    import torch

    from dsita.data.augmentation.speaker import formant_shift

    clip = torch.from_numpy(np.ascontiguousarray(to_mono_16k(audio, rate)))
    with torch.no_grad():
        moved = formant_shift(clip[None], torch.tensor([clip.numel()]), torch.tensor([formant]))[0]
    return moved.numpy()


def tsv_bytes(rows: Iterable[Sequence[str]], header: Sequence[str]) -> bytes:
    """Tab-separated, unquoted, as Common Voice writes them (quotes in sentences stay literal)."""
    lines = ["\t".join(header)]
    for row in rows:
        if any("\t" in field or "\n" in field for field in row):
            raise DsitaError(f"a TSV field holds a tab or a newline: {row}")
        lines.append("\t".join(row))
    return ("\n".join(lines) + "\n").encode("utf-8")


def tsv_row(clip: PlannedClip) -> list[str]:
    """The clip's row of the Common Voice TSVs, in TSV_COLUMNS order (locale `it`, 2 up votes)."""
    row = dict.fromkeys(TSV_COLUMNS, "")
    row.update(
        client_id=clip.speaker.client_id,
        path=clip.filename,
        sentence=clip.sentence.text,
        locale="it",
        sentence_id=hashlib.sha256(clip.sentence.text.encode()).hexdigest(),
        up_votes="2",
        down_votes="0",
    )
    return list(row.values())


def _add_member(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    """A file (or, with no data, a folder) with fixed owner, mode and time, for reproducible archives."""
    info = tarfile.TarInfo(name)
    info.mtime = ARCHIVE_MTIME
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def write_archive(
    out_path: Path, clips: Sequence[PlannedClip], workers: int, show_bars: bool = False
) -> dict[str, float]:
    """Render the clips in parallel into a new `.tar.gz`, atomically; return each clip's duration."""
    durations: dict[str, float] = {}
    with (
        Progress(show_bars, log) as progress,
        tempfile.TemporaryDirectory(prefix="dsita-synth-") as workdir,
        atomic_write(out_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        for folder in (CORPUS_DIR, TOP_DIR, f"{TOP_DIR}/clips"):
            _add_member(tar, folder, None)
        # The TSVs first, so that a streaming importer knows which clips it wants before they arrive.
        for split in SPLITS:
            rows = [tsv_row(c) for c in clips if c.split == split]
            _add_member(tar, f"{TOP_DIR}/{split}.tsv", tsv_bytes(rows, TSV_COLUMNS))
        _add_member(tar, f"{TOP_DIR}/validated.tsv", tsv_bytes([tsv_row(c) for c in clips], TSV_COLUMNS))
        for empty in ("other", "invalidated"):
            _add_member(tar, f"{TOP_DIR}/{empty}.tsv", tsv_bytes([], TSV_COLUMNS))
        rendered = pool.map(lambda clip: render_clip(clip, Path(workdir)), clips)
        task = progress.task(f"synthesizing {out_path.name}", len(clips), "clips")
        try:
            for clip, (mp3, seconds) in zip(clips, rendered, strict=True):
                _add_member(tar, f"{TOP_DIR}/clips/{clip.filename}", mp3)
                durations[clip.filename] = seconds
                task.advance()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a failed engine fails every clip: stop at the first
            raise
        clip_durations = [[c.filename, str(round(durations[c.filename] * 1000))] for c in clips]
        _add_member(tar, f"{TOP_DIR}/clip_durations.tsv", tsv_bytes(clip_durations, ("clip", "duration[ms]")))
    return durations


def synthesize_corpus(sentences: Sequence[str], out_path: str | Path, options: SynthOptions) -> SynthReport:
    """Speak `options.n_clips` of `sentences` and write a Common Voice–format `.tar.gz` at `out_path`."""
    started = time.monotonic()
    out_path = Path(out_path)
    check_engines(options.engines)
    prepared = prepare_sentences(sentences, options.min_words, options.max_words)
    usable = [sentence for sentence in prepared if sentence.normalized not in options.exclude]
    clips = plan_corpus(usable, options)
    durations = write_archive(out_path, clips, options.workers, options.progress)
    splits = {}
    for split in SPLITS:
        in_split = [c for c in clips if c.split == split]
        splits[split] = SplitStats(
            clips=len(in_split),
            speakers=len({c.speaker for c in in_split}),
            engines=tuple(e for e in options.engines if any(c.speaker.engine == e for c in in_split)),
            seconds=sum(durations[c.filename] for c in in_split),
            voices=len({c.speaker.timbre for c in in_split}),
        )
    return SynthReport(
        out_path,
        out_path.stat().st_size,
        len(sentences),
        len(usable),
        splits,
        time.monotonic() - started,
        speakers=len({c.speaker for c in clips}),
        voices=len({c.speaker.timbre for c in clips}),
        excluded_sentences=len(prepared) - len(usable),
    )


def held_out_sentences(paths: Iterable[Path]) -> frozenset[str]:
    """Normalized transcripts to keep out of a corpus (`SynthOptions.exclude`), so that a model trained on it
    never hears another corpus's evaluation sentences: every `sentence` of a Common Voice archive's TSVs
    (`.tar.gz`, `.tgz`, `.tar`), of a `.tsv` file, or every `transcript` of a DeepSpeech `.csv`."""
    alphabet = Alphabet.italian()
    found: set[str] = set()
    for path in paths:
        if not path.is_file():
            raise DsitaError(f"{path}: file to exclude sentences of not found")
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            tables = _archive_tables(path)
        elif path.suffix in (".tsv", ".csv"):
            tables = {str(path): path.read_bytes()}
        else:
            raise DsitaError(
                f"{path}: expected a Common Voice archive (.tar.gz), a .tsv or a DeepSpeech .csv"
            )
        for source, data in tables.items():
            found.update(_table_sentences(data, source, alphabet))
    return frozenset(found)


def _archive_tables(path: Path) -> dict[str, bytes]:
    """`archive:member` -> bytes of every TSV in a Common Voice archive, read as a stream (clips skipped)."""
    tables: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                tar.members = []  # type: ignore[attr-defined]  # else stream mode keeps every TarInfo
                if member.isfile() and member.name.endswith(".tsv"):
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        tables[f"{path}:{member.name}"] = extracted.read()
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DsitaError(f"{path}: cannot read the archive ({exc})") from None
    if not tables:
        raise DsitaError(f"{path}: no .tsv file in the archive; expected a Common Voice release")
    return tables


def _table_sentences(data: bytes, source: str, alphabet: Alphabet) -> list[str]:
    """The normalized sentences of a Common Voice TSV or a DeepSpeech CSV; a TSV without a `sentence`
    column (`clip_durations.tsv`) has none."""
    is_tsv = source.endswith(".tsv")
    quoting: Quoting
    delimiter, quoting, column = (
        ("\t", csv.QUOTE_NONE, "sentence") if is_tsv else (",", csv.QUOTE_MINIMAL, "transcript")
    )
    header, rows, _ = read_table(data, source, "exclude", delimiter, quoting)
    if column not in header:
        if is_tsv:
            return []
        raise DsitaError(f"{source}: no {column} column; columns found: {', '.join(header)}")
    normalized = (normalize(fields[column], alphabet) for _, fields in rows)
    return [text for text in normalized if not isinstance(text, Rejection)]
