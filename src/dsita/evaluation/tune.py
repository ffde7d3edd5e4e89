"""`dsita lm optimize`: Optuna's TPE search of alpha and beta for the lowest corpus WER on the dev set.

The original pipeline re-ran the network in every trial. Here the network runs once per dev utterance and
its logits are cached (on disk too, until the search ends), so a trial is decoding only, in parallel worker
processes. The study lives in SQLite beside the scorer folder: an interrupted search resumes with its trials
kept. At the end the best alpha and beta become the scorer's defaults.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import jiwer
import numpy as np
import optuna

from dsita.data.csvs import Sample
from dsita.data.dataset import load_samples
from dsita.decoding.batch import BatchDecoder
from dsita.decoding.beam import DecoderOptions, check_alphabet
from dsita.errors import DsitaError
from dsita.evaluation.evaluate import checkpoint_logits
from dsita.fileio import atomic_write
from dsita.lm.scorer import Scorer, load_scorer, set_defaults
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import resolve_checkpoint

log = logging.getLogger(__name__)

LOGITS_SUFFIX = ".optimize-logits.npz"


@dataclass(frozen=True)
class OptimizeOptions:
    """The search box [0, max_alpha] x [0, max_beta], the total trial count, and how to decode."""

    max_alpha: float = 5.0
    max_beta: float = 5.0
    n_trials: int = 600
    pairs: tuple[tuple[float, float], ...] = ()  # given: try exactly these (alpha, beta), keep the best
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0


@dataclass(frozen=True)
class OptimizeResult:
    scorer: Scorer  # with the new defaults
    alpha: float
    beta: float
    dev_wer_before: float  # at the scorer's defaults before the search
    dev_wer_after: float
    trials_run: int  # in this call
    trials_complete: int  # in the study, this call's included


def study_key(scorer: Scorer, checkpoint: Path, dev_csvs: Sequence[Path], options: OptimizeOptions) -> str:
    """What a search depends on (LM, weights, dev set, box, decoder): a resumed study shares all of them."""
    digest = hashlib.sha256()
    for path in (scorer.lm_path, scorer.vocabulary_path, checkpoint, *dev_csvs):
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    decoder = replace(options.decoder, alpha=None, beta=None)
    digest.update(repr((options.max_alpha, options.max_beta, asdict(decoder))).encode())
    return digest.hexdigest()[:16]


def cached_logits(
    scorer: Scorer, key: str, compute: Callable[[], list[np.ndarray]]
) -> tuple[list[np.ndarray], bool]:
    """The dev logits saved for this study, else computed and saved; and whether they came from disk."""
    path = _logits_cache(scorer)
    if path.is_file():
        with np.load(path) as saved:
            if str(saved["key"]) == key:
                return [saved[f"u{i}"] for i in range(len(saved.files) - 1)], True
    logits = compute()
    with atomic_write(path, "wb") as f:
        np.savez(f, key=np.array(key), **{f"u{i}": x for i, x in enumerate(logits)})
    return logits, False


def _logits_cache(scorer: Scorer) -> Path:
    return scorer.folder.parent / f"{scorer.folder.name}{LOGITS_SUFFIX}"


def _wer(samples: Sequence[Sample], hypotheses: list[str]) -> float:
    return float(jiwer.wer([s.transcript for s in samples], hypotheses))


def optimize(
    scorer: Scorer,
    samples: Sequence[Sample],
    logits: Sequence[np.ndarray],
    alphabet: Alphabet,
    options: OptimizeOptions,
    key: str,
) -> OptimizeResult:
    """Search alpha and beta for `n_trials` trials in all (resuming study `key`), then save the best."""
    if not samples:
        raise DsitaError("the dev set is empty: alpha and beta are tuned on dev WER")
    box = {
        "alpha": optuna.distributions.FloatDistribution(0.0, options.max_alpha),
        "beta": optuna.distributions.FloatDistribution(0.0, options.max_beta),
    }
    storage = optuna.storages.RDBStorage(f"sqlite:///{scorer.study_path.resolve()}")
    study = optuna.create_study(
        study_name=f"alpha-beta-{key}", storage=storage, direction="minimize", load_if_exists=True
    )
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    # A resumed study reseeds the sampler: with the same seed it would repeat its first random points.
    study.sampler = optuna.samplers.TPESampler(seed=options.seed + len(study.trials))

    with BatchDecoder(alphabet, scorer, options.workers) as decoder:

        def dev_wer(alpha: float, beta: float) -> float:
            return _wer(samples, decoder.decode(logits, replace(options.decoder, alpha=alpha, beta=beta)))

        before = study.user_attrs.get("dev_wer_before")
        if before is None:
            before = dev_wer(scorer.alpha, scorer.beta)
            study.set_user_attr("dev_wer_before", before)
            if scorer.alpha <= options.max_alpha and scorer.beta <= options.max_beta:
                # The current defaults are a known point: the search starts from it and never ends worse.
                params = {"alpha": scorer.alpha, "beta": scorer.beta}
                study.add_trial(optuna.trial.create_trial(params=params, distributions=box, value=before))
                done += 1

        # Given pairs (the French image's LM_EVALUATE_RANGE) are the trials, each once, instead of a search.
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        tried = {(trial.params["alpha"], trial.params["beta"]) for trial in complete}
        untried = [pair for pair in dict.fromkeys(options.pairs) if pair not in tried]
        for alpha, beta in untried:
            study.enqueue_trial({"alpha": alpha, "beta": beta})

        def objective(trial: optuna.Trial) -> float:
            alpha = trial.suggest_float("alpha", 0.0, options.max_alpha)
            beta = trial.suggest_float("beta", 0.0, options.max_beta)
            return dev_wer(alpha, beta)

        remaining = len(untried) if options.pairs else max(0, options.n_trials - done)
        log.info(f"{done} trials done, {remaining} to run")
        study.optimize(objective, n_trials=remaining)

    best = study.best_trial
    alpha, beta, after = float(best.params["alpha"]), float(best.params["beta"]), float(best.value)
    tuning = {
        "dev_wer": after,
        "dev_wer_before": before,
        "trials": done + remaining,
        "max_alpha": options.max_alpha,
        "max_beta": options.max_beta,
        "decoder": asdict(replace(options.decoder, alpha=None, beta=None)),
        "study": study.study_name,
    }
    updated = set_defaults(scorer, alpha, beta, tuning)
    _logits_cache(scorer).unlink(missing_ok=True)
    return OptimizeResult(updated, alpha, beta, float(before), after, remaining, done + remaining)


def optimize_checkpoint(
    scorer_dir: Path, checkpoint: Path, dev_csvs: Sequence[Path], options: OptimizeOptions
) -> OptimizeResult:
    """Run the model once over the dev CSVs (or reuse the logits an interrupted search saved), then search."""
    scorer = load_scorer(scorer_dir)
    alphabet = scorer.alphabet()
    samples = load_samples(dev_csvs, alphabet)
    key = study_key(scorer, resolve_checkpoint(checkpoint), dev_csvs, options)

    def compute() -> list[np.ndarray]:
        _, logits, model_alphabet = checkpoint_logits(checkpoint, dev_csvs)
        check_alphabet(scorer, model_alphabet)
        return logits

    logits, reused = cached_logits(scorer, key, compute)
    log.info(f"dev logits of {len(samples)} clips {'reused from' if reused else 'saved to'} disk")
    return optimize(scorer, samples, logits, alphabet, options, key)
