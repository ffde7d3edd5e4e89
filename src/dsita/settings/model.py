"""The one typed settings object, with the variable names and defaults of the original DeepSpeech Italian
image.

Each default belongs to the options dataclass that uses it (`TrainOptions`, `AugmentOptions`,
`LmBuildOptions`, `ImportOptions`, `ModelInfo`): a field here reads it from there, so a default is written
once. Names the original image did not have are dsita's own. `Settings()` holds the defaults only; the
environment and env files come in through `dsita.settings.load_settings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from dsita.data.augmentation.options import AugmentOptions, ChannelOptions, SpeakerOptions, parse_codec
from dsita.data.clips import ImportOptions
from dsita.export.card import ModelInfo
from dsita.lm.build import LmBuildOptions
from dsita.training.options import LR_SCHEDULES, TrainOptions

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
SEED_LIMIT = 2**32 - 1


def parse_flag(value: Any) -> Any:
    """0/1, true/false, yes/no, on/off (any case), or a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError("not a flag")


Flag = Annotated[bool, BeforeValidator(parse_flag)]


@dataclass(frozen=True)
class LmEvaluateRange:
    """`LM_EVALUATE_RANGE`: the alpha/beta search box and its trial count (`MAX_ALPHA,MAX_BETA,N_TRIALS`), or,
    as the French image wrote it, a list of `ALPHA,BETA` pairs to evaluate, the best kept."""

    max_alpha: float
    max_beta: float
    n_trials: int
    pairs: tuple[tuple[float, float], ...] = ()

    def __str__(self) -> str:
        if self.pairs:
            return " ".join(f"{a:g},{b:g}" for a, b in self.pairs)
        return f"{self.max_alpha:g},{self.max_beta:g},{self.n_trials}"


def _parse_range(value: Any) -> LmEvaluateRange | None:
    if value is None or isinstance(value, LmEvaluateRange):
        return value
    text = str(value).strip()
    if not text:
        return None
    if " " in text or text.count(",") == 1:
        pairs = tuple(cast(tuple[float, float], _numbers(word, 2)) for word in text.split())
        if any(v < 0 for pair in pairs for v in pair):
            raise ValueError("out of range")
        alphas, betas = zip(*pairs, strict=True)
        return LmEvaluateRange(max(alphas), max(betas), len(pairs), pairs)
    max_alpha, max_beta, n_trials = _numbers(text, 3)
    if max_alpha < 0 or max_beta < 0 or n_trials < 1 or n_trials != int(n_trials):
        raise ValueError("out of range")
    return LmEvaluateRange(max_alpha, max_beta, int(n_trials))


def _numbers(text: str, count: int) -> tuple[float, ...]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != count or not all(math.isfinite(p) for p in parts):
        raise ValueError("wrong number of parts")
    return tuple(parts)


def _parse_paths(value: Any) -> tuple[Path, ...]:
    """A comma-separated list of paths (empty: none)."""
    if isinstance(value, tuple | list):
        return tuple(Path(v) for v in value)
    return tuple(Path(part.strip()) for part in str(value or "").split(",") if part.strip())


PathList = Annotated[tuple[Path, ...], BeforeValidator(_parse_paths)]


def _interval(lowest: float) -> Callable[[Any], tuple[float, float]]:
    """The parser of a `MIN,MAX` setting: two finite numbers with lowest < MIN <= MAX, as a tuple."""

    def parse(value: Any) -> tuple[float, float]:
        parts = value if isinstance(value, tuple | list) else str(value).split(",")
        if len(parts) != 2:
            raise ValueError("wrong number of parts")
        low, high = float(parts[0]), float(parts[1])
        if not (math.isfinite(high) and lowest < low <= high):
            raise ValueError("out of range")
        return low, high

    return parse


DecibelRange = Annotated[tuple[float, float], BeforeValidator(_interval(-math.inf))]
SecondsRange = Annotated[tuple[float, float], BeforeValidator(_interval(0.0))]
FactorRange = Annotated[tuple[float, float], BeforeValidator(_interval(0.0))]
SemitoneRange = Annotated[tuple[float, float], BeforeValidator(_interval(-math.inf))]


def _parse_codecs(value: Any) -> tuple[str, ...]:
    """A comma-separated list of codec:kbps, each within its codec's bitrates."""
    parts = value if isinstance(value, tuple | list) else str(value).split(",")
    codecs = tuple(str(part).strip() for part in parts if str(part).strip())
    if not codecs:
        raise ValueError("no codec")
    for codec in codecs:
        parse_codec(codec)
    return codecs


CodecList = Annotated[tuple[str, ...], BeforeValidator(_parse_codecs)]
OptionalPath = Annotated[Path | None, BeforeValidator(lambda value: value or None)]  # empty: not set
REPO_SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "it-sample.tar.gz"


def _env(name: str, *aliases: str, expect: str, description: str) -> dict[str, Any]:
    """Field keywords: the environment variable name(s), what a valid value looks like, and its meaning."""
    return {
        "validation_alias": AliasChoices(name, *aliases),
        "description": description,
        "json_schema_extra": {"env": name, "aliases": list(aliases), "expect": expect},
    }


POSITIVE_INT = "a positive integer"
NON_NEGATIVE_INT = "a non-negative integer"
POSITIVE_NUMBER = "a positive number"
FLAG = "0 or 1"
PROBABILITY = "a probability from 0 to 1"
LIMIT = "a non-negative integer (0: no limit)"
FACTORS = "MIN,MAX factors above 0 such as 0.9,1.1"

# Presets: a flag that gives the fields no flag, variable or env file sets these values. Applied to the
# values themselves, so `dsita config` and a saved settings.env show what runs.
PRESETS: dict[str, dict[str, Any]] = {
    # AUGMENT=1: the baseline+channel row of benchmarks/generalization.py, the best on unheard voices and
    # channels at a fixed budget (BENCHMARKS.md): Kaldi's and ESPnet's speed perturbation, SpecAugment, noise
    # and reverberation, plus the channel chain and babble. The speaker transforms cost steps for no gain.
    "augment": {
        "aug_speed": 0.5,
        "aug_specaugment": 1.0,
        "aug_noise": 0.5,
        "aug_gain": 0.5,
        "aug_reverb": 0.3,
        "aug_babble": 0.2,
        "aug_mic": 0.3,
        "aug_clipping": 0.1,
        "aug_compression": 0.2,
        "aug_eq": 0.3,
        "aug_band_limit": 0.2,
        "aug_narrowband": 0.1,
        "aug_mu_law": 0.05,
        "aug_codec": 0.1,
    },
    # FAST_TRAIN=1: a tiny model, a few steps on a few clips, a small LM, and a fixed subset of a real
    # archive: a smoke test of every step in well under a minute.
    "fast_train": {
        "n_hidden": 64,
        "model_size": "tiny",
        "max_steps_per_epoch": 8,
        "max_train_clips": 64,
        "max_dev_clips": 16,
        "lm_top_k": 10_000,
        "lm_memory": "10%",
        "import_max_clips": 500,
    },
}


class Settings(BaseModel):
    """Every setting of dsita, by field name; each field's alias is its environment variable."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, allow_inf_nan=False)

    # Training (names and defaults from the original image).
    batch_size: int = Field(
        TrainOptions.batch_size,
        gt=0,
        **_env("BATCH_SIZE", expect=POSITIVE_INT, description="Clips per training batch (per process)."),
    )
    epochs: int = Field(
        TrainOptions.epochs,
        gt=0,
        **_env("EPOCHS", "EPOCH", expect=POSITIVE_INT, description="Maximum number of training epochs."),
    )
    learning_rate: float = Field(
        TrainOptions.learning_rate,
        gt=0,
        **_env(
            "LEARNING_RATE", expect="a positive number", description="Adam learning rate (the peak rate)."
        ),
    )
    n_hidden: int = Field(
        2048,
        gt=0,
        **_env(
            "N_HIDDEN", expect=POSITIVE_INT, description="DeepSpeech's width: the dense layers and the LSTM."
        ),
    )
    dropout: float = Field(
        0.4,
        ge=0,
        lt=1,
        **_env(
            "DROPOUT", expect="a number in [0, 1)", description="DeepSpeech's dropout after each dense layer."
        ),
    )
    # The acoustic model (dsita's own): DeepSpeech 0.9 by default, which N_HIDDEN and DROPOUT size; a
    # conformer takes its size from MODEL_SIZE and the CONFORMER_* overrides, its dropout from the preset.
    model: str = Field(
        TrainOptions.architecture,
        min_length=1,
        **_env("MODEL", expect="deepspeech or conformer", description="Acoustic model architecture."),
    )
    model_size: str = Field(
        "",
        **_env(
            "MODEL_SIZE",
            expect="a size preset such as small, medium or tiny",
            description="The architecture's size preset (conformer: small, medium, tiny); empty: its first.",
        ),
    )
    conformer_layers: int = Field(
        0,
        ge=0,
        **_env("CONFORMER_LAYERS", expect=NON_NEGATIVE_INT, description="Conformer blocks; 0: MODEL_SIZE's."),
    )
    conformer_dim: int = Field(
        0,
        ge=0,
        **_env(
            "CONFORMER_DIM",
            expect=NON_NEGATIVE_INT,
            description="Conformer width, a multiple of twice the heads; 0: MODEL_SIZE's.",
        ),
    )
    conformer_heads: int = Field(
        0,
        ge=0,
        **_env(
            "CONFORMER_HEADS",
            expect=NON_NEGATIVE_INT,
            description="Conformer attention heads; 0: MODEL_SIZE's.",
        ),
    )
    early_stop: Flag = Field(
        TrainOptions.early_stop,
        **_env("EARLY_STOP", expect=FLAG, description="Stop when the dev loss no longer improves."),
    )
    es_epochs: int = Field(
        TrainOptions.es_epochs,
        gt=0,
        **_env(
            "ES_EPOCHS",
            "ES_STOP",
            expect=POSITIVE_INT,
            description="Epochs without dev improvement before stopping.",
        ),
    )
    max_to_keep: int = Field(
        TrainOptions.max_to_keep,
        gt=0,
        **_env("MAX_TO_KEEP", expect=POSITIVE_INT, description="Epoch checkpoints kept, besides best_dev."),
    )
    checkpoint_secs: float = Field(
        TrainOptions.checkpoint_secs,
        gt=0,
        **_env(
            "CHECKPOINT_SECS", expect=POSITIVE_NUMBER, description="Seconds between mid-epoch checkpoints."
        ),
    )
    amp: Flag = Field(
        TrainOptions.amp,
        **_env("AMP", expect=FLAG, description="Mixed precision on CUDA (ignored on a CPU)."),
    )
    seed: int = Field(
        TrainOptions.seed,
        ge=0,
        le=SEED_LIMIT,
        **_env(
            "SEED",
            expect=f"an integer from 0 to {SEED_LIMIT}",
            description="Random seed for shuffling and initialisation.",
        ),
    )
    batch_seconds: float = Field(
        0.0,
        ge=0,
        **_env(
            "BATCH_SECONDS",
            expect="a non-negative number of seconds (0: off)",
            description="Batches of at most this much padded audio instead of BATCH_SIZE clips (0: off).",
        ),
    )
    lr_schedule: str = Field(
        TrainOptions.lr_schedule,
        pattern="^(" + "|".join(LR_SCHEDULES) + ")$",
        **_env(
            "LR_SCHEDULE",
            expect=" or ".join(LR_SCHEDULES),
            description="constant, or warmup then inverse square-root decay; auto: the model's "
            "(DeepSpeech constant, conformer warmup-decay).",
        ),
    )
    lr_warmup_steps: int = Field(
        TrainOptions.lr_warmup_steps,
        ge=0,
        **_env("LR_WARMUP_STEPS", expect=NON_NEGATIVE_INT, description="Warmup steps of warmup-decay."),
    )
    average_checkpoints: int = Field(
        TrainOptions.average_checkpoints,
        ge=0,
        **_env(
            "AVERAGE_CHECKPOINTS",
            expect="a non-negative integer (0 or 1: off)",
            description="At the end of training, average the last N epochs' weights; kept as best_dev.pt "
            "when its dev loss is lower.",
        ),
    )
    max_steps_per_epoch: int = Field(
        0, ge=0, **_env("MAX_STEPS_PER_EPOCH", expect=LIMIT, description="Batches trained per epoch at most.")
    )
    max_train_clips: int = Field(
        0, ge=0, **_env("MAX_TRAIN_CLIPS", expect=LIMIT, description="Training clips used at most.")
    )
    max_dev_clips: int = Field(
        0, ge=0, **_env("MAX_DEV_CLIPS", expect=LIMIT, description="Dev clips used at most.")
    )
    train_workers: int = Field(
        0,
        ge=0,
        **_env(
            "TRAIN_WORKERS",
            expect="a non-negative integer (0: automatic)",
            description="DataLoader processes per training process; 0: from the CPUs per GPU.",
        ),
    )
    num_gpus: int = Field(
        0,
        ge=0,
        **_env(
            "NUM_GPUS",
            expect="a non-negative integer (0: all visible)",
            description="GPUs `dsita run` trains on, one process each; 0: every visible GPU.",
        ),
    )

    # Training augmentation (dsita's own; all off by default, so training stays DeepSpeech's).
    augment: Flag = Field(
        False,
        **_env(
            "AUGMENT",
            expect=FLAG,
            description="Turn on the recommended augmentation for every AUG_* probability not set.",
        ),
    )
    aug_speed: float = Field(
        AugmentOptions.speed,
        ge=0,
        le=1,
        **_env("AUG_SPEED", expect=PROBABILITY, description="Share of clips played at 0.9x or 1.1x speed."),
    )
    aug_specaugment: float = Field(
        AugmentOptions.spec_augment,
        ge=0,
        le=1,
        **_env(
            "AUG_SPECAUGMENT",
            expect=PROBABILITY,
            description="Share of clips with SpecAugment time and frequency masks.",
        ),
    )
    aug_noise: float = Field(
        AugmentOptions.noise,
        ge=0,
        le=1,
        **_env("AUG_NOISE", expect=PROBABILITY, description="Share of clips with noise added at AUG_SNR_DB."),
    )
    aug_gain: float = Field(
        AugmentOptions.gain,
        ge=0,
        le=1,
        **_env("AUG_GAIN", expect=PROBABILITY, description="Share of clips with a gain within AUG_GAIN_DB."),
    )
    aug_reverb: float = Field(
        AugmentOptions.reverb,
        ge=0,
        le=1,
        **_env(
            "AUG_REVERB",
            expect=PROBABILITY,
            description="Share of clips with synthetic reverberation (RT60 within AUG_RT60).",
        ),
    )
    aug_noise_dir: OptionalPath = Field(
        AugmentOptions.noise_dir,
        **_env(
            "AUG_NOISE_DIR",
            expect="a folder path",
            description="Noise recordings (WAV, FLAC, MP3, OGG) mixed in besides synthetic noise.",
        ),
    )
    aug_snr_db: DecibelRange = Field(
        AugmentOptions.snr_db,
        **_env("AUG_SNR_DB", expect="MIN,MAX in dB such as 5,30", description="Range of the noise SNR."),
    )
    aug_gain_db: float = Field(
        AugmentOptions.gain_db,
        ge=0,
        **_env(
            "AUG_GAIN_DB",
            expect="a non-negative number of dB",
            description="Largest gain, up or down, that AUG_GAIN applies.",
        ),
    )
    aug_rt60: SecondsRange = Field(
        AugmentOptions.rt60,
        **_env(
            "AUG_RT60",
            expect="MIN,MAX in seconds, above 0, such as 0.1,0.6",
            description="Range of the reverberation time.",
        ),
    )
    aug_spec_time_ms: float = Field(
        AugmentOptions.spec_time_ms,
        ge=0,
        **_env(
            "AUG_SPEC_TIME_MS",
            expect="a non-negative number of milliseconds (0: 5 % of each clip)",
            description="Longest SpecAugment time mask, in ms (each at most a fifth of its clip).",
        ),
    )
    aug_spec_time_masks: int = Field(
        AugmentOptions.spec_time_masks,
        ge=0,
        **_env(
            "AUG_SPEC_TIME_MASKS", expect=NON_NEGATIVE_INT, description="SpecAugment time masks per clip."
        ),
    )
    aug_spec_freq_masks: int = Field(
        AugmentOptions.spec_freq_masks,
        ge=0,
        **_env(
            "AUG_SPEC_FREQ_MASKS",
            expect=NON_NEGATIVE_INT,
            description="SpecAugment frequency masks per clip.",
        ),
    )
    aug_spec_freq_share: float = Field(
        AugmentOptions.spec_freq_share,
        ge=0,
        le=1,
        **_env(
            "AUG_SPEC_FREQ_SHARE",
            expect="a number from 0 to 1",
            description="Widest SpecAugment frequency mask, as a share of the features' channels.",
        ),
    )
    # Speaker variation.
    aug_vtlp: float = Field(
        SpeakerOptions.vtlp,
        ge=0,
        le=1,
        **_env(
            "AUG_VTLP",
            expect=PROBABILITY,
            description="Share of clips with vocal tract length perturbation (AUG_VTLP_RANGE).",
        ),
    )
    aug_pitch: float = Field(
        SpeakerOptions.pitch,
        ge=0,
        le=1,
        **_env(
            "AUG_PITCH", expect=PROBABILITY, description="Share of clips pitch-shifted (AUG_PITCH_SEMITONES)."
        ),
    )
    aug_formant: float = Field(
        SpeakerOptions.formant,
        ge=0,
        le=1,
        **_env(
            "AUG_FORMANT",
            expect=PROBABILITY,
            description="Share of clips with their formants moved (AUG_FORMANT_RANGE).",
        ),
    )
    aug_tempo: float = Field(
        SpeakerOptions.tempo,
        ge=0,
        le=1,
        **_env(
            "AUG_TEMPO",
            expect=PROBABILITY,
            description="Share of clips spoken faster or slower, pitch kept (AUG_TEMPO_RANGE).",
        ),
    )
    aug_vtlp_range: FactorRange = Field(
        SpeakerOptions.vtlp_range,
        **_env("AUG_VTLP_RANGE", expect=FACTORS, description="Range of the VTLP factor on every frequency."),
    )
    aug_pitch_semitones: SemitoneRange = Field(
        SpeakerOptions.pitch_semitones,
        **_env(
            "AUG_PITCH_SEMITONES",
            expect="MIN,MAX in semitones such as -3,3",
            description="Range of pitch shifts.",
        ),
    )
    aug_formant_range: FactorRange = Field(
        SpeakerOptions.formant_range,
        **_env(
            "AUG_FORMANT_RANGE", expect=FACTORS, description="Range of the factor on formant frequencies."
        ),
    )
    aug_tempo_range: FactorRange = Field(
        SpeakerOptions.tempo_range,
        **_env("AUG_TEMPO_RANGE", expect=FACTORS, description="Range of the speaking-rate factor."),
    )
    # Channel variation and babble.
    aug_babble: float = Field(
        ChannelOptions.babble,
        ge=0,
        le=1,
        **_env(
            "AUG_BABBLE",
            expect=PROBABILITY,
            description="Share of clips with other clips of the batch mixed under them (AUG_BABBLE_SNR_DB).",
        ),
    )
    aug_mic: float = Field(
        ChannelOptions.mic,
        ge=0,
        le=1,
        **_env(
            "AUG_MIC", expect=PROBABILITY, description="Share of clips through a random small microphone."
        ),
    )
    aug_clipping: float = Field(
        ChannelOptions.clipping,
        ge=0,
        le=1,
        **_env(
            "AUG_CLIPPING",
            expect=PROBABILITY,
            description="Share of clips hard-clipped (0.1-3 % of samples).",
        ),
    )
    aug_compression: float = Field(
        ChannelOptions.compression,
        ge=0,
        le=1,
        **_env(
            "AUG_COMPRESSION",
            expect=PROBABILITY,
            description="Share of clips with dynamic range compression.",
        ),
    )
    aug_eq: float = Field(
        ChannelOptions.eq,
        ge=0,
        le=1,
        **_env("AUG_EQ", expect=PROBABILITY, description="Share of clips through a random EQ (+-8 dB)."),
    )
    aug_band_limit: float = Field(
        ChannelOptions.band_limit,
        ge=0,
        le=1,
        **_env(
            "AUG_BAND_LIMIT",
            expect=PROBABILITY,
            description="Share of clips band-limited (low edge 50-300 Hz, high edge 3.4-7.5 kHz).",
        ),
    )
    aug_narrowband: float = Field(
        ChannelOptions.narrowband,
        ge=0,
        le=1,
        **_env(
            "AUG_NARROWBAND", expect=PROBABILITY, description="Share of clips through an 8 kHz round trip."
        ),
    )
    aug_mu_law: float = Field(
        ChannelOptions.mu_law,
        ge=0,
        le=1,
        **_env("AUG_MU_LAW", expect=PROBABILITY, description="Share of clips through 8-bit mu-law."),
    )
    aug_codec: float = Field(
        ChannelOptions.codec,
        ge=0,
        le=1,
        **_env(
            "AUG_CODEC", expect=PROBABILITY, description="Share of clips through a lossy codec of AUG_CODECS."
        ),
    )
    aug_babble_snr_db: DecibelRange = Field(
        ChannelOptions.babble_snr_db,
        **_env(
            "AUG_BABBLE_SNR_DB", expect="MIN,MAX in dB such as 5,20", description="Range of the babble SNR."
        ),
    )
    aug_codecs: CodecList = Field(
        ChannelOptions.codecs,
        **_env(
            "AUG_CODECS",
            expect="comma-separated codec:kbps, codecs mp3 (8-160), vorbis (23-72), opus (6-256)",
            description="Codecs and bitrates AUG_CODEC draws from.",
        ),
    )

    # Language model.
    lm_alpha: float = Field(
        LmBuildOptions.alpha,
        ge=0,
        **_env(
            "LM_ALPHA", expect="a non-negative number", description="Language model weight in beam search."
        ),
    )
    lm_beta: float = Field(
        LmBuildOptions.beta,
        ge=0,
        **_env("LM_BETA", expect="a non-negative number", description="Word insertion bonus in beam search."),
    )
    lm_evaluate_range: Annotated[LmEvaluateRange | None, BeforeValidator(_parse_range)] = Field(
        None,
        **_env(
            "LM_EVALUATE_RANGE",
            expect="empty, MAX_ALPHA,MAX_BETA,N_TRIALS such as 5,5,600, or pairs such as '0.5,1.5 0.6,1.4'",
            description="Alpha/beta search box and trial count (or pairs to try); empty: a short search "
            "when alpha and beta were never tuned.",
        ),
    )
    lm_top_k: int = Field(
        LmBuildOptions.top_k,
        gt=0,
        **_env("LM_TOP_K", expect=POSITIVE_INT, description="Vocabulary size kept for the language model."),
    )
    lm_corpus: PathList = Field(
        (),
        **_env(
            "LM_CORPUS",
            expect="empty or comma-separated text files (plain, .gz or .xz)",
            description="LM text for `dsita run`; empty: fortunes-it and dsita's extra sentences.",
        ),
    )
    lm_memory: str = Field(
        LmBuildOptions.memory,
        pattern=r"^([0-9]+%|[0-9]+[kKmMgGtT]?)$",
        **_env(
            "LM_MEMORY",
            expect="a percentage of RAM such as 85% or a size such as 2G",
            description="KenLM lmplz's sorting memory (-S).",
        ),
    )
    kenlm_bin: OptionalPath = Field(
        LmBuildOptions.kenlm_bin,
        **_env(
            "KENLM_BIN",
            expect="a folder path",
            description="Folder of KenLM's lmplz, build_binary and filter; empty: the ones installed with "
            "dsita, else PATH.",
        ),
    )

    # Transfer learning and switches.
    transfer_learning: Flag = Field(
        False, **_env("TRANSFER_LEARNING", expect=FLAG, description="Start from an existing checkpoint.")
    )
    drop_source_layers: int = Field(
        TrainOptions.drop_source_layers,
        ge=0,
        le=5,
        **_env(
            "DROP_SOURCE_LAYERS",
            expect="an integer from 0 to 5",
            description="Last layers re-initialised on transfer.",
        ),
    )
    transfer_checkpoint_dir: OptionalPath = Field(
        None,
        **_env(
            "TRANSFER_CHECKPOINT_DIR",
            expect="a folder or archive path",
            description="dsita or DeepSpeech 0.9 checkpoint that TRANSFER_LEARNING starts from: a folder, or "
            "a checkpoint_it.tar.xz (default DATA_DIR/transfer-checkpoint).",
        ),
    )
    fast_train: Flag = Field(
        False,
        **_env("FAST_TRAIN", expect=FLAG, description="Tiny model, few steps, sample corpus: a smoke test."),
    )
    only_export: Flag = Field(
        False, **_env("ONLY_EXPORT", expect=FLAG, description="Skip training; export an existing checkpoint.")
    )
    english_compatible: Flag = Field(
        False,
        **_env(
            "ENGLISH_COMPATIBLE", expect=FLAG, description="Use the English alphabet; accents transliterated."
        ),
    )

    # Data.
    data_dir: Path = Field(
        Path("data"),
        **_env(
            "DATA_DIR",
            expect="a folder path",
            description="Root of sources/, extracted/, lm/, checkpoints/, models/ and logs/.",
        ),
    )
    extra_corpora: PathList = Field(
        (),
        **_env(
            "EXTRA_CORPORA",
            expect="empty or comma-separated CSV/TSV files",
            description="Your own corpora (tables of audio paths and transcripts) added to training.",
        ),
    )
    sample_archive: Path = Field(
        REPO_SAMPLE,
        **_env(
            "SAMPLE_ARCHIVE",
            expect="a file path",
            description="FAST_TRAIN's corpus when DATA_DIR/sources/it.tar.gz is absent (the bundled sample).",
        ),
    )
    max_secs: float = Field(
        ImportOptions.max_secs,
        gt=0,
        **_env(
            "MAX_SECS",
            expect="a positive number of seconds",
            description="Clips longer than this are skipped on import.",
        ),
    )
    import_max_clips: int = Field(
        0,
        ge=0,
        **_env(
            "IMPORT_MAX_CLIPS", expect=LIMIT, description="Clips imported per split at most (the first ones)."
        ),
    )
    cv_sha256: str = Field(
        "",
        pattern=r"^([0-9a-fA-F]{64})?$",
        **_env(
            "CV_SHA256",
            expect="empty or 64 hexadecimal digits",
            description="Expected SHA-256 of it.tar.gz, checked before import.",
        ),
    )
    cv_sha1: str = Field(
        "",
        pattern=r"^([0-9a-fA-F]{40})?$",
        **_env(
            "CV_SHA1",
            expect="empty or 40 hexadecimal digits",
            description="Expected SHA-1 of it.tar.gz (as the French README gives it), checked before import.",
        ),
    )

    # Model metadata written into exports.
    model_name: str = Field(
        ModelInfo.name,
        min_length=1,
        **_env("MODEL_NAME", expect="a non-empty name", description="Model name in the release metadata."),
    )
    model_author: str = Field(
        ModelInfo.author,
        min_length=1,
        **_env("MODEL_AUTHOR", expect="a non-empty name", description="Author in the release metadata."),
    )
    model_version: str = Field(
        ModelInfo.version,
        min_length=1,
        **_env(
            "MODEL_VERSION",
            expect="a non-empty version",
            description="Model version in the release metadata.",
        ),
    )
    model_license: str = Field(
        ModelInfo.license,
        min_length=1,
        **_env("MODEL_LICENSE", expect="a licence identifier", description="Licence of the released model."),
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_presets(cls, data: Any) -> Any:
        """Each preset flag that is on gives its values to the fields nothing else sets."""
        if not isinstance(data, dict):
            return data
        for flag, values in PRESETS.items():
            given = next((data[name] for name in (flag, *cls.field_env_names(flag)) if name in data), False)
            try:
                if not parse_flag(given):
                    continue
            except ValueError:
                continue  # the flag's own field reports its bad value
            unset = {
                field: value
                for field, value in values.items()
                if not any(name in data for name in (field, *cls.field_env_names(field)))
            }
            data = {**data, **unset}
        return data

    @classmethod
    def _env_keywords(cls, field: str) -> dict[str, Any]:
        """The field's "env", "aliases" and "expect", which `_env` gave every field."""
        return cast(dict[str, Any], cls.model_fields[field].json_schema_extra)

    @classmethod
    def field_env_name(cls, field: str) -> str:
        """The environment variable of a field (its main name)."""
        return str(cls._env_keywords(field)["env"])

    @classmethod
    def field_env_names(cls, field: str) -> list[str]:
        """The environment variable of a field and its aliases."""
        extra = cls._env_keywords(field)
        return [extra["env"], *extra["aliases"]]

    @classmethod
    def expected(cls, field: str) -> str:
        """What a valid value of a field looks like, in words."""
        return str(cls._env_keywords(field)["expect"])

    @property
    def transfer_checkpoint_path(self) -> Path:
        """TRANSFER_CHECKPOINT_DIR, or its default under DATA_DIR."""
        return self.transfer_checkpoint_dir or self.data_dir / "transfer-checkpoint"

    @property
    def language_alphabet(self) -> Literal["italian", "english"]:
        """Which alphabet these settings train on."""
        return "english" if self.english_compatible else "italian"

    def env_value(self, field: str) -> str:
        """The value written the way an env file or `dsita config` shows it."""
        value = getattr(self, field)
        if isinstance(value, bool):
            return "1" if value else "0"
        if value is None:
            return ""
        if isinstance(value, tuple):
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    def to_env_text(self) -> str:
        """An env file that rebuilds these settings (saved next to checkpoints and releases)."""
        lines = []
        for field in type(self).model_fields:
            value = self.env_value(field)
            quoted = f'"{value}"' if " " in value or "#" in value else value
            lines.append(f"{self.field_env_name(field)}={quoted}\n")
        return "".join(lines)
