"""Settings: the original image's names and defaults, precedence, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsita.errors import SettingsError
from dsita.settings import LmEvaluateRange, Settings, load_settings

ORIGINAL_DEFAULTS = {
    "BATCH_SIZE": "64",
    "EPOCHS": "30",
    "LEARNING_RATE": "0.0001",
    "N_HIDDEN": "2048",
    "DROPOUT": "0.4",
    "EARLY_STOP": "1",
    "ES_EPOCHS": "10",
    "MAX_TO_KEEP": "2",
    "LM_ALPHA": "0",
    "LM_BETA": "0",
    "LM_EVALUATE_RANGE": "",
    "AMP": "1",
    "TRANSFER_LEARNING": "0",
    "DROP_SOURCE_LAYERS": "1",
    "FAST_TRAIN": "0",
    "ONLY_EXPORT": "0",
    "ENGLISH_COMPATIBLE": "0",
    "DATA_DIR": "data",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in Settings.model_fields:
        for name in Settings.field_env_names(field):
            monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_original_image() -> None:
    settings, sources = load_settings()
    shown = {Settings.field_env_name(f): settings.env_value(f) for f in Settings.model_fields}
    assert {k: shown[k] for k in ORIGINAL_DEFAULTS} == ORIGINAL_DEFAULTS
    assert set(sources.values()) == {"default"}


def test_precedence_flag_then_environment_then_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("BATCH_SIZE=3\nEPOCHS=4\nN_HIDDEN=5\n")
    monkeypatch.setenv("EPOCHS", "7")
    monkeypatch.setenv("N_HIDDEN", "8")
    settings, sources = load_settings(env_file, {"n_hidden": 9, "dropout": None})
    assert (settings.batch_size, settings.epochs, settings.n_hidden, settings.dropout) == (3, 7, 9, 0.4)
    assert sources["batch_size"].startswith("env file")
    assert sources["epochs"] == "environment (EPOCHS)"
    assert sources["n_hidden"] == "flag"
    assert sources["dropout"] == "default"


def test_es_stop_is_an_alias_of_es_epochs(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("ES_STOP=3\n")
    settings, sources = load_settings(env_file)
    assert settings.es_epochs == 3
    assert "ES_STOP" in sources["es_epochs"]


def test_lm_evaluate_range_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_EVALUATE_RANGE", "5,5,600")
    settings, _ = load_settings()
    assert settings.lm_evaluate_range == LmEvaluateRange(5.0, 5.0, 600)
    assert settings.env_value("lm_evaluate_range") == "5,5,600"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BATCH_SIZE", "abc", "BATCH_SIZE must be a positive integer, got 'abc'"),
        ("BATCH_SIZE", "0", "BATCH_SIZE must be a positive integer, got '0'"),
        ("EARLY_STOP", "2", "EARLY_STOP must be 0 or 1, got '2'"),
        ("DROPOUT", "1.5", "DROPOUT must be a number in [0, 1), got '1.5'"),
        ("LEARNING_RATE", "fast", "LEARNING_RATE must be a positive number, got 'fast'"),
        ("LM_EVALUATE_RANGE", "5,5,5,5", "LM_EVALUATE_RANGE must be empty, MAX_ALPHA,MAX_BETA,N_TRIALS"),
        ("LM_EVALUATE_RANGE", "nan,nan,3", "LM_EVALUATE_RANGE must be empty, MAX_ALPHA,MAX_BETA,N_TRIALS"),
        ("SEED", "99999999999999999999", "SEED must be an integer from 0 to 4294967295"),
        ("LEARNING_RATE", "inf", "LEARNING_RATE must be a positive number, got 'inf'"),
        ("DROP_SOURCE_LAYERS", "6", "DROP_SOURCE_LAYERS must be an integer from 0 to 5, got '6'"),
        ("ES_STOP", "-1", "ES_EPOCHS must be a positive integer, got '-1'"),
        ("CV_SHA256", "xyz", "CV_SHA256 must be empty or 64 hexadecimal digits, got 'xyz'"),
        ("AUG_NOISE", "1.5", "AUG_NOISE must be a probability from 0 to 1, got '1.5'"),
        ("AUG_SNR_DB", "30,5", "AUG_SNR_DB must be MIN,MAX in dB such as 5,30, got '30,5'"),
        ("AUG_RT60", "0,0.5", "AUG_RT60 must be MIN,MAX in seconds, above 0, such as 0.1,0.6, got '0,0.5'"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_to_env_text_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LM_EVALUATE_RANGE", "2,3,40")
    settings, _ = load_settings(overrides={"batch_size": 5, "english_compatible": True})
    env_file = tmp_path / "saved.env"
    env_file.write_text(settings.to_env_text())
    monkeypatch.delenv("LM_EVALUATE_RANGE")
    reloaded, _ = load_settings(env_file)
    assert reloaded == settings


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ORIGINAL_DEFAULTS}
    return subprocess.run(
        [sys.executable, "-m", "dsita.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        check=False,
    )


def test_config_command_shows_values_and_sources(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("EPOCHS=4\n")
    result = run_cli("--env-file", str(env_file), "config", env={"BATCH_SIZE": "12", "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "12" in lines["BATCH_SIZE"] and "environment" in lines["BATCH_SIZE"]
    assert "4" in lines["EPOCHS"] and "env file" in lines["EPOCHS"]
    assert "2048" in lines["N_HIDDEN"] and "default" in lines["N_HIDDEN"]
    assert set(ORIGINAL_DEFAULTS) <= set(lines)


def test_cli_bad_value_is_one_line_without_traceback() -> None:
    result = run_cli("config", env={"BATCH_SIZE": "abc"})
    assert result.returncode == 2
    expected = "error: BATCH_SIZE must be a positive integer, got 'abc' (in the environment)"
    assert result.stderr.strip() == expected
    assert "Traceback" not in result.stderr


def test_cli_missing_env_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli("--env-file", str(tmp_path / "missing.env"), "config")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "missing.env" in result.stderr


def test_augmentation_settings_and_the_augment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUG_SNR_DB", "0,20")
    monkeypatch.setenv("AUG_RT60", "0.2,0.8")
    settings, _ = load_settings()
    assert (settings.aug_snr_db, settings.aug_rt60, settings.aug_noise) == ((0.0, 20.0), (0.2, 0.8), 0.0)
    assert settings.env_value("aug_snr_db") == "0,20"
    # AUGMENT=1 fills in only the probabilities nothing else sets.
    monkeypatch.setenv("AUGMENT", "1")
    monkeypatch.setenv("AUG_NOISE", "0.1")
    settings, sources = load_settings(overrides={"aug_reverb": 0.0})
    assert (settings.aug_noise, settings.aug_reverb, settings.aug_specaugment) == (0.1, 0.0, 1.0)
    assert sources["aug_specaugment"] == "AUGMENT=1" and sources["aug_reverb"] == "flag"


def test_augment_switch_is_the_generalization_benchmarks_winning_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # AUGMENT=1 is what benchmarks/generalization.py measured as baseline+channel: a change to either that
    # the other does not follow would make BENCHMARKS.md's figures describe some other recipe.
    from dsita.settings.options import augment_options

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    import generalization

    monkeypatch.setenv("AUGMENT", "1")
    settings, _ = load_settings()
    assert augment_options(settings) == generalization.rows()["baseline+channel"].augment
