"""Alpha/beta tuning and beam-search evaluation with the small trained model, the real scorer and decoder."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jiwer
import pytest

from dsita.decoding.batch import BatchDecoder
from dsita.decoding.beam import DecoderOptions
from dsita.evaluation.evaluate import evaluate_logits
from dsita.evaluation.tune import OptimizeOptions, OptimizeResult, optimize
from dsita.lm.scorer import load_scorer
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[2]
SMALL_MODEL = REPO / "tests" / "fixtures" / "small_model.pt"
ITALIAN = Alphabet.italian()
BEAM = DecoderOptions(beam_width=32)
Logits = dict[str, tuple[list, list]]


@pytest.fixture(scope="module")
def tuned(
    sample_scorer: Path, small_model_logits: Logits, tmp_path_factory: pytest.TempPathFactory
) -> OptimizeResult:
    folder = tmp_path_factory.mktemp("tuned") / "scorer"
    shutil.copytree(sample_scorer, folder)
    samples, logits = small_model_logits["dev"]
    options = OptimizeOptions(max_alpha=5, max_beta=5, n_trials=16, decoder=BEAM, workers=2)
    return optimize(load_scorer(folder), samples, logits, ITALIAN, options, key="test")


def wer_of(scorer: Path | None, samples: list, logits: list, options: DecoderOptions = BEAM) -> float:
    with BatchDecoder(ITALIAN, load_scorer(scorer) if scorer else None, workers=2) as decoder:
        return evaluate_logits(samples, logits, decoder, options).wer


def test_optimizer_beats_zero_weights_on_dev_and_saves_its_values(
    tuned: OptimizeResult, small_model_logits: Logits
) -> None:
    samples, logits = small_model_logits["dev"]
    folder = tuned.scorer.folder
    at_zero = wer_of(folder, samples, logits, DecoderOptions(beam_width=32, alpha=0.0, beta=0.0))
    assert tuned.dev_wer_before == at_zero  # the scorer's defaults were (0, 0)
    assert tuned.dev_wer_after < at_zero
    saved = load_scorer(folder)
    assert (saved.alpha, saved.beta) == (tuned.alpha, tuned.beta) != (0.0, 0.0)
    assert saved.tuning is not None and saved.tuning["dev_wer"] == tuned.dev_wer_after
    assert saved.tuning["trials"] == tuned.trials_complete == tuned.trials_run + 1 == 16
    assert wer_of(folder, samples, logits) == tuned.dev_wer_after  # the saved defaults give that WER
    assert (folder.parent / "scorer.optimize.sqlite3").is_file()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in saved.files())


def test_lm_at_tuned_weights_beats_greedy_on_test(tuned: OptimizeResult, small_model_logits: Logits) -> None:
    samples, logits = small_model_logits["test"]
    greedy = wer_of(None, samples, logits)
    with_lm = wer_of(tuned.scorer.folder, samples, logits)
    assert with_lm < greedy, (with_lm, greedy)


def test_optimizer_needs_dev_clips(sample_scorer: Path) -> None:
    from dsita.errors import DsitaError

    with pytest.raises(DsitaError, match="the dev set is empty"):
        optimize(load_scorer(sample_scorer), [], [], ITALIAN, OptimizeOptions(n_trials=1, workers=1), key="x")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsita.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=300,
        check=False,
    )


def complete_trials(study: Path) -> list[tuple[int, float]]:
    """(number, value) of the complete trials, read straight from Optuna's SQLite tables."""
    try:
        with sqlite3.connect(study, timeout=10) as db:
            return db.execute(
                "SELECT t.number, v.value FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                "WHERE t.state = 'COMPLETE' ORDER BY t.number"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def test_interrupted_optimization_resumes_with_its_trials(
    sample_corpus: Path, sample_scorer: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "scorer"
    shutil.copytree(sample_scorer, folder)
    study = tmp_path / "scorer.optimize.sqlite3"
    args = [
        "lm", "optimize", f"--checkpoint={SMALL_MODEL}", f"--scorer={folder}", "--beam-width=16",
        "--workers=1", f"--dev-files={sample_corpus / 'dev.csv'}",
        f"--test-files={sample_corpus / 'test.csv'}", f"--report={tmp_path / 'report.json'}",
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200", "LM_EVALUATE_RANGE": "5,5,100000"}
    log = tmp_path / "search.log"
    with open(log, "w") as stderr:
        search = subprocess.Popen([sys.executable, "-m", "dsita.cli", *args], env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(complete_trials(study)) < 4 and time.monotonic() < deadline and search.poll() is None:
            time.sleep(0.05)
    finally:
        search.kill()
        search.wait()
    kept = complete_trials(study)
    assert len(kept) >= 4, log.read_text()
    assert load_scorer(folder).tuning is None  # killed mid-search: nothing saved yet
    assert (tmp_path / "scorer.optimize-logits.npz").is_file()

    resumed = run_cli(*args, env={"LM_EVALUATE_RANGE": f"5,5,{len(kept) + 2}"})
    assert resumed.returncode == 0, resumed.stderr
    assert "dev logits of 40 clips reused from disk" in resumed.stderr
    after = complete_trials(study)
    assert len(after) == len(kept) + 2 and after[: len(kept)] == kept
    assert f"after {len(kept) + 2} trials (2 in this run)" in resumed.stdout
    assert "test WER" in resumed.stdout and "(greedy: WER" in resumed.stdout
    best = min(after, key=lambda t: t[1])
    scorer = load_scorer(folder)
    assert scorer.tuning is not None and scorer.tuning["dev_wer"] == best[1]
    assert not (tmp_path / "scorer.optimize-logits.npz").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert (
        report["decoder"]
        == f"beam search (lexicon, beam 16, alpha {scorer.alpha:.3g}, beta {scorer.beta:.3g})"
    )


def test_evaluate_uses_the_data_dir_scorer(
    tuned: OptimizeResult, sample_corpus: Path, tmp_path: Path
) -> None:
    shutil.copytree(tuned.scorer.folder, tmp_path / "lm" / "scorer")
    report = tmp_path / "report.json"
    args = ["evaluate", f"--checkpoint={SMALL_MODEL}", f"--test-files={sample_corpus / 'test.csv'}",
            f"--report={report}", "--beam-width=32", "--workers=2"]  # fmt: skip
    result = run_cli(*args, env={"DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    saved = json.loads(report.read_text())
    assert saved["decoder"].startswith("beam search (lexicon, beam 32")
    hypotheses = [s["hypothesis"] for s in saved["samples"]]
    assert saved["wer"] == jiwer.wer([s["reference"] for s in saved["samples"]], hypotheses)
    assert f"test WER {saved['wer']:.2%}" in result.stdout and "(greedy: WER" in result.stdout


def test_optimize_without_a_range_says_how_to_set_it(tmp_path: Path) -> None:
    result = run_cli("lm", "optimize", env={"LM_EVALUATE_RANGE": "", "DATA_DIR": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "LM_EVALUATE_RANGE is empty: set it (or --range) to MAX_ALPHA,MAX_BETA,N_TRIALS" in result.stderr
