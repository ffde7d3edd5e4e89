"""Hot words: target-word recall and WER with and without boosts, and decoding time with 100 hot words.

    .venv/bin/python benchmarks/hotwords.py [--work DIR] [--checkpoint tests/fixtures/small_model.pt]

Setup (benchmarks/sample_setup.py, kept in --work): the committed sample, the default corpus's scorer
without the sample's dev and test sentences, alpha and beta tuned on the sample's dev clips, the checkpoint
exported to it-it.zip (int8), decoded at beam 500.

Targets: the test clips are split in two halves. The targets are the words of 6 letters or more of the first
half's transcripts that the plain beam search misses in its transcript of their clip, less any word of the
second half. The second half is the control: none of its clips holds a target, so anything the boosts
change there is a false alarm. Target phrases: the pairs of consecutive words of the first half of which
the plain search misses a word of 3 letters or more, less pairs the second half says, boosted as phrases.
Distractors: vocabulary words of 6 letters or more that no test clip holds, added to the targets up to 100
hot words.

For each boost, the test clips go through `SpeechModel.transcribe(audio, hotwords=...)`. Reported: recall
(occurrences of a target aligned as correct; for phrases, both words), WER of the control half, WER of the
other words (every reference word that is not a target: its substitutions and deletions, and insertions
unless next to a target), overall WER. Time: CPU time to decode the 40 clips' logits (beam search only)
with no hot words, with 100 (the targets and distractors) at one boost and at 16 different boosts, and
with the phrases, the median of --repeats interleaved runs; and the time to build a new list of 100 hot
words (median of 5 lists). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np

from dsita.decoding.beam import BeamDecoder, BeamSearchDecoder
from dsita.lm.scorer import load_scorer
from sample_setup import SMALL_MODEL, clips, release, sample_corpus

MIN_TARGET_LETTERS = 6


def word_scores(references: list[str], hypotheses: list[str], targets: set[str]) -> tuple[float, float]:
    """(recall of the target words, WER of the other words), from jiwer's alignment."""
    aligned = jiwer.process_words(references, hypotheses)
    hits = total = errors = others = 0
    for reference, chunks in zip(aligned.references, aligned.alignments, strict=True):
        for chunk in chunks:
            if chunk.type == "insert":
                near = reference[max(0, chunk.ref_start_idx - 1) : chunk.ref_start_idx + 1]
                if not targets & set(near):
                    errors += chunk.hyp_end_idx - chunk.hyp_start_idx
                continue
            for word in reference[chunk.ref_start_idx : chunk.ref_end_idx]:
                if word in targets:
                    total += 1
                    hits += chunk.type == "equal"
                else:
                    others += 1
                    errors += chunk.type != "equal"
    return hits / max(total, 1), errors / max(others, 1)


def phrase_recall(references: list[str], hypotheses: list[str], phrases: list[str]) -> float:
    said = [
        (p, h) for p in phrases for r, h in zip(references, hypotheses, strict=True) if f" {p} " in f" {r} "
    ]
    return sum(f" {p} " in f" {h} " for p, h in said) / max(len(said), 1)


def pick(
    references: list[str], plain: list[str], vocabulary: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """Targets, target phrases and distractors (see the module docstring)."""
    half = len(references) // 2
    control = {w for r in references[half:] for w in r.split()}
    targets, phrases = set(), set()
    for reference, hypothesis in zip(references[:half], plain[:half], strict=True):
        words, said = reference.split(), set(hypothesis.split())
        targets |= {w for w in words if len(w) >= MIN_TARGET_LETTERS and w not in said} - control
        for first, second in itertools.pairwise(words):
            missed = [w for w in (first, second) if w not in said and len(w) >= 3]
            if missed and f" {first} {second} " not in " ".join(["", *references[half:], ""]):
                phrases.add(f"{first} {second}")
    every = {w for r in references for w in r.split()}
    candidates = sorted(w for w in vocabulary if len(w) >= MIN_TARGET_LETTERS and w not in every)
    rng = np.random.default_rng(0)
    distractors = list(rng.choice(candidates, 100 - len(targets), replace=False))
    return sorted(targets), sorted(phrases), distractors


def timing(
    decoder: BeamDecoder, logits: list[np.ndarray], lists: dict[str, dict[str, float]], repeats: int
) -> dict[str, float]:
    """CPU seconds to decode `logits` with no hot words ("none") and with each list, medians of
    `repeats` interleaved runs."""
    decoders = {"none": decoder, **{name: decoder.with_hotwords(words) for name, words in lists.items()}}
    for used in decoders.values():  # warm-up: the trie, the hot lists
        for x in logits[:3]:
            used.decode(x)
    runs: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(repeats):
        for name, used in decoders.items():
            start = time.process_time()
            for x in logits:
                used.decode(x)
            runs[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in runs.items()}


def build_time(beam: BeamSearchDecoder, decoder: BeamDecoder, vocabulary: list[str]) -> float:
    rng = np.random.default_rng(1)
    times = []
    for _ in range(5):
        words = rng.choice(vocabulary, 100, replace=False).tolist()
        start = time.perf_counter()
        beam.hot_lexicon(dict.fromkeys(words, 5.0), decoder.options)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dsita-bench")
    parser.add_argument("--checkpoint", type=Path, default=SMALL_MODEL)
    parser.add_argument("--boosts", default="3,5,8,12")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = release(args.work, args.checkpoint)
    assert isinstance(model.decoder, BeamDecoder)
    test = clips(sample_corpus(args.work), "test")
    refs = test.references
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.checkpoint};",
        model.decoding,
    )
    plain = [model.transcribe(audio).text for audio in test.audio]
    vocabulary = model.decoder.beam.scorer.vocabulary()
    targets, phrases, distractors = pick(refs, plain, vocabulary)
    half = len(refs) // 2
    print(f"{len(targets)} targets: {' '.join(targets)}")
    print(f"{len(phrases)} phrases: {', '.join(phrases)}")

    def row(name: str, hypotheses: list[str], count: int) -> None:
        recall, other = word_scores(refs, hypotheses, set(targets))
        control = jiwer.wer(refs[half:], hypotheses[half:])
        print(
            f"| {name} | {count} | {recall:.1%} | {phrase_recall(refs, hypotheses, phrases):.1%} | "
            f"{control:.1%} | {other:.1%} | {jiwer.wer(refs, hypotheses):.1%} |"
        )

    print("| hot words | count | target recall | phrase recall | control WER | other words' WER | WER |")
    print("|---|---|---|---|---|---|---|")
    row("none", plain, 0)
    for boost in (float(b) for b in args.boosts.split(",")):
        for name, words in (("targets", targets), ("targets + distractors", targets + distractors)):
            hotwords = dict.fromkeys(words, boost)
            row(
                f"{name}, boost {boost:g}",
                [model.transcribe(a, hotwords=hotwords).text for a in test.audio],
                len(words),
            )
        hotwords = dict.fromkeys(phrases, boost)
        row(
            f"phrases, boost {boost:g}",
            [model.transcribe(a, hotwords=hotwords).text for a in test.audio],
            len(phrases),
        )

    logits = [model.segment_logits(audio) for audio in test.audio]
    hundred = targets + distractors
    lists = {
        "100 hot words, one boost": dict.fromkeys(hundred, 5.0),
        "100 hot words, 16 boosts": {w: 2.0 + i % 16 for i, w in enumerate(hundred)},
        "60 phrases": dict.fromkeys(phrases, 5.0),
    }
    times = timing(model.decoder, logits, lists, args.repeats)
    fresh = BeamSearchDecoder(load_scorer(model.decoder.beam.scorer.folder), model.alphabet)
    fresh.decode(logits[0], model.decoder.options)
    built = build_time(fresh, model.decoder, vocabulary)
    print(f"decoding the {len(logits)} clips' logits, CPU s, median of {args.repeats}:")
    for name, seconds in times.items():
        print(f"  {name}: {seconds:.3f} ({seconds / times['none']:.2f}x)")
    print(f"a new list of 100 hot words built in {built * 1e3:.1f} ms (median of 5 lists)")


if __name__ == "__main__":
    main()
