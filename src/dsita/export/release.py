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

import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsita import __version__
from dsita.audio import feature_metadata
from dsita.data.csvs import read_csv, sample_duration
from dsita.decoding.beam import check_alphabet
from dsita.export.card import NOT_MEASURED, RELEASE_ZIP, ModelInfo, evaluation_metrics, model_card
from dsita.export.onnx import ExportOptions, export_fp32, quantize_int8
from dsita.fileio import atomic_write, atomic_write_text
from dsita.inference.package import (
    ALPHABET_FILE,
    CARD_FILE,
    GRAPH_VERSION,
    LANGUAGE,
    MODEL_FILE,
    SCORER_DIR,
)
from dsita.lm import scorer as scorer_files
from dsita.lm.scorer import Scorer, load_scorer
from dsita.model.base import AcousticModel, count_parameters
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint

RELEASE_FP32 = "model_it.tar.xz"
RELEASE_CHECKPOINT = "checkpoint_it.tar.xz"
SETTINGS_FILE = "settings.env"
XZ_PRESET = 1  # model weights barely compress: a fast preset loses little to the default 6


@dataclass(frozen=True)
class ReleaseReport:
    files: dict[Path, int]  # release file -> bytes
    parity_error: float  # largest |torch - onnxruntime| fp32 logit difference
    metadata: dict[str, object]


def training_hours(train_csvs: Sequence[Path]) -> object:
    if not train_csvs:
        return NOT_MEASURED
    seconds = sum(sample_duration(s) for csv in train_csvs for s in read_csv(csv))
    return round(seconds / 3600, 3)


def release_metadata(
    model: AcousticModel,
    alphabet: Alphabet,
    info: ModelInfo,
    scorer: Scorer | None,
    train_csvs: Sequence[Path],
    folder: Path,
) -> dict[str, object]:
    """Everything the graphs' metadata and the model card say: who, what model, its graph, how it scored."""
    config = model.config
    state = model.export_state(model.initial_state(1))
    return {
        "model_name": info.name,
        "model_version": info.version,
        "model_author": info.author,
        "model_license": info.license,
        "language": LANGUAGE,
        **config.size(),  # the architecture, then its size fields (DeepSpeech: n_hidden)
        "description": config.describe(),
        "alphabet": list(alphabet.labels),
        "graph_version": GRAPH_VERSION,
        "graph": config.GRAPH,
        "output_step_ms": round(config.OUTPUT_STEP_SECONDS * 1000, 3),
        "input_width": model.featurizer.n_features,
        **({"state_names": list(model.state_names), "state_width": int(state[0].shape[-1])} if state else {}),
        **feature_metadata(config.FEATURES),
        "training_hours": training_hours(train_csvs),
        **evaluation_metrics(folder),
        "lm_alpha": scorer.alpha if scorer else "no scorer",
        "lm_beta": scorer.beta if scorer else "no scorer",
        "dsita_version": __version__,
    }


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
    info: ModelInfo | None = None,
    scorer_path: Path | None = None,
    train_csvs: Sequence[Path] = (),
    options: ExportOptions | None = None,
    settings_env: str = "",
) -> ReleaseReport:
    """Export the checkpoint to ONNX (fp32 and int8) and write the three release files into `out_dir`.

    `settings_env` is written as settings.env when the checkpoint does not hold the settings it trained with.
    """
    options = options or ExportOptions()
    info = info or ModelInfo()
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    model, alphabet = model_from_checkpoint(checkpoint)
    model.eval()
    scorer = load_scorer(scorer_path) if scorer_path is not None else None
    if scorer is not None:
        check_alphabet(scorer, alphabet)
    metadata = release_metadata(model, alphabet, info, scorer, train_csvs, checkpoint_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        work = Path(tmp)
        fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
        parity = export_fp32(model, fp32, metadata, options)
        quantize_int8(fp32, int8, metadata, options)
        alphabet.save(work / ALPHABET_FILE)
        atomic_write_text(work / CARD_FILE, model_card(metadata, count_parameters(model)))
        atomic_write_text(work / SETTINGS_FILE, str(checkpoint.get("settings_env") or settings_env))

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
