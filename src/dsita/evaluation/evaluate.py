"""WER and CER of a model on test CSVs, with the best, median and worst samples and a JSON report.

Greedy decoding needs only the model; `evaluate_logits` decodes cached logits with a `BatchDecoder`, greedy or
beam search with a scorer, so that the alpha/beta optimizer runs the network once and decodes many times.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch
from torch.utils.data import DataLoader

from dsita.data.csvs import Sample, sample_duration
from dsita.data.dataset import Batch, BucketBatchSampler, SpeechDataset, collate, load_samples
from dsita.decoding.batch import BatchDecoder
from dsita.decoding.beam import DecoderOptions
from dsita.fileio import atomic_write_text
from dsita.lm.scorer import Scorer
from dsita.model.base import AcousticModel
from dsita.progress import Progress, Task
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_trained_model
from dsita.training.runtime import Distributed, pick_device

log = logging.getLogger(__name__)

RUNNING_THE_MODEL = "running the model"
DECODE_SLICE = 64  # utterances decoded between two progress counts: enough to keep every worker busy


@dataclass(frozen=True)
class SampleResult:
    """One utterance's reference, hypothesis and their WER and CER."""

    wav_filename: str
    reference: str
    hypothesis: str
    wer: float
    cer: float


@dataclass(frozen=True)
class EvaluationReport:
    """A decoder's corpus WER and CER over a test set, with every utterance's result."""

    decoder: str
    wer: float
    cer: float
    samples: list[SampleResult]

    def ranked(self) -> list[SampleResult]:
        """Samples from best to worst by WER, then CER."""
        return sorted(self.samples, key=lambda s: (s.wer, s.cer, s.wav_filename))

    def best_median_worst(self) -> list[tuple[str, SampleResult]]:
        """The best, median and worst samples by WER (then CER), labelled; empty for no samples."""
        ranked = self.ranked()
        if not ranked:
            return []
        return [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]

    def save(self, path: Path) -> None:
        """Write the report as indented UTF-8 JSON to `path`, atomically."""
        atomic_write_text(path, json.dumps(asdict(self), ensure_ascii=False, indent=1) + "\n")


def model_logits(
    model: AcousticModel,
    samples: Sequence[Sample],
    alphabet: Alphabet,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
    progress: Task | None = None,
) -> list[np.ndarray]:
    """Per-utterance (T, n_outputs) float32 logits, in the order of `samples`; `progress` (else a task that
    only logs, every 30 s) counts the batches."""
    dataset = SpeechDataset(samples, alphabet)
    sampler = BucketBatchSampler([sample_duration(s) for s in samples], batch_size, seed=0, sort_by_size=True)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    task = progress or Progress(False, log).task(RUNNING_THE_MODEL, unit="batches")
    task.set_total(len(sampler))
    results: list[np.ndarray] = [np.empty(0)] * len(samples)
    model = model.to(device).eval()
    batch: Batch
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            features, lengths = model.featurizer(batch.inputs, batch.input_lengths)
            output = model(features, lengths)
            logits = output.logits.float().cpu().numpy()
            for row, index in enumerate(batch.indices):
                results[index] = logits[row, : int(output.lengths[row])]
            task.advance()
    return results


def score(samples: Sequence[Sample], hypotheses: Sequence[str], decoder: str) -> EvaluationReport:
    """The report for `hypotheses` against the samples' transcripts: corpus WER and CER (NaN for none)
    and per-utterance scores.
    """
    references = [s.transcript for s in samples]
    results = [
        SampleResult(str(s.wav_path), ref, hyp, jiwer.wer(ref, hyp), jiwer.cer(ref, hyp))
        for s, ref, hyp in zip(samples, references, hypotheses, strict=True)
    ]
    return EvaluationReport(
        decoder=decoder,
        wer=float(jiwer.wer(references, list(hypotheses))) if samples else float("nan"),
        cer=float(jiwer.cer(references, list(hypotheses))) if samples else float("nan"),
        samples=results,
    )


def decode_all(
    decoder: BatchDecoder,
    logits: Sequence[np.ndarray],
    options: DecoderOptions | None = None,
    progress: Task | None = None,
) -> list[str]:
    """`decoder.decode`, a slice of utterances at a time so that `progress` (else a task that only logs,
    every 30 s) can count them."""
    options = options or DecoderOptions()
    task = progress or Progress(False, log).task(f"decoding ({decoder.describe(options)})", unit="clips")
    task.set_total(len(logits))
    size = max(DECODE_SLICE, 8 * decoder.workers)
    texts: list[str] = []
    for start in range(0, len(logits), size):
        texts += decoder.decode(logits[start : start + size], options)
        task.advance(len(texts) - task.completed)
    return texts


def evaluate_logits(
    samples: Sequence[Sample],
    logits: Sequence[np.ndarray],
    decoder: BatchDecoder,
    options: DecoderOptions | None = None,
    progress: Task | None = None,
) -> EvaluationReport:
    """Decode per-utterance logits (from `model_logits`) and score them against the samples' transcripts."""
    options = options or DecoderOptions()
    return score(samples, decode_all(decoder, logits, options, progress), decoder.describe(options))


@dataclass(frozen=True)
class CheckpointEvaluation:
    """A checkpoint run over test (or dev) CSVs once: its logits, and the reports of each decoding."""

    samples: list[Sample]
    logits: list[np.ndarray]
    alphabet: Alphabet
    greedy: EvaluationReport
    lm: EvaluationReport | None  # with a scorer


def checkpoint_logits(
    checkpoint: Path, csvs: Sequence[Path], device: torch.device | None = None, show_progress: bool = False
) -> tuple[list[Sample], list[np.ndarray], Alphabet]:
    """The samples of `csvs`, the checkpoint's logits for each, and its alphabet (on a GPU when there is
    one); a bar when `show_progress`, and log lines every 30 s in any case."""
    model, alphabet = load_trained_model(checkpoint)
    samples = load_samples(csvs, alphabet)
    with Progress(show_progress, log) as progress:
        task = progress.task(f"{RUNNING_THE_MODEL} on {len(samples)} clips", unit="batches")
        logits = model_logits(model, samples, alphabet, device or pick_device(Distributed()), progress=task)
    return samples, logits, alphabet


def evaluate_checkpoint(
    checkpoint: Path,
    csvs: Sequence[Path],
    scorer: Scorer | None = None,
    options: DecoderOptions | None = None,
    workers: int = 1,
    show_progress: bool = False,
) -> CheckpointEvaluation:
    """Greedy WER/CER, and with a scorer the beam search's too, from one pass of the network."""
    samples, logits, alphabet = checkpoint_logits(checkpoint, csvs, show_progress=show_progress)
    greedy = evaluate_logits(samples, logits, BatchDecoder(alphabet))
    lm = None
    if scorer is not None:
        with BatchDecoder(alphabet, scorer, workers) as decoder, Progress(show_progress, log) as progress:
            task = progress.task(f"beam search of {len(samples)} clips", unit="clips")
            lm = evaluate_logits(samples, logits, decoder, options, task)
    return CheckpointEvaluation(samples, logits, alphabet, greedy, lm)
