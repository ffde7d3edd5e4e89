"""What the inference benchmarks share: the committed sample imported, the default corpus's scorer (minus
the sample's dev and test sentences) with alpha and beta chosen on the sample's dev clips, and a checkpoint
exported as `dsita export` does, all kept in a work folder so that a second run starts at once.

Used by benchmarks/hotwords.py and benchmarks/stream_latency.py (run from the repository root).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np

from dsita.audio import load_audio
from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.decoding.beam import BeamSearchDecoder, DecoderOptions
from dsita.export.release import RELEASE_ZIP, make_release
from dsita.inference.model import InferenceOptions, SpeechModel, load_model
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.lm.corpus import evaluation_sentences
from dsita.lm.scorer import load_scorer, set_defaults
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = REPO / "tests" / "fixtures" / "small_model.pt"
ALPHAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
BETAS = (0.0, 1.0, 2.0, 3.0)


@dataclass(frozen=True)
class Clips:
    """One split of the sample: its audio, its transcripts."""

    audio: list[np.ndarray]
    references: list[str]


def sample_corpus(work: Path) -> Path:
    corpus = work / "corpus"
    if not (corpus / "test.csv").is_file():
        options = ImportOptions(alphabet=Alphabet.italian(), workers=2, progress=False)
        import_common_voice(REPO / "samples" / "it-sample.tar.gz", corpus, options)
    return corpus


def clips(corpus: Path, split: str) -> Clips:
    rows = read_csv(corpus / f"{split}.csv")
    return Clips([load_audio(r.wav_path) for r in rows], [r.transcript for r in rows])


def release(work: Path, checkpoint: Path, beam: int = 500) -> SpeechModel:
    """The checkpoint exported (int8 it-it.zip) with the sample scorer, alpha and beta tuned on dev."""
    corpus = sample_corpus(work)
    folder = work / f"release-{checkpoint.stem}-{checkpoint.parent.name}"
    if not (folder / RELEASE_ZIP).is_file():
        scorer = work / "scorer"
        if not (scorer / "manifest.json").is_file():
            exclude = evaluation_sentences([corpus / "dev.csv", corpus / "test.csv"])
            kenlm_bin = REPO / ".cache" / "kenlm" / "bin"
            build_scorer(
                scorer, Alphabet.italian(), LmBuildOptions(memory="5%", kenlm_bin=kenlm_bin), exclude=exclude
            )
        untuned = load_model(_export(checkpoint, folder, scorer), InferenceOptions(use_lm=False))
        alpha, beta, wer = tune(untuned, clips(corpus, "dev"), beam)
        set_defaults(load_scorer(scorer), alpha, beta, {"dev_wer": wer, "grid": [ALPHAS, BETAS]})
        _export(checkpoint, folder, scorer)
    return load_model(folder / RELEASE_ZIP, InferenceOptions(beam_width=beam))


def _export(checkpoint: Path, folder: Path, scorer: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    make_release(checkpoint, folder, None, scorer)
    return folder / RELEASE_ZIP


def tune(model: SpeechModel, dev: Clips, beam: int) -> tuple[float, float, float]:
    """The (alpha, beta) of the grid with the lowest dev WER, and that WER."""
    assert model.package.scorer_path is not None
    decoder = BeamSearchDecoder(load_scorer(model.package.scorer_path), model.alphabet)
    logits = [model.segment_logits(audio) for audio in dev.audio]
    results = []
    for alpha, beta in itertools.product(ALPHAS, BETAS):
        options = DecoderOptions(beam_width=beam, alpha=alpha, beta=beta)
        results.append((jiwer.wer(dev.references, [decoder.decode(x, options) for x in logits]), alpha, beta))
    wer, alpha, beta = min(results)
    return alpha, beta, wer
