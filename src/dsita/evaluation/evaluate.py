"""WER and CER of a model on test CSVs, with the best, median and worst samples and a JSON report.

Greedy decoding needs only the model; `evaluate_logits` decodes cached logits with a `BatchDecoder`, greedy or
beam search with a scorer, so that the alpha/beta optimizer runs the network once and decodes many times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer
import numpy as np
import torch
from torch.utils.data import DataLoader

from dsita.data.csvs import Sample
from dsita.data.dataset import Batch, BucketBatchSampler, SpeechDataset, collate, sample_duration
from dsita.decoding.batch import BatchDecoder, DecoderOptions, greedy_decode_batch
from dsita.fileio import atomic_write_text
from dsita.model.base import AcousticModel
from dsita.text.alphabet import Alphabet


@dataclass(frozen=True)
class SampleResult:
    wav_filename: str
    reference: str
    hypothesis: str
    wer: float
    cer: float


@dataclass(frozen=True)
class EvaluationReport:
    decoder: str
    wer: float
    cer: float
    samples: list[SampleResult]

    def ranked(self) -> list[SampleResult]:
        """Samples from best to worst by WER, then CER."""
        return sorted(self.samples, key=lambda s: (s.wer, s.cer, s.wav_filename))

    def best_median_worst(self) -> list[tuple[str, SampleResult]]:
        ranked = self.ranked()
        if not ranked:
            return []
        return [("best", ranked[0]), ("median", ranked[len(ranked) // 2]), ("worst", ranked[-1])]

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), ensure_ascii=False, indent=1) + "\n")


def model_logits(
    model: AcousticModel,
    samples: Sequence[Sample],
    alphabet: Alphabet,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
) -> list[np.ndarray]:
    """Per-utterance (T, n_outputs) float32 logits, in the order of `samples`."""
    dataset = SpeechDataset(samples, alphabet)
    sampler = BucketBatchSampler([sample_duration(s) for s in samples], batch_size, seed=0, sort_by_size=True)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
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
    return results


def score(samples: Sequence[Sample], hypotheses: Sequence[str], decoder: str) -> EvaluationReport:
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


def evaluate_greedy(
    model: AcousticModel,
    samples: Sequence[Sample],
    alphabet: Alphabet,
    device: torch.device,
    batch_size: int = 16,
    workers: int = 0,
) -> EvaluationReport:
    logits = model_logits(model, samples, alphabet, device, batch_size, workers)
    hypotheses = greedy_decode_batch(logits, np.array([len(x) for x in logits]), alphabet)
    return score(samples, hypotheses, "greedy")


def evaluate_logits(
    samples: Sequence[Sample],
    logits: Sequence[np.ndarray],
    decoder: BatchDecoder,
    options: DecoderOptions | None = None,
) -> EvaluationReport:
    """Decode per-utterance logits (from `model_logits`) and score them against the samples' transcripts."""
    options = options or DecoderOptions()
    return score(samples, decoder.decode(logits, options), decoder.describe(options))
