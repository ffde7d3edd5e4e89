"""`dsita export`: ONNX graphs (fp32, int8) of every architecture, their metadata, the model card and the four
release files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from dsita.audio import feature_metadata, load_audio
from dsita.data.csvs import read_csv
from dsita.decoding.greedy import greedy_text
from dsita.errors import DsitaError
from dsita.evaluation.evaluate import score
from dsita.export.card import ModelInfo
from dsita.export.ds_scorer import deepspeech_weights
from dsita.export.onnx import StreamingGraph, onnx_graph, parity_error
from dsita.export.release import (
    RELEASE_CHECKPOINT,
    RELEASE_FP32,
    RELEASE_TENSORFLOW,
    RELEASE_ZIP,
    make_release,
    write_zip,
)
from dsita.inference.features import NumpyLogMel
from dsita.inference.model import onnx_session
from dsita.inference.package import INPUT, LENGTHS_IN, STATE_C_IN, STATE_H_IN, open_package
from dsita.lm.scorer import load_scorer
from dsita.settings import Settings
from dsita.settings.options import model_info
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_trained_model as load_checkpoint_model
from tests.architectures import Exported

SMALL_MODEL = Path(__file__).parents[1] / "fixtures" / "small_model.pt"
SCORER_MEMBERS = {"scorer/manifest.json", "scorer/lm.binary", "scorer/vocabulary.txt", "scorer/alphabet.txt"}
PACKAGE_MEMBERS = {"model.onnx", "alphabet.txt", "MODEL_CARD.md", "manifest.json", *SCORER_MEMBERS}
CLIENT_MEMBERS = {"output_graph.tflite", "kenlm.scorer"}  # it-it.zip's files for stt and deepspeech-tflite
TENSORFLOW_MEMBERS = {"output_graph.pbmm", "kenlm.scorer", "alphabet.txt", "MODEL_CARD.md"}
# The small model's DeepSpeech 0.9 checkpoint: its step count names it.
TF_CHECKPOINT_MEMBERS = {
    "best_dev-720.index",
    "best_dev-720.data-00000-of-00001",
    "best_dev_checkpoint",
    "alphabet.txt",
}


def unpack(release: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The int8 and fp32 model.onnx of a release, unpacked."""
    with zipfile.ZipFile(release / RELEASE_ZIP) as zf:
        zf.extract("model.onnx", tmp_path / "int8")
    with tarfile.open(release / RELEASE_FP32) as tf:
        tf.extract("model.onnx", tmp_path / "fp32", filter="data")
    return tmp_path / "int8" / "model.onnx", tmp_path / "fp32" / "model.onnx"


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_release_files_hold_what_the_original_shipped(small_release: Path) -> None:
    assert sorted(p.name for p in small_release.iterdir()) == sorted(
        [RELEASE_ZIP, RELEASE_TENSORFLOW, RELEASE_FP32, RELEASE_CHECKPOINT]
    )
    with zipfile.ZipFile(small_release / RELEASE_ZIP) as zf:
        assert set(zf.namelist()) == PACKAGE_MEMBERS | CLIENT_MEMBERS
        zip_scorer = zf.read("kenlm.scorer")
    with tarfile.open(small_release / RELEASE_TENSORFLOW) as tf:
        assert set(tf.getnames()) == TENSORFLOW_MEMBERS
        assert tf.extractfile("kenlm.scorer").read() == zip_scorer  # type: ignore[union-attr]
    with tarfile.open(small_release / RELEASE_FP32) as tf:
        assert set(tf.getnames()) == PACKAGE_MEMBERS
    with tarfile.open(small_release / RELEASE_CHECKPOINT) as tf:
        assert set(tf.getnames()) == {SMALL_MODEL.name, "settings.env", *TF_CHECKPOINT_MEMBERS}
        checkpoint = tf.extractfile(SMALL_MODEL.name).read()  # type: ignore[union-attr]
        assert "N_HIDDEN=" in tf.extractfile("settings.env").read().decode()  # type: ignore[union-attr]
    assert checkpoint == SMALL_MODEL.read_bytes()


def test_fp32_graph_matches_torch_with_dynamic_batch_time_and_state(
    small_release: Path, tmp_path: Path
) -> None:
    _, fp32 = unpack(small_release, tmp_path)
    model = onnx.load(fp32)
    onnx.checker.check_model(model, full_check=True)
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["batch", "time", 494], ["batch", 256], ["batch", 256]]

    torch_model, _ = load_checkpoint_model(SMALL_MODEL)
    graph = StreamingGraph(torch_model).eval()
    rng = np.random.default_rng(1)
    features = (rng.standard_normal((3, 41, 494)) * 5).astype(np.float32)
    c, h = (rng.standard_normal((2, 3, 256)) * 0.3).astype(np.float32)
    session = onnx_session(fp32)
    got = session.run(None, {INPUT: features, STATE_C_IN: c, STATE_H_IN: h})
    with torch.no_grad():
        expected = [x.numpy() for x in graph(*(torch.from_numpy(x) for x in (features, c, h)))]
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-4, rtol=0)

    # Two chunks with the state carried between them compute what one call computes.
    first = session.run(None, {INPUT: features[:, :17], STATE_C_IN: c, STATE_H_IN: h})
    second = session.run(None, {INPUT: features[:, 17:], STATE_C_IN: first[1], STATE_H_IN: first[2]})
    np.testing.assert_allclose(np.concatenate([first[0], second[0]], axis=1), got[0], atol=1e-5, rtol=0)


def test_fp32_graph_matches_torch_with_dynamic_batch_and_time(exported: Exported) -> None:
    fp32_package = open_package(exported.release / RELEASE_FP32)  # unpacked while it is referenced
    fp32 = fp32_package.model_path
    model, _ = load_checkpoint_model(exported.checkpoint)
    graph = onnx_graph(model)
    inputs = onnx.load(fp32).graph.input
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs]
    assert [i.name for i in inputs] == list(graph.input_names) and inputs[0].name == INPUT
    assert dims[0] == ["batch", "time", model.featurizer.n_features] and all(d[0] == "batch" for d in dims)
    meta = {p.key: p.value for p in onnx.load(fp32).metadata_props}
    features = feature_metadata(model.config.FEATURES)
    assert meta["architecture"] == exported.architecture and meta["features"] == model.config.FEATURES
    assert {k: v if isinstance(v, str) else json.loads(meta[k]) for k, v in features.items()} == features
    for batch, steps in ((1, 5), (4, 123)):
        assert parity_error(graph, fp32, batch, steps) < 1e-4


def test_int8_graph_stores_every_weight_matrix_in_int8(small_release: Path, tmp_path: Path) -> None:
    int8, fp32 = unpack(small_release, tmp_path)
    model = onnx.load(int8)
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger", "DequantizeLinear"} <= ops
    assert "LSTM" not in ops
    matrices = [i for i in model.graph.initializer if np.prod(i.dims) >= 256 * 39]
    assert len(matrices) == 7  # layers 1, 2, 3, 5 and 6, the LSTM's input and recurrent weights
    assert all(i.data_type == onnx.TensorProto.INT8 for i in matrices)
    assert int8.stat().st_size < fp32.stat().st_size / 3


def test_conformer_graphs_take_lengths_and_run_int8_close_to_fp32(
    conformer_release: Path, test_clips: list[Path]
) -> None:
    int8_package = open_package(conformer_release / RELEASE_ZIP)
    fp32_package = open_package(conformer_release / RELEASE_FP32)
    int8, fp32 = int8_package.model_path, fp32_package.model_path
    inputs = onnx.load(fp32).graph.input
    assert [i.name for i in inputs] == [INPUT, LENGTHS_IN]
    assert [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs] == [
        ["batch", "time", 80],
        ["batch"],
    ]
    graph = onnx.load(int8).graph
    weights = {i.name for i in graph.initializer}
    matmuls = [node for node in graph.node if node.op_type in ("MatMul", "MatMulInteger")]
    # Every linear layer is int8; the float MatMuls left are attention's, between activations.
    assert all(node.op_type == "MatMulInteger" for node in matmuls if set(node.input) & weights)
    assert sum(node.op_type == "MatMulInteger" for node in matmuls) == 18  # 1 + 2 blocks x (2 + 2 + 2 + 2)
    assert int8.stat().st_size < fp32.stat().st_size
    features = NumpyLogMel().features(load_audio(test_clips[0]))[None]
    feed = {INPUT: features, LENGTHS_IN: np.array([features.shape[1]])}
    exact, quantized = (onnx_session(path).run(None, feed)[0][0] for path in (fp32, int8))
    assert np.abs(exact - quantized).max() < 0.5
    assert (exact.argmax(-1) == quantized.argmax(-1)).mean() > 0.9


def test_metadata_and_model_card(small_release: Path, sample_scorer: Path, tmp_path: Path) -> None:
    settings = ModelInfo()
    scorer = load_scorer(sample_scorer)
    for path, precision in zip(unpack(small_release, tmp_path), ("int8", "fp32"), strict=True):
        meta = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert meta["precision"] == precision
        assert meta["language"] == "it-IT"
        assert meta["model_author"] == settings.author
        assert meta["model_name"] == settings.name
        assert meta["model_license"] == settings.license
        assert json.loads(meta["alphabet"]) == list(Alphabet.italian().labels)
        assert json.loads(meta["lm_alpha"]) == scorer.alpha
        assert meta["graph_version"] == "1"
    with zipfile.ZipFile(small_release / RELEASE_ZIP) as zf:
        card = zf.read("MODEL_CARD.md").decode()
    front = front_matter(card)
    assert {k: front[k] for k in feature_metadata()} == feature_metadata()
    assert front["model_author"] == settings.author != "author"
    assert front["language"] == "it-IT"
    assert front["n_hidden"] == 256
    assert (front["lm_alpha"], front["lm_beta"]) == (scorer.alpha, scorer.beta)
    assert front["deepspeech_files"] == [
        "output_graph.tflite",
        "output_graph.pbmm",
        "kenlm.scorer",
        "best_dev-720",
    ]
    assert (front["lm_alpha_deepspeech"], front["lm_beta_deepspeech"]) == pytest.approx(
        deepspeech_weights(scorer.alpha, scorer.beta)
    )
    for command in (
        "stt --model output_graph.tflite --scorer kenlm.scorer --audio clip.wav",
        "deepspeech --model output_graph.pbmm --scorer kenlm.scorer --audio clip.wav",
        "deepspeech --model output_graph.tflite --scorer kenlm.scorer --audio clip.wav",
    ):
        assert command in card
    assert "| `model_tensorflow_it.tar.xz` | `output_graph.pbmm`, `kenlm.scorer`" in card
    # No evaluation report sits next to the fixture checkpoint, and no training CSV was given.
    for key in ("test_wer_greedy", "test_cer_greedy", "test_wer_lm", "test_cer_lm", "training_hours"):
        assert front[key] == "not measured"


def test_model_card_takes_figures_from_reports_and_settings(
    tmp_path: Path, sample_corpus: Path, small_model_logits: dict
) -> None:
    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    shutil.copy(SMALL_MODEL, checkpoint_dir / "best_dev.pt")
    samples, logits = small_model_logits["test"]
    alphabet = Alphabet.italian()
    report = score(samples, [greedy_text(x, alphabet) for x in logits], "greedy")
    report.save(checkpoint_dir / "test_report_greedy.json")
    info = model_info(Settings(model_author="Ada Lovelace", model_version="2.0.1"))

    release = make_release(checkpoint_dir, tmp_path / "out", info, None, [sample_corpus / "train.csv"])

    front = release.metadata
    assert front["test_wer_greedy"] == round(report.wer, 4)
    assert front["test_cer_greedy"] == round(report.cer, 4)
    assert front["test_clips_greedy"] == len(samples)
    assert front["test_wer_lm"] == "not measured"
    hours = sum(s.duration for s in read_csv(sample_corpus / "train.csv")) / 3600
    assert front["training_hours"] == pytest.approx(hours, abs=1e-3)
    assert (front["lm_alpha"], front["model_author"], front["model_version"]) == (
        "no scorer",
        "Ada Lovelace",
        "2.0.1",
    )
    with zipfile.ZipFile(tmp_path / "out" / RELEASE_ZIP) as zf:
        assert set(zf.namelist()) == {
            "model.onnx",
            "alphabet.txt",
            "MODEL_CARD.md",
            "manifest.json",
            "output_graph.tflite",
        }
        card = zf.read("MODEL_CARD.md").decode()
        assert front_matter(card)["test_wer_greedy"] == round(report.wer, 4)
    # No scorer: the clients' commands have no --scorer, and no kenlm.scorer is shipped.
    assert "stt --model output_graph.tflite --audio clip.wav" in card and "kenlm.scorer" not in card
    with tarfile.open(tmp_path / "out" / RELEASE_TENSORFLOW) as tf:
        assert set(tf.getnames()) == {"output_graph.pbmm", "alphabet.txt", "MODEL_CARD.md"}
    with tarfile.open(tmp_path / "out" / RELEASE_CHECKPOINT) as tf:
        assert set(tf.getnames()) == {"best_dev.pt", "settings.env", *TF_CHECKPOINT_MEMBERS}


def test_scorer_with_another_alphabet_is_refused(sample_scorer: Path, tmp_path: Path) -> None:
    scorer = tmp_path / "scorer"
    shutil.copytree(sample_scorer, scorer)
    Alphabet.english().save(scorer / "alphabet.txt")
    with pytest.raises(DsitaError, match="another alphabet") as exc:
        make_release(SMALL_MODEL, tmp_path / "out", None, scorer)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_interrupted_archive_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / RELEASE_ZIP
    target.write_bytes(b"previous release")
    (tmp_path / "alphabet.txt").write_text("a\n")
    with pytest.raises(FileNotFoundError):
        write_zip(
            target, {"alphabet.txt": tmp_path / "alphabet.txt", "model.onnx": tmp_path / "missing.onnx"}
        )
    assert target.read_bytes() == b"previous release"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alphabet.txt", RELEASE_ZIP]


def test_export_command_reads_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "checkpoints").mkdir(parents=True)
    shutil.copy(SMALL_MODEL, data / "checkpoints" / "best_dev.pt")
    env = {**os.environ, "DATA_DIR": str(data), "MODEL_AUTHOR": "Grace Hopper", "COLUMNS": "200"}
    command = [sys.executable, "-m", "dsita.cli", "export", "--no-scorer"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in data.iterdir()} == {
        "checkpoints",
        RELEASE_ZIP,
        RELEASE_TENSORFLOW,
        RELEASE_FP32,
        RELEASE_CHECKPOINT,
    }
    assert f"{data / RELEASE_ZIP}: " in result.stdout
    with zipfile.ZipFile(data / RELEASE_ZIP) as zf:
        assert front_matter(zf.read("MODEL_CARD.md").decode())["model_author"] == "Grace Hopper"
