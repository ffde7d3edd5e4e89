"""Release files from a checkpoint, named as the original pipeline named them, in the output folder:

    it-it.zip             model.onnx (int8), scorer/, alphabet.txt, MODEL_CARD.md: the deployable file
    model_it.tar.xz       the same with the fp32 model.onnx
    checkpoint_it.tar.xz  the checkpoint file and settings.env: enough to resume or transfer-learn from

Each archive is written under a temporary name and renamed, so an interrupted export never leaves a broken
file under a final name. The same metadata goes into both graphs' `metadata_props` and the model card's
YAML front matter. Test WER/CER come from the evaluation reports next to the checkpoint (`dsita train`,
`dsita evaluate`, beam-search evaluation); a figure with no report is written as "not measured".
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsita import __version__
from dsita.audio import LOG_MEL_FEATURES, feature_metadata
from dsita.data.csvs import read_csv
from dsita.data.dataset import sample_duration
from dsita.decoding.beam import check_alphabet
from dsita.export.onnx import ExportOptions, export_fp32, quantize_int8
from dsita.fileio import atomic_write, atomic_write_text
from dsita.inference.package import (
    ALPHABET_FILE,
    CARD_FILE,
    GRAPH_VERSION,
    INPUT,
    LANGUAGE,
    LENGTHS_IN,
    LENGTHS_OUT,
    LOGITS,
    MODEL_FILE,
    SCORER_DIR,
    STATE_C_IN,
    STATE_C_OUT,
    STATE_H_IN,
    STATE_H_OUT,
)
from dsita.lm import scorer as scorer_files
from dsita.lm.scorer import Scorer, load_scorer
from dsita.model.base import count_parameters, model_config_from_dict
from dsita.settings import Settings
from dsita.training.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint

RELEASE_ZIP = "it-it.zip"
RELEASE_FP32 = "model_it.tar.xz"
RELEASE_CHECKPOINT = "checkpoint_it.tar.xz"
SETTINGS_FILE = "settings.env"
NOT_MEASURED = "not measured"
XZ_PRESET = 1  # model weights barely compress: a fast preset loses little to the default 6


@dataclass(frozen=True)
class ReleaseReport:
    files: dict[Path, int]  # release file -> bytes
    parity_error: float  # largest |torch - onnxruntime| fp32 logit difference
    metadata: dict[str, object]


def evaluation_metrics(folder: Path) -> dict[str, object]:
    """Test WER and CER, greedy and with the LM, from the newest `test_report*.json` of each kind."""
    reports = sorted(folder.glob("test_report*.json"), key=lambda p: p.stat().st_mtime)
    metrics: dict[str, object] = {
        f"test_{m}_{d}": NOT_MEASURED for d in ("greedy", "lm") for m in ("wer", "cer")
    }
    for path in reports:  # oldest first, so the newest report of a kind wins
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            decoder, wer, cer = str(report["decoder"]), float(report["wer"]), float(report["cer"])
            clips = len(report["samples"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an evaluation report
        kind = "greedy" if decoder == "greedy" else "lm"
        metrics.update({f"test_wer_{kind}": round(wer, 4), f"test_cer_{kind}": round(cer, 4)})
        metrics[f"test_clips_{kind}"] = clips
        if kind == "lm":
            metrics["test_decoder_lm"] = decoder
    return metrics


def training_hours(train_csvs: Sequence[Path]) -> object:
    if not train_csvs:
        return NOT_MEASURED
    seconds = sum(sample_duration(s) for csv in train_csvs for s in read_csv(csv))
    return round(seconds / 3600, 3)


def release_metadata(
    checkpoint: dict[str, Any],
    settings: Settings,
    scorer: Scorer | None,
    train_csvs: Sequence[Path],
    folder: Path,
) -> dict[str, object]:
    config = model_config_from_dict(checkpoint["model_config"])
    return {
        "model_name": settings.model_name,
        "model_version": settings.model_version,
        "model_author": settings.model_author,
        "model_license": settings.model_license,
        "language": LANGUAGE,
        **config.size(),  # the architecture, then its size fields (DeepSpeech: n_hidden)
        "description": config.describe(),
        "alphabet": list(checkpoint["alphabet"]),
        "graph_version": GRAPH_VERSION,
        **feature_metadata(config.FEATURES),
        "training_hours": training_hours(train_csvs),
        **evaluation_metrics(folder),
        "lm_alpha": scorer.alpha if scorer else "no scorer",
        "lm_beta": scorer.beta if scorer else "no scorer",
        "dsita_version": __version__,
    }


def model_card(metadata: dict[str, object], parameters: int) -> str:
    front = "".join(f"{key}: {json.dumps(value, ensure_ascii=False)}\n" for key, value in metadata.items())
    m = metadata

    def pct(key: str) -> str:
        value = m[key]
        return f"{value:.2%}" if isinstance(value, float) else str(value)

    lm_line = (
        f"The scorer's default weights: alpha {m['lm_alpha']}, beta {m['lm_beta']}."
        if isinstance(m["lm_alpha"], float)
        else "No scorer is included: decoding is greedy."
    )
    return f"""---
{front}---

# {m["model_name"]} {m["model_version"]}

Italian ({m["language"]}) speech-to-text: {m["description"]} with {parameters:,} parameters,
trained with dsita {m["dsita_version"]}, by {m["model_author"]}, under the {m["model_license"]} licence.

## Use

    dsita transcribe clip.wav --model {RELEASE_ZIP}

with dsita installed, or in Python: `dsita.load_model("{RELEASE_ZIP}").transcribe("clip.wav").text`.
Any sample rate and channel count is converted to {m["sample_rate"]} Hz mono. Inference needs onnxruntime,
numpy, soundfile, soxr and flashlight-text; no torch.

## Evaluation (test split)

| decoding | WER | CER |
|---|---|---|
| greedy | {pct("test_wer_greedy")} | {pct("test_cer_greedy")} |
| beam search with the LM | {pct("test_wer_lm")} | {pct("test_cer_lm")} |

{lm_line}
Training data (hours): {m["training_hours"]}.

## Inputs and outputs

{_graph_io(m)} Graph version {m["graph_version"]}.
"""


def _graph_io(m: dict[str, object]) -> str:
    """What the graph takes and returns, by its features: DeepSpeech's streaming graph or a segment graph."""
    outputs = len(m["alphabet"]) + 1
    if m["features"] == LOG_MEL_FEATURES:
        return f"""`{MODEL_FILE}` takes `{INPUT}` (batch, time, {m["n_mels"]}) log-mel features ({m["n_mels"]}
channels, {m["window_ms"]} ms windows every {m["step_ms"]} ms, each channel normalised to zero mean and unit
variance over the segment, zero past each item's length) and `{LENGTHS_IN}` (batch); it returns `{LOGITS}`
(batch, steps, {outputs}; one step per 4 frames; the CTC blank is last) and `{LENGTHS_OUT}` (batch). There
is no streaming state: each call transcribes whole segments."""
    n_input = (2 * int(m["n_context"]) + 1) * int(m["n_mfcc"])
    return f"""`{MODEL_FILE}` takes `{INPUT}` (batch, time, {n_input}) MFCC
features ({m["n_mfcc"]} coefficients, {m["window_ms"]} ms windows every {m["step_ms"]} ms, {m["n_context"]}
frames of context each side) and the LSTM state `{STATE_C_IN}`, `{STATE_H_IN}` (batch,
{m["n_hidden"]}); it returns `{LOGITS}` (batch, time, {outputs}; the CTC blank is last) and
`{STATE_C_OUT}`, `{STATE_H_OUT}` for the next chunk."""


def _scorer_files(scorer: Scorer | None) -> dict[str, Path]:
    """The scorer proper: manifest, LM, vocabulary and alphabet (not the optimizer's study)."""
    if scorer is None:
        return {}
    names = (
        scorer_files.MANIFEST,
        scorer_files.LM_FILE,
        scorer_files.VOCABULARY_FILE,
        scorer_files.ALPHABET_FILE,
    )
    return {f"{SCORER_DIR}/{name}": scorer.folder / name for name in names}


def write_zip(path: Path, files: dict[str, Path]) -> None:
    with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, source in files.items():
            zf.write(source, name)


def write_tar_xz(path: Path, files: dict[str, Path]) -> None:
    with atomic_write(path, "wb") as f, tarfile.open(fileobj=f, mode="w:xz", preset=XZ_PRESET) as tf:
        for name, source in files.items():
            tf.add(source, name, recursive=False)


def make_release(
    checkpoint_path: Path,
    out_dir: Path,
    settings: Settings,
    scorer_path: Path | None = None,
    train_csvs: Sequence[Path] = (),
    options: ExportOptions | None = None,
) -> ReleaseReport:
    """Export the checkpoint to ONNX (fp32 and int8) and write the three release files into `out_dir`."""
    options = options or ExportOptions()
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    model, alphabet = model_from_checkpoint(checkpoint)
    model.eval()
    scorer = load_scorer(scorer_path) if scorer_path is not None else None
    if scorer is not None:
        check_alphabet(scorer, alphabet)
    metadata = release_metadata(checkpoint, settings, scorer, train_csvs, checkpoint_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        work = Path(tmp)
        fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
        parity = export_fp32(model, fp32, metadata, options)
        quantize_int8(fp32, int8, metadata, options)
        alphabet.save(work / ALPHABET_FILE)
        atomic_write_text(work / CARD_FILE, model_card(metadata, count_parameters(model)))
        settings_env = checkpoint.get("settings_env") or settings.to_env_text()
        atomic_write_text(work / SETTINGS_FILE, str(settings_env))

        common = {ALPHABET_FILE: work / ALPHABET_FILE, CARD_FILE: work / CARD_FILE, **_scorer_files(scorer)}
        write_zip(out_dir / RELEASE_ZIP, {MODEL_FILE: int8, **common})
        write_tar_xz(out_dir / RELEASE_FP32, {MODEL_FILE: fp32, **common})
        write_tar_xz(
            out_dir / RELEASE_CHECKPOINT,
            {checkpoint_path.name: checkpoint_path, SETTINGS_FILE: work / SETTINGS_FILE},
        )
    files = {
        out_dir / name: (out_dir / name).stat().st_size
        for name in (RELEASE_ZIP, RELEASE_FP32, RELEASE_CHECKPOINT)
    }
    return ReleaseReport(files, parity, metadata)
