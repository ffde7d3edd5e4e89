"""Beam search with the real KenLM scorer through flashlight-text, on logits whose best path we know."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dsita.decoding.batch import BatchDecoder
from dsita.decoding.beam import BeamSearchDecoder, DecoderOptions
from dsita.decoding.greedy import greedy_text
from dsita.errors import DsitaError
from dsita.lm.scorer import load_scorer
from dsita.text.alphabet import Alphabet

ITALIAN = Alphabet.italian()
SMALL_BEAM = DecoderOptions(beam_width=64, alpha=0.5, beta=1.0)


def spell(text: str, rng: np.random.Generator, second: dict[int, str] | None = None) -> np.ndarray:
    """Logits that read `text` (two frames a character, then a blank), over noise.

    `second` gives, by character position, a runner-up label almost as likely as the written one.
    """
    rows = []
    for position, char in enumerate(text):
        row = rng.normal(0.0, 0.3, len(ITALIAN) + 1)
        row[ITALIAN.encode(char)[0]] = 6.0
        if second and position in second:
            row[ITALIAN.encode(second[position])[0]] = 5.0
        blank = rng.normal(0.0, 0.3, len(ITALIAN) + 1)
        blank[ITALIAN.blank_index] = 6.0
        rows += [row, row, blank]
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def decoder(sample_scorer: Path) -> BeamSearchDecoder:
    return BeamSearchDecoder(load_scorer(sample_scorer), ITALIAN)


def test_lexicon_search_keeps_to_vocabulary_words(decoder: BeamSearchDecoder) -> None:
    rng = np.random.default_rng(0)
    logits = spell("il gatyo dorme", rng, second={6: "t"})  # "gatyo" is written, "gatto" nearly as likely
    assert greedy_text(logits, ITALIAN) == "il gatyo dorme"
    assert decoder.decode(logits, SMALL_BEAM) == "il gatto dorme"
    # Without the LM (alpha 0) the lexicon alone still rules "gatyo" out.
    assert decoder.decode(logits, DecoderOptions(beam_width=64, alpha=0.0, beta=0.0)) == "il gatto dorme"


def test_lexicon_free_lets_unknown_words_through(decoder: BeamSearchDecoder) -> None:
    logits = spell("il zqxw dorme", np.random.default_rng(1))
    assert "zqxw" not in decoder.scorer.vocabulary()
    free = DecoderOptions(beam_width=32, alpha=0.5, beta=1.0, lexicon_free=True)
    assert decoder.decode(logits, free) == "il zqxw dorme"
    assert "zqxw" not in decoder.decode(logits, SMALL_BEAM)


def test_without_lm_weight_lexicon_free_search_finds_the_greedy_path(decoder: BeamSearchDecoder) -> None:
    rng = np.random.default_rng(2)
    for text in ("ciao mondo", "una frase qualsiasi", "x"):
        logits = spell(text, rng)
        options = DecoderOptions(beam_width=16, alpha=0.0, beta=0.0, lexicon_free=True)
        assert decoder.decode(logits, options) == greedy_text(logits, ITALIAN) == text


@pytest.mark.parametrize("lexicon_free", [False, True])
def test_decode_path_is_a_ctc_alignment_of_the_text(decoder: BeamSearchDecoder, lexicon_free: bool) -> None:
    logits = spell("la nonna prepara il pranzo", np.random.default_rng(3))
    text, path = decoder.decode_path(
        logits, DecoderOptions(beam_width=32, alpha=0.5, lexicon_free=lexicon_free)
    )
    assert path.shape == (len(logits),)
    labels = [label for label, _ in itertools.groupby(path.tolist()) if label != ITALIAN.blank_index]
    assert " ".join(ITALIAN.decode(labels).split()) == text == "la nonna prepara il pranzo"
    assert decoder.decode_path(logits[:0], SMALL_BEAM)[0] == ""


def test_worker_processes_decode_like_one_process(sample_scorer: Path) -> None:
    rng = np.random.default_rng(4)
    texts = ["il gatto dorme", "domani andiamo al mare", "la nonna", "ciao", "il treno parte", "non piove"]
    logits = [spell(t, rng, second={1: "e"}) for t in texts]
    scorer = load_scorer(sample_scorer)
    with BatchDecoder(ITALIAN, scorer, workers=1) as one, BatchDecoder(ITALIAN, scorer, workers=2) as two:
        assert two.decode(logits, SMALL_BEAM) == one.decode(logits, SMALL_BEAM)
        assert one.describe(DecoderOptions()) == "beam search (lexicon, beam 500, alpha 0, beta 0)"
    greedy = BatchDecoder(ITALIAN)
    assert greedy.decode(logits) == [greedy_text(x, ITALIAN) for x in logits]
    assert greedy.describe(SMALL_BEAM) == "greedy"


def test_alpha_and_beta_default_to_the_scorers(sample_scorer: Path, tmp_path: Path) -> None:
    copy = tmp_path / "scorer"
    shutil.copytree(sample_scorer, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "alpha": 0.5, "beta": 1.0}))
    decoder = BeamSearchDecoder(load_scorer(copy), ITALIAN)
    rng = np.random.default_rng(5)
    logits = [spell("il gatyo dorme sul divano", rng, second={6: "t", 13: "r"}), spell("la nonnna", rng)]
    for x in logits:
        assert decoder.decode(x, DecoderOptions(beam_width=64)) == decoder.decode(x, SMALL_BEAM)
    with BatchDecoder(ITALIAN, load_scorer(copy)) as batch:
        assert (
            batch.describe(DecoderOptions(beam_width=64))
            == "beam search (lexicon, beam 64, alpha 0.5, beta 1)"
        )


def test_bad_logits_alphabet_and_options_are_errors(decoder: BeamSearchDecoder, sample_scorer: Path) -> None:
    with pytest.raises(
        DsitaError, match=r"logits of shape \(5, 30\) do not match the alphabet: expected \(T, 39\)"
    ):
        decoder.decode(np.zeros((5, 30), dtype=np.float32), SMALL_BEAM)
    with pytest.raises(DsitaError, match="built for another alphabet than the model's"):
        BeamSearchDecoder(load_scorer(sample_scorer), Alphabet.english())
    with pytest.raises(DsitaError, match="alpha must be a non-negative number, got -1"):
        DecoderOptions(alpha=-1)
    with pytest.raises(DsitaError, match="beam width and token beam must be positive"):
        DecoderOptions(beam_width=0)


def test_bad_scorer_folders_are_errors(sample_scorer: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DsitaError, match=r"nope: scorer folder not found \(build one with `dsita lm build`\)"
    ):
        load_scorer(tmp_path / "nope")
    with pytest.raises(DsitaError, match=r"not a scorer folder, manifest\.json is missing"):
        load_scorer(tmp_path)
    copy = tmp_path / "scorer"
    shutil.copytree(sample_scorer, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(DsitaError, match="version 2, this dsita reads version 1"):
        load_scorer(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "lm.binary").unlink()
    with pytest.raises(DsitaError, match=r"the manifest's lm file 'lm\.binary' is missing"):
        load_scorer(copy)
