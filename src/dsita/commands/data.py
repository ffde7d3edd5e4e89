"""Commands on data: settings, text normalization, synthetic speech and corpus import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from dsita.commands.base import (
    EnvFileOption,
    app,
    console,
    import_app,
    out,
    setting_option,
    settings_from,
    text_app,
)
from dsita.data.synth import ENGINES, SynthOptions
from dsita.errors import DsitaError, printable
from dsita.settings import Settings, load_settings


@app.command("config")
def config_command(ctx: typer.Context, env_file: EnvFileOption = None) -> None:
    """Print every effective setting and where it came from."""
    settings, sources = load_settings(env_file or ctx.find_root().obj["env_file"])
    table = Table("variable", "value", "source", "meaning")
    for field, info in Settings.model_fields.items():
        value = printable(settings.env_value(field))  # a value from an env file may hold escape codes
        source = printable(sources[field])
        table.add_row(Settings.field_env_name(field), value, source, info.description or "")
    out.print(table, markup=False)


@text_app.command("normalize")
def text_normalize_command(ctx: typer.Context, env_file: EnvFileOption = None) -> None:
    """Normalize lines from stdin; a rejected line prints empty, with its reason on stderr."""
    from dsita.settings.options import alphabet_for
    from dsita.text.normalize import Rejection, normalize

    alphabet = alphabet_for(settings_from(ctx, env_file))
    for line_number, line in enumerate(sys.stdin, start=1):
        result = normalize(line.rstrip("\n"), alphabet)
        if isinstance(result, Rejection):
            print(f"line {line_number}: rejected: {result.reason}", file=sys.stderr)
            print()
        else:
            print(result)


@app.command("synth")
def synth_command(
    ctx: typer.Context,
    out_path: Annotated[Path | None, typer.Option("--out", help="Archive to write.")] = None,
    clips: Annotated[int, typer.Option("--clips", help="Number of clips.")] = SynthOptions.n_clips,
    seed: Annotated[
        int, typer.Option("--seed", help="Picks sentences, speakers and splits.")
    ] = SynthOptions.seed,
    text: Annotated[list[Path] | None, typer.Option("--text", help="Sentence file (repeatable).")] = None,
    max_words: Annotated[
        int, typer.Option("--max-words", help="Longest sentence kept, in words.")
    ] = SynthOptions.max_words,
    workers: Annotated[
        int, typer.Option("--workers", help="Parallel synthesis processes.")
    ] = SynthOptions.workers,
    engines: Annotated[
        str, typer.Option("--engines", help="Comma-separated engines: espeak-ng, festival.")
    ] = ",".join(ENGINES),
    shared_speakers: Annotated[
        bool, typer.Option("--shared-speakers", help="Same voices in every split (sentences stay disjoint).")
    ] = False,
    variety: Annotated[
        bool,
        typer.Option("--variety", help="A vocal tract per speaker, prosody varied per clip (more voices)."),
    ] = False,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            "--exclude",
            help="Leave out the sentences of a Common Voice archive or TSV or a DeepSpeech CSV (repeatable).",
        ),
    ] = None,
    env_file: EnvFileOption = None,
) -> None:
    """Speak Italian text with espeak-ng and festival into a Common Voice-format it.tar.gz.

    Sentences come from the --text files, or by default from fortunes-it and dsita's extra sentences.
    The archive goes to --out, by default DATA_DIR/sources/it.tar.gz. By default the splits share no voice;
    --shared-speakers tests unseen sentences in voices heard in training. --variety gives each speaker a
    formant factor of its own (and a word gap or pitch range) and varies speed and pitch per clip, so that
    speakers of one engine voice differ in timbre too; "voices" counts the distinct timbres. --exclude
    keeps another corpus's sentences out (compared once normalized), e.g. the test sentences of a corpus
    that a model trained on this one will be evaluated on.
    """
    from dsita.data.sentences import default_sentences, read_text_files
    from dsita.data.synth import SynthVariety, held_out_sentences, synthesize_corpus

    out_path = out_path or settings_from(ctx, env_file).data_dir / "sources" / "it.tar.gz"
    options = SynthOptions(
        n_clips=clips,
        seed=seed,
        max_words=max_words,
        workers=workers,
        engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
        shared_speakers=shared_speakers,
        variety=SynthVariety() if variety else None,
        exclude=held_out_sentences(exclude or []),
        progress=sys.stderr.isatty(),
    )
    report = synthesize_corpus(read_text_files(text) if text else default_sentences(), out_path, options)
    table = Table("split", "clips", "speakers", "voices", "engines", "hours")
    for split, s in report.splits.items():
        row = (str(s.clips), str(s.speakers), str(s.voices), ", ".join(s.engines), f"{s.seconds / 3600:.3f}")
        table.add_row(split, *row)
    out.print(table)
    out.print(
        f"{report.out_path}: {report.size_bytes / 1e6:.1f} MB, {report.hours:.2f} h, "
        f"{report.speakers} distinct speakers in {report.voices} distinct voices, "
        f"{report.usable_sentences}/{report.candidate_sentences} sentences usable, {report.elapsed_s:.0f} s"
    )
    if exclude:
        out.print(f"{report.excluded_sentences} usable sentences left out as held out (--exclude)")


OutOption = Annotated[Path | None, typer.Option("--out", help="Output folder (default: DATA_DIR/extracted).")]
MaxSecsOption = Annotated[float | None, setting_option("max_secs", "--max-secs")]
WorkersOption = Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: CPUs).")]


@import_app.command("cv")
def import_cv_command(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Common Voice it.tar.gz or its extracted folder.")],
    out_dir: OutOption = None,
    max_secs: MaxSecsOption = None,
    sha256: Annotated[str | None, setting_option("cv_sha256", "--sha256")] = None,
    sha1: Annotated[str | None, setting_option("cv_sha1", "--sha1")] = None,
    workers: WorkersOption = None,
    env_file: EnvFileOption = None,
) -> None:
    """Import Common Voice into OUT/{train,dev,test}.csv, OUT/clips/*.wav and OUT/skipped.csv."""
    from dsita.data.commonvoice import import_common_voice
    from dsita.pipeline.state import lock_when_inside
    from dsita.settings.options import import_options

    settings = settings_from(ctx, env_file, max_secs=max_secs, cv_sha256=sha256, cv_sha1=sha1)
    options = import_options(settings, workers, progress=sys.stderr.isatty())
    out_dir = out_dir or settings.data_dir / "extracted"
    with lock_when_inside(settings.data_dir, [out_dir], "dsita import cv"):
        _print_import(import_common_voice(path, out_dir, options))


@import_app.command("csv")
def import_csv_command(
    ctx: typer.Context,
    table: Annotated[Path, typer.Argument(help="CSV or TSV listing audio files and transcripts.")],
    audio_column: Annotated[str | None, typer.Option("--audio-column", help="Default: auto-detect.")] = None,
    text_column: Annotated[str | None, typer.Option("--text-column", help="Default: auto-detect.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="CSV name (default: the table's).")] = None,
    out_dir: OutOption = None,
    max_secs: MaxSecsOption = None,
    workers: WorkersOption = None,
    env_file: EnvFileOption = None,
) -> None:
    """Import your own corpus into OUT/<split>.csv, OUT/clips/<split>/ and OUT/<split>.skipped.csv."""
    from dsita.data.own_csv import import_own_csv
    from dsita.pipeline.state import lock_when_inside
    from dsita.settings.options import import_options

    settings = settings_from(ctx, env_file, max_secs=max_secs)
    options = import_options(settings, workers, progress=sys.stderr.isatty())
    out_dir = out_dir or settings.data_dir / "extracted"
    with lock_when_inside(settings.data_dir, [out_dir], "dsita import csv"):
        _print_import(import_own_csv(table, out_dir, options, audio_column, text_column, split))


def _print_import(report: Any) -> None:
    from dsita.data.clips import report_tables

    for item in report_tables(report):
        out.print(item, markup=False)
    for note in report.notes:  # a Text, not markup: notes quote user paths
        console.print(Text.assemble(("note:", "yellow"), f" {printable(note)}"), highlight=False)
    if report.total_kept == 0:
        raise DsitaError(f"nothing usable was imported into {report.out_dir}: see {report.skipped_csv}")
