"""The release's DeepSpeech files back in dsita and in the pipeline: the TF checkpoint in checkpoint_it.tar.xz
converts back, TRANSFER_LEARNING and ONLY_EXPORT take the original's checkpoints as they are, and the bad
inputs of issue 14 (a conformer release, a scorer for another alphabet) are one clear line each."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

from dsita.convert.deepspeech import check_transfer_source, ensure_dsita_checkpoint
from dsita.errors import DsitaError
from dsita.export.ds_scorer import check_ds_scorer, export_ds_scorer
from dsita.export.release import (
    RELEASE_CHECKPOINT,
    RELEASE_FP32,
    RELEASE_TENSORFLOW,
    RELEASE_ZIP,
    make_release,
)
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.model.base import build_model, model_config_to_dict, new_model_config
from dsita.pipeline.publish import export_checkpoint
from dsita.pipeline.state import Layout
from dsita.settings import Settings
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import BEST_DEV, load_trained_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
SMALL_MODEL = REPO / "tests" / "fixtures" / "small_model.pt"
KENLM_BIN = REPO / ".cache" / "kenlm" / "bin"
TF_FILES = ("best_dev-720.index", "best_dev-720.data-00000-of-00001", "best_dev_checkpoint", "alphabet.txt")
SETTINGS_NAMES = {name for field in Settings.model_fields for name in Settings.field_env_names(field)}


def one_line(exc: pytest.ExceptionInfo[DsitaError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def same_logits(path: Path) -> float:
    """Largest |logit difference| between the checkpoint at `path` and the small model, on random features."""
    source, alphabet = load_trained_model(SMALL_MODEL)
    converted, converted_alphabet = load_trained_model(path)
    assert converted_alphabet == alphabet
    features = 10.0 * torch.randn(2, 60, 494, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((converted.eval()(features).logits - source.eval()(features).logits).abs().max())


@pytest.fixture(scope="module")
def release(small_release: Path) -> Path:
    """The small model's release (conftest): its checkpoint_it.tar.xz holds small_model.pt, the file it was
    exported from, beside the DeepSpeech checkpoint."""
    return small_release


@pytest.fixture(scope="module")
def tf_only(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.xz holding the release's DeepSpeech checkpoint alone, in a folder: an original's archive."""
    out = tmp_path_factory.mktemp("tf_only") / "deepspeech-checkpoint.tar.xz"
    with tarfile.open(release / RELEASE_CHECKPOINT) as source, tarfile.open(out, "w:xz", preset=0) as tar:
        for name in TF_FILES:
            data = source.extractfile(name).read()  # type: ignore[union-attr]
            member = tarfile.TarInfo(f"deepspeech-checkpoint/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out


# --- the TF checkpoint in checkpoint_it.tar.xz -----------------------------------------------------------


def test_convert_command_on_checkpoint_it_gives_the_same_logits(release: Path, tmp_path: Path) -> None:
    """`dsita convert deepspeech-checkpoint checkpoint_it.tar.xz` reads the archive's TF checkpoint (and the
    alphabet.txt beside it) in place: the converted model's logits are the trained model's."""
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "dsita.cli", "convert", "deepspeech-checkpoint"]
    args = [str(release / RELEASE_CHECKPOINT), "--out", str(tmp_path), "--n-hidden", "256"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "alphabet: alphabet.txt beside the checkpoint, 38 labels" in result.stdout
    assert "(best_dev-720)" in result.stdout
    assert same_logits(tmp_path / BEST_DEV) < 1e-6


# --- TRANSFER_LEARNING ------------------------------------------------------------------------------------


def test_transfer_takes_checkpoint_it_as_it_is_and_prefers_dsitas_checkpoint(
    release: Path, tmp_path: Path
) -> None:
    mounted = tmp_path / "transfer-checkpoint"
    mounted.mkdir()
    shutil.copy(release / RELEASE_CHECKPOINT, mounted)
    out = tmp_path / "transfer-converted"
    for source in (mounted, mounted / RELEASE_CHECKPOINT):  # the mounted folder, or the archive's path
        assert check_transfer_source(source, "conformer").kind == "dsita-archive"
        extracted = ensure_dsita_checkpoint(source, out, 256)
        assert extracted == out / BEST_DEV
        assert extracted.read_bytes() == SMALL_MODEL.read_bytes()  # dsita's own file, not a conversion
        extracted.unlink()
    assert sorted(p.name for p in out.iterdir()) == []  # nothing else unpacked


def test_transfer_converts_a_tar_xz_holding_only_a_tf_checkpoint(tf_only: Path, tmp_path: Path) -> None:
    assert check_transfer_source(tf_only.parent, "deepspeech").kind == "deepspeech"
    converted = ensure_dsita_checkpoint(tf_only.parent, tmp_path / "converted", 256)
    assert converted == tmp_path / "converted" / BEST_DEV
    assert same_logits(converted) < 1e-6
    with pytest.raises(DsitaError) as exc:
        check_transfer_source(tf_only, "conformer")
    assert "a DeepSpeech TensorFlow checkpoint can start MODEL=deepspeech only" in one_line(exc)


def unsafe_archive(path: Path, member: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        data = b"refused before anything loads it"
        info = tarfile.TarInfo(BEST_DEV)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.addfile(member, io.BytesIO(b"x") if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("../escape.txt", tarfile.REGTYPE, "escapes the archive's folder"),
        ("link.pt", tarfile.SYMTYPE, "is a link or special file"),
    ],
)
def test_transfer_refuses_unsafe_archives(tmp_path: Path, name: str, kind: bytes, message: str) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, "/etc/passwd"
    member.size = 1 if kind == tarfile.REGTYPE else 0
    archive = unsafe_archive(tmp_path / "checkpoint_it.tar.xz", member)
    with pytest.raises(DsitaError) as exc:
        ensure_dsita_checkpoint(archive, tmp_path / "out", 256)
    assert f"unsafe archive: member {name} {message}" in one_line(exc)
    assert not (tmp_path / "out").exists()


def test_an_archive_without_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "checkpoint_it.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        info = tarfile.TarInfo("settings.env")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(DsitaError) as exc:
        check_transfer_source(tmp_path, "deepspeech")
    assert f"{archive}: holds no checkpoint (expected best_dev.pt, last.pt" in one_line(exc)


# --- ONLY_EXPORT ------------------------------------------------------------------------------------------


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any dsita setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_NAMES}
    return {**env, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **extra}


def test_only_export_converts_an_original_pipelines_checkpoint_first(release: Path, tmp_path: Path) -> None:
    """checkpoints/ as the original pipeline leaves it (best_dev-N.*, best_dev_checkpoint; no alphabet.txt:
    the run's alphabet is taken): `dsita run` with ONLY_EXPORT=1 converts it, then exports."""
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    with tarfile.open(release / RELEASE_CHECKPOINT) as tar:
        for name in TF_FILES[:-1]:
            tar.extract(name, checkpoints, filter="data")
    env = clean_environment(DATA_DIR=str(tmp_path), ONLY_EXPORT="1", N_HIDDEN="256")
    command = [sys.executable, "-m", "dsita.cli", "run", "--steps", "export,package"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert same_logits(checkpoints / BEST_DEV) < 1e-6
    for name in (RELEASE_ZIP, RELEASE_TENSORFLOW, RELEASE_FP32, RELEASE_CHECKPOINT):
        assert (tmp_path / name).stat().st_size > 0, name
    checks_log = (tmp_path / "logs" / "01-checks.log").read_text(encoding="utf-8")
    said = f"ONLY_EXPORT=1: {checkpoints} holds a DeepSpeech TensorFlow checkpoint; converting it"
    assert said in checks_log
    assert f"Converted the DeepSpeech checkpoint {checkpoints} (best_dev-720) into" in checks_log


def test_only_export_takes_a_checkpoint_it_tar_xz_in_checkpoints(release: Path, tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.checkpoints.mkdir()
    shutil.copy(release / RELEASE_CHECKPOINT, layout.checkpoints)
    assert export_checkpoint(Settings(), layout) == layout.checkpoints / BEST_DEV
    assert (layout.checkpoints / BEST_DEV).read_bytes() == SMALL_MODEL.read_bytes()
    assert export_checkpoint(Settings(), layout) == layout.checkpoints / BEST_DEV  # found as it is now


def test_only_export_without_any_checkpoint_says_what_it_takes(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.checkpoints.mkdir()
    with pytest.raises(DsitaError) as exc:
        export_checkpoint(Settings(), layout)
    message = one_line(exc)
    assert message.startswith(f"ONLY_EXPORT=1 but {layout.checkpoints} holds no checkpoint")
    assert "a DeepSpeech 0.9 checkpoint, or a checkpoint_it.tar.xz" in message and "unpack" not in message


# --- bad input --------------------------------------------------------------------------------------------


def test_a_conformer_release_has_dsitas_files_only_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alphabet = Alphabet.italian()
    config = new_model_config("conformer", len(alphabet) + 1, preset="tiny")
    checkpoint = tmp_path / "checkpoints" / BEST_DEV
    save_checkpoint(
        checkpoint,
        {
            "model_config": model_config_to_dict(config),
            "model": build_model(config).state_dict(),
            "alphabet": list(alphabet.labels),
        },
    )
    out = tmp_path / "release"
    out.mkdir()
    (out / RELEASE_TENSORFLOW).write_bytes(b"an earlier DeepSpeech export's")
    with caplog.at_level(logging.INFO, logger="dsita.export.release"):
        report = make_release(checkpoint.parent, out, None, None)
    why = "the original clients only run the DeepSpeech graph"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and why in warnings[0] and "\n" not in warnings[0]
    assert report.no_client_files is not None and why in report.no_client_files
    assert sorted(p.name for p in out.iterdir()) == sorted([RELEASE_ZIP, RELEASE_FP32, RELEASE_CHECKPOINT])
    with zipfile.ZipFile(out / RELEASE_ZIP) as zf:
        assert not {"output_graph.tflite", "kenlm.scorer"} & set(zf.namelist())
        card = zf.read("MODEL_CARD.md").decode()
    assert f"No files for DeepSpeech or Coqui STT apps: {report.no_client_files}." in card
    assert report.metadata["deepspeech_files"] == f"none: {report.no_client_files}"
    with tarfile.open(out / RELEASE_CHECKPOINT) as tar:
        assert set(tar.getnames()) == {BEST_DEV, "settings.env"}


def test_scorers_for_another_alphabet_are_one_line(
    release: Path, sample_corpus: Path, tmp_path: Path
) -> None:
    """The Italian model (ENGLISH_COMPATIBLE=0, 38 labels) with an English kenlm.scorer, and its own
    kenlm.scorer under an English model's alphabet: the clients would decode nonsense without a word;
    `check_ds_scorer` says so in one line."""
    with zipfile.ZipFile(release / RELEASE_ZIP) as zf:
        zf.extractall(tmp_path / "it-it", members=["alphabet.txt", "kenlm.scorer"])
    italian = Alphabet.load(tmp_path / "it-it" / "alphabet.txt")
    assert len(italian) == 38
    sentences = tmp_path / "sentences.txt"
    rows = (sample_corpus / "train.csv").read_text(encoding="utf-8").splitlines()[1:]
    sentences.write_text("\n".join(row.rsplit(",", 1)[-1] for row in rows) + "\n", encoding="utf-8")
    options = LmBuildOptions(order=3, prune=(0,), memory="5%", kenlm_bin=KENLM_BIN, workers=1)
    english = build_scorer(tmp_path / "english", Alphabet.english(), options, corpus=[sentences]).scorer
    export_ds_scorer(english, Alphabet.english(), tmp_path / "english.scorer")
    with pytest.raises(DsitaError) as exc:
        check_ds_scorer(tmp_path / "english.scorer", italian)
    assert "english.scorer: built for another alphabet: " in one_line(exc)
    with pytest.raises(DsitaError) as exc:
        check_ds_scorer(tmp_path / "it-it" / "kenlm.scorer", Alphabet.english())
    assert "kenlm.scorer: built for another alphabet: its trie uses label" in one_line(exc)
    assert check_ds_scorer(tmp_path / "it-it" / "kenlm.scorer", italian).lm_size > 0
