"""What a release says about its model: the metadata written into the graphs and the model card.

Torch-free. Test WER/CER come from the evaluation reports next to the checkpoint (`dsita train`,
`dsita evaluate`, the `test` step); a figure with no report is written as "not measured", never a
placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from dsita.inference.package import ALPHABET_FILE as ALPHABET
from dsita.inference.package import INPUT, LENGTHS_IN, LENGTHS_OUT, LOGITS, MODEL_FILE

NOT_MEASURED = "not measured"
# The release files and the DeepSpeech client files in them, named here for the card; `dsita.export.release`
# writes them.
RELEASE_ZIP = "it-it.zip"
RELEASE_TENSORFLOW = "model_tensorflow_it.tar.xz"
RELEASE_FP32 = "model_it.tar.xz"
RELEASE_CHECKPOINT = "checkpoint_it.tar.xz"
TFLITE_FILE = "output_graph.tflite"
PBMM_FILE = "output_graph.pbmm"
DS_SCORER_FILE = "kenlm.scorer"
DEEPSPEECH_FILES = "deepspeech_files"  # metadata key: the client files written, or NO_FILES and why not
NO_FILES = "none: "


@dataclass(frozen=True)
class ModelInfo:
    """Who made the model and under which terms (MODEL_NAME, MODEL_AUTHOR, MODEL_VERSION, MODEL_LICENSE)."""

    name: str = "dsita-it"
    author: str = "dsita contributors"
    version: str = "0.1.0"
    license: str = "CC-BY-4.0"


def evaluation_metrics(folder: Path) -> dict[str, object]:
    """Test WER and CER, greedy and with the LM, from the newest `test_report*.json` of each kind."""
    reports = sorted(folder.glob("test_report*.json"), key=lambda p: p.stat().st_mtime)
    metrics: dict[str, object] = {
        f"test_{m}_{d}": NOT_MEASURED for d in ("greedy", "lm") for m in ("wer", "cer")
    }
    for path in reports:  # oldest first, so the newest report of a kind wins
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
            decoder, wer, cer = str(report["decoder"]), float(report["wer"]), float(report["cer"])
            clips = len(report["samples"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not an evaluation report
        kind = "greedy" if decoder == "greedy" else "lm"
        metrics.update({f"test_wer_{kind}": round(wer, 4), f"test_cer_{kind}": round(cer, 4)})
        metrics[f"test_clips_{kind}"] = clips
        if kind == "lm":
            metrics["test_decoder_lm"] = decoder
    return metrics


def model_card(metadata: Mapping[str, object], parameters: int) -> str:
    """MODEL_CARD.md: YAML front matter of every metadata value, then the model in words."""
    front = "".join(f"{key}: {json.dumps(value, ensure_ascii=False)}\n" for key, value in metadata.items())
    m = metadata

    def pct(key: str) -> str:
        value = m[key]
        return f"{value:.2%}" if isinstance(value, float) else str(value)

    lm_line = (
        f"The scorer's default weights: alpha {m['lm_alpha']}, beta {m['lm_beta']}."
        if isinstance(m["lm_alpha"], float)
        else "No scorer is included: decoding is greedy."
    )
    return f"""---
{front}---

# {m["model_name"]} {m["model_version"]}

Italian ({m["language"]}) speech-to-text: {m["description"]} with {parameters:,} parameters,
trained with dsita {m["dsita_version"]}, by {m["model_author"]}, under the {m["model_license"]} licence.

## Use

    dsita transcribe clip.wav --model {RELEASE_ZIP}

with dsita installed, or in Python: `dsita.load_model("{RELEASE_ZIP}").transcribe("clip.wav").text`.
Any sample rate and channel count is converted to {m["sample_rate"]} Hz mono. Inference needs onnxruntime,
numpy, soundfile, soxr and flashlight-text; no torch.

## Evaluation (test split)

| decoding | WER | CER |
|---|---|---|
| greedy | {pct("test_wer_greedy")} | {pct("test_cer_greedy")} |
| beam search with the LM | {pct("test_wer_lm")} | {pct("test_cer_lm")} |

{lm_line}
Training data (hours): {m["training_hours"]}.

{_client_section(m)}

## Inputs and outputs

{_graph_io(m)} Graph version {m["graph_version"]}.
"""


def _client_section(m: Mapping[str, object]) -> str:
    """The release files, and the commands of the original clients (DeepSpeech 0.9.3, Coqui STT 1.4)."""
    files = m.get(DEEPSPEECH_FILES)
    card = "`MODEL_CARD.md`"
    if not isinstance(files, list):
        return (
            f"## Files\n\n`{RELEASE_ZIP}` (int8 `{MODEL_FILE}`, `scorer/`, `{ALPHABET}`, {card}), "
            f"`{RELEASE_FP32}` (the same with the fp32 graph) and `{RELEASE_CHECKPOINT}` (`best_dev.pt`, "
            f"`settings.env`). No files for DeepSpeech or Coqui STT apps: "
            f"{str(files or 'not written').removeprefix(NO_FILES)}."
        )
    scorer = DS_SCORER_FILE in files
    ds_scorer = f"`{DS_SCORER_FILE}`, " if scorer else ""
    rows = (
        (RELEASE_ZIP, f"`{MODEL_FILE}` (int8), `scorer/`, `{TFLITE_FILE}`, {ds_scorer}`{ALPHABET}`, {card}",
         "dsita; `stt` 1.4, `deepspeech-tflite` 0.9.3"),
        (RELEASE_TENSORFLOW, f"`{PBMM_FILE}`, {ds_scorer}`{ALPHABET}`, {card}", "`deepspeech` 0.9.3"),
        (RELEASE_FP32, f"`{MODEL_FILE}` (fp32), `scorer/`, `{ALPHABET}`, {card}", "dsita"),
        (RELEASE_CHECKPOINT, f"`best_dev.pt`, `settings.env`, and a DeepSpeech 0.9 checkpoint: "
         f"`best_dev-N.index`, `best_dev-N.data-00000-of-00001`, `best_dev_checkpoint`, `{ALPHABET}`",
         "dsita; DeepSpeech 0.9 and Coqui STT training"),
    )  # fmt: skip
    table = "\n".join(f"| `{name}` | {holds} | {users} |" for name, holds, users in rows)
    option = f" --scorer {DS_SCORER_FILE}" if scorer else ""
    weights = (
        f"`{DS_SCORER_FILE}` holds alpha {m['lm_alpha_deepspeech']:.6g} and beta "
        f"{m['lm_beta_deepspeech']:.6g} in the clients' units (their `--lm_alpha`, `--lm_beta`): dsita's "
        "alpha times log10(e), the same beta."
        if scorer
        else "No scorer is included: the clients decode without a language model."
    )
    return f"""## Files

| file | holds | for |
|---|---|---|
{table}

## Use in a DeepSpeech or Coqui STT app

The graphs follow DeepSpeech 0.9's inference contract, so apps built on those clients load them unchanged.
The clients take 16 kHz mono 16-bit WAV:

    stt --model {TFLITE_FILE}{option} --audio clip.wav          # pip install stt==1.4.0
    deepspeech --model {TFLITE_FILE}{option} --audio clip.wav   # pip install deepspeech-tflite==0.9.3
    deepspeech --model {PBMM_FILE}{option} --audio clip.wav     # pip install deepspeech==0.9.3

{weights} The graphs' default beam width is {m.get("deepspeech_beam_width", "not recorded")}."""


def _features_in_words(m: Mapping[str, object]) -> str:
    window = f"{m['window_ms']} ms windows every {m['step_ms']} ms"
    if "n_context" in m:
        context = f"{m['n_context']} frames of context each side"
        return f"MFCC features ({m['n_mfcc']} coefficients, {window}, {context})"
    return (
        f"log-mel features ({m['input_width']} channels, {window}, each channel normalised to zero mean and "
        "unit variance over the segment, zero past each item's length)"
    )


def _graph_io(m: Mapping[str, object]) -> str:
    """What the graph takes and returns: a streaming graph with its state, or a segment graph."""
    # The metadata's values are objects to the type checker; `make_release` writes these two as lists.
    outputs = len(cast(list[str], m["alphabet"])) + 1
    step = f"one step every {m['output_step_ms']} ms; the CTC blank is last"
    features = f"`{INPUT}` (batch, time, {m['input_width']}) {_features_in_words(m)}"
    if m["graph"] == "segment":
        return (
            f"`{MODEL_FILE}` takes {features} and `{LENGTHS_IN}` (batch); it returns `{LOGITS}` (batch, "
            f"steps, {outputs}; {step}) and `{LENGTHS_OUT}` (batch). There is no streaming state: each call "
            "transcribes whole segments."
        )
    names = list(cast(list[str], m["state_names"]))
    states_in = ", ".join(f"`previous_state_{name}`" for name in names)
    states_out = ", ".join(f"`new_state_{name}`" for name in names)
    return (
        f"`{MODEL_FILE}` takes {features} and the state {states_in} (batch, {m['state_width']}); it returns "
        f"`{LOGITS}` (batch, time, {outputs}; {step}) and the state for the next chunk, {states_out}."
    )
