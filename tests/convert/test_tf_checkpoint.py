"""DeepSpeech TensorFlow checkpoints read without TensorFlow: numbers, integrity checks, transfer (never to a
conformer), CLI.

The fixture under fixtures/tf_checkpoint/ was written by TensorFlow (tools/make_tf_fixture.py): a DeepSpeech
0.9 graph with N_HIDDEN=16 and 29 outputs, its checkpoint (with Adam slots, global_step and learning_rate),
a (T, 1, 494) time-major feature input and the (T, 1, 29) logits TF computed for it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dsita.convert.crc32c import crc32c, mask
from dsita.convert.deepspeech import (
    LSTM_SCOPE,
    check_transfer_source,
    convert_deepspeech_checkpoint,
    ensure_dsita_checkpoint,
    expected_shapes,
)
from dsita.convert.tf_bundle import open_tf_checkpoint
from dsita.errors import DsitaError
from dsita.model.base import build_model, count_parameters, new_model_config
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import BEST_DEV, load_checkpoint, load_trained_model, transfer_weights

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tf_checkpoint"
PREFIX = "best_dev-1"
DATA = f"{PREFIX}.data-00000-of-00001"
INDEX = f"{PREFIX}.index"


def copy_fixture(tmp_path: Path) -> Path:
    folder = tmp_path / "tf"
    shutil.copytree(FIXTURE, folder)
    return folder


def edit(path: Path, offset: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(new)] = new
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_deepspeech_checkpoint(FIXTURE, tmp_path_factory.mktemp("converted"), 16).checkpoint


# --- CRC-32C --------------------------------------------------------------------------------------------


def bitwise_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_known_values_and_a_bitwise_reference() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4
    assert crc32c(b"") == 0
    assert mask(0) == 0xA282EAD8
    rng = np.random.default_rng(0)
    for size in (1, 1023, 1024, 4099, 70_001):  # byte loop only, one lane fold, lanes plus tails
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert crc32c(data) == bitwise_crc32c(data), size


# --- the numbers ----------------------------------------------------------------------------------------


def test_converted_model_reproduces_tensorflow_logits(converted: Path) -> None:
    model, alphabet = load_trained_model(converted)
    features = torch.from_numpy(np.load(FIXTURE / "features.npy")).transpose(0, 1)  # (1, T, 494)
    expected = np.load(FIXTURE / "logits.npy").transpose(1, 0, 2)  # TF's are time-major
    with torch.no_grad():
        logits = model(features).logits.numpy()
    assert logits.shape == expected.shape == (1, 8, 29)
    assert np.abs(logits - expected).max() < 1e-5
    assert alphabet == Alphabet.english()


def test_report_names_tensors_ignored_state_and_parameter_count(tmp_path: Path) -> None:
    report = convert_deepspeech_checkpoint(FIXTURE, tmp_path, 16)
    assert report.tensors == expected_shapes(494, 16, 29)
    assert report.tensors[f"{LSTM_SCOPE}/kernel"] == (32, 64)
    adam = [f"layer_6/{v}/{slot}" for v in ("bias", "weights") for slot in ("Adam", "Adam_1")]
    assert report.ignored == sorted([*adam, "beta1_power", "beta2_power", "global_step", "learning_rate"])
    assert report.unused == []
    assert report.parameters == 11 * 16**2 + (494 + 29 + 8) * 16 + 29 == 11_341
    assert report.model_parameters == 11_341 + 4 * 16  # torch's second LSTM bias


def test_parameter_count_of_the_released_checkpoint_shape() -> None:
    """DeepSpeech 0.9.3: N_HIDDEN=2048, 494 inputs, 29 outputs."""
    shapes = expected_shapes(494, 2048, 29)
    count = sum(int(np.prod(shape)) for shape in shapes.values())
    assert count == 11 * 2048**2 + (494 + 29 + 8) * 2048 + 29 == 47_224_861
    with torch.device("meta"):
        model = build_model(new_model_config("deepspeech", 29, n_hidden=2048))
    assert count_parameters(model) == count + 4 * 2048


# --- integrity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tensor", ["layer_1/weights", f"{LSTM_SCOPE}/kernel", "layer_6/weights/Adam_1"])
def test_a_corrupt_byte_in_any_tensor_fails_its_crc(tmp_path: Path, tensor: str) -> None:
    folder = copy_fixture(tmp_path)
    with open_tf_checkpoint(folder) as checkpoint:
        entry = checkpoint.entries[tensor]
    data = folder / DATA
    edit(data, entry.offset + entry.size // 2, bytes([data.read_bytes()[entry.offset + entry.size // 2] ^ 1]))
    with pytest.raises(DsitaError, match=f"tensor {tensor} is corrupt: its CRC-32C does not match"):
        convert_deepspeech_checkpoint(folder, tmp_path / "out", 16)
    assert not (tmp_path / "out").exists()


def test_truncated_or_missing_data_file_is_refused(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path)
    data = folder / DATA
    data.write_bytes(data.read_bytes()[:40_000])
    with pytest.raises(
        DsitaError, match=f"{DATA} is truncated: 40000 bytes, but tensor layer_1/weights ends at byte 40144"
    ):
        convert_deepspeech_checkpoint(folder, tmp_path / "out", 16)
    data.unlink()
    with pytest.raises(DsitaError, match=f"data shard {DATA} is missing"):
        convert_deepspeech_checkpoint(folder, tmp_path / "out", 16)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda index: index[:-1] + bytes([index[-1] ^ 0xFF]), "bad magic number"),
        (
            lambda index: index[: len(index) // 2],
            "bad magic number: not a TensorFlow checkpoint index, or trun",
        ),
        (
            lambda index: index.replace(b"layer_1", b"layer_7"),
            "corrupt: the data block at byte 0 fails its CRC",
        ),
        (lambda index: b"", "0 bytes, shorter than a table footer"),
    ],
)
def test_a_damaged_index_is_refused(tmp_path: Path, damage: Callable[[bytes], bytes], message: str) -> None:
    folder = copy_fixture(tmp_path)
    (folder / INDEX).write_bytes(damage((folder / INDEX).read_bytes()))
    with pytest.raises(DsitaError, match=f"{INDEX}: {message}"):
        convert_deepspeech_checkpoint(folder, tmp_path / "out", 16)


def varint(data: bytes) -> int:
    value = 0
    for position, byte in enumerate(data):
        value |= (byte & 0x7F) << (7 * position)
        if byte < 0x80:
            return value
    raise AssertionError("unterminated varint")


def test_an_unknown_bundle_version_is_refused(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path)
    index = folder / INDEX
    data = index.read_bytes()
    # The header is the first entry of the only data block: key "", BundleHeaderProto {num_shards: 1,
    # version {producer: 1}}. Make it version {min_consumer: 2} (same length) and re-seal the block's CRC.
    header = bytes.fromhex("00000608011a020801")
    assert data.startswith(header)
    edit(index, 0, bytes.fromhex("00000608011a021002"))
    block_size = varint(data[-48:]) - 5  # the metaindex block follows the data block and its 5-byte trailer
    assert data[block_size] == 0  # the trailer's compression type: none
    edited = index.read_bytes()
    edit(index, block_size + 1, mask(crc32c(edited[: block_size + 1])).to_bytes(4, "little"))
    with pytest.raises(
        DsitaError, match="unknown bundle version: it needs a reader of version >= 2, this one is 1"
    ):
        convert_deepspeech_checkpoint(folder, tmp_path / "out", 16)


# --- shape checks ---------------------------------------------------------------------------------------


def test_wrong_n_hidden_names_every_mismatch_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(DsitaError) as error:
        convert_deepspeech_checkpoint(FIXTURE, tmp_path / "out", 32)
    message = str(error.value)
    assert "\n" not in message
    assert "does not fit N_HIDDEN=32 and 29 outputs (28 labels + blank)" in message
    assert "(the checkpoint has N_HIDDEN=16 and 29 outputs)" in message
    for name, shape in expected_shapes(494, 32, 29).items():
        if name == "layer_6/bias":
            assert name not in message  # (29,) whatever N_HIDDEN is
        else:
            assert f"{name} is {expected_shapes(494, 16, 29)[name]}, expected {shape} float32" in message
    assert not (tmp_path / "out").exists()


def test_another_alphabet_names_only_the_output_layer(tmp_path: Path) -> None:
    with pytest.raises(DsitaError, match="39 outputs") as error:
        convert_deepspeech_checkpoint(FIXTURE, tmp_path / "out", 16, Alphabet.italian())
    problems = str(error.value).split(": ", 2)[-1].split("; ")
    assert problems == [
        "layer_6/weights is (16, 29), expected (16, 39) float32",
        "layer_6/bias is (29,), expected (39,) float32",
    ]


# --- transfer -------------------------------------------------------------------------------------------


def test_english_compatible_model_loads_every_layer(converted: Path) -> None:
    model = build_model(new_model_config("deepspeech", len(Alphabet.english()) + 1, n_hidden=16))
    transfer_weights(model, converted, drop_layers=0)
    source = load_checkpoint(converted)["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, source[name]), name


def test_italian_transfer_reinitialises_only_layer_6(converted: Path) -> None:
    torch.manual_seed(0)
    model = build_model(new_model_config("deepspeech", len(Alphabet.italian()) + 1, n_hidden=16))
    fresh = {name: value.clone() for name, value in model.state_dict().items()}
    transfer_weights(model, converted, drop_layers=1)
    source = load_checkpoint(converted)["model"]
    for name, value in model.state_dict().items():
        expected = fresh[name] if name.startswith("layer_6.") else source[name]
        assert torch.equal(value, expected), name
    assert model.layer_6.weight.shape == (39, 16)


# --- archives and the pipeline's entry point ------------------------------------------------------------


def make_archive(path: Path, extra: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(FIXTURE.iterdir()):
            tar.add(file, f"deepspeech-0.9.3-checkpoint/{file.name}")
        # DeepSpeech's own state file for the best dev checkpoint, with the training machine's path.
        state = b'model_checkpoint_path: "/home/trainer/ckpt/best_dev-1"\n'
        info = tarfile.TarInfo("deepspeech-0.9.3-checkpoint/best_dev_checkpoint")
        info.size = len(state)
        tar.addfile(info, io.BytesIO(state))
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return path


def test_archive_is_read_in_place_like_the_folder(tmp_path: Path, converted: Path) -> None:
    archive = make_archive(tmp_path / "deepspeech-0.9.3-checkpoint.tar.gz")
    report = convert_deepspeech_checkpoint(archive, tmp_path / "out", 16)
    assert report.source == f"{archive} ({PREFIX})"
    ours, theirs = load_checkpoint(report.checkpoint), load_checkpoint(converted)
    assert ours["alphabet"] == theirs["alphabet"]
    assert all(torch.equal(value, theirs["model"][name]) for name, value in ours["model"].items())
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DsitaError, match=f"{archive}: not a readable tar archive"):
        convert_deepspeech_checkpoint(archive, tmp_path / "out", 16)


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("deepspeech-0.9.3-checkpoint/../../evil", tarfile.REGTYPE, "escapes"),
        ("link", tarfile.SYMTYPE, "is a link"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path: Path, name: str, kind: bytes, message: str) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname = kind, 1 if kind == tarfile.REGTYPE else 0, "/etc/passwd"
    archive = make_archive(tmp_path / "bad.tar.gz", (member,))
    with pytest.raises(DsitaError, match=f"unsafe archive: member {name} {message}"):
        convert_deepspeech_checkpoint(archive, tmp_path / "out", 16)


def test_ensure_dsita_checkpoint_converts_only_what_needs_it(tmp_path: Path, converted: Path) -> None:
    out = tmp_path / "converted"
    assert ensure_dsita_checkpoint(FIXTURE, out, 16) == out / BEST_DEV
    assert ensure_dsita_checkpoint(converted.parent, tmp_path / "unused", 16) == converted
    assert ensure_dsita_checkpoint(converted, tmp_path / "unused", 16) == converted
    assert not (tmp_path / "unused").exists()
    holder = tmp_path / "transfer-checkpoint"
    holder.mkdir()
    make_archive(holder / "deepspeech-0.9.3-checkpoint.tar.gz")
    assert (
        ensure_dsita_checkpoint(holder, tmp_path / "from-archive", 16) == tmp_path / "from-archive" / BEST_DEV
    )
    (holder / "deepspeech-0.9.3-checkpoint.tar.gz").unlink()
    shutil.copytree(FIXTURE, holder / "deepspeech-0.9.3-checkpoint")  # unpacked in place
    assert (
        ensure_dsita_checkpoint(holder, tmp_path / "from-folder", 16) == tmp_path / "from-folder" / BEST_DEV
    )
    shutil.rmtree(holder / "deepspeech-0.9.3-checkpoint")
    with pytest.raises(DsitaError, match=r"expected a dsita checkpoint .* found none"):
        ensure_dsita_checkpoint(holder, tmp_path / "none", 16)


def test_a_tensorflow_checkpoint_cannot_start_a_conformer(
    trained_tiny: Callable[[str], Path], tmp_path: Path
) -> None:
    with pytest.raises(DsitaError, match="MODEL=conformer") as error:
        ensure_dsita_checkpoint(FIXTURE, tmp_path / "converted", 16, architecture="conformer")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "converted").exists()
    check_transfer_source(FIXTURE, "deepspeech")  # the converter's own architecture
    conformer = trained_tiny("conformer")
    check_transfer_source(conformer, "conformer")
    assert ensure_dsita_checkpoint(conformer, tmp_path / "unused", 16, architecture="conformer") == (
        conformer / BEST_DEV
    )


# --- CLI ------------------------------------------------------------------------------------------------


def dsita(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "dsita.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_prints_the_report_and_one_line_errors(tmp_path: Path) -> None:
    result = dsita(
        "convert", "deepspeech-checkpoint", str(FIXTURE), "--out", str(tmp_path), "--n-hidden", "16"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"  {LSTM_SCOPE}/kernel  (32, 64)" in lines
    assert any(line.startswith("  layer_1/weights") and line.endswith("(494, 16)") for line in lines)
    assert (
        "ignored (training state): 4 Adam slots (*/Adam, */Adam_1), beta1_power, beta2_power, global_step, "
        "learning_rate" in lines
    )
    assert (
        "parameters: 11,341 (dsita's model has 11,405: torch's LSTM adds a second bias of 64 = 4 x 16 zeros)"
        in lines
    )
    assert (tmp_path / BEST_DEV).is_file()

    result = dsita("convert", "deepspeech-checkpoint", str(FIXTURE), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "does not fit N_HIDDEN=2048" in result.stderr and "layer_5/weights is (16, 16)" in result.stderr
