"""Release files from a checkpoint, named as the original pipeline named them, in the output folder:

    it-it.zip                   model.onnx (int8), scorer/, alphabet.txt, MODEL_CARD.md: dsita's deployable
                                file; plus output_graph.tflite and kenlm.scorer for `stt` 1.4 and
                                `deepspeech-tflite` 0.9.3
    model_tensorflow_it.tar.xz  output_graph.pbmm, kenlm.scorer, alphabet.txt, MODEL_CARD.md for `deepspeech`
                                0.9.3 (the original's name for its TensorFlow model)
    model_it.tar.xz             dsita's package with the fp32 model.onnx
    checkpoint_it.tar.xz        best_dev.pt and settings.env (enough to resume or transfer-learn from), and
                                the same weights as a DeepSpeech 0.9 TensorFlow checkpoint (best_dev-N.index,
                                best_dev-N.data-00000-of-00001, best_dev_checkpoint, alphabet.txt)

The DeepSpeech client files (output_graph.tflite, output_graph.pbmm, kenlm.scorer, the TF checkpoint and
model_tensorflow_it.tar.xz) exist for a DeepSpeech model only: for any other the release says why it has
none (one log line, the report, the model card), because the original clients only run the DeepSpeech graph.
kenlm.scorer (the DeepSpeech scorer package, alpha/beta converted: `ds_scorer.deepspeech_weights`) is
written when a scorer is shipped, and checked against the model's alphabet before it goes in.

Each archive is written under a temporary name and renamed, so an interrupted export never leaves a broken
file under a final name. The same metadata goes into both ONNX graphs' `metadata_props` and the model card's
YAML front matter. Test WER/CER come from the evaluation reports next to the checkpoint (`dsita train`,
`dsita evaluate`, beam-search evaluation); a figure with no report is written as "not measured".
"""

from __future__ import annotations

import logging
import lzma
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsita import __version__
from dsita.audio import feature_metadata
from dsita.convert.deepspeech import write_deepspeech_checkpoint
from dsita.data.csvs import read_csv, sample_duration
from dsita.decoding.beam import check_alphabet
from dsita.errors import DsitaError
from dsita.export.card import (
    DEEPSPEECH_FILES,
    DS_SCORER_FILE,
    NO_FILES,
    NOT_MEASURED,
    PBMM_FILE,
    RELEASE_CHECKPOINT,
    RELEASE_FP32,
    RELEASE_TENSORFLOW,
    RELEASE_ZIP,
    TFLITE_FILE,
    ModelInfo,
    evaluation_metrics,
    model_card,
)
from dsita.export.ds_scorer import check_ds_scorer, export_ds_scorer
from dsita.export.onnx import ExportOptions, export_fp32, quantize_int8
from dsita.export.tf_graph import DEFAULT_BEAM_WIDTH, check_deepspeech, write_tf_graph
from dsita.export.tflite import write_tflite
from dsita.fileio import atomic_write, atomic_write_text
from dsita.inference.package import (
    ALPHABET_FILE,
    CARD_FILE,
    GRAPH_VERSION,
    LANGUAGE,
    MODEL_FILE,
    SCORER_DIR,
    with_manifest,
)
from dsita.lm import scorer as scorer_files
from dsita.lm.scorer import Scorer, load_scorer
from dsita.model.base import AcousticModel, count_parameters
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint

log = logging.getLogger(__name__)

RELEASE_FILES = (RELEASE_ZIP, RELEASE_TENSORFLOW, RELEASE_FP32, RELEASE_CHECKPOINT)
SETTINGS_FILE = "settings.env"
# LZMA2 with a fast match finder and a small dictionary: model weights shrink by about 9 % whatever the
# effort, and this runs 2-3 times faster on them than preset 1 for the same size (BENCHMARKS.md); the TF
# checkpoint's zero Adam slots still vanish. Any xz reader reads it.
XZ_FILTERS = (
    {
        "id": lzma.FILTER_LZMA2,
        "preset": 0,
        "dict_size": 1 << 16,
        "mf": lzma.MF_HC3,
        "mode": lzma.MODE_FAST,
        "nice_len": 8,
        "depth": 1,
    },
)
TF_CHECKPOINT_DIR = "tf-checkpoint"  # the work folder's DeepSpeech checkpoint, archived at the top level


@dataclass(frozen=True)
class ReleaseReport:
    """What `make_release` wrote."""

    files: dict[Path, int]  # release file -> bytes
    parity_error: float  # largest |torch - onnxruntime| fp32 logit difference
    metadata: dict[str, object]
    no_client_files: str | None = None  # why there are no DeepSpeech client files; None when written


@dataclass(frozen=True)
class ClientFiles:
    """The DeepSpeech client files written into the work folder."""

    tflite: Path
    pbmm: Path
    ds_scorer: Path | None  # None when no scorer is shipped
    tf_checkpoint: dict[str, Path]  # archive name -> file
    metadata: dict[str, object]  # what the card and the graphs' metadata say about them


def training_hours(train_csvs: Sequence[Path]) -> object:
    """Hours of audio in the training CSVs, or "not measured" without them."""
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


def no_client_files_reason(model: AcousticModel, alphabet: Alphabet) -> str | None:
    """Why the DeepSpeech client files cannot be written for `model`, or None when they can."""
    try:
        check_deepspeech(model, alphabet)
    except DsitaError as exc:
        return str(exc)
    return None


def write_client_files(
    model: AcousticModel, alphabet: Alphabet, scorer: Scorer | None, checkpoint: Path, work: Path
) -> ClientFiles:
    """output_graph.tflite (int8 weights), output_graph.pbmm, kenlm.scorer (when a scorer is shipped) and the
    DeepSpeech 0.9 TF checkpoint of `checkpoint`, written into `work`."""
    started = time.perf_counter()
    tflite, pbmm = work / TFLITE_FILE, work / PBMM_FILE
    write_tflite(model, alphabet, tflite)
    write_tf_graph(model, alphabet, pbmm, memmapped=True)
    metadata: dict[str, object] = {"deepspeech_beam_width": DEFAULT_BEAM_WIDTH}
    ds_scorer = None
    if scorer is not None:
        ds_scorer = work / DS_SCORER_FILE
        export_ds_scorer(scorer, alphabet, ds_scorer)
        package = check_ds_scorer(ds_scorer, alphabet)  # what the clients will read back
        metadata.update(lm_alpha_deepspeech=package.alpha, lm_beta_deepspeech=package.beta)
    folder = work / TF_CHECKPOINT_DIR
    prefix = write_deepspeech_checkpoint(checkpoint, folder)
    tf_checkpoint = {path.name: path for path in sorted(folder.iterdir())}
    files = [tflite, pbmm, *([ds_scorer] if ds_scorer else []), *tf_checkpoint.values()]
    log.info(
        "DeepSpeech client files in %.1f s: %s",
        time.perf_counter() - started,
        ", ".join(f"{path.name} {path.stat().st_size / 1e6:.1f} MB" for path in files),
    )
    names = [TFLITE_FILE, PBMM_FILE, *([DS_SCORER_FILE] if ds_scorer else []), prefix.name]
    return ClientFiles(tflite, pbmm, ds_scorer, tf_checkpoint, {DEEPSPEECH_FILES: names, **metadata})


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
    """A deflated zip of `files` (archive name -> file), written atomically."""
    with atomic_write(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, source in files.items():
            zf.write(source, name)


def write_tar_xz(path: Path, files: dict[str, Path]) -> None:
    """A tar.xz of `files` (archive name -> file), written atomically."""
    with (
        atomic_write(path, "wb") as f,
        lzma.LZMAFile(f, "wb", format=lzma.FORMAT_XZ, filters=XZ_FILTERS) as xz,
        tarfile.open(fileobj=xz, mode="w") as tf,
    ):
        for name, source in files.items():
            tf.add(source, name, recursive=False)


def release_archives(
    work: Path, checkpoint: Path, scorer: Scorer | None, clients: ClientFiles | None
) -> dict[str, dict[str, Path]]:
    """What goes into each release file (archive name -> file), from the work folder's files."""
    common = {ALPHABET_FILE: work / ALPHABET_FILE, CARD_FILE: work / CARD_FILE}
    dsita_files = {**common, **_scorer_files(scorer)}
    archives = {
        RELEASE_ZIP: {MODEL_FILE: work / "int8.onnx", **dsita_files},
        RELEASE_FP32: {MODEL_FILE: work / "fp32.onnx", **dsita_files},
        RELEASE_CHECKPOINT: {checkpoint.name: checkpoint, SETTINGS_FILE: work / SETTINGS_FILE},
    }
    if clients is not None:
        ds_scorer = {DS_SCORER_FILE: clients.ds_scorer} if clients.ds_scorer else {}
        archives[RELEASE_ZIP].update({TFLITE_FILE: clients.tflite, **ds_scorer})
        archives[RELEASE_TENSORFLOW] = {PBMM_FILE: clients.pbmm, **ds_scorer, **common}
        archives[RELEASE_CHECKPOINT].update(clients.tf_checkpoint)
    return archives


def make_release(
    checkpoint_path: Path,
    out_dir: Path,
    info: ModelInfo | None = None,
    scorer_path: Path | None = None,
    train_csvs: Sequence[Path] = (),
    options: ExportOptions | None = None,
    settings_env: str = "",
) -> ReleaseReport:
    """Export the checkpoint to ONNX (fp32 and int8) and, for a DeepSpeech model, to the original clients'
    files; write the release files into `out_dir` (see the module docstring).

    `settings_env` is written as settings.env when the checkpoint does not hold the settings it trained with.
    """
    options = options or ExportOptions()
    info = info or ModelInfo()
    checkpoint_path = resolve_checkpoint(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    model, alphabet = model_from_checkpoint(checkpoint, checkpoint_path)
    model.eval()
    scorer = load_scorer(scorer_path) if scorer_path is not None else None
    if scorer is not None:
        check_alphabet(scorer, alphabet)
    reason = no_client_files_reason(model, alphabet)
    if reason is not None:
        log.warning(
            "No %s, %s, %s or DeepSpeech TF checkpoint in this release: %s",
            *(TFLITE_FILE, PBMM_FILE, RELEASE_TENSORFLOW, reason),
        )
    metadata = release_metadata(model, alphabet, info, scorer, train_csvs, checkpoint_path.parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
        work = Path(tmp)
        clients = None
        if reason is None:
            clients = write_client_files(model, alphabet, scorer, checkpoint_path, work)
        metadata.update(clients.metadata if clients else {DEEPSPEECH_FILES: f"{NO_FILES}{reason}"})
        parity = export_fp32(model, work / "fp32.onnx", metadata, options)
        quantize_int8(work / "fp32.onnx", work / "int8.onnx", metadata, options)
        alphabet.save(work / ALPHABET_FILE)
        atomic_write_text(work / CARD_FILE, model_card(metadata, count_parameters(model)))
        atomic_write_text(work / SETTINGS_FILE, str(checkpoint.get("settings_env") or settings_env))
        archives = release_archives(work, checkpoint_path, scorer, clients)
        archives.update({name: with_manifest(archives[name], work) for name in (RELEASE_ZIP, RELEASE_FP32)})
        started = time.perf_counter()
        for name, files in archives.items():
            (write_zip if name.endswith(".zip") else write_tar_xz)(out_dir / name, files)
        log.info("Release archives written in %.1f s", time.perf_counter() - started)
    stale = out_dir / RELEASE_TENSORFLOW
    if clients is None and stale.exists():
        log.info("Removing %s: it belongs to an earlier export, of a DeepSpeech model", stale)
        stale.unlink()
    sizes = {out_dir / name: (out_dir / name).stat().st_size for name in RELEASE_FILES if name in archives}
    return ReleaseReport(sizes, parity, metadata, reason)
