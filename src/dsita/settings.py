"""One typed settings object, with the variable names and defaults of the original DeepSpeech Italian image.

Precedence, highest first: command-line flags, environment variables, the env file (`--env-file`), defaults.
The object is built once in the CLI and passed down; nothing below reads the environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dsita.errors import SettingsError

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def _parse_flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ValueError("not a flag")


Flag = Annotated[bool, BeforeValidator(_parse_flag)]


@dataclass(frozen=True)
class LmEvaluateRange:
    """`LM_EVALUATE_RANGE=MAX_ALPHA,MAX_BETA,N_TRIALS`: the alpha/beta search box and its trial count."""

    max_alpha: float
    max_beta: float
    n_trials: int

    def __str__(self) -> str:
        return f"{self.max_alpha:g},{self.max_beta:g},{self.n_trials}"


def _parse_range(value: Any) -> LmEvaluateRange | None:
    if value is None or isinstance(value, LmEvaluateRange):
        return value
    text = str(value).strip()
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError("wrong number of parts")
    max_alpha, max_beta, n_trials = float(parts[0]), float(parts[1]), int(parts[2])
    if max_alpha < 0 or max_beta < 0 or n_trials < 1:
        raise ValueError("out of range")
    return LmEvaluateRange(max_alpha, max_beta, n_trials)


def _parse_paths(value: Any) -> tuple[Path, ...]:
    """A comma-separated list of paths (empty: none)."""
    if isinstance(value, tuple | list):
        return tuple(Path(v) for v in value)
    return tuple(Path(part.strip()) for part in str(value or "").split(",") if part.strip())


PathList = Annotated[tuple[Path, ...], NoDecode, BeforeValidator(_parse_paths)]


def _interval(lowest: float) -> Any:
    """The type of a `MIN,MAX` setting: two finite numbers with lowest < MIN <= MAX, as a tuple."""

    def parse(value: Any) -> tuple[float, float]:
        parts = value if isinstance(value, tuple | list) else str(value).split(",")
        if len(parts) != 2:
            raise ValueError("wrong number of parts")
        low, high = float(parts[0]), float(parts[1])
        if not (math.isfinite(high) and lowest < low <= high):
            raise ValueError("out of range")
        return low, high

    return Annotated[tuple[float, float], NoDecode, BeforeValidator(parse)]


DecibelRange = _interval(-math.inf)
SecondsRange = _interval(0.0)
OptionalPath = Annotated[Path | None, BeforeValidator(lambda value: value or None)]  # empty: not set
REPO_SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "it-sample.tar.gz"


def _env(name: str, *aliases: str, expect: str, description: str) -> dict[str, Any]:
    """Field keywords: the environment variable name(s), what a valid value looks like, and its meaning."""
    return {
        "validation_alias": AliasChoices(name, *aliases),
        "description": description,
        "json_schema_extra": {"env": name, "aliases": list(aliases), "expect": expect},
    }


POSITIVE_INT = "a positive integer"
NON_NEGATIVE_INT = "a non-negative integer"
FLAG = "0 or 1"
PROBABILITY = "a probability from 0 to 1"
# AUGMENT=1 gives these to the AUG_* probabilities not set otherwise: common choices in Kaldi and ESPnet
# recipes (speed perturbation and SpecAugment nearly always, noise and reverberation on part of the data),
# not values tuned on dsita.
RECOMMENDED_AUGMENTATION = {
    "aug_speed": 0.5,
    "aug_specaugment": 1.0,
    "aug_noise": 0.5,
    "aug_gain": 0.5,
    "aug_reverb": 0.3,
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, case_sensitive=True, validate_default=True
    )

    # Training (names and defaults from the original image).
    batch_size: int = Field(
        64,
        gt=0,
        **_env("BATCH_SIZE", expect=POSITIVE_INT, description="Clips per training batch (per process)."),
    )
    epochs: int = Field(
        30, gt=0, **_env("EPOCHS", expect=POSITIVE_INT, description="Maximum number of training epochs.")
    )
    learning_rate: float = Field(
        0.0001, gt=0, **_env("LEARNING_RATE", expect="a positive number", description="Adam learning rate.")
    )
    n_hidden: int = Field(
        2048,
        gt=0,
        **_env("N_HIDDEN", expect=POSITIVE_INT, description="Width of the dense layers and the LSTM."),
    )
    dropout: float = Field(
        0.4,
        ge=0,
        lt=1,
        **_env("DROPOUT", expect="a number in [0, 1)", description="Dropout rate after each dense layer."),
    )
    # The acoustic model (dsita's own): DeepSpeech 0.9 by default, which N_HIDDEN and DROPOUT size; a
    # conformer takes its size from MODEL_SIZE and the CONFORMER_* overrides, its dropout from the preset.
    model: Literal["deepspeech", "conformer"] = Field(
        "deepspeech",
        **_env("MODEL", expect="deepspeech or conformer", description="Acoustic model architecture."),
    )
    model_size: Literal["small", "medium", "tiny"] = Field(
        "small",
        **_env(
            "MODEL_SIZE",
            expect="small, medium or tiny",
            description="Conformer size preset (DeepSpeech's size is N_HIDDEN).",
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
        True, **_env("EARLY_STOP", expect=FLAG, description="Stop when the dev loss no longer improves.")
    )
    es_epochs: int = Field(
        10,
        gt=0,
        **_env(
            "ES_EPOCHS",
            "ES_STOP",
            expect=POSITIVE_INT,
            description="Epochs without dev improvement before stopping.",
        ),
    )
    max_to_keep: int = Field(
        2,
        gt=0,
        **_env("MAX_TO_KEEP", expect=POSITIVE_INT, description="Epoch checkpoints kept, besides best_dev."),
    )
    checkpoint_secs: int = Field(
        600,
        gt=0,
        **_env("CHECKPOINT_SECS", expect=POSITIVE_INT, description="Seconds between mid-epoch checkpoints."),
    )
    amp: Flag = Field(
        True, **_env("AMP", expect=FLAG, description="Mixed precision on CUDA (ignored on a CPU).")
    )
    seed: int = Field(
        4568,
        ge=0,
        **_env("SEED", expect=NON_NEGATIVE_INT, description="Random seed for shuffling and initialisation."),
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
        0.0,
        ge=0,
        le=1,
        **_env("AUG_SPEED", expect=PROBABILITY, description="Share of clips played at 0.9x or 1.1x speed."),
    )
    aug_specaugment: float = Field(
        0.0,
        ge=0,
        le=1,
        **_env(
            "AUG_SPECAUGMENT",
            expect=PROBABILITY,
            description="Share of clips with SpecAugment time and frequency masks.",
        ),
    )
    aug_noise: float = Field(
        0.0,
        ge=0,
        le=1,
        **_env("AUG_NOISE", expect=PROBABILITY, description="Share of clips with noise added at AUG_SNR_DB."),
    )
    aug_gain: float = Field(
        0.0,
        ge=0,
        le=1,
        **_env("AUG_GAIN", expect=PROBABILITY, description="Share of clips with a gain within AUG_GAIN_DB."),
    )
    aug_reverb: float = Field(
        0.0,
        ge=0,
        le=1,
        **_env(
            "AUG_REVERB",
            expect=PROBABILITY,
            description="Share of clips with synthetic reverberation (RT60 within AUG_RT60).",
        ),
    )
    aug_noise_dir: OptionalPath = Field(
        None,
        **_env(
            "AUG_NOISE_DIR",
            expect="a folder path",
            description="Noise recordings (WAV, FLAC, MP3, OGG) mixed in besides synthetic noise.",
        ),
    )
    aug_snr_db: DecibelRange = Field(
        (5.0, 30.0),
        **_env("AUG_SNR_DB", expect="MIN,MAX in dB such as 5,30", description="Range of the noise SNR."),
    )
    aug_gain_db: float = Field(
        6.0,
        ge=0,
        **_env(
            "AUG_GAIN_DB",
            expect="a non-negative number of dB",
            description="Largest gain, up or down, that AUG_GAIN applies.",
        ),
    )
    aug_rt60: SecondsRange = Field(
        (0.1, 0.6),
        **_env(
            "AUG_RT60",
            expect="MIN,MAX in seconds, above 0, such as 0.1,0.6",
            description="Range of the reverberation time.",
        ),
    )

    # Language model.
    lm_alpha: float = Field(
        0.0,
        ge=0,
        **_env(
            "LM_ALPHA", expect="a non-negative number", description="Language model weight in beam search."
        ),
    )
    lm_beta: float = Field(
        0.0,
        ge=0,
        **_env("LM_BETA", expect="a non-negative number", description="Word insertion bonus in beam search."),
    )
    lm_evaluate_range: Annotated[LmEvaluateRange | None, NoDecode, BeforeValidator(_parse_range)] = Field(
        None,
        **_env(
            "LM_EVALUATE_RANGE",
            expect="empty or MAX_ALPHA,MAX_BETA,N_TRIALS such as 5,5,600",
            description="Alpha/beta search box and trial count; empty skips the search.",
        ),
    )
    lm_top_k: int = Field(
        500000,
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
    kenlm_bin: Path = Field(
        Path(".cache/kenlm/bin"),
        **_env(
            "KENLM_BIN",
            expect="a folder path",
            description="Folder of KenLM's lmplz, build_binary and filter (else they are looked up on PATH).",
        ),
    )

    # Transfer learning and switches.
    transfer_learning: Flag = Field(
        False, **_env("TRANSFER_LEARNING", expect=FLAG, description="Start from an existing checkpoint.")
    )
    drop_source_layers: int = Field(
        1,
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
            expect="a folder path",
            description="dsita or DeepSpeech 0.9 checkpoint that TRANSFER_LEARNING starts from "
            "(default DATA_DIR/transfer-checkpoint).",
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
        10.0,
        gt=0,
        **_env(
            "MAX_SECS",
            expect="a positive number of seconds",
            description="Clips longer than this are skipped on import.",
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

    # Model metadata written into exports.
    model_name: str = Field(
        "dsita-it",
        min_length=1,
        **_env("MODEL_NAME", expect="a non-empty name", description="Model name in the release metadata."),
    )
    model_author: str = Field(
        "dsita contributors",
        min_length=1,
        **_env("MODEL_AUTHOR", expect="a non-empty name", description="Author in the release metadata."),
    )
    model_version: str = Field(
        "0.1.0",
        min_length=1,
        **_env(
            "MODEL_VERSION",
            expect="a non-empty version",
            description="Model version in the release metadata.",
        ),
    )
    model_license: str = Field(
        "CC-BY-4.0",
        min_length=1,
        **_env("MODEL_LICENSE", expect="a licence identifier", description="Licence of the released model."),
    )

    @model_validator(mode="before")
    @classmethod
    def _recommended_augmentation(cls, data: Any) -> Any:
        """AUGMENT=1: AUG_* probabilities that no flag, variable or env file sets take recommended values.

        Applied to the values themselves, so `dsita config` and a saved settings.env show what trains.
        """
        if not isinstance(data, dict):
            return data
        given = next(
            (data[name] for name in ("augment", *cls.field_env_names("augment")) if name in data), False
        )
        try:
            if not _parse_flag(given):
                return data
        except ValueError:
            return data  # the AUGMENT field reports its bad value
        unset = {
            field: prob
            for field, prob in RECOMMENDED_AUGMENTATION.items()
            if not any(name in data for name in (field, *cls.field_env_names(field)))
        }
        return {**data, **unset}

    @classmethod
    def field_env_name(cls, field: str) -> str:
        return cls.model_fields[field].json_schema_extra["env"]  # type: ignore[index]

    @classmethod
    def field_env_names(cls, field: str) -> list[str]:
        extra = cls.model_fields[field].json_schema_extra
        return [extra["env"], *extra["aliases"]]  # type: ignore[index]

    @property
    def transfer_checkpoint_path(self) -> Path:
        return self.transfer_checkpoint_dir or self.data_dir / "transfer-checkpoint"

    @property
    def language_alphabet(self) -> Literal["italian", "english"]:
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
        return "".join(f"{self.field_env_name(f)}={self.env_value(f)}\n" for f in type(self).model_fields)


Source = str  # "flag", "environment", "env file PATH" or "default"


def load_settings(
    env_file: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> tuple[Settings, dict[str, Source]]:
    """Build the settings and report where each value came from.

    `overrides` are command-line flags by field name; None values mean "not given".
    """
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_values: dict[str, str | None] = {}
    if env_file is not None:
        env_path = Path(env_file)
        if not env_path.is_file():
            raise SettingsError(f"env file {env_path} not found: expected a file of NAME=value lines")
        file_values = dotenv_values(env_path)
    try:
        settings = Settings(_env_file=env_file, **flags)
    except ValidationError as exc:
        raise SettingsError(_describe_error(exc)) from None

    sources: dict[str, Source] = {}
    for field in Settings.model_fields:
        names = Settings.field_env_names(field)
        in_environ = [n for n in names if n in os.environ]
        in_file = [n for n in names if n in file_values]
        if field in flags:
            sources[field] = "flag"
        elif in_environ:
            sources[field] = f"environment ({in_environ[0]})"
        elif in_file:
            sources[field] = f"env file {env_file} ({in_file[0]})"
        elif field in RECOMMENDED_AUGMENTATION and settings.augment:
            sources[field] = "AUGMENT=1"
        else:
            sources[field] = "default"
    return settings, sources


def _describe_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra
        if field == name or field in [extra["env"], *extra["aliases"]]:  # type: ignore[index]
            return f"{extra['env']} must be {extra['expect']}, got {str(error.get('input'))!r}"  # type: ignore[index]
    return f"invalid settings: {error['msg']}"
