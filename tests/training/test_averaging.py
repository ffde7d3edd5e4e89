"""Checkpoint averaging (AVERAGE_CHECKPOINTS): the mean of the last epochs' weights, kept as best_dev.pt only
when its dev loss is the lowest, on real training runs of a tiny DeepSpeech model."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from dsita.errors import DsitaError
from dsita.model.base import build_model, model_config_from_dict
from dsita.text.alphabet import Alphabet
from dsita.training.averaging import average_state_dicts, last_epoch_checkpoints
from dsita.training.checkpoint import BEST_DEV, load_checkpoint, load_trained_model
from dsita.training.data import load_training_data
from dsita.training.loop import (
    Distributed,
    TrainOptions,
    average_last_epochs,
    dataset_loss,
    start_or_resume,
    train,
)

ITALIAN = Alphabet.italian()
CPU = torch.device("cpu")


def options(corpus: Path, checkpoint_dir: Path, **overrides: object) -> TrainOptions:
    base = TrainOptions(
        train_csvs=(corpus / "train.csv",),
        dev_csvs=(corpus / "dev.csv",),
        checkpoint_dir=checkpoint_dir,
        batch_size=8,
        epochs=3,
        learning_rate=1e-3,
        model_fields={"n_hidden": 32, "dropout": 0.0},
        workers=0,
        max_steps_per_epoch=3,
        max_train_clips=48,
        max_dev_clips=8,
        max_to_keep=1,
        average_checkpoints=3,
        early_stop=False,
        show_progress=False,
        device="cpu",
    )
    return dataclasses.replace(base, **overrides)


def records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_average_state_dicts_is_the_mean_in_each_dtype_and_keeps_counters() -> None:
    states = [
        {"w": torch.tensor([1.0, 2.0]), "h": torch.tensor([1.0], dtype=torch.float16), "n": torch.tensor(3)},
        {"w": torch.tensor([3.0, 6.0]), "h": torch.tensor([2.0], dtype=torch.float16), "n": torch.tensor(7)},
    ]
    mean = average_state_dicts(states)
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0]))
    assert mean["h"].dtype == torch.float16 and float(mean["h"]) == 1.5
    assert int(mean["n"]) == 7  # the newest counter, not a mean
    with pytest.raises(DsitaError, match="'w'"):
        average_state_dicts([states[0], {**states[1], "w": torch.zeros(3)}])


def test_training_averages_the_last_epochs_and_best_dev_is_the_lowest_dev_loss(
    sample_corpus: Path, tmp_path: Path
) -> None:
    run_options = options(sample_corpus, tmp_path)
    result = train(run_options, ITALIAN)
    epochs = [r for r in records(tmp_path) if "epoch" in r]
    (average,) = [r for r in records(tmp_path) if "averaged_epochs" in r]
    # Rotation keeps the epochs averaging reads, though MAX_TO_KEEP is 1.
    assert [p.name for p in last_epoch_checkpoints(tmp_path, 10)] == average["averaged_epochs"]
    assert average["averaged_epochs"] == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt"]
    # The recorded dev loss is that of the mean of the three epochs' weights.
    mean = average_state_dicts([load_checkpoint(tmp_path / n)["model"] for n in average["averaged_epochs"]])
    model = build_model(model_config_from_dict(load_checkpoint(tmp_path / BEST_DEV)["model_config"]))
    model.load_state_dict(mean)
    data = load_training_data(run_options, ITALIAN, model, Distributed(), CPU)
    assert dataset_loss(model, data, CPU, None, Distributed()) == pytest.approx(average["dev_loss"], rel=1e-5)
    # best_dev.pt holds whichever of the epochs and the average has the lowest dev loss.
    lowest = min([e["dev_loss"] for e in epochs] + [average["dev_loss"]])
    assert result.best_dev_loss == pytest.approx(lowest)
    best = load_checkpoint(tmp_path / BEST_DEV)
    assert average["kept_as_best"] == (average["dev_loss"] < min(e["dev_loss"] for e in epochs))
    if average["kept_as_best"]:
        assert best["averaged_epochs"] == average["averaged_epochs"]
        assert all(torch.equal(best["model"][k], v) for k, v in mean.items())
    else:
        assert "averaged_epochs" not in best
    load_trained_model(tmp_path)  # what evaluation and export read


@pytest.mark.parametrize("best_so_far", [math.inf, -math.inf], ids=["average-wins", "an-epoch-wins"])
def test_the_average_replaces_best_dev_only_when_its_dev_loss_is_lower(
    sample_corpus: Path, tmp_path: Path, best_so_far: float
) -> None:
    run_options = options(sample_corpus, tmp_path, average_checkpoints=0, max_to_keep=3)
    train(run_options, ITALIAN)  # three epoch checkpoints, no average yet
    before = load_checkpoint(tmp_path / BEST_DEV)
    averaging = dataclasses.replace(run_options, average_checkpoints=2)
    run = start_or_resume(averaging, ITALIAN, Distributed(), CPU)
    data = load_training_data(averaging, ITALIAN, run.model, Distributed(), CPU)
    run.state.best_dev_loss = best_so_far
    rng = torch.get_rng_state()
    average_last_epochs(run, data)
    assert torch.equal(torch.get_rng_state(), rng)  # the dev pass drew nothing from the training RNG
    (record,) = [r for r in records(tmp_path) if "averaged_epochs" in r]
    assert record["averaged_epochs"] == ["epoch-0002.pt", "epoch-0003.pt"]
    after = load_checkpoint(tmp_path / BEST_DEV)
    if best_so_far == math.inf:
        assert record["kept_as_best"] and run.state.best_dev_loss == record["dev_loss"]
        assert after["averaged_epochs"] == record["averaged_epochs"]
        resumed = load_checkpoint(tmp_path / "last.pt")["train_state"]
        assert resumed["best_dev_loss"] == record["dev_loss"]  # a later epoch must beat the average
    else:
        assert not record["kept_as_best"] and run.state.best_dev_loss == -math.inf
        assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())
