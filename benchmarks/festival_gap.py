"""Why the held-out engine stays far: one generalization row's model on festival under test-time changes.

    .venv/bin/python benchmarks/festival_gap.py --row baseline   # after `generalization.py --row baseline`

A row's model reads festival at about 50 % greedy CER while the held-out espeak-ng family is near 12 %. If a
mismatch of speaking rate, pitch, vocal tract length, formants or level were the cause, moving festival's
test clips along that axis (towards espeak-ng's voices) would lower its CER. This script applies each such
change to festival's test clips (and to Klatt's, the control: a held-out family the model reads well), and
scores greedy CER per change; then it splits the clean sets' errors into vowels, consonants and word gaps,
and scores the clean sets with each epoch checkpoint the row kept, to show how festival moves with training.
Figures go to `benchmarks/results/generalization/gap-ROW.json`.

It reads only the row's own checkpoints and the test sets that `generalization.py --prepare` wrote; the
changed clips are written under WORK/gap/ (kept, so a second run only scores).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from dsita.data.augmentation.speaker import change_tempo, formant_shift, pitch_shift, vtlp
from dsita.data.dataset import load_samples
from dsita.decoding.batch import BatchDecoder
from dsita.evaluation.evaluate import EvaluationReport, evaluate_logits, model_logits
from dsita.text.alphabet import Alphabet
from generalization import write_changed_set  # the same folder: its changed copies of a test set

WORK = Path("data/generalization")
RESULTS = Path(__file__).resolve().parent / "results" / "generalization"
SETS = ("festival", "klatt")  # the held-out engine, and the held-out espeak-ng family as the control

ClipChange = Callable[[Tensor], Tensor]


def on_one(transform: Callable[[Tensor, Tensor, Tensor], Tensor], factor: float) -> ClipChange:
    """A batch transform of `dsita.data.augmentation.speaker` applied to one clip with one factor."""

    def change(audio: Tensor) -> Tensor:
        lengths = torch.tensor([audio.numel()])
        return transform(audio[None], lengths, torch.tensor([factor]))[0]

    return change


def pre_emphasis(audio: Tensor) -> Tensor:
    return torch.cat([audio[:1], audio[1:] - 0.97 * audio[:-1]])


CHANGES: dict[str, ClipChange] = {
    "identity": lambda audio: audio,
    **{f"tempo {f}": (lambda audio, f=f: change_tempo(audio, f)) for f in (0.8, 0.9, 1.15, 1.3)},
    **{f"vtlp {f}": on_one(vtlp, f) for f in (0.85, 0.92, 1.08, 1.15)},
    **{f"pitch {s:+d} st": on_one(pitch_shift, float(s)) for s in (-4, -2, 2, 4)},
    **{f"formant {f}": on_one(formant_shift, f) for f in (0.9, 1.1)},
    "gain x0.25": lambda audio: audio * 0.25,
    "pre-emphasis 0.97": pre_emphasis,
}


def changed_csv(work: Path, set_name: str, change: str) -> Path:
    """The test split of `set_name` with `change` applied to every clip, as WAVs and a CSV (written once)."""
    source = work / set_name / "test.csv"
    if change == "identity":
        return source
    folder = work / "gap" / f"{set_name}+{change.replace(' ', '_')}"
    return write_changed_set(folder, [source], lambda audio, _: CHANGES[change](audio))


def greedy(model: object, alphabet: Alphabet, csvs: list[Path]) -> EvaluationReport:
    samples = load_samples(csvs, alphabet)
    logits = model_logits(model, samples, alphabet, torch.device("cpu"))  # type: ignore[arg-type]
    return evaluate_logits(samples, logits, BatchDecoder(alphabet))


def greedy_cer(model: object, alphabet: Alphabet, csvs: list[Path]) -> float:
    return float(greedy(model, alphabet, csvs).cer)


VOWELS = set("aeiouàèéìíòóùú")


def errors_by_class(report: EvaluationReport) -> dict[str, float]:
    """The share of the references' vowels, consonants and word gaps that the hypotheses substitute or
    delete (jiwer's character alignment), and insertions per reference character: where the CER is."""
    import jiwer

    totals = {"vowels": 0, "consonants": 0, "spaces": 0}
    wrong = dict.fromkeys(totals, 0)
    inserted = 0

    def kind(char: str) -> str:
        return "spaces" if char == " " else "vowels" if char in VOWELS else "consonants"

    for result in report.samples:
        for char in result.reference:
            totals[kind(char)] += 1
        if not result.hypothesis:
            for char in result.reference:
                wrong[kind(char)] += 1
            continue
        for chunk in jiwer.process_characters(result.reference, result.hypothesis).alignments[0]:
            if chunk.type in ("substitute", "delete"):
                for char in result.reference[chunk.ref_start_idx : chunk.ref_end_idx]:
                    wrong[kind(char)] += 1
            elif chunk.type == "insert":
                inserted += chunk.hyp_end_idx - chunk.hyp_start_idx
    shares = {name: wrong[name] / max(1, totals[name]) for name in totals}
    return shares | {"insertions": inserted / max(1, sum(totals.values()))}


def main() -> None:
    from dsita.data.csvs import read_csv
    from dsita.fileio import atomic_write_text
    from dsita.training.checkpoint import BEST_DEV, EPOCH_PATTERN, load_trained_model

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--row", required=True, help="a generalization row whose checkpoints are in WORK")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    torch.set_num_threads(1)
    alphabet = Alphabet.italian()
    checkpoints: Path = args.work / "rows" / args.row / "checkpoints"
    if not (checkpoints / BEST_DEV).exists():
        raise SystemExit(f"{checkpoints / BEST_DEV} is missing: run generalization.py --row {args.row} first")
    model, _ = load_trained_model(checkpoints / BEST_DEV)
    changes: dict[str, dict[str, float]] = {}
    for change in CHANGES:
        changes[change] = {s: greedy_cer(model, alphabet, [changed_csv(args.work, s, change)]) for s in SETS}
        print(f"{change}: " + ", ".join(f"{s} {cer:.1%}" for s, cer in changes[change].items()), flush=True)
    clean = {s: [args.work / s / "test.csv"] for s in SETS} | {"trained": [args.work / "espeak" / "test.csv"]}
    by_class: dict[str, dict[str, float]] = {}
    examples: dict[str, list[dict[str, str]]] = {}
    best: dict[str, float] = {}
    for set_name, csvs in clean.items():
        report = greedy(model, alphabet, csvs)
        best[set_name], by_class[set_name] = float(report.cer), errors_by_class(report)
        examples[set_name] = [{"reference": r.reference, "greedy": r.hypothesis} for r in report.samples[:3]]
        print(f"{set_name} errors: " + ", ".join(f"{k} {v:.1%}" for k, v in by_class[set_name].items()))
    trend: dict[str, dict[str, float]] = {}
    epochs = sorted(p for p in checkpoints.iterdir() if EPOCH_PATTERN.match(p.name))
    for path in epochs:
        model, _ = load_trained_model(path)
        trend[path.stem] = {s: greedy_cer(model, alphabet, csvs) for s, csvs in clean.items()}
        print(f"{path.stem}: " + ", ".join(f"{s} {c:.1%}" for s, c in trend[path.stem].items()), flush=True)
    trend[Path(BEST_DEV).stem] = best
    clips = {s: len(read_csv(args.work / s / "test.csv")) for s in SETS}
    record = {
        "row": args.row, "clips": clips, "changes": changes, "errors_by_class": by_class,
        "examples": examples, "checkpoints": trend,
    }  # fmt: skip
    atomic_write_text(RESULTS / f"gap-{args.row}.json", json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
