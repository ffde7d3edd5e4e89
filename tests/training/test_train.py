"""Real training steps on tiny models: checkpoints, resume and transfer for every registered architecture;
early stop, bad batches, caches and schedules on DeepSpeech; the command line's model flags."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from dsita.cli import app
from dsita.data.augmentation.options import AugmentOptions
from dsita.data.csvs import Sample, read_csv, write_csv
from dsita.data.dataset import Batch
from dsita.errors import DsitaError
from dsita.model import architectures, new_model_config
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import normalize
from dsita.training.checkpoint import BEST_DEV, LAST, load_checkpoint, load_trained_model
from dsita.training.loop import ctc_loss, train
from tests.architectures import ITALIAN, N_OUTPUTS, tiny_train_options


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("architecture", architectures())
def test_training_writes_checkpoints_metrics_and_settings(
    architecture: str, trained_tiny: Callable[[str], Path], sample_corpus: Path
) -> None:
    folder = trained_tiny(architecture)  # three epochs, the last two epochs' checkpoints kept
    names = sorted(p.name for p in folder.iterdir())
    assert names == [BEST_DEV, "epoch-0002.pt", "epoch-0003.pt", LAST, "metrics.jsonl", "settings.env"]
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for loss in ("train_loss", "dev_loss"):
        assert metrics[1][loss] < metrics[0][loss] and metrics[-1][loss] < metrics[0][loss], loss
    assert all(m["audio_seconds_per_second"] > 0 for m in metrics)
    assert (folder / "settings.env").read_text() == "BATCH_SIZE=8\n"
    best_dev_loss = load_checkpoint(folder / LAST)["train_state"]["best_dev_loss"]
    assert best_dev_loss == min(m["dev_loss"] for m in metrics)
    model, alphabet = load_trained_model(folder)
    options = tiny_train_options(sample_corpus, folder, architecture)
    size, fields = options.model_size, options.model_fields
    assert alphabet == ITALIAN and architecture == model.config.ARCHITECTURE
    assert model.config == new_model_config(architecture, N_OUTPUTS, size, **fields)
    assert all(getattr(model.config, field) == value for field, value in options.model_fields.items())


@pytest.mark.parametrize("architecture", architectures())
def test_resume_continues_exactly_where_it_stopped(
    architecture: str, trained_tiny: Callable[[str], Path], sample_corpus: Path, tmp_path: Path
) -> None:
    train(tiny_train_options(sample_corpus, tmp_path, architecture, epochs=1), ITALIAN)
    resumed = train(tiny_train_options(sample_corpus, tmp_path, architecture, epochs=3), ITALIAN)
    assert resumed.epochs_completed == 3
    straight = load_checkpoint(trained_tiny(architecture) / LAST)  # three epochs in one run
    for key, value in straight["model"].items():
        torch.testing.assert_close(weights(resumed.model)[key], value, rtol=0, atol=1e-6)
    assert load_checkpoint(tmp_path / LAST)["train_state"]["step"] == straight["train_state"]["step"]


def test_early_stop_after_es_epochs_without_improvement(sample_corpus: Path, tmp_path: Path) -> None:
    # Only the first epoch can beat an infinite best; a huge minimum delta makes later ones never count.
    result = train(
        tiny_train_options(sample_corpus, tmp_path, epochs=5, es_epochs=2, es_min_delta=1e9), ITALIAN
    )
    assert result.stopped_early and result.epochs_completed == 3


def test_clips_their_output_steps_cannot_spell_are_left_out_and_named(
    sample_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = read_csv(sample_corpus / "train.csv")[:16]
    # A transcript far longer than the clip's output steps has zero CTC probability: an infinite loss.
    impossible = Sample(good[0].wav_path, good[0].wav_filesize, "a" * 2000, good[0].duration)
    write_csv(tmp_path / "mixed.csv", [*good, impossible])
    caplog.set_level("WARNING", logger="dsita.training")
    train(
        tiny_train_options(sample_corpus, tmp_path / "ckpt", train_csvs=(tmp_path / "mixed.csv",), epochs=1),
        ITALIAN,
    )
    assert "1 train clips are too short for their transcripts" in caplog.text
    assert json.loads((tmp_path / "ckpt" / "metrics.jsonl").read_text())["skipped_batches"] == 0


def test_an_unspellable_item_costs_its_batch_nothing() -> None:
    # Two items, the second asking for more labels than it has steps: its loss counts as 0, not infinity.
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5, requires_grad=True)
    targets, target_lengths = torch.tensor([1, 2, 1, 2, 3, 1, 2, 3, 1]), torch.tensor([2, 7])
    batch = Batch(torch.zeros(2, 1), torch.tensor([6, 6]), targets, target_lengths, [0, 1], False)
    loss = ctc_loss(logits, torch.tensor([6, 6]), batch, blank=4)
    alone = Batch(torch.zeros(1, 1), torch.tensor([6]), targets[:2], target_lengths[:1], [0], False)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(ctc_loss(logits[:1], torch.tensor([6]), alone, blank=4).item() / 2)
    loss.backward()
    assert torch.all(logits.grad[1] == 0)


def test_non_finite_batches_are_skipped_and_logged(
    sample_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = read_csv(sample_corpus / "train.csv")[:16]
    # Float audio with NaN in it (our importers write PCM, but a CSV can point anywhere): a NaN loss.
    audio, rate = sf.read(good[0].wav_path, dtype="float32")
    audio[::7] = np.nan
    sf.write(tmp_path / "nan.wav", audio, rate, subtype="FLOAT")
    broken = Sample(
        tmp_path / "nan.wav", (tmp_path / "nan.wav").stat().st_size, good[0].transcript, good[0].duration
    )
    write_csv(tmp_path / "mixed.csv", [*good, broken])
    write_csv(tmp_path / "bad.csv", [broken])
    caplog.set_level("WARNING", logger="dsita.training")
    result = train(
        tiny_train_options(
            sample_corpus, tmp_path / "ckpt", train_csvs=(tmp_path / "mixed.csv",), batch_size=1, epochs=1
        ),
        ITALIAN,
    )
    assert "non-finite loss" in caplog.text and str(broken.wav_path) in caplog.text
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())
    metrics = json.loads((tmp_path / "ckpt" / "metrics.jsonl").read_text())
    assert metrics["skipped_batches"] == 1
    with pytest.raises(DsitaError, match="non-finite"):
        train(
            tiny_train_options(sample_corpus, tmp_path / "bad", train_csvs=(tmp_path / "bad.csv",), epochs=1),
            ITALIAN,
        )


@pytest.mark.parametrize("architecture", architectures())
def test_transfer_learning_drops_layers_only_on_a_fresh_start(
    architecture: str, trained_tiny: Callable[[str], Path], sample_corpus: Path, tmp_path: Path
) -> None:
    source_dir = trained_tiny(architecture)
    source = load_checkpoint(source_dir / BEST_DEV)["model"]
    target_opts = tiny_train_options(
        sample_corpus, tmp_path, architecture, epochs=1, load_checkpoint_dir=source_dir, drop_source_layers=2
    )
    started = train(dataclasses.replace(target_opts, max_steps_per_epoch=0), ITALIAN).model
    first = weights(started)
    # With no training step, kept layers equal the source and the last two transfer layers do not.
    dropped = tuple(f"{name}." for name in started.transfer_layers[-2:])
    for key, value in source.items():
        assert torch.equal(first[key], value) == (not key.startswith(dropped)), key
    # Resuming the transfer run must not re-initialise anything: it starts from its own checkpoint.
    resumed = train(dataclasses.replace(target_opts, epochs=2, max_steps_per_epoch=0), ITALIAN).model
    for key, value in first.items():
        assert torch.equal(weights(resumed)[key], value), key


@pytest.mark.parametrize("architecture", architectures())
def test_a_checkpoint_of_another_architecture_cannot_start_a_model(
    architecture: str, trained_tiny: Callable[[str], Path], sample_corpus: Path, tmp_path: Path
) -> None:
    other = next(name for name in architectures() if name != architecture)
    source = trained_tiny(other) / BEST_DEV
    options = tiny_train_options(sample_corpus, tmp_path, architecture, load_checkpoint_dir=source)
    with pytest.raises(DsitaError, match=f"a {other} checkpoint cannot start a {architecture} model"):
        train(options, ITALIAN)


def test_transfer_to_another_alphabet_needs_dropped_output_layer(sample_corpus: Path, tmp_path: Path) -> None:
    english = Alphabet.english()
    for split in ("train", "dev"):
        rows = read_csv(sample_corpus / f"{split}.csv")[:16]
        write_csv(
            tmp_path / f"{split}.csv",
            [dataclasses.replace(r, transcript=normalize(r.transcript, english)) for r in rows],
        )
    english_opts = tiny_train_options(tmp_path, tmp_path / "english", epochs=1, max_steps_per_epoch=1)
    train(english_opts, english)
    with pytest.raises(DsitaError, match=r"layer_6\.weight: source \(29, 32\), model \(39, 32\)"):
        train(
            tiny_train_options(
                sample_corpus, tmp_path / "it", load_checkpoint_dir=tmp_path / "english", drop_source_layers=0
            ),
            ITALIAN,
        )
    train(
        tiny_train_options(
            sample_corpus,
            tmp_path / "it1",
            load_checkpoint_dir=tmp_path / "english",
            drop_source_layers=1,
            epochs=1,
        ),
        ITALIAN,
    )


def test_checkpoints_refuse_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    torch.save({"format_version": 1, "evil": Evil()}, tmp_path / "last.pt")
    with pytest.raises(DsitaError, match="not a readable dsita checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dsita.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_the_mid_epoch_checkpoint(sample_corpus: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    write_csv(tmp_path / "train.csv", read_csv(sample_corpus / "train.csv")[:80])
    args = [
        "train", "--train-files", str(tmp_path / "train.csv"), "--dev-files", str(sample_corpus / "dev.csv"),
        "--test-files", str(sample_corpus / "test.csv"), "--checkpoint-dir", str(ckpt), "--workers", "0",
    ]  # fmt: skip
    env = {"BATCH_SIZE": "4", "EPOCHS": "2", "N_HIDDEN": "128", "CHECKPOINT_SECS": "1", "COLUMNS": "200"}
    process = run_cli(args, env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (ckpt / LAST).exists() and load_checkpoint(ckpt / LAST)["train_state"]["batch_in_epoch"] > 0:
            # Freeze the trainer, then look again: the epoch may have ended (batch 0) since the last look.
            process.send_signal(signal.SIGSTOP)
            if load_checkpoint(ckpt / LAST)["train_state"]["batch_in_epoch"] > 0:
                break
            process.send_signal(signal.SIGCONT)
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = load_checkpoint(ckpt / LAST)["train_state"]
    # 20 batches an epoch: batch 20 is the state saved after the last batch, before the end-of-epoch one.
    assert 0 < saved["batch_in_epoch"] <= 20, "the kill must land mid-epoch"
    resumed = run_cli(args, env)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert f"epoch {saved['epoch'] + 1}, batch {saved['batch_in_epoch']}" in output
    final = load_checkpoint(ckpt / LAST)["train_state"]
    assert final["epoch"] == 2 and final["step"] == 40
    assert "test WER" in output and (ckpt / "test_report_greedy.json").is_file()


def test_feature_cache_gives_the_same_training_as_on_the_fly_features(
    sample_corpus: Path, tmp_path: Path
) -> None:
    plain = train(tiny_train_options(sample_corpus, tmp_path / "plain", epochs=1), ITALIAN).model
    cached_opts = tiny_train_options(
        sample_corpus, tmp_path / "cached", epochs=1, feature_cache=tmp_path / "features"
    )
    cached = train(cached_opts, ITALIAN).model
    assert len(list((tmp_path / "features").glob("*.pt"))) == 48 + 8  # every train and dev clip, once
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[key], value, rtol=0, atol=1e-5)
    again = train(dataclasses.replace(cached_opts, checkpoint_dir=tmp_path / "again"), ITALIAN).model
    assert torch.equal(again.layer_6.weight, cached.layer_6.weight)


def test_augmentation_trains_and_changes_the_result(sample_corpus: Path, tmp_path: Path) -> None:
    plain = train(tiny_train_options(sample_corpus, tmp_path / "plain", epochs=1), ITALIAN)
    augmented = train(
        tiny_train_options(
            sample_corpus, tmp_path / "aug", epochs=1, augment=AugmentOptions(speed=0.5, spec_augment=1)
        ),
        ITALIAN,
    )
    assert not torch.equal(plain.model.layer_6.weight, augmented.model.layer_6.weight)
    # Dev is never augmented: the same weights give the same dev loss through the unaugmented dev set.
    assert augmented.best_dev_loss == pytest.approx(
        json.loads((tmp_path / "aug" / "metrics.jsonl").read_text())["dev_loss"]
    )


def test_reduce_lr_on_plateau_lowers_the_rate_when_dev_stalls(sample_corpus: Path, tmp_path: Path) -> None:
    # A vanishing learning rate leaves the dev loss flat, which the scheduler must treat as a plateau.
    opts = tiny_train_options(
        sample_corpus, tmp_path, epochs=3, learning_rate=1e-6, reduce_lr_on_plateau=True, plateau_epochs=1
    )
    train(opts, ITALIAN)
    rates = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rates[0] == pytest.approx(1e-6) and rates[-1] < rates[0]


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
