"""Beam-search decoding speed: milliseconds per 5-second utterance at beam 100 with the 5-gram LM, dsita's
flashlight-text decoder against pyctcdecode on the same logits in the same run; also the LM build.

    .venv/bin/python benchmarks/decode_speed.py [--utterances 40] [--peer-python /tmp/bench-venv/bin/python]

pyctcdecode is a benchmark-only peer: it pins numpy<2, so it lives in a throw-away venv of its own and runs
in a subprocess on logits saved to a file:

    python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install pyctcdecode ufal.kenlm

Steps: build the scorer from the default corpus (fortunes-it minus the sample's dev and test sentences),
timed, with its size; join the committed sample's test clips into 5.0 s utterances (padded with silence);
run the small test model (tests/fixtures/small_model.pt) once for their logits; decode them one at a time
in one process with each decoder, after one warm-up utterance, each at its default pruning (dsita's
DecoderOptions; pyctcdecode's beam_prune_logp and token_min_logp of -10). alpha is given per log10 unit of
KenLM probability (pyctcdecode's alpha is per natural-log unit, so it gets alpha / ln 10); beta is per word.
Prints ms per utterance for each (CPU time, which a shared machine disturbs less, and wall time), the
ratio, and each decoder's WER as a check that both did the job.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

from dsita.audio import SAMPLE_RATE, load_audio
from dsita.data.clips import ImportOptions
from dsita.data.commonvoice import import_common_voice
from dsita.data.csvs import read_csv
from dsita.decoding.beam import BeamSearchDecoder, DecoderOptions, log_softmax
from dsita.decoding.greedy import greedy_text
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.lm.corpus import evaluation_sentences
from dsita.text.alphabet import Alphabet
from dsita.training.checkpoint import load_trained_model

REPO = Path(__file__).resolve().parents[1]
SECONDS = 5.0
GAP = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)

PEER = """
import json, sys, time
import numpy as np
from pyctcdecode import build_ctcdecoder
logits_path, lm_path, vocabulary_path, labels, alpha, beta, beam = sys.argv[1:]
saved = np.load(logits_path)
logits = [saved[f"u{i}"] for i in range(len(saved.files))]
unigrams = open(vocabulary_path, encoding="utf-8").read().split()
decoder = build_ctcdecoder(json.loads(labels), lm_path, unigrams, alpha=float(alpha), beta=float(beta))
decoder.decode(logits[0], beam_width=int(beam))
wall, cpu = time.perf_counter(), time.process_time()
texts = [decoder.decode(x, beam_width=int(beam)) for x in logits[1:]]
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "texts": texts}))
"""


def utterances(corpus: Path, count: int) -> tuple[list[np.ndarray], list[str]]:
    """Test clips joined (0.3 s apart) while they fit in 5 s, then padded with silence to exactly 5 s."""
    audio: list[np.ndarray] = []
    references: list[str] = []
    pieces: list[np.ndarray] = []
    words: list[str] = []
    samples = read_csv(corpus / "test.csv") * 8
    for sample in samples:
        clip = load_audio(sample.wav_path)
        joined = sum(len(p) for p in pieces) + len(GAP) + len(clip)
        if pieces and joined > SECONDS * SAMPLE_RATE:
            wave = np.concatenate(pieces)
            audio.append(np.pad(wave, (0, int(SECONDS * SAMPLE_RATE) - len(wave))))
            references.append(" ".join(words))
            pieces, words = [], []
            if len(audio) == count:
                break
        pieces += [GAP, clip] if pieces else [clip]
        words.append(sample.transcript)
    return audio, references


def logits_of(checkpoint: Path, audio: list[np.ndarray]) -> list[np.ndarray]:
    model, _ = load_trained_model(checkpoint)
    batch = torch.from_numpy(np.stack(audio))
    with torch.no_grad():
        features, lengths = model.featurizer(batch, torch.full((len(audio),), batch.shape[1]))
        output = model(features, lengths)
    return [log_softmax(x[: int(n)]) for x, n in zip(output.logits.numpy(), output.lengths, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--beam", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "tests" / "fixtures" / "small_model.pt")
    parser.add_argument("--peer-python", type=Path, default=Path("/tmp/bench-venv/bin/python"))
    parser.add_argument(
        "--memory", default="10%", help="lmplz -S for the timed build (the CLI default is 85%%)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    alphabet = Alphabet.italian()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        import_common_voice(
            REPO / "samples" / "it-sample.tar.gz", corpus, ImportOptions(alphabet, progress=False)
        )
        held_out = evaluation_sentences([corpus / "dev.csv", corpus / "test.csv"])
        options = LmBuildOptions(memory=args.memory, kenlm_bin=REPO / ".cache" / "kenlm" / "bin", workers=2)
        build = build_scorer(Path(tmp) / "scorer", alphabet, options, exclude=held_out)
        scorer = build.scorer
        print(
            f"LM build (default corpus, {build.corpus.kept} lines, {build.corpus.words} words, lmplz -S "
            f"{args.memory}, 2 workers): {build.seconds:.1f} s; scorer {scorer.size_bytes() / 1e6:.2f} MB "
            f"(lm.binary {scorer.lm_path.stat().st_size / 1e6:.2f} MB), {scorer.vocabulary_size} words, "
            f"n-grams {list(build.ngrams)}"
        )

        audio, references = utterances(corpus, args.utterances + 1)
        logits = logits_of(args.checkpoint, audio)
        print(f"{len(logits) - 1} utterances of {SECONDS} s ({len(logits[0])} frames), beam {args.beam}")

        started = time.perf_counter()
        ours = BeamSearchDecoder(scorer, alphabet)
        decode_options = DecoderOptions(beam_width=args.beam, alpha=args.alpha, beta=args.beta)
        ours.decode(logits[0], decode_options)  # builds the vocabulary trie
        load_seconds = time.perf_counter() - started
        wall, cpu = time.perf_counter(), time.process_time()
        our_texts = [ours.decode(x, decode_options) for x in logits[1:]]
        our_cpu, our_wall = time.process_time() - cpu, time.perf_counter() - wall

        saved = Path(tmp) / "logits.npz"
        np.savez(saved, **{f"u{i}": x for i, x in enumerate(logits)})
        labels = json.dumps([*alphabet.labels, ""])
        peer_args = [str(saved), str(scorer.lm_path), str(scorer.vocabulary_path), labels]
        peer_args += [str(args.alpha / math.log(10)), str(args.beta), str(args.beam)]
        result = subprocess.run(
            [str(args.peer_python), "-c", PEER, *peer_args], capture_output=True, text=True, check=True
        )
        peer = json.loads(result.stdout)
        peer_texts = [" ".join(t.split()) for t in peer["texts"]]

    refs = references[1:]
    n = len(refs)
    greedy = [greedy_text(x, alphabet) for x in logits[1:]]
    cores = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; one decoding thread each")
    print(f"dsita {decode_options} (load and trie {load_seconds:.2f} s)")
    print("ms per utterance, CPU time (wall time in brackets: the machine may be shared)")
    print(f"  dsita (flashlight-text, lexicon): {our_cpu / n * 1000:6.1f} ({our_wall / n * 1000:.1f})")
    print(
        f"  pyctcdecode (default pruning):    {peer['cpu'] / n * 1000:6.1f} ({peer['wall'] / n * 1000:.1f})"
    )
    print(f"speed-up: {peer['cpu'] / our_cpu:.1f}x in CPU time, {peer['wall'] / our_wall:.1f}x in wall time")
    print(
        f"WER: greedy {jiwer.wer(refs, greedy):.1%}, dsita {jiwer.wer(refs, our_texts):.1%}, "
        f"pyctcdecode {jiwer.wer(refs, peer_texts):.1%}"
    )


if __name__ == "__main__":
    main()
