"""The short alpha/beta search `dsita run` makes when they were never tuned: bounded, recorded, and only then.

At LM_ALPHA=0 LM_BETA=0 the LM is off while the lexicon still forces in-vocabulary words, and the test row
"with the LM" read 230 % WER against 108 % greedy.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from dsita.data.csvs import read_csv
from dsita.evaluation.tune import (
    DEEPSPEECH_WEIGHTS,
    RANGE_SEARCH,
    SHORT_SEARCH,
    OptimizeOptions,
    dev_subset,
    optimize_checkpoint,
    short_search,
)
from dsita.lm.scorer import load_scorer, set_defaults
from dsita.pipeline.context import Context
from dsita.pipeline.publish import FAST_TRAIN_SEARCH_TRIALS, short_lm_search
from dsita.pipeline.state import Layout, Manifest
from dsita.settings import Settings

SMALL_MODEL = Path(__file__).parents[1] / "fixtures" / "small_model.pt"


@pytest.fixture()
def data_dir(sample_corpus: Path, sample_scorer: Path, tmp_path: Path) -> Layout:
    """A DATA_DIR after the train step: the sample's dev split, the untuned scorer and the small model."""
    layout = Layout(tmp_path / "data")
    layout.split_csv("dev").parent.mkdir(parents=True)
    shutil.copy2(sample_corpus / "dev.csv", layout.split_csv("dev"))
    (layout.split_csv("dev").parent / "clips").symlink_to(sample_corpus / "clips")
    shutil.copytree(sample_scorer, layout.scorer)
    layout.checkpoints.mkdir(parents=True)
    shutil.copy2(SMALL_MODEL, layout.checkpoints / "best_dev.pt")
    return layout


def context(layout: Layout, **settings: object) -> Context:
    values = Settings(data_dir=layout.root, **settings)
    return Context(values, layout, Manifest(layout), frozenset(), frozenset(), workers=2)


def test_untuned_weights_get_a_short_search_written_into_the_scorer(
    data_dir: Layout, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSITA_PROGRESS_INTERVAL_S", "0")  # a progress line for every trial
    before = load_scorer(data_dir.scorer)
    assert (before.alpha, before.beta, before.tuning) == (0.0, 0.0, None)
    with caplog.at_level(logging.INFO):
        report = short_lm_search(context(data_dir, fast_train=True))
    assert report is not None
    scorer = load_scorer(data_dir.scorer)
    assert (scorer.alpha, scorer.beta) == (report["alpha"], report["beta"]) != (0.0, 0.0)
    assert scorer.tuning is not None and scorer.tuning["search"] == SHORT_SEARCH
    assert scorer.tuning["trials"] == report["trials"] == FAST_TRAIN_SEARCH_TRIALS
    assert scorer.tuning["dev_clips"] == 16  # FAST_TRAIN's MAX_DEV_CLIPS
    assert report["dev_wer_after"] < report["dev_wer_before"]  # the LM off does worse
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith("Alpha and beta were never tuned: a short search on dev (6 trials") for m in messages
    )
    assert any(m.startswith("alpha/beta search: ") for m in messages)  # its progress line

    # A new run of the test step searches again (the study resumes: nothing left to run).
    again = short_lm_search(context(data_dir, fast_train=True))
    assert again is not None and again["trials"] == FAST_TRAIN_SEARCH_TRIALS
    assert (again["alpha"], again["beta"]) == (report["alpha"], report["beta"])

    # Values chosen by LM_ALPHA/LM_BETA, or by the long LM_EVALUATE_RANGE search, are left alone.
    assert short_lm_search(context(data_dir, lm_alpha=0.5)) is None
    assert short_lm_search(context(data_dir, lm_evaluate_range="2,2,2")) is None
    set_defaults(scorer, 1.5, 0.5, {"search": RANGE_SEARCH, "trials": 600})
    assert short_lm_search(context(data_dir)) is None
    assert (load_scorer(data_dir.scorer).alpha, load_scorer(data_dir.scorer).beta) == (1.5, 0.5)


def test_the_search_is_capped_in_time_and_never_ends_worse(data_dir: Layout) -> None:
    dev = [data_dir.split_csv("dev")]
    capped = short_search(workers=2, trials=5, max_clips=8)
    capped = OptimizeOptions(**{**capped.__dict__, "timeout_s": 0.0})  # no trial may start
    result = optimize_checkpoint(data_dir.scorer, data_dir.checkpoints, dev, capped)
    assert result.trials_run == 0 and result.trials_complete == 1  # the scorer's own values, measured
    assert (result.alpha, result.beta) == (0.0, 0.0)

    tuned = optimize_checkpoint(
        data_dir.scorer, data_dir.checkpoints, dev, short_search(2, trials=3, max_clips=8)
    )
    assert tuned.dev_wer_after <= tuned.dev_wer_before
    # A box that leaves the tuned values out keeps them when nothing inside does as well.
    box = OptimizeOptions(max_alpha=0.01, max_beta=0.01, n_trials=2, workers=2, max_clips=8)
    kept = optimize_checkpoint(data_dir.scorer, data_dir.checkpoints, dev, box)
    assert kept.dev_wer_after <= tuned.dev_wer_after
    if kept.dev_wer_after == tuned.dev_wer_after:
        assert (kept.alpha, kept.beta) == (tuned.alpha, tuned.beta)


def test_the_dev_subset_is_fixed_and_in_order(sample_corpus: Path) -> None:
    samples = read_csv(sample_corpus / "dev.csv")
    subset = dev_subset(samples, 10, seed=0)
    assert subset == dev_subset(samples, 10, seed=0) != dev_subset(samples, 10, seed=1)
    assert len(subset) == 10 and subset == [s for s in samples if s in subset]
    assert dev_subset(samples, None, 0) == dev_subset(samples, 1000, 0) == samples
    assert DEEPSPEECH_WEIGHTS in short_search(1).start_points
