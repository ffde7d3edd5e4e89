"""Greedy transcripts of the sample test split agree between PyTorch, ONNX fp32 and ONNX int8."""

from __future__ import annotations

from pathlib import Path

import jiwer

from dsita.decoding.greedy import greedy_text
from dsita.export.release import RELEASE_FP32, RELEASE_ZIP
from dsita.inference.model import InferenceOptions, load_model
from dsita.text.alphabet import Alphabet


def test_onnx_fp32_equals_pytorch_and_int8_is_within_one_wer_point(
    small_release: Path, small_model_logits: dict
) -> None:
    samples, logits = small_model_logits["test"]
    alphabet = Alphabet.italian()
    references = [s.transcript for s in samples]
    pytorch = [greedy_text(x, alphabet) for x in logits]
    greedy = InferenceOptions(use_lm=False)
    fp32_model = load_model(small_release / RELEASE_FP32, greedy)
    int8_model = load_model(small_release / RELEASE_ZIP, greedy)
    fp32 = [fp32_model.transcribe(s.wav_path).text for s in samples]
    int8 = [int8_model.transcribe(s.wav_path).text for s in samples]

    assert fp32 == pytorch
    wer_fp32, wer_int8 = jiwer.wer(references, fp32), jiwer.wer(references, int8)
    print(f"greedy test WER: pytorch = fp32 {wer_fp32:.2%}, int8 {wer_int8:.2%} ({len(samples)} clips)")
    assert wer_int8 - wer_fp32 <= 0.01
