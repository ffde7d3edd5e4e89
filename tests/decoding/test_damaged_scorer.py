"""A damaged scorer folder is one DsitaError naming the file, never KenLM's or the codec's exception."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from dsita.decoding.beam import BeamSearchDecoder, DecoderOptions
from dsita.errors import DsitaError
from dsita.lm.scorer import LM_FILE, VOCABULARY_FILE, load_scorer
from dsita.text.alphabet import Alphabet

ITALIAN = Alphabet.italian()


@pytest.fixture()
def scorer(sample_scorer: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "scorer"
    shutil.copytree(sample_scorer, copy)
    return copy


def one_line_error(action: object) -> str:
    with pytest.raises(DsitaError) as info:
        action()  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_lm_binary_that_is_not_kenlms_is_refused_when_the_scorer_loads(scorer: Path) -> None:
    lm = scorer / LM_FILE
    lm.write_bytes(random.Random(0).randbytes(lm.stat().st_size))  # KenLM read it as ARPA text and failed
    message = one_line_error(lambda: load_scorer(scorer))
    assert message == f"{lm}: not a KenLM binary (damaged, or not built by `dsita lm build`)"


def test_a_truncated_lm_binary_is_refused_naming_it(scorer: Path) -> None:
    lm = scorer / LM_FILE
    lm.write_bytes(lm.read_bytes()[:100_000])
    loaded = load_scorer(scorer)  # its header is intact: KenLM finds out
    message = one_line_error(lambda: BeamSearchDecoder(loaded, ITALIAN))
    assert message.startswith(f"{lm}: KenLM cannot read it (End of file for reading")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("perché\ncasa\n".encode("latin-1"), "not UTF-8 text (byte 5); rebuild the scorer"),
        (b"\n \n\t\n", "the vocabulary is empty, so beam search could write no word"),
    ],
)
def test_a_bad_vocabulary_is_refused_naming_it(scorer: Path, content: bytes, expected: str) -> None:
    vocabulary = scorer / VOCABULARY_FILE
    vocabulary.write_bytes(content)
    loaded = load_scorer(scorer)
    assert one_line_error(lambda: BeamSearchDecoder(loaded, ITALIAN)) == f"{vocabulary}: {expected}"


def test_an_empty_vocabulary_file_is_refused_when_the_scorer_loads(scorer: Path) -> None:
    (scorer / VOCABULARY_FILE).write_bytes(b"")  # beam search used to write empty transcripts without a word
    message = one_line_error(lambda: load_scorer(scorer))
    assert (
        message == f"{scorer / VOCABULARY_FILE}: the vocabulary is empty, so beam search could write no word"
    )


def test_a_vocabulary_word_outside_the_alphabet_is_named(scorer: Path) -> None:
    vocabulary = scorer / VOCABULARY_FILE
    vocabulary.write_text("casa\nnaïve\n", encoding="utf-8")
    decoder = BeamSearchDecoder(load_scorer(scorer), ITALIAN)
    logits = np.zeros((4, len(ITALIAN) + 1), dtype=np.float32)
    message = one_line_error(lambda: decoder.decode(logits, DecoderOptions(beam_width=4)))
    assert message.startswith(f"{vocabulary}: character 'ï' (U+00EF)")
