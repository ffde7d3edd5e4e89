"""The typer apps, consoles and settings helpers that every command module shares.

A command's flags are settings (`setting_option` gives each its help and default from `Settings`) or
options that only a command line has. `--env-file` is accepted before the command (`dsita --env-file F run`)
and after it (`dsita run --env-file F`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dsita.settings import Settings, load_settings

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="DeepSpeech ITA: train and ship an Italian speech-to-text model.",
)
import_app = typer.Typer(no_args_is_help=True, help="Import corpora into DeepSpeech CSVs.")
text_app = typer.Typer(no_args_is_help=True, help="Italian text tools.")
lm_app = typer.Typer(
    no_args_is_help=True, help="Language model: build the KenLM scorer, tune alpha and beta."
)
convert_app = typer.Typer(no_args_is_help=True, help="Convert checkpoints made by other tools.")
app.add_typer(import_app, name="import")
app.add_typer(text_app, name="text")
app.add_typer(lm_app, name="lm")
app.add_typer(convert_app, name="convert")

console = Console(stderr=True)
out = Console()

EnvFileOption = Annotated[Path | None, typer.Option("--env-file", help="File of NAME=value settings.")]


@app.callback()
def _root(ctx: typer.Context, env_file: EnvFileOption = None) -> None:
    ctx.obj = {"env_file": env_file}


def setting_option(field: str, *names: str, **keywords: Any) -> Any:
    """A typer option for a setting: its help is the setting's description, variable name and default."""
    info = Settings.model_fields[field]
    default = Settings().env_value(field)
    shown = f", default {default}" if default else ""
    help_text = f"{info.description} [{Settings.field_env_name(field)}{shown}]"
    return typer.Option(*names, help=help_text, show_default=False, **keywords)


def settings_from(ctx: typer.Context, env_file: Path | None = None, **flags: Any) -> Settings:
    """The settings for a command: its flags (None = not given) over the environment and the env file
    (the command's `--env-file`, else the one given before the command)."""
    root = ctx.find_root().obj or {}
    settings, _ = load_settings(env_file or root.get("env_file"), flags)
    return settings


CsvList = Annotated[list[Path] | None, typer.Option(help="DeepSpeech CSV (repeatable).")]


def split_csvs(settings: Settings, given: list[Path] | None, split: str) -> list[Path]:
    """The CSVs given, or DATA_DIR/extracted/SPLIT.csv."""
    return given or [settings.data_dir / "extracted" / f"{split}.csv"]
