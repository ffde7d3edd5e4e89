"""The conformer behind the model seam: features, shapes, padding, training, resume, transfer, DDP, ONNX
export, torch-free inference with both decoders, and `dsita run` with MODEL=conformer."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import onnx
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from typer.testing import CliRunner

from dsita.audio import SAMPLE_RATE, feature_metadata, load_audio
from dsita.cli import app
from dsita.convert.deepspeech import check_transfer_source, ensure_dsita_checkpoint
from dsita.data.csvs import read_csv, write_csv
from dsita.data.dataset import load_samples
from dsita.decoding.batch import BatchDecoder
from dsita.decoding.greedy import greedy_text
from dsita.decoding.transcript import Transcript
from dsita.errors import DsitaError
from dsita.evaluation.evaluate import evaluate_logits, model_logits
from dsita.export.onnx import SegmentGraph, onnx_graph, parity_error
from dsita.export.release import RELEASE_FP32, RELEASE_ZIP, make_release
from dsita.inference.chunked import ChunkOptions, WindowedLogits, output_steps
from dsita.inference.features import NumpyLogMel
from dsita.inference.model import InferenceOptions, SpeechModel, onnx_session
from dsita.inference.model import load_model as load_package
from dsita.inference.package import INPUT, LENGTHS_IN, open_package
from dsita.inference.vad import VadOptions
from dsita.inference.vad import segments as vad_segments
from dsita.lm.scorer import load_scorer
from dsita.model import (
    Conformer,
    ConformerConfig,
    LogMel,
    architectures,
    build_model,
    count_parameters,
    model_config_from_dict,
    model_config_to_dict,
    new_model_config,
)
from dsita.settings import Settings
from dsita.settings.options import train_options
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import BEST_DEV, LAST, load_checkpoint, load_trained_model, save_checkpoint
from dsita.training.loop import Distributed, TrainOptions, model_config, train

REPO = Path(__file__).resolve().parents[1]
ITALIAN = Alphabet.italian()
N_OUTPUTS = len(ITALIAN) + 1
SMALL_DEEPSPEECH = REPO / "tests" / "fixtures" / "small_model.pt"
TF_CHECKPOINT = REPO / "tests" / "fixtures" / "tf_checkpoint"


def tiny(dropout: float = 0.0) -> Conformer:
    torch.manual_seed(0)
    config = ConformerConfig(
        n_outputs=N_OUTPUTS, d_model=32, n_layers=2, n_heads=2, subsampling_channels=8, dropout=dropout
    )
    model = build_model(config)
    assert isinstance(model, Conformer)
    return model.eval()


def options(corpus: Path, checkpoint_dir: Path, **overrides: object) -> TrainOptions:
    base = TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=checkpoint_dir,
        architecture="conformer",
        model_size="tiny",
        model_fields={"d_model": 32},
        batch_size=8,
        epochs=2,
        learning_rate=1e-3,
        workers=0,
        max_train_clips=48,
        max_dev_clips=8,
        show_progress=False,
        device="cpu",  # also on a GPU machine: the gloo ranks and the exact run comparisons need the CPU
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def trained(sample_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of a tiny conformer with the real trainer: its checkpoint folder."""
    folder = tmp_path_factory.mktemp("conformer") / "straight"
    train(options(sample_corpus, folder), ITALIAN)
    return folder


@pytest.fixture(scope="module")
def writer(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained conformer's checkpoint with its blank and space outputs lowered: two epochs in, it writes
    only blanks and spaces, and the decoding checks need letters."""
    checkpoint = load_checkpoint(trained / BEST_DEV)
    checkpoint["model"]["head.bias"][[ITALIAN.encode(" ")[0], ITALIAN.blank_index]] -= 3.0
    path = tmp_path_factory.mktemp("writer") / BEST_DEV
    save_checkpoint(path, checkpoint)
    return path


@pytest.fixture(scope="module")
def release(writer: Path, sample_scorer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dsita export` of that model with the sample scorer."""
    out = tmp_path_factory.mktemp("conformer-release")
    report = make_release(writer, out, None, sample_scorer)
    assert report.parity_error < 1e-4
    return out


@pytest.fixture(scope="module")
def test_clips(sample_corpus: Path) -> list[Path]:
    return [s.wav_path for s in read_csv(sample_corpus / "test.csv")]


# --- model and features ------------------------------------------------------------------------------------


def test_presets_sizes_and_parameter_counts() -> None:
    counts = {}
    for preset in ("tiny", "small", "medium"):
        with torch.device("meta"):
            counts[preset] = count_parameters(build_model(new_model_config("conformer", N_OUTPUTS, preset)))
    assert counts == {"tiny": 152_551, "small": 4_475_991, "medium": 26_280_743}
    assert new_model_config("conformer", N_OUTPUTS) == ConformerConfig(n_outputs=N_OUTPUTS)  # small
    medium = new_model_config("conformer", N_OUTPUTS, "medium", n_layers=12)
    assert isinstance(medium, ConformerConfig)
    assert (medium.d_model, medium.n_layers, medium.conv_kernel) == (256, 12, 31)
    with pytest.raises(DsitaError, match="unknown conformer size 'huge'"):
        new_model_config("conformer", N_OUTPUTS, "huge")
    # DeepSpeech has no presets: its size is N_HIDDEN whatever MODEL_SIZE says.
    assert new_model_config("deepspeech", N_OUTPUTS, "medium", n_hidden=64).size() == {
        "architecture": "deepspeech",
        "n_hidden": 64,
    }


def test_unknown_architectures_and_sizes_are_refused_naming_the_setting(tmp_path: Path) -> None:
    for settings, message in (
        (Settings(model="wav2vec"), r"architecture 'wav2vec' \(MODEL; known: conformer, deepspeech"),
        (Settings(model="conformer", model_size="huge"), r"unknown conformer size 'huge' \(MODEL_SIZE"),
    ):
        with pytest.raises(DsitaError, match=message):
            model_config(train_options(settings, (), (), tmp_path), N_OUTPUTS)


def test_every_preset_has_a_kernel_friendly_head_width() -> None:
    # Fused 16-bit attention (flash, memory-efficient) needs a head width that is a multiple of 8.
    for name in ConformerConfig.PRESETS:
        config = new_model_config("conformer", N_OUTPUTS, name)
        assert (config.d_model // config.n_heads) % 8 == 0, name


def test_training_options_apply_only_to_their_architecture(tmp_path: Path) -> None:
    settings = Settings(model="conformer", model_size="medium", conformer_layers=3, n_hidden=99, dropout=0.3)
    config = model_config(train_options(settings, (), (), tmp_path), N_OUTPUTS)
    assert isinstance(config, ConformerConfig)
    assert (config.d_model, config.n_layers, config.n_heads, config.dropout) == (256, 3, 4, 0.1)
    # FAST_TRAIN trains the tiny preset unless the settings ask for a size themselves (a preset, as AUGMENT).
    fast = Settings(model="conformer", fast_train=True)
    assert model_config(train_options(fast, (), (), tmp_path), 9) == new_model_config("conformer", 9, "tiny")
    asked = Settings(model="conformer", model_size="medium", conformer_dim=512, fast_train=True)
    assert model_config(train_options(asked, (), (), tmp_path), 9).size()["d_model"] == 512
    deepspeech = model_config(train_options(Settings(fast_train=True), (), (), tmp_path), 9)
    assert deepspeech.size() == {"architecture": "deepspeech", "n_hidden": 64}
    with pytest.raises(DsitaError, match="multiple of 2 x n_heads"):
        model_config(train_options(Settings(model="conformer", conformer_dim=102), (), (), tmp_path), 9)


def test_numpy_log_mels_match_torch(test_clips: list[Path]) -> None:
    audio = load_audio(test_clips[0])
    got = NumpyLogMel().features(audio)
    featurizer = LogMel()
    assert featurizer.frame_size == featurizer.n_features == 80
    features, lengths = featurizer(torch.from_numpy(audio)[None])  # float32 input, as training feeds it
    assert features.dtype == torch.float32 and got.shape == features.shape[1:] == (int(lengths[0]), 80)
    np.testing.assert_allclose(got, features[0].numpy(), atol=1e-5, rtol=0)
    # Normalised per channel over the utterance.
    np.testing.assert_allclose(got.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(got.std(axis=0), 1.0, atol=1e-3)


def test_log_mels_ignore_padding() -> None:
    rng = np.random.default_rng(0)
    short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (5_000, 9_123))
    batch = torch.zeros(2, long.size)
    batch[0, : short.size], batch[1] = torch.from_numpy(short), torch.from_numpy(long)
    batch[0, short.size :] = 0.7  # whatever sits in the padding
    features, lengths = LogMel()(batch, torch.tensor([short.size, long.size]))
    assert lengths.tolist() == [1 + (5_000 - 400) // 160, 1 + (9_123 - 400) // 160]
    alone, _ = LogMel()(torch.from_numpy(short)[None])
    torch.testing.assert_close(features[0, : lengths[0]], alone[0], rtol=0, atol=1e-6)
    assert (features[0, lengths[0] :] == 0).all()


def test_output_lengths_are_exact_for_every_length() -> None:
    model = tiny()
    with torch.no_grad():
        for steps in range(1, 42):
            out = model(torch.randn(1, steps, 80))
            assert out.logits.shape[1] == out.lengths.item() == model.output_lengths(torch.tensor(steps))
            assert out.lengths.item() == -(-steps // 4)  # ceil(T / 4)
        empty = model(torch.zeros(2, 0, 80))
        assert empty.logits.shape == (2, 0, N_OUTPUTS) and empty.lengths.tolist() == [0, 0]
    assert model.initial_state(3) == () and out.state == ()


def test_an_items_logits_do_not_depend_on_its_batch() -> None:
    model = tiny()
    lengths = [57, 33, 9, 1]
    batch = torch.randn(4, 57, 80) * 3  # the padding is garbage on purpose
    with torch.no_grad():
        out = model(batch, torch.tensor(lengths))
        assert out.lengths.tolist() == [15, 9, 3, 1]
        for i, n in enumerate(lengths):
            alone = model(batch[i : i + 1, :n])
            steps = int(out.lengths[i])
            torch.testing.assert_close(out.logits[i, :steps], alone.logits[0], rtol=0, atol=1e-5)


def test_mixed_precision_runs_and_every_parameter_learns() -> None:
    """What AMP does on a GPU, in bfloat16 on the CPU; DDP also needs a gradient for every parameter."""
    model = tiny(dropout=0.1).train()
    waveforms = torch.randn(3, 16_000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, lengths = model.featurizer(waveforms, torch.tensor([16_000, 12_000, 5_000]))
        out = model(features, lengths)
    assert features.dtype == torch.float32 and out.logits.dtype == torch.bfloat16
    out.logits.float().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.gpu  # skipped without CUDA (tests/conftest.py)
def test_cuda_matches_cpu() -> None:
    model = tiny()
    waveforms = torch.randn(3, 9_000) * 0.1
    lengths = torch.tensor([9_000, 6_000, 2_000])
    with torch.no_grad():
        expected = model(*model.featurizer(waveforms, lengths))
        gpu = model.cuda()
        got = gpu(*gpu.featurizer(waveforms.cuda(), lengths.cuda()))
    torch.testing.assert_close(got.logits.cpu(), expected.logits, rtol=1e-3, atol=1e-3)
    assert got.lengths.tolist() == expected.lengths.tolist()


def test_config_round_trip_and_transfer_layers() -> None:
    model = tiny(dropout=0.2)
    stored = json.loads(json.dumps(model_config_to_dict(model.config)))
    assert stored["architecture"] == "conformer" and "conformer" in architectures()
    rebuilt = build_model(model_config_from_dict(stored))
    rebuilt.load_state_dict(model.state_dict())
    features = torch.randn(2, 23, 80)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(features).logits, model(features).logits)
    assert model.transfer_layers == ("subsampling", "blocks.0", "blocks.1", "head")
    modules = dict(model.named_modules())
    assert all(name in modules for name in model.transfer_layers)


# --- training ----------------------------------------------------------------------------------------------


def test_trains_with_the_real_trainer(trained: Path) -> None:
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[1]["dev_loss"] < metrics[0]["dev_loss"]
    model, alphabet = load_trained_model(trained)
    assert isinstance(model, Conformer) and alphabet == ITALIAN
    assert model.config.d_model == 32 and model.config.n_layers == 2  # the tiny preset with d_model set


def test_resume_continues_exactly_where_it_stopped(
    trained: Path, sample_corpus: Path, tmp_path: Path
) -> None:
    train(options(sample_corpus, tmp_path, epochs=1), ITALIAN)
    resumed = train(options(sample_corpus, tmp_path, epochs=2), ITALIAN)
    assert resumed.epochs_completed == 2
    straight = load_checkpoint(trained / LAST)
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6)
    assert load_checkpoint(tmp_path / LAST)["train_state"]["step"] == straight["train_state"]["step"]


def test_transfer_keeps_all_but_the_dropped_blocks(
    trained: Path, sample_corpus: Path, tmp_path: Path
) -> None:
    source = load_checkpoint(trained / BEST_DEV)["model"]
    started = train(
        options(
            sample_corpus,
            tmp_path / "a",
            load_checkpoint_dir=trained,
            drop_source_layers=2,
            max_steps_per_epoch=0,
        ),
        ITALIAN,
    ).model.state_dict()
    for key, value in source.items():
        kept = not key.startswith(("blocks.1.", "head."))
        assert torch.equal(started[key], value) == kept, key
    with pytest.raises(DsitaError, match="a deepspeech checkpoint cannot start a conformer model"):
        train(options(sample_corpus, tmp_path / "b", load_checkpoint_dir=SMALL_DEEPSPEECH), ITALIAN)


def test_a_tensorflow_checkpoint_cannot_start_a_conformer(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(DsitaError, match="MODEL=conformer") as error:
        ensure_dsita_checkpoint(TF_CHECKPOINT, tmp_path / "converted", 16, architecture="conformer")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "converted").exists()
    check_transfer_source(TF_CHECKPOINT, "deepspeech")  # the converter's own architecture
    check_transfer_source(trained, "conformer")
    assert (
        ensure_dsita_checkpoint(trained, tmp_path / "unused", 16, architecture="conformer")
        == trained / BEST_DEV
    )


def test_the_train_command_takes_the_model_flags(sample_corpus: Path, tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", read_csv(sample_corpus / "train.csv")[:16])
    args = [
        "train", "--model", "conformer", "--model-size", "tiny", "--train-files", str(tmp_path / "train.csv"),
        "--dev-files", str(sample_corpus / "dev.csv"), "--test-files", str(tmp_path / "none.csv"),
        "--checkpoint-dir", str(tmp_path / "ckpt"), "--workers", "0",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"EPOCHS": "1", "BATCH_SIZE": "8", "DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    model, _ = load_trained_model(tmp_path / "ckpt")
    assert model.config == new_model_config("conformer", N_OUTPUTS, "tiny")
    assert "MODEL=conformer\nMODEL_SIZE=tiny\n" in (tmp_path / "ckpt" / "settings.env").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ddp_worker(rank: int, world: int, train_options: TrainOptions, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(train_options, ITALIAN, Distributed(rank, world, rank))
    torch.save(result.model.state_dict(), out / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_weights(sample_corpus: Path, tmp_path: Path) -> None:
    ddp = options(sample_corpus, tmp_path / "ckpt", epochs=1, batch_size=4, max_train_clips=16)
    mp.spawn(ddp_worker, args=(2, ddp, free_port(), tmp_path), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    saved = load_checkpoint(tmp_path / "ckpt" / LAST)
    assert saved["train_state"]["step"] == 2  # each rank trained 2 of the 4 batches
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]) and torch.equal(value, saved["model"][key]), key


# --- export and inference ----------------------------------------------------------------------------------


def test_fp32_graph_matches_torch_with_dynamic_batch_and_time(release: Path, writer: Path) -> None:
    fp32_package = open_package(release / RELEASE_FP32)  # unpacked while it is referenced
    fp32 = fp32_package.model_path
    graph_proto = onnx.load(fp32)
    dims = [
        [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph_proto.graph.input
    ]
    assert [i.name for i in graph_proto.graph.input] == [INPUT, LENGTHS_IN]
    assert dims == [["batch", "time", 80], ["batch"]]
    meta = {p.key: p.value for p in graph_proto.metadata_props}
    assert meta["architecture"] == "conformer" and meta["features"] == "log_mel"
    assert {k: json.loads(meta[k]) if k != "features" and k != "normalization" else meta[k]
            for k in feature_metadata("log_mel")} == feature_metadata("log_mel")  # fmt: skip
    model, _ = load_trained_model(writer)
    graph = onnx_graph(model)
    assert isinstance(graph, SegmentGraph)
    for batch, steps in ((1, 5), (4, 123)):
        assert parity_error(graph, fp32, batch, steps) < 1e-4


def test_int8_graph_runs_close_to_fp32(release: Path, test_clips: list[Path]) -> None:
    int8_package, fp32_package = open_package(release / RELEASE_ZIP), open_package(release / RELEASE_FP32)
    int8, fp32 = int8_package.model_path, fp32_package.model_path
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


def test_torch_free_inference_computes_what_torch_computes(
    release: Path, writer: Path, test_clips: list[Path]
) -> None:
    speech = load_package(release / RELEASE_FP32, InferenceOptions(use_lm=False))
    assert not speech.streaming and speech.decoding == "greedy"
    model, alphabet = load_trained_model(writer)
    for clip in test_clips[:3]:
        audio = load_audio(clip)
        with torch.no_grad():
            expected = model(*model.featurizer(torch.from_numpy(audio)[None])).logits[0].numpy()
        got = speech.run_segment(speech.featurizer.features(audio))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        assert speech.transcribe_segment(audio).text == greedy_text(expected, alphabet) != ""
    assert speech.transcribe(np.zeros(100, dtype=np.float32)).text == ""  # too short for one frame


def test_long_audio_is_cut_in_pauses_and_streamed_in_windows(release: Path, test_clips: list[Path]) -> None:
    vad = VadOptions(min_pause_s=0.6, min_segment_s=1.0, relax_after_s=6.0, max_segment_s=8.0)
    speech = load_package(release / RELEASE_ZIP, InferenceOptions(use_lm=False, vad=vad))
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([piece for clip in test_clips[:8] for piece in (load_audio(clip), silence)])
    segments = list(vad_segments([audio], vad))
    assert len(segments) >= 4
    offsets = np.r_[0, np.cumsum([s.size for s in segments])[:-1]] / SAMPLE_RATE
    expected = Transcript.join(
        speech.transcribe_segment(segment).shifted(offset)
        for segment, offset in zip(segments, offsets, strict=True)
    )
    got = speech.transcribe(audio)
    assert got == expected and len(got.words) >= len(segments)
    assert [w.start for w in got.words] == sorted(w.start for w in got.words)

    def streamed(model: SpeechModel, seed: int) -> tuple[Transcript, list[str]]:
        rng, stream, at, partials = np.random.default_rng(seed), model.stream(), 0, []
        while at < audio.size:
            size = int(rng.integers(300, 9000))
            stream.feed(audio[at : at + size])
            partials.append(stream.intermediate().text)
            at += size
        return stream.finish(), partials

    # Windows wider than any segment see whole segments: the stream computes what transcribe() does.
    wide = ChunkOptions(chunk_steps=8, left_steps=1000, right_steps=1000)
    assert (
        streamed(SpeechModel(speech.package, dataclasses.replace(speech.options, chunks=wide)), 0)[0] == got
    )
    # The default windows (2.56 s left, 0.64 s right context): partials as the audio comes, words in order
    # and inside the audio, letters close to the whole segments' (the cost is measured in BENCHMARKS.md).
    windowed, partials = streamed(speech, 1)
    assert windowed.text and windowed != got and sum(map(bool, partials)) > len(partials) // 2
    assert [w.start for w in windowed.words] == sorted(w.start for w in windowed.words)
    assert windowed.words[0].start >= 0 and windowed.words[-1].end <= audio.size / SAMPLE_RATE + 0.04
    assert jiwer.cer(got.text, windowed.text) < 0.5
    assert streamed(speech, 2)[0] == windowed  # however the audio is cut into pieces


def test_stream_windows_compute_each_step_once_from_its_own_window(
    release: Path, test_clips: list[Path]
) -> None:
    speech = load_package(release / RELEASE_FP32, InferenceOptions(use_lm=False))
    audio = np.concatenate([load_audio(clip) for clip in test_clips[:3]])
    options = ChunkOptions(chunk_steps=16, left_steps=32, right_steps=8)
    rng, windows, at, logits = np.random.default_rng(0), WindowedLogits(speech, options, N_OUTPUTS), 0, []
    while at < audio.size:
        size = int(rng.integers(100, 6000))
        logits.append(windows.push(audio[at : at + size]))
        at += size
    streamed = np.concatenate([*logits, windows.close()])
    whole = speech.window_logits(audio)
    assert streamed.shape == whole.shape == (output_steps(audio.size), N_OUTPUTS)
    # Chunk 3 (steps 48-63) comes from steps 16-71 computed as a segment of their own: 640 samples a step.
    window = speech.window_logits(audio[16 * 640 : 72 * 640 + 240])
    np.testing.assert_array_equal(streamed[48:64], window[32:48])
    assert not np.allclose(streamed[48:64], whole[48:64])  # the price of limited context
    # A segment no longer than a window is computed as a whole.
    short = audio[: 20 * 640]
    one = WindowedLogits(speech, options, N_OUTPUTS)
    np.testing.assert_array_equal(np.concatenate([one.push(short), one.close()]), speech.window_logits(short))
    with pytest.raises(DsitaError, match="conformer streaming needs chunk_steps >= 1"):
        ChunkOptions(chunk_steps=0)


@pytest.mark.parametrize("use_lm", [False, True])
def test_word_times_count_the_conformers_40_ms_steps(
    release: Path, test_clips: list[Path], use_lm: bool
) -> None:
    speech = load_package(release / RELEASE_ZIP, InferenceOptions(use_lm=use_lm, beam_width=16))
    assert speech.step_seconds == pytest.approx(0.04)
    # Logits that say "a" on steps 10 to 12 and blank elsewhere: the word spans steps 10-13, 0.40-0.52 s.
    logits = np.full((30, len(speech.alphabet) + 1), -10.0, dtype=np.float32)
    logits[:, speech.alphabet.blank_index] = 0.0
    logits[10:13, speech.alphabet.blank_index] = -10.0
    logits[10:13, speech.alphabet.encode("a")[0]] = 0.0
    if not use_lm:
        (word,) = speech.decoder.decode(logits).words
        assert (word.word, word.start, word.end) == ("a", pytest.approx(0.40), pytest.approx(0.52))
    # On real audio the last word ends within the clip, and past its first half (20 ms steps would halve it).
    audio = load_audio(test_clips[0])
    words = speech.transcribe(audio).words
    duration = audio.size / SAMPLE_RATE
    assert words and duration / 2 < words[-1].end <= duration + 0.04


def test_beam_search_with_the_packaged_scorer(release: Path, test_clips: list[Path]) -> None:
    speech = load_package(release / RELEASE_ZIP, InferenceOptions(beam_width=16))
    assert speech.decoding.startswith("beam search (width 16")
    vocabulary = set(speech.decoder.beam.scorer.vocabulary())  # type: ignore[attr-defined]
    for clip in test_clips[:3]:
        transcript = speech.transcribe(clip)
        assert transcript.text and set(transcript.text.split()) <= vocabulary
        assert [w.word for w in transcript.words] == transcript.text.split()


def test_evaluation_decodes_greedy_and_with_the_lm(
    trained: Path, sample_corpus: Path, sample_scorer: Path
) -> None:
    model, alphabet = load_trained_model(trained)
    samples = load_samples([sample_corpus / "test.csv"], alphabet)[:8]
    logits = model_logits(model, samples, alphabet, torch.device("cpu"))
    frames = [NumpyLogMel().features(load_audio(s.wav_path)).shape[0] for s in samples]
    assert [len(x) for x in logits] == [-(-n // 4) for n in frames]
    greedy = evaluate_logits(samples, logits, BatchDecoder(alphabet))
    with BatchDecoder(alphabet, load_scorer(sample_scorer), 1) as decoder:
        with_lm = evaluate_logits(samples, logits, decoder)
    assert greedy.decoder == "greedy" and with_lm.decoder.startswith("beam search")
    assert len(with_lm.samples) == len(samples)


def test_inference_needs_no_torch(release: Path, test_clips: list[Path]) -> None:
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "import dsita\n"
        f"print(dsita.load_model({str(release / RELEASE_ZIP)!r}).transcribe({str(test_clips[0])!r}).text)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --- the pipeline ------------------------------------------------------------------------------------------


def dsita_run(data_dir: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`dsita --env-file env_files/fast_dev.env run ARGS` with the settings given, as `make demo` runs it."""
    names = {name for field in Settings.model_fields for name in Settings.field_env_names(field)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env |= {"OMP_NUM_THREADS": "1", "COLUMNS": "200", "KENLM_BIN": str(REPO / ".cache" / "kenlm" / "bin")}
    env |= {"DATA_DIR": str(data_dir), **settings}
    fast_dev = REPO / "env_files" / "fast_dev.env"
    command = [sys.executable, "-m", "dsita.cli", "--env-file", str(fast_dev), "run", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_dsita_run_trains_tests_and_ships_a_conformer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = dsita_run(data_dir, MODEL="conformer")
    assert first.returncode == 0, first.stdout + first.stderr
    steps = json.loads((data_dir / "dsita-run.json").read_text())["steps"]
    report = steps["train"]["report"]
    assert report["architecture"] == "conformer" and report["d_model"] == 48  # FAST_TRAIN's tiny preset
    assert json.loads((data_dir / "checkpoints" / "test_report_lm.json").read_text())["samples"]
    speech = load_package(data_dir / RELEASE_ZIP)
    assert isinstance(speech, SpeechModel) and speech.decoding.startswith("beam search")
    speech.transcribe(read_csv(data_dir / "extracted" / "test.csv")[0].wav_path)

    # Another architecture does not resume this run: the step says what is there and what was asked.
    other = dsita_run(data_dir, "--steps", "train", MODEL="deepspeech")
    assert other.returncode == 2
    message = other.stderr.strip().splitlines()[-1]
    assert (
        "holds a run of conformer with" in message
        and "this run trains deepspeech with n_hidden=64" in message
    )

    # A DeepSpeech TensorFlow checkpoint cannot start a conformer: refused before anything is imported.
    refused = dsita_run(
        tmp_path / "transfer",
        MODEL="conformer",
        TRANSFER_LEARNING="1",
        TRANSFER_CHECKPOINT_DIR=str(TF_CHECKPOINT),
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        "step checks" in refused.stderr.splitlines()[-1]
        and "MODEL=conformer" in refused.stderr.splitlines()[-1]
    )
    assert sorted(p.name for p in (tmp_path / "transfer").iterdir()) == ["logs"]
