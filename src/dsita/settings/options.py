"""Settings translated into the options dataclasses the library takes: the one place where they meet.

Each mapping names the options field and the setting it comes from; the train step's re-run key is derived
from the same mapping (`TRAIN_KEY_SETTINGS`), so no list of names is kept by hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsita.data.augmentation.options import AugmentOptions, ChannelOptions, SpeakerOptions
from dsita.data.clips import ImportOptions
from dsita.export.card import ModelInfo
from dsita.lm.build import LmBuildOptions
from dsita.settings.model import Settings
from dsita.text.alphabet import Alphabet
from dsita.training.options import TrainOptions


def _limit(value: int) -> int | None:
    return value or None  # 0: no limit


def _positive(value: float) -> float | None:
    return value or None  # 0: off


# TrainOptions field -> (setting, conversion). Settings that do not change what is trained are marked with
# `False` as a third element: they stay out of the train step's re-run key.
_TRAIN: dict[str, tuple[Any, ...]] = {
    "batch_size": ("batch_size", None),
    "batch_seconds": ("batch_seconds", _positive),
    "epochs": ("epochs", None),
    "learning_rate": ("learning_rate", None),
    "lr_schedule": ("lr_schedule", None),
    "lr_warmup_steps": ("lr_warmup_steps", None),
    "architecture": ("model", None),
    "model_size": ("model_size", lambda size: size or None),
    "early_stop": ("early_stop", None),
    "es_epochs": ("es_epochs", None),
    "max_to_keep": ("max_to_keep", None),
    "average_checkpoints": ("average_checkpoints", None),
    "checkpoint_secs": ("checkpoint_secs", None, False),
    "amp": ("amp", None),
    "seed": ("seed", None),
    "drop_source_layers": ("drop_source_layers", None),
    "workers": ("train_workers", _limit, False),
    "max_steps_per_epoch": ("max_steps_per_epoch", _limit),
    "max_train_clips": ("max_train_clips", _limit),
    "max_dev_clips": ("max_dev_clips", _limit),
}
# The model config fields training may set (each architecture uses those its OPTION_FIELDS list).
_MODEL_FIELDS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "n_hidden": ("n_hidden", None),
    "dropout": ("dropout", None),
    "n_layers": ("conformer_layers", _limit),
    "d_model": ("conformer_dim", _limit),
    "n_heads": ("conformer_heads", _limit),
}
# AugmentOptions field -> setting; "speaker." and "channel." fields go to the options it holds.
_AUGMENT: dict[str, str] = {
    "speed": "aug_speed",
    "spec_augment": "aug_specaugment",
    "noise": "aug_noise",
    "gain": "aug_gain",
    "reverb": "aug_reverb",
    "noise_dir": "aug_noise_dir",
    "snr_db": "aug_snr_db",
    "gain_db": "aug_gain_db",
    "rt60": "aug_rt60",
    "spec_time_ms": "aug_spec_time_ms",
    "spec_time_masks": "aug_spec_time_masks",
    "spec_freq_masks": "aug_spec_freq_masks",
    "spec_freq_share": "aug_spec_freq_share",
    "speaker.vtlp": "aug_vtlp",
    "speaker.pitch": "aug_pitch",
    "speaker.formant": "aug_formant",
    "speaker.tempo": "aug_tempo",
    "speaker.vtlp_range": "aug_vtlp_range",
    "speaker.pitch_semitones": "aug_pitch_semitones",
    "speaker.formant_range": "aug_formant_range",
    "speaker.tempo_range": "aug_tempo_range",
    "channel.babble": "aug_babble",
    "channel.mic": "aug_mic",
    "channel.clipping": "aug_clipping",
    "channel.compression": "aug_compression",
    "channel.eq": "aug_eq",
    "channel.band_limit": "aug_band_limit",
    "channel.narrowband": "aug_narrowband",
    "channel.mu_law": "aug_mu_law",
    "channel.codec": "aug_codec",
    "channel.babble_snr_db": "aug_babble_snr_db",
    "channel.codecs": "aug_codecs",
}
TRAIN_KEY_SETTINGS: tuple[str, ...] = (
    *(spec[0] for spec in _TRAIN.values() if len(spec) < 3 or spec[2]),
    *(spec[0] for spec in _MODEL_FIELDS.values()),
    *_AUGMENT.values(),
    "transfer_learning",
)


def _convert(settings: Settings, spec: tuple[Any, ...]) -> Any:
    value = getattr(settings, spec[0])
    return spec[1](value) if spec[1] is not None else value


def augment_options(settings: Settings) -> AugmentOptions:
    """The AUG_* settings."""
    groups: dict[str, dict[str, Any]] = {"": {}, "speaker": {}, "channel": {}}
    for path, name in _AUGMENT.items():
        group, _, option = path.rpartition(".")
        groups[group][option] = getattr(settings, name)
    return AugmentOptions(
        **groups[""], speaker=SpeakerOptions(**groups["speaker"]), channel=ChannelOptions(**groups["channel"])
    )


def train_options(
    settings: Settings,
    train_csvs: Sequence[Path],
    dev_csvs: Sequence[Path],
    checkpoint_dir: Path,
    **extra: Any,
) -> TrainOptions:
    """TrainOptions from the settings; `extra` holds options that only a command line gives."""
    fields = {option: _convert(settings, spec) for option, spec in _TRAIN.items()}
    model_fields = {option: _convert(settings, spec) for option, spec in _MODEL_FIELDS.items()}
    return TrainOptions(
        train_csvs=tuple(train_csvs),
        dev_csvs=tuple(dev_csvs),
        checkpoint_dir=checkpoint_dir,
        model_fields=model_fields,
        augment=augment_options(settings),
        settings_env=settings.to_env_text(),
        **{**fields, **extra},
    )


def alphabet_for(settings: Settings) -> Alphabet:
    """The alphabet of ENGLISH_COMPATIBLE."""
    return Alphabet.english() if settings.english_compatible else Alphabet.italian()


def import_options(settings: Settings, workers: int | None = None, progress: bool = True) -> ImportOptions:
    """How `dsita import` and the import step convert corpora."""
    return ImportOptions(
        alphabet=alphabet_for(settings),
        max_secs=settings.max_secs,
        workers=workers or os.cpu_count() or 1,
        sha256=settings.cv_sha256.lower(),
        sha1=settings.cv_sha1.lower(),
        max_clips=_limit(settings.import_max_clips),
        progress=progress,
    )


def lm_build_options(settings: Settings, **given: Any) -> LmBuildOptions:
    """How `dsita lm build` and the lm step build the scorer; `given` overrides (None: not given)."""
    values = {
        "top_k": settings.lm_top_k,
        "alpha": settings.lm_alpha,
        "beta": settings.lm_beta,
        "memory": settings.lm_memory,
        "kenlm_bin": settings.kenlm_bin,
    }
    return LmBuildOptions(**{**values, **{k: v for k, v in given.items() if v is not None}})


def model_info(settings: Settings) -> ModelInfo:
    """The release metadata settings."""
    return ModelInfo(
        settings.model_name, settings.model_author, settings.model_version, settings.model_license
    )


def scorer_dir(settings: Settings) -> Path:
    """Where the scorer of DATA_DIR lives."""
    return settings.data_dir / "lm" / "scorer"
