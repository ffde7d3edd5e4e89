"""Commands that export a model, transcribe audio with it, and convert foreign checkpoints."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from dsita.commands.base import (
    EnvFileOption,
    app,
    console,
    convert_app,
    out,
    settings_from,
    split_csvs,
)
from dsita.decoding.hotwords import DEFAULT_BOOST
from dsita.errors import DsitaError
from dsita.system import disk_errors


@app.command("export")
def export_command(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file or folder (default: DATA_DIR/checkpoints, best_dev).")
    ] = None,
    scorer: Annotated[
        Path | None, typer.Option(help="Scorer folder to ship (default: DATA_DIR/lm/scorer if built).")
    ] = None,
    no_scorer: Annotated[bool, typer.Option("--no-scorer", help="Ship no scorer.")] = False,
    train_files: Annotated[
        list[Path] | None, typer.Option(help="Training CSVs, for the hours in the model card.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: DATA_DIR).")] = None,
    per_channel: Annotated[bool, typer.Option(help="Per-channel int8 weight scales.")] = False,
    env_file: EnvFileOption = None,
) -> None:
    """Export a checkpoint to ONNX (fp32 and int8) and write it-it.zip, model_it.tar.xz and
    checkpoint_it.tar.xz, with the model card, for release; for a DeepSpeech model also the original clients'
    files (output_graph.tflite and kenlm.scorer in it-it.zip, model_tensorflow_it.tar.xz, a TF checkpoint)."""
    from dsita.export.onnx import ExportOptions
    from dsita.export.release import make_release
    from dsita.lm.scorer import MANIFEST
    from dsita.settings.options import model_info, scorer_dir

    settings = settings_from(ctx, env_file)
    if scorer is None and (scorer_dir(settings) / MANIFEST).is_file():
        scorer = scorer_dir(settings)
    if train_files is None:
        train_files = [p for p in split_csvs(settings, None, "train") if p.is_file()]
    checkpoint, out_dir = checkpoint or settings.data_dir / "checkpoints", out_dir or settings.data_dir
    scorer = None if no_scorer else scorer
    with disk_errors(out_dir, partial(_export_bytes, checkpoint, scorer), "the export"):
        report = make_release(
            checkpoint,
            out_dir,
            model_info(settings),
            scorer,
            train_files,
            ExportOptions(per_channel=per_channel),
            settings.to_env_text(),
        )
    for path, size in report.files.items():
        out.print(f"{path}: {size / 1e6:.2f} MB")
    out.print(f"fp32 ONNX vs torch: largest logit difference {report.parity_error:.2e}")


def _export_bytes(checkpoint: Path, scorer: Path | None) -> int:
    """About what `dsita export` writes, for the message on a full disk."""
    from dsita.pipeline.checks import export_disk_bytes, folder_bytes
    from dsita.training.checkpoint import resolve_checkpoint

    size = resolve_checkpoint(checkpoint).stat().st_size
    return export_disk_bytes(size, folder_bytes(scorer) if scorer is not None else 0)


@app.command("transcribe")
def transcribe_command(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None, typer.Argument(help="Audio: WAV, FLAC, OGG or MP3, any rate.")
    ] = None,
    model: Annotated[Path | None, typer.Option(help="Model package (default: DATA_DIR/it-it.zip).")] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="JSON lines with word times, confidence.")
    ] = False,
    beam: Annotated[int | None, typer.Option(min=1, help="Beam width (with a scorer; default 500).")] = None,
    no_lm: Annotated[bool, typer.Option("--no-lm", help="Greedy decoding even with a scorer.")] = False,
    stream: Annotated[
        str | None, typer.Option(help="Raw 16 kHz 16-bit mono PCM to stream from: a file, or - for stdin.")
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime threads.")] = 1,
    itn: Annotated[
        bool, typer.Option("--itn", help="Spoken numbers, dates, times and money as digits.")
    ] = False,
    hotword: Annotated[
        list[str] | None,
        typer.Option(
            "--hotword",
            help=f"Boost a word or phrase: WORD[:BOOST] (default boost {DEFAULT_BOOST:g}); repeatable.",
        ),
    ] = None,
    hotwords_file: Annotated[
        Path | None, typer.Option("--hotwords-file", help="Hot words, one phrase[:boost] a line.")
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--output-format",
            "-f",
            help="Write txt, srt, vtt, tsv, json or all into --output-dir, as whisper does (default: the "
            "text on stdout; with --output-dir alone: all).",
        ),
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Folder for --output-format files (default: .).")
    ] = None,
    env_file: EnvFileOption = None,
) -> None:
    """Transcribe audio files, or a live stream of PCM, with an exported model. No torch needed.

    With --output-format or --output-dir, each input's transcript is written as AUDIO_NAME.txt, .srt, .vtt,
    .tsv or .json: subtitle cues cut at pauses, lines of at most 42 characters.
    """
    from dsita.inference.model import InferenceOptions, load_model

    if not files and stream is None:
        raise DsitaError("give audio files to transcribe, or --stream - to read PCM from stdin")
    outputs = _outputs(output_format, output_dir, files or [], stream)
    if stream is not None and stream != "-" and not Path(stream).is_file():
        what = "is a folder" if Path(stream).is_dir() else "not found"
        raise DsitaError(f"{stream}: {what}; --stream reads raw 16 kHz 16-bit PCM from a file or - (stdin)")
    settings = settings_from(ctx, env_file)
    options = InferenceOptions(use_lm=not no_lm, beam_width=beam, threads=threads, itn=itn)
    speech = load_model(model or settings.data_dir / "it-it.zip", options)
    if beam is not None and speech.decoding == "greedy":
        console.print("[yellow]note:[/] greedy decoding (no scorer, or --no-lm): --beam has no effect")
    hotwords = _hotwords(hotword or [], hotwords_file)
    speech.decoder_for(hotwords)  # a word the alphabet cannot spell stops here, before any audio
    if stream is not None:
        _transcribe_stream(speech, stream, json_lines, hotwords, outputs)
        return
    failed = 0
    for path in files or []:
        try:
            transcript = speech.transcribe(path, hotwords=hotwords)
        except DsitaError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            failed += 1
            continue
        if outputs is not None:
            outputs.write(transcript, path.stem)
        if json_lines:
            print(json.dumps({"file": str(path), **transcript.to_dict()}, ensure_ascii=False), flush=True)
        elif outputs is None:
            print(f"{path}: {transcript.text}" if len(files or []) > 1 else transcript.text, flush=True)
    if failed:
        raise typer.Exit(1)


def _hotwords(specs: list[str], path: Path | None) -> dict[str, float]:
    """--hotwords-file's entries, then each --hotword (a later entry replaces an earlier one)."""
    from dsita.decoding.hotwords import parse_hotword, read_hotwords_file

    hotwords = read_hotwords_file(path) if path is not None else {}
    for spec in specs:
        text, boost = parse_hotword(spec)
        hotwords[text] = boost
    return hotwords


def _transcribe_stream(
    speech: Any, source: str, json_lines: bool, hotwords: dict[str, float], outputs: Outputs | None = None
) -> None:
    """Feed PCM as it arrives; partial transcripts go to stderr when they change, the final to stdout."""
    chunk_bytes = 2 * 16000 * 32 // 100  # 0.32 s: the model runs every 16 steps of 20 ms
    stream = speech.stream(hotwords=hotwords)
    shown = ""
    with open(sys.stdin.fileno() if source == "-" else source, "rb", closefd=source != "-") as pcm:
        carry = b""
        while data := pcm.read(chunk_bytes):
            data = carry + data
            whole = len(data) - len(data) % 2
            stream.feed(data[:whole])
            carry = data[whole:]
            partial = stream.intermediate().text
            if partial != shown:
                print(partial, file=sys.stderr, flush=True)
                shown = partial
    final = stream.finish()
    if outputs is not None:
        outputs.write(final, "stdin" if source == "-" else Path(source).stem)
    if json_lines or outputs is None:
        print(json.dumps(final.to_dict(), ensure_ascii=False) if json_lines else final.text, flush=True)


@dataclass(frozen=True)
class Outputs:
    """What --output-format and --output-dir ask for: files of these formats in this folder."""

    formats: tuple[str, ...]
    folder: Path

    def write(self, transcript: Any, stem: str) -> None:
        """Write `transcript` as `<folder>/<stem>.<format>` for each format and print the paths written."""
        from dsita.decoding.subtitles import write_outputs

        with disk_errors(self.folder, None, "writing the transcripts"):
            written = write_outputs(transcript, self.folder, stem, self.formats)
        console.print(f"wrote {', '.join(map(str, written))}", highlight=False, soft_wrap=True)


def _outputs(
    output_format: str | None, output_dir: Path | None, files: list[Path], stream: str | None
) -> Outputs | None:
    """The files to write (whisper's defaults: all formats, into the current folder), or None for stdout;
    two inputs that would write the same files are refused before anything is transcribed."""
    from dsita.decoding.subtitles import ALL, formats

    if output_format is None and output_dir is None:
        return None
    outputs = Outputs(formats(output_format or ALL), output_dir or Path("."))
    stems: dict[str, Path] = {}
    for path in files if stream is None else []:
        if path.stem in stems and stems[path.stem] != path:
            raise DsitaError(
                f"{stems[path.stem]} and {path} would both be written as {outputs.folder / path.stem}.*: "
                "transcribe them into different --output-dir folders"
            )
        stems[path.stem] = path
    return outputs


@convert_app.command("deepspeech-checkpoint")
def convert_deepspeech_checkpoint_command(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(help="DeepSpeech checkpoint folder or archive (.tar.xz, .tar.gz, .tar).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write best_dev.pt into.")],
    n_hidden: Annotated[int | None, typer.Option(help="N_HIDDEN the checkpoint must have.")] = None,
    alphabet: Annotated[
        Path | None, typer.Option(help="Its alphabet.txt (default: the one beside it, else English).")
    ] = None,
    env_file: EnvFileOption = None,
) -> None:
    """Convert a Mozilla DeepSpeech 0.9 TensorFlow checkpoint into a dsita checkpoint (no TensorFlow).

    Use the result with `dsita train --load-checkpoint-dir DIR` (DROP_SOURCE_LAYERS re-initialises layers).
    """
    from dsita.convert.deepspeech import convert_deepspeech_checkpoint
    from dsita.text.alphabet import Alphabet

    settings = settings_from(ctx, env_file, n_hidden=n_hidden)
    labels = Alphabet.load(alphabet) if alphabet is not None else None
    report = convert_deepspeech_checkpoint(source, out_dir, settings.n_hidden, labels)
    for line in report.lines():
        out.print(line, highlight=False, soft_wrap=True)
