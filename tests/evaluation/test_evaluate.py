"""`dsita evaluate` and the FAST_TRAIN smoke run through the command line, on the sample corpus; the
evaluation of every architecture's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from dsita.audio import load_audio
from dsita.data.csvs import Sample, read_csv, write_csv
from dsita.decoding.batch import BatchDecoder
from dsita.decoding.greedy import greedy_text
from dsita.evaluation.evaluate import evaluate_logits, model_logits, score
from dsita.lm.scorer import load_scorer
from dsita.model import architectures
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_trained_model
from tests.architectures import ITALIAN, tiny_model


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsita.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
        check=False,
    )


def test_greedy_decode_collapses_repeats_and_drops_blanks() -> None:
    alphabet = Alphabet.italian()
    blank = alphabet.blank_index
    ids = [alphabet.encode(c)[0] for c in "ciao"]
    path = [ids[0], ids[0], blank, ids[1], ids[2], blank, ids[2], ids[3], blank]
    logits = np.eye(blank + 1)[path]
    assert greedy_text(logits, alphabet) == "ciaao"
    assert greedy_text(logits[:3], alphabet) == "c"
    assert greedy_text(logits[:0], alphabet) == ""


def test_score_is_corpus_level_and_ranks_samples() -> None:
    samples = [
        Sample(Path(f"{i}.wav"), 0, ref) for i, ref in enumerate(["uno due tre", "quattro", "cinque sei"])
    ]
    hypotheses = ["uno due tre", "quatro", "cinque"]
    report = score(samples, hypotheses, "greedy")
    assert report.wer == jiwer.wer([s.transcript for s in samples], hypotheses) == 2 / 6
    assert [label for label, _ in report.best_median_worst()] == ["best", "median", "worst"]
    assert report.best_median_worst()[0][1].hypothesis == "uno due tre"
    assert report.best_median_worst()[-1][1].reference == "quattro"


def test_fast_train_then_evaluate_from_the_command_line(sample_corpus: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    env = {"FAST_TRAIN": "1", "BATCH_SIZE": "2", "EPOCHS": "2", "DATA_DIR": str(tmp_path)}
    splits = [f"--{s}-files={sample_corpus / f'{s}.csv'}" for s in ("train", "dev", "test")]
    trained = run_cli("train", *splits, f"--checkpoint-dir={ckpt}", env=env)
    assert trained.returncode == 0, trained.stderr
    assert "test WER" in trained.stdout and "best" in trained.stdout and "worst" in trained.stdout
    model, _ = load_trained_model(ckpt)
    assert model.config.n_hidden == 64  # FAST_TRAIN's tiny model
    assert len((ckpt / "metrics.jsonl").read_text().splitlines()) == 2

    report_path = tmp_path / "report.json"
    evaluated = run_cli("evaluate", f"--checkpoint={ckpt}", f"--test-files={sample_corpus / 'test.csv'}",
                        f"--report={report_path}")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(report_path.read_text())
    assert len(report["samples"]) == len(read_csv(sample_corpus / "test.csv"))
    references = [s["reference"] for s in report["samples"]]
    hypotheses = [s["hypothesis"] for s in report["samples"]]
    assert report["wer"] == jiwer.wer(references, hypotheses)
    assert f"test WER {report['wer']:.2%}" in evaluated.stdout


@pytest.mark.parametrize("architecture", architectures())
def test_evaluation_matches_direct_model_output(
    architecture: str, sample_corpus: Path, sample_scorer: Path
) -> None:
    model = tiny_model(architecture)
    samples = read_csv(sample_corpus / "test.csv")[:5]
    logits = model_logits(model, samples, ITALIAN, torch.device("cpu"), batch_size=2)
    report = evaluate_logits(samples, logits, BatchDecoder(ITALIAN))
    assert report.decoder == "greedy"
    for sample, result, batched in zip(samples, report.samples, logits, strict=True):
        audio = torch.from_numpy(load_audio(sample.wav_path))[None]
        with torch.no_grad():
            features, lengths = model.featurizer(audio, torch.tensor([audio.shape[1]]))
            alone = model(features, lengths).logits[0].numpy()
        assert len(batched) == len(alone) == int(model.output_lengths(lengths)[0])
        assert result.hypothesis == greedy_text(alone, ITALIAN)
    with BatchDecoder(ITALIAN, load_scorer(sample_scorer), 1) as decoder:
        with_lm = evaluate_logits(samples, logits, decoder)
    assert with_lm.decoder.startswith("beam search") and len(with_lm.samples) == len(samples)


def test_unencodable_csv_stops_the_cli_with_one_line(sample_corpus: Path, tmp_path: Path) -> None:
    rows = read_csv(sample_corpus / "train.csv")[:3]
    write_csv(tmp_path / "bad.csv", [*rows[:2], Sample(rows[2].wav_path, rows[2].wav_filesize, "costa 5€")])
    train_csv, dev_csv = tmp_path / "bad.csv", sample_corpus / "dev.csv"
    result = run_cli("train", f"--train-files={train_csv}", f"--dev-files={dev_csv}",
                     f"--checkpoint-dir={tmp_path / 'c'}")  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "bad.csv, row 4" in result.stderr and "'5'" in result.stderr
