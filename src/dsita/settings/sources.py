"""Where settings come from, highest first: command-line flags, the environment, an env file, the defaults.

Names are matched without regard to case, so the French image's lowercase names (`batch_size`) work, and
every value's true source is kept for `dsita config`. A name in an env file that is no setting is an error
when it is close to one (a typo such as BATSH_SIZE would otherwise train with the default), and a warning
otherwise; in the environment, only names close to a setting are warned about.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsita.errors import SettingsError
from dsita.settings.envfile import read_env_file
from dsita.settings.model import PRESETS, Settings

log = logging.getLogger("dsita.settings")
Source = str  # "flag", "environment (NAME)", "env file PATH:LINE (NAME)", "AUGMENT=1", "default"
_ENV_FILE = "env file "
CLOSE = 0.8  # difflib ratio above which an unknown name is taken for a misspelt setting


def names() -> dict[str, str]:
    """Every accepted name, upper-cased (environment names, their aliases, field names) -> field."""
    index: dict[str, str] = {}
    for field in Settings.model_fields:
        for name in (*Settings.field_env_names(field), field):
            index[name.upper()] = field
    return index


def closest(name: str) -> str | None:
    """The setting an unknown name most likely meant, or None."""
    main = [Settings.field_env_name(f) for f in Settings.model_fields]
    found = difflib.get_close_matches(name.upper(), main, n=1, cutoff=CLOSE)
    return found[0] if found else None


def load_settings(
    env_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, Source]]:
    """Build the settings and report where each value came from.

    `overrides` are command-line flags by field name (None: not given); `environ` defaults to os.environ.
    """
    index = names()
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    if env_file is not None:
        path = Path(env_file)
        for entry in read_env_file(path):
            field = index.get(entry.name.upper())
            if field is None:
                _unknown(entry.name, f"{path}:{entry.line}", strict=True)
                continue
            values[field] = entry.value
            sources[field] = f"{_ENV_FILE}{path}:{entry.line} ({entry.name})"
    for name, value in (os.environ if environ is None else environ).items():
        field = index.get(name.upper())
        if field is None:
            if name.isupper() and "_" in name:
                _unknown(name, "the environment", strict=False)
            continue
        values[field] = value
        sources[field] = f"environment ({name})"
    for field, value in (overrides or {}).items():
        if value is not None:
            values[field] = value
            sources[field] = "flag"
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise SettingsError(describe_error(exc, sources)) from None
    for flag, preset in PRESETS.items():
        for field in preset:
            if field not in sources and getattr(settings, flag):
                sources[field] = f"{Settings.field_env_name(flag)}=1"
    return settings, {field: sources.get(field, "default") for field in Settings.model_fields}


def _unknown(name: str, where: str, strict: bool) -> None:
    guess = closest(name)
    if guess is None:
        if strict:
            log.warning("%s: %s is not a dsita setting; ignored (`dsita config` lists them)", where, name)
        return
    message = f"{where}: {name} is not a dsita setting; did you mean {guess}?"
    if strict:
        raise SettingsError(message)
    log.warning("%s", message)


def describe_error(exc: ValidationError, sources: Mapping[str, Source] | None = None) -> str:
    """The first validation error as one line: the variable, what it must be, what it got, and from where."""
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    for name in Settings.model_fields:
        if field == name or field in Settings.field_env_names(name):
            where = _where(sources.get(name, "default")) if sources else ""
            got = str(error.get("input"))
            return f"{Settings.field_env_name(name)} must be {Settings.expected(name)}, got {got!r}{where}"
    return f"invalid settings: {error['msg']}"


def _where(source: Source) -> str:
    """Where a bad value was written, for the end of its error line."""
    if source.startswith(_ENV_FILE):
        return " (" + source.removeprefix(_ENV_FILE).split(" ")[0] + ")"
    if source.startswith("environment"):
        return " (in the environment)"
    return " (a command-line flag)" if source == "flag" else ""
