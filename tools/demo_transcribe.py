"""The last part of `make demo`: the test figures of the run, and three held-out clips through it-it.zip.

Usage: demo_transcribe.py [DATA_DIR]. Prints a small table of the test split's CER and WER, greedy and with
the LM, as the run's test step wrote them (DATA_DIR/checkpoints/test_report_*.json), then three test clips,
evenly spaced in the test split (not chosen by how well they come out), with their reference and the
transcript that dsita's torch-free runtime gives from DATA_DIR/it-it.zip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dsita
from dsita.data.csvs import read_csv
from dsita.errors import DsitaError

EXAMPLES = 3


def read_report(path: Path) -> dict[str, Any]:
    """One test report of the run (`EvaluationReport.save`)."""
    if not path.is_file():
        raise DsitaError(f"{path} not found: the test step of `dsita run` writes it")
    return json.loads(path.read_text(encoding="utf-8"))


def figures_table(greedy: dict[str, Any], lm: dict[str, Any]) -> list[str]:
    """The lines of the CER/WER table."""
    rows = [("greedy (no LM)", greedy), (f"with the LM: {lm['decoder']}", lm)]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'decoding':<{width}}    CER     WER"]
    lines += [f"{name:<{width}}  {100 * r['cer']:5.1f} %  {100 * r['wer']:5.1f} %" for name, r in rows]
    return lines


def main(data_dir: Path) -> None:
    """Print the figures and the examples."""
    greedy = read_report(data_dir / "checkpoints" / "test_report_greedy.json")
    lm = read_report(data_dir / "checkpoints" / "test_report_lm.json")
    clips = read_csv(data_dir / "extracted" / "test.csv")
    print(
        f"\nTest split of the bundled sample: {len(greedy['samples'])} clips of synthetic speech by "
        "espeak-ng and festival,\nsentences and speakers the model never trained on"
    )
    print("\n".join(figures_table(greedy, lm)))
    model = dsita.load_model(data_dir / "it-it.zip")
    print(f"\nThree of them transcribed from {data_dir / 'it-it.zip'} ({model.decoding}, without torch):")
    for clip in clips[:: max(1, len(clips) // EXAMPLES)][:EXAMPLES]:
        print(f"  clip:       {clip.wav_path.name}")
        print(f"  reference:  {clip.transcript}")
        print(f"  hypothesis: {model.transcribe(clip.wav_path).text}")
    print("Synthetic voices are not human speech: see the README's `make demo` section for what this means.")


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
    except DsitaError as exc:
        sys.exit(f"error: {exc}")
