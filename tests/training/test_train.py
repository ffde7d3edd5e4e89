"""Real training steps on tiny DeepSpeech models: checkpoints, resume, early stop, bad batches, transfer."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dsita.data.augmentation.options import AugmentOptions
from dsita.data.csvs import Sample, read_csv, write_csv
from dsita.data.dataset import Batch
from dsita.errors import DsitaError
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import normalize
from dsita.training.checkpoint import BEST_DEV, LAST, load_checkpoint, load_trained_model
from dsita.training.loop import TrainOptions, ctc_loss, train

ITALIAN = Alphabet.italian()


def options(corpus: Path, checkpoint_dir: Path, **overrides: object) -> TrainOptions:
    base = TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=checkpoint_dir,
        batch_size=8,
        epochs=2,
        learning_rate=1e-3,
        model_fields={"n_hidden": 32, "dropout": 0.1},
        workers=0,
        max_train_clips=48,
        max_dev_clips=8,
        show_progress=False,
        device="cpu",  # the CPU even on a GPU machine: these tests compare runs exactly
        settings_env="BATCH_SIZE=8\n",
    )
    return dataclasses.replace(base, **overrides)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_writes_checkpoints_metrics_and_settings(sample_corpus: Path, tmp_path: Path) -> None:
    result = train(options(sample_corpus, tmp_path, epochs=3, max_to_keep=2), ITALIAN)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [BEST_DEV, "epoch-0002.pt", "epoch-0003.pt", LAST, "metrics.jsonl", "settings.env"]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert all(m["audio_seconds_per_second"] > 0 for m in metrics)
    assert (tmp_path / "settings.env").read_text() == "BATCH_SIZE=8\n"
    assert result.best_dev_loss == min(m["dev_loss"] for m in metrics)
    model, alphabet = load_trained_model(tmp_path)
    assert alphabet == ITALIAN and model.config.n_hidden == 32


def test_resume_continues_exactly_where_it_stopped(sample_corpus: Path, tmp_path: Path) -> None:
    straight = train(options(sample_corpus, tmp_path / "straight", epochs=2), ITALIAN)
    train(options(sample_corpus, tmp_path / "split", epochs=1), ITALIAN)
    resumed = train(options(sample_corpus, tmp_path / "split", epochs=2), ITALIAN)
    assert resumed.epochs_completed == 2
    for key, value in weights(straight.model).items():
        torch.testing.assert_close(weights(resumed.model)[key], value, rtol=0, atol=1e-6)
    state = load_checkpoint(tmp_path / "split" / LAST)
    assert (
        state["train_state"]["step"] == load_checkpoint(tmp_path / "straight" / LAST)["train_state"]["step"]
    )


def test_early_stop_after_es_epochs_without_improvement(sample_corpus: Path, tmp_path: Path) -> None:
    # Only the first epoch can beat an infinite best; a huge minimum delta makes later ones never count.
    result = train(options(sample_corpus, tmp_path, epochs=5, es_epochs=2, es_min_delta=1e9), ITALIAN)
    assert result.stopped_early and result.epochs_completed == 3


def test_clips_their_output_steps_cannot_spell_are_left_out_and_named(
    sample_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = read_csv(sample_corpus / "train.csv")[:16]
    # A transcript far longer than the clip's output steps has zero CTC probability: an infinite loss.
    impossible = Sample(good[0].wav_path, good[0].wav_filesize, "a" * 2000, good[0].duration)
    write_csv(tmp_path / "mixed.csv", [*good, impossible])
    caplog.set_level("WARNING", logger="dsita.training")
    train(options(sample_corpus, tmp_path / "ckpt", train_csvs=(tmp_path / "mixed.csv",), epochs=1), ITALIAN)
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
        options(
            sample_corpus, tmp_path / "ckpt", train_csvs=(tmp_path / "mixed.csv",), batch_size=1, epochs=1
        ),
        ITALIAN,
    )
    assert "non-finite loss" in caplog.text and str(broken.wav_path) in caplog.text
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())
    metrics = json.loads((tmp_path / "ckpt" / "metrics.jsonl").read_text())
    assert metrics["skipped_batches"] == 1
    with pytest.raises(DsitaError, match="non-finite"):
        train(options(sample_corpus, tmp_path / "bad", train_csvs=(tmp_path / "bad.csv",), epochs=1), ITALIAN)


def test_transfer_learning_drops_layers_only_on_a_fresh_start(sample_corpus: Path, tmp_path: Path) -> None:
    source = train(options(sample_corpus, tmp_path / "source", epochs=1), ITALIAN).model
    target_opts = options(
        sample_corpus,
        tmp_path / "target",
        epochs=1,
        load_checkpoint_dir=tmp_path / "source",
        drop_source_layers=2,
    )
    first = train(dataclasses.replace(target_opts, max_steps_per_epoch=0), ITALIAN).model
    # With no training step, kept layers equal the source and dropped ones (layer_5, layer_6) do not.
    assert torch.equal(first.layer_1.weight, source.layer_1.weight)
    assert torch.equal(first.lstm.weight_hh_l0, source.lstm.weight_hh_l0)
    assert not torch.equal(first.layer_5.weight, source.layer_5.weight)
    assert not torch.equal(first.layer_6.weight, source.layer_6.weight)
    # Resuming the transfer run must not re-initialise anything: it starts from its own checkpoint.
    resumed = train(dataclasses.replace(target_opts, epochs=2, max_steps_per_epoch=0), ITALIAN).model
    assert torch.equal(resumed.layer_6.weight, first.layer_6.weight)


def test_transfer_to_another_alphabet_needs_dropped_output_layer(sample_corpus: Path, tmp_path: Path) -> None:
    english = Alphabet.english()
    for split in ("train", "dev"):
        rows = read_csv(sample_corpus / f"{split}.csv")[:16]
        write_csv(
            tmp_path / f"{split}.csv",
            [dataclasses.replace(r, transcript=normalize(r.transcript, english)) for r in rows],
        )
    english_opts = options(tmp_path, tmp_path / "english", epochs=1, max_steps_per_epoch=1)
    train(english_opts, english)
    with pytest.raises(DsitaError, match=r"layer_6\.weight: source \(29, 32\), model \(39, 32\)"):
        train(
            options(
                sample_corpus, tmp_path / "it", load_checkpoint_dir=tmp_path / "english", drop_source_layers=0
            ),
            ITALIAN,
        )
    train(
        options(
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
    plain = train(options(sample_corpus, tmp_path / "plain", epochs=1), ITALIAN).model
    cached_opts = options(sample_corpus, tmp_path / "cached", epochs=1, feature_cache=tmp_path / "features")
    cached = train(cached_opts, ITALIAN).model
    assert len(list((tmp_path / "features").glob("*.pt"))) == 48 + 8  # every train and dev clip, once
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[key], value, rtol=0, atol=1e-5)
    again = train(dataclasses.replace(cached_opts, checkpoint_dir=tmp_path / "again"), ITALIAN).model
    assert torch.equal(again.layer_6.weight, cached.layer_6.weight)


def test_augmentation_trains_and_changes_the_result(sample_corpus: Path, tmp_path: Path) -> None:
    plain = train(options(sample_corpus, tmp_path / "plain", epochs=1), ITALIAN)
    augmented = train(
        options(sample_corpus, tmp_path / "aug", epochs=1, augment=AugmentOptions(speed=0.5, spec_augment=1)),
        ITALIAN,
    )
    assert not torch.equal(plain.model.layer_6.weight, augmented.model.layer_6.weight)
    # Dev is never augmented: the same weights give the same dev loss through the unaugmented dev set.
    assert augmented.best_dev_loss == pytest.approx(
        json.loads((tmp_path / "aug" / "metrics.jsonl").read_text())["dev_loss"]
    )


def test_reduce_lr_on_plateau_lowers_the_rate_when_dev_stalls(sample_corpus: Path, tmp_path: Path) -> None:
    # A vanishing learning rate leaves the dev loss flat, which the scheduler must treat as a plateau.
    opts = options(
        sample_corpus, tmp_path, epochs=3, learning_rate=1e-6, reduce_lr_on_plateau=True, plateau_epochs=1
    )
    train(opts, ITALIAN)
    rates = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rates[0] == pytest.approx(1e-6) and rates[-1] < rates[0]
