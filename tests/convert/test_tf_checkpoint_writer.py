"""The TensorFlow checkpoint writer: TF's own bytes, DeepSpeech's names and training state, the round trip.

fixtures/tf_checkpoint/ was written by TensorFlow's Saver (tools/make_tf_fixture.py), so writing its
tensors again must give the same files. That TensorFlow reads what `write_deepspeech_checkpoint` writes, and
restores DeepSpeech 0.9's training graph from it, is checked with TensorFlow by tools/check_tf_checkpoint.py
(TensorFlow is not in dsita's venv).
"""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dsita.convert.deepspeech import (
    BEST_DEV_STATE,
    LSTM_SCOPE,
    TfCheckpointOptions,
    convert_deepspeech_checkpoint,
    expected_shapes,
    from_state_dict,
    write_deepspeech_checkpoint,
)
from dsita.convert.tf_bundle import (
    FOOTER_SIZE,
    _block_entries,
    open_tf_checkpoint,
    read_table,
    write_bundle,
    write_state_file,
    write_table,
)
from dsita.errors import DsitaError
from dsita.model.base import build_model, model_config_to_dict, new_model_config
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_checkpoint, load_trained_model, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
TF_FIXTURE = REPO / "tests" / "fixtures" / "tf_checkpoint"
SMALL_MODEL = REPO / "tests" / "fixtures" / "small_model.pt"
FILES = ("best_dev-1.index", "best_dev-1.data-00000-of-00001", "checkpoint")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small trained model written as a DeepSpeech checkpoint."""
    return write_deepspeech_checkpoint(SMALL_MODEL, tmp_path_factory.mktemp("ds") / "checkpoint")


def test_bundle_is_byte_for_byte_what_tensorflows_saver_wrote(tmp_path: Path) -> None:
    with open_tf_checkpoint(TF_FIXTURE) as checkpoint:
        tensors = checkpoint.read(list(checkpoint.entries))
    assert {a.dtype for a in tensors.values()} == {np.dtype("<f4"), np.dtype("<i8")}
    write_bundle(tmp_path / "best_dev-1", tensors)
    write_state_file(tmp_path, "best_dev-1")
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (TF_FIXTURE / name).read_bytes(), name


def test_tables_larger_than_a_block_read_back() -> None:
    rng = random.Random(0)
    keys = sorted({rng.randbytes(rng.randint(1, 40)) for _ in range(20_000)})
    entries = [(key, rng.randbytes(rng.randint(0, 30))) for key in keys]
    data = write_table(entries)
    assert read_table(data) == entries
    assert _index_blocks(data) > 1  # several data blocks, so the separators between them were written
    with pytest.raises(ValueError, match="table keys must increase"):
        write_table([(b"b", b""), (b"a", b"")])


def _index_blocks(data: bytes) -> int:
    """How many data blocks a table's index block lists."""

    def varint(pos: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = data[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if byte < 0x80:
                return value, pos

    footer = len(data) - FOOTER_SIZE
    _, pos = varint(footer)
    _, pos = varint(pos)
    offset, pos = varint(pos)
    size, _ = varint(pos)
    return len(list(_block_entries(data[offset : offset + size])))


def test_deepspeech_checkpoint_holds_deepspeechs_variables_and_training_state(written: Path) -> None:
    folder = written.parent
    assert written.name == "best_dev-720"  # the small model's step count
    assert (folder / BEST_DEV_STATE).read_text() == (
        'model_checkpoint_path: "best_dev-720"\nall_model_checkpoint_paths: "best_dev-720"\n'
    )
    model, alphabet = load_trained_model(SMALL_MODEL)
    shapes = expected_shapes(494, 256, len(alphabet) + 1)
    slots = {f"{name}/{slot}": shape for name, shape in shapes.items() for slot in ("Adam", "Adam_1")}
    scalars = {"beta1_power", "beta2_power", "global_step", "learning_rate"}
    with open_tf_checkpoint(folder) as checkpoint:
        assert {
            name: e.shape for name, e in checkpoint.entries.items() if name not in scalars
        } == shapes | slots
        tensors = checkpoint.read(list(checkpoint.entries))
        assert checkpoint.text("alphabet.txt") == (folder / "alphabet.txt").read_text(encoding="utf-8")
    for name, value in from_state_dict(model.state_dict()).items():
        assert value.dtype == tensors[name].dtype and np.array_equal(value, tensors[name]), name
    assert all(not tensors[name].any() for name in slots)  # a fresh Adam state
    options = TfCheckpointOptions()
    assert tensors["global_step"].dtype == np.int64 and int(tensors["global_step"]) == 720
    assert float(tensors["beta1_power"]) == np.float32(options.beta1)
    assert float(tensors["beta2_power"]) == np.float32(options.beta2)
    assert float(tensors["learning_rate"]) == np.float32(options.learning_rate)


def test_converting_it_back_gives_the_same_logits(written: Path, tmp_path: Path) -> None:
    source, alphabet = load_trained_model(SMALL_MODEL)
    assert source.state_dict()["lstm.bias_hh_l0"].abs().max() > 0  # so the bias sum matters
    report = convert_deepspeech_checkpoint(written.parent, tmp_path, 256)
    converted, converted_alphabet = load_trained_model(report.checkpoint)
    assert converted_alphabet == alphabet
    assert report.tensors[f"{LSTM_SCOPE}/kernel"] == (512, 1024)
    features = 10.0 * torch.randn(2, 60, 494, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source.eval()(features).logits
        got = converted.eval()(features).logits
    assert (got - expected).abs().max() < 1e-6


def test_a_tar_xz_of_it_converts_too(written: Path, tmp_path: Path) -> None:
    archive = tmp_path / "checkpoint_it.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(written.parent, arcname="deepspeech-checkpoint")
    report = convert_deepspeech_checkpoint(archive, tmp_path / "out", 256)
    assert load_checkpoint(report.checkpoint)["alphabet"] == load_checkpoint(SMALL_MODEL)["alphabet"]


def test_models_deepspeech_cannot_run_are_refused(tmp_path: Path) -> None:
    def save(name: str, architecture: str, **fields: object) -> Path:
        config = new_model_config(architecture, len(Alphabet.italian()) + 1, **fields)
        checkpoint = {
            "model_config": model_config_to_dict(config),
            "model": build_model(config).state_dict(),
            "alphabet": list(Alphabet.italian().labels),
        }
        save_checkpoint(tmp_path / name, checkpoint)
        return tmp_path / name

    with pytest.raises(DsitaError, match=r"a conformer model; only a deepspeech model has a DeepSpeech 0\.9"):
        write_deepspeech_checkpoint(save("conformer.pt", "conformer", preset="tiny"), tmp_path / "out")
    with pytest.raises(
        DsitaError, match=r"13 MFCCs with 9 frames of context; DeepSpeech 0\.9's graph takes 26"
    ):
        write_deepspeech_checkpoint(save("mfcc13.pt", "deepspeech", n_hidden=8, n_mfcc=13), tmp_path / "out")
    assert not (tmp_path / "out").exists()
