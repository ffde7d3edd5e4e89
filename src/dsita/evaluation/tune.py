"""`dsita lm optimize`: Optuna's TPE search of alpha and beta for the lowest corpus WER on the dev set.

The original pipeline re-ran the network in every trial. Here the network runs once per dev utterance and
its logits are cached (on disk too, until the search ends), so a trial is decoding only, in parallel worker
processes. The study lives in SQLite beside the scorer folder: an interrupted search resumes with its trials
kept. At the end the best alpha and beta become the scorer's defaults, and the manifest's `tuning` says how
they were found.

`short_search` is what `dsita run` does when alpha and beta were never tuned and LM_EVALUATE_RANGE is empty:
a few trials on a fixed subset of dev, under a time cap, so that the test results with the LM are not taken
at alpha = beta = 0 (the LM off, while the lexicon still forces in-vocabulary words).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import cast

import jiwer
import numpy as np
import optuna

from dsita.data.csvs import Sample
from dsita.data.dataset import load_samples
from dsita.decoding.batch import BatchDecoder
from dsita.decoding.beam import DecoderOptions, check_alphabet
from dsita.errors import DsitaError
from dsita.evaluation.evaluate import RUNNING_THE_MODEL, model_logits
from dsita.fileio import atomic_write
from dsita.lm.scorer import Scorer, load_scorer, set_defaults
from dsita.progress import Progress
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_trained_model, resolve_checkpoint
from dsita.training.runtime import Distributed, pick_device

log = logging.getLogger(__name__)

LOGITS_SUFFIX = ".optimize-logits.npz"
RANGE_SEARCH, SHORT_SEARCH = "LM_EVALUATE_RANGE", "short"
# The short search: trials, dev clips and a time cap that keep it to minutes on a Common Voice dev set (a
# trial decodes SHORT_CLIPS clips at beam 500), while TPE's 10 random trials and some guided ones run.
SHORT_TRIALS = 24
SHORT_CLIPS = 300
SHORT_SECONDS = 300.0
# Tried first by the short search: DeepSpeech 0.9.3's released alpha 0.931 and beta 1.183 in dsita's units
# (alpha on KenLM's log10 scores: 0.931 / log10(e); see `dsita.export.ds_scorer.deepspeech_weights`).
DEEPSPEECH_WEIGHTS = (2.144, 1.183)


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
    max_clips: int | None = None  # a fixed random subset of this many dev clips; None: all of them
    timeout_s: float | None = None  # no trial starts after this many seconds of search
    search: str = RANGE_SEARCH  # written into the manifest's tuning: how alpha and beta were found
    start_points: tuple[tuple[float, float], ...] = ()  # tried first (once), then the search goes on
    progress: bool = False  # a bar in a terminal; a log line every 30 s in any case


def short_search(
    workers: int,
    seed: int = 0,
    progress: bool = False,
    trials: int = SHORT_TRIALS,
    max_clips: int = SHORT_CLIPS,
) -> OptimizeOptions:
    """The bounded search `dsita run` makes when alpha and beta were never tuned."""
    return OptimizeOptions(
        n_trials=trials,
        workers=workers,
        seed=seed,
        max_clips=max_clips,
        timeout_s=SHORT_SECONDS,
        search=SHORT_SEARCH,
        start_points=(DEEPSPEECH_WEIGHTS,),
        progress=progress,
    )


@dataclass(frozen=True)
class OptimizeResult:
    """An alpha/beta search's outcome: the scorer with its new defaults, and the dev WER before and after."""

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
    subset = () if options.max_clips is None else (options.max_clips, options.seed)  # which dev clips
    digest.update(repr((options.max_alpha, options.max_beta, asdict(decoder), *subset)).encode())
    return digest.hexdigest()[:16]


def dev_subset(samples: Sequence[Sample], max_clips: int | None, seed: int) -> list[Sample]:
    """At most `max_clips` of the dev samples, a fixed random choice in their order; all when None."""
    if max_clips is None or len(samples) <= max_clips:
        return list(samples)
    chosen = sorted(random.Random(seed).sample(range(len(samples)), max_clips))
    return [samples[i] for i in chosen]


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
        # The ignore: mypy matches the ** arrays against savez's bool `allow_pickle` keyword as well.
        np.savez(f, key=np.array(key), **{f"u{i}": x for i, x in enumerate(logits)})  # type: ignore[arg-type]
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
    started = time.monotonic()
    storage = optuna.storages.RDBStorage(f"sqlite:///{scorer.study_path.resolve()}")
    with _optuna_quiet():
        study = optuna.create_study(
            study_name=f"alpha-beta-{key}", storage=storage, direction="minimize", load_if_exists=True
        )
    # A resumed study reseeds the sampler: with the same seed it would repeat its first random points.
    study.sampler = optuna.samplers.TPESampler(seed=options.seed + len(study.trials))
    with BatchDecoder(alphabet, scorer, options.workers) as decoder, _optuna_quiet():

        def dev_wer(alpha: float, beta: float) -> float:
            return _wer(samples, decoder.decode(logits, replace(options.decoder, alpha=alpha, beta=beta)))

        before, done = _start(study, scorer, options, dev_wer)
        ran = _trials(study, options, done, len(samples), dev_wer)
    best = study.best_trial
    alpha, beta = float(best.params["alpha"]), float(best.params["beta"])
    after = float(cast(float, best.value))  # a completed trial's value: never None
    if after > before:  # the box left the current values out, and nothing in it did as well
        log.info(f"no trial beat dev WER {before:.2%} at alpha {scorer.alpha:g}, beta {scorer.beta:g}: kept")
        alpha, beta, after = scorer.alpha, scorer.beta, before
    tuning = {
        "search": options.search,
        "dev_wer": after,
        "dev_wer_before": before,
        "dev_clips": len(samples),
        "trials": done + ran,
        "seconds": round(time.monotonic() - started, 1),
        **_search_space(options),
        "study": study.study_name,
    }
    updated = set_defaults(scorer, alpha, beta, tuning)
    _logits_cache(scorer).unlink(missing_ok=True)
    return OptimizeResult(updated, alpha, beta, float(before), after, ran, done + ran)


def _trials(
    study: optuna.Study,
    options: OptimizeOptions,
    done: int,
    clips: int,
    dev_wer: Callable[[float, float], float],
) -> int:
    """Run the trials still to run (the given pairs, or the search up to `n_trials`), with a progress line;
    how many completed."""
    # Given pairs (the French image's LM_EVALUATE_RANGE) are the trials, each once, instead of a search.
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    tried = {(trial.params["alpha"], trial.params["beta"]) for trial in complete}
    untried = [pair for pair in dict.fromkeys(options.pairs) if pair not in tried]
    searching = not options.pairs and done < options.n_trials
    first = [pair for pair in options.start_points if pair not in tried] if searching else []
    for alpha, beta in [*untried, *first]:
        study.enqueue_trial({"alpha": alpha, "beta": beta})
    remaining = len(untried) if options.pairs else max(0, options.n_trials - done)
    log.info(f"{done} trials done, {remaining} to run on {clips} dev clips")
    with Progress(options.progress, log) as shown:
        task = shown.task("alpha/beta search", remaining, "trials")

        def objective(trial: optuna.Trial) -> float:
            alpha = trial.suggest_float("alpha", 0.0, options.max_alpha)
            wer = dev_wer(alpha, trial.suggest_float("beta", 0.0, options.max_beta))
            task.advance(status=f"best dev WER {min(wer, _best(study, wer)):.2%}")
            return wer

        study.optimize(objective, n_trials=remaining, timeout=options.timeout_s)
    ran = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) - done
    if ran < remaining and options.timeout_s is not None:
        log.info(f"alpha/beta search: {ran} of {remaining} trials within its {options.timeout_s:.0f} s")
    return ran


def _start(
    study: optuna.Study, scorer: Scorer, options: OptimizeOptions, dev_wer: Callable[[float, float], float]
) -> tuple[float, int]:
    """The dev WER at the scorer's defaults (measured once per study, and a first trial when inside the box)
    and the number of trials the study has completed."""
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    before = study.user_attrs.get("dev_wer_before")
    if before is None:
        before = dev_wer(scorer.alpha, scorer.beta)
        study.set_user_attr("dev_wer_before", before)
        if scorer.alpha <= options.max_alpha and scorer.beta <= options.max_beta:
            # The current defaults are a known point: the search starts from it and never ends worse.
            box: dict[str, optuna.distributions.BaseDistribution] = {
                "alpha": optuna.distributions.FloatDistribution(0.0, options.max_alpha),
                "beta": optuna.distributions.FloatDistribution(0.0, options.max_beta),
            }
            params = {"alpha": scorer.alpha, "beta": scorer.beta}
            study.add_trial(optuna.trial.create_trial(params=params, distributions=box, value=before))
            done += 1
    return float(before), done


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's line per trial on stderr (not in the log files) repeats the progress lines: warnings only."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _search_space(options: OptimizeOptions) -> dict[str, object]:
    decoder = asdict(replace(options.decoder, alpha=None, beta=None))
    return {"max_alpha": options.max_alpha, "max_beta": options.max_beta, "decoder": decoder}


def _best(study: optuna.Study, fallback: float) -> float:
    try:
        return float(study.best_value)
    except ValueError:  # no trial completed yet
        return fallback


def optimize_checkpoint(
    scorer_dir: Path, checkpoint: Path, dev_csvs: Sequence[Path], options: OptimizeOptions
) -> OptimizeResult:
    """Run the model once over the dev CSVs (`options.max_clips` of them at most; or reuse the logits an
    interrupted search saved), then search."""
    scorer = load_scorer(scorer_dir)
    alphabet = scorer.alphabet()
    samples = dev_subset(load_samples(dev_csvs, alphabet), options.max_clips, options.seed)
    key = study_key(scorer, resolve_checkpoint(checkpoint), dev_csvs, options)

    def compute() -> list[np.ndarray]:
        model, model_alphabet = load_trained_model(checkpoint)
        check_alphabet(scorer, model_alphabet)
        with Progress(options.progress, log) as shown:
            task = shown.task(f"{RUNNING_THE_MODEL} on {len(samples)} dev clips", unit="batches")
            return model_logits(model, samples, alphabet, pick_device(Distributed()), progress=task)

    logits, reused = cached_logits(scorer, key, compute)
    log.info(f"dev logits of {len(samples)} clips {'reused from' if reused else 'saved to'} disk")
    return optimize(scorer, samples, logits, alphabet, options, key)
