"""Hot words in the lexicon search, with the real KenLM scorer, on logits whose best paths we know; and the
incremental search (decode_begin / decode_step / decode_end) against whole-utterance decoding."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from dsita.decoding.beam import BeamDecoder, BeamSearchDecoder, DecoderOptions, log_softmax
from dsita.decoding.hot_lexicon import MAX_COLUMNS
from dsita.decoding.hotwords import DEFAULT_BOOST, hot_words, parse_hotword, read_hotwords_file
from dsita.errors import DsitaError
from dsita.lm.scorer import load_scorer
from dsita.text.alphabet import Alphabet
from tests.decoding.test_beam import SMALL_BEAM, spell

ITALIAN = Alphabet.italian()


@pytest.fixture(scope="module")
def decoder(sample_scorer: Path) -> BeamSearchDecoder:
    return BeamSearchDecoder(load_scorer(sample_scorer), ITALIAN)


def test_hotword_specs_and_files(tmp_path: Path) -> None:
    assert parse_hotword("cancelletto:8") == ("cancelletto", 8.0)
    assert parse_hotword(" posta vocale ") == ("posta vocale", DEFAULT_BOOST)
    assert parse_hotword("ore 12:30:2.5") == ("ore 12:30", 2.5)  # the boost is after the last colon
    with pytest.raises(DsitaError, match=r"--hotword: the boost of 'cancelletto' is 'molto', not a number"):
        parse_hotword("cancelletto:molto")
    with pytest.raises(DsitaError, match="has no word before the boost"):
        parse_hotword(":3")
    listing = tmp_path / "hot.txt"
    listing.write_text("# domain words\ncancelletto:8\n\nposta vocale\n  asterisco : 2 \n", encoding="utf-8")
    assert read_hotwords_file(listing) == {
        "cancelletto": 8.0,
        "posta vocale": DEFAULT_BOOST,
        "asterisco": 2.0,
    }
    listing.write_text("cancelletto\nasterisco:tanto\n", encoding="utf-8")
    with pytest.raises(DsitaError, match=r"hot\.txt:2: the boost of 'asterisco' is 'tanto'"):
        read_hotwords_file(listing)
    with pytest.raises(DsitaError, match="cannot read the hot words file"):
        read_hotwords_file(tmp_path / "missing.txt")


def test_entries_are_normalised_and_checked() -> None:
    entries = hot_words({"Cancelletto": 3.0, "cancelletto": 8.0, "Posta  Vocale": 5, "3 euro": 1}, ITALIAN)
    assert [(e.text, e.boost) for e in entries] == [
        ("cancelletto", 8.0),
        ("posta vocale", 5.0),
        ("tre euro", 1.0),
    ]
    for hotwords, message in (
        ({"жук": 3.0}, r"hot word 'жук' cannot be spelled: character 'ж' not in alphabet"),
        ({"posta vocale": -2.0}, "a phrase takes a boost of 0 or more, got -2"),
        ({"gatto": float("inf")}, "the boost must be a finite number"),
        ({"gatto": "tanto"}, "the boost must be a finite number"),
    ):
        with pytest.raises(DsitaError, match=message) as error:
            hot_words(hotwords, ITALIAN)  # type: ignore[arg-type]
        assert "\n" not in str(error.value)


def test_a_boost_brings_in_a_runner_up_word_and_a_negative_one_keeps_it_out(
    decoder: BeamSearchDecoder,
) -> None:
    logits = spell("il gatto dorme", np.random.default_rng(0), second={7: "i"})  # "gatti" nearly as likely
    assert decoder.decode(logits, SMALL_BEAM) == "il gatto dorme"
    assert decoder.decode(logits, SMALL_BEAM, {"gatti": DEFAULT_BOOST}) == "il gatti dorme"
    assert decoder.decode(logits, SMALL_BEAM, {"gatto": -DEFAULT_BOOST}) == "il gatti dorme"
    assert decoder.decode(logits, SMALL_BEAM, {"cancelletto": 8.0}) == "il gatto dorme"  # a word not said


def test_a_word_outside_the_vocabulary_is_decodable_once_hot(decoder: BeamSearchDecoder) -> None:
    logits = spell("il zqxw dorme", np.random.default_rng(1))
    assert "zqxw" not in decoder.scorer.vocabulary()
    assert "zqxw" not in decoder.decode(logits, SMALL_BEAM)
    assert decoder.decode(logits, SMALL_BEAM, {"zqxw": DEFAULT_BOOST}) == "il zqxw dorme"
    assert decoder.decode(logits, SMALL_BEAM, {"Zqxw dorme": DEFAULT_BOOST}) == "il zqxw dorme"


def test_a_phrase_is_boosted_only_as_a_whole(decoder: BeamSearchDecoder) -> None:
    rng = np.random.default_rng(2)
    said = spell("la pasta vocale", rng, second={4: "o"})  # "posta" nearly as likely as "pasta"
    other = spell("la pasta fresca", rng, second={4: "o"})
    phrase, word = {"posta vocale": 3.0}, {"posta": 3.0}
    assert decoder.decode(said, SMALL_BEAM) == "la pasta vocale"
    assert decoder.decode(said, SMALL_BEAM, phrase) == "la posta vocale"
    # Without "vocale" after it, "posta" gets nothing from the phrase; boosted alone, it comes out anyway.
    assert decoder.decode(other, SMALL_BEAM, phrase) == "la pasta fresca"
    assert decoder.decode(other, SMALL_BEAM, word) == "la posta fresca"


def test_a_hot_list_is_built_once_and_many_boosts_share_few_outputs(decoder: BeamSearchDecoder) -> None:
    first = decoder.hot_lexicon({"gatti": 5.0, "posta vocale": 3.0}, SMALL_BEAM)
    assert decoder.hot_lexicon({"gatti": 5.0, "posta vocale": 3.0}, SMALL_BEAM) is first
    assert decoder.hot_lexicon({"gatti": 5.0}, SMALL_BEAM) is not first
    vocabulary = decoder.scorer.vocabulary()[:200]
    many = decoder.hot_lexicon({w: 1.0 + i / 10 for i, w in enumerate(vocabulary)}, SMALL_BEAM)
    assert len(many.columns) <= MAX_COLUMNS
    shared = decoder.hot_lexicon(dict.fromkeys(vocabulary, 4.0), SMALL_BEAM)
    np.testing.assert_array_equal(shared.columns, [4.0])
    # The vocabulary trie itself is shared, not changed: the plain search still finds what it found.
    logits = spell("il gatto dorme", np.random.default_rng(0), second={7: "i"})
    assert decoder.decode(logits, SMALL_BEAM) == "il gatto dorme"


def test_hot_words_need_the_lexicon_search(decoder: BeamSearchDecoder) -> None:
    logits = spell("il gatto", np.random.default_rng(3))
    free = DecoderOptions(beam_width=16, alpha=0.5, lexicon_free=True)
    with pytest.raises(DsitaError, match="lexicon-free decoding takes none"):
        decoder.decode(logits, free, {"gatto": 2.0})
    with pytest.raises(DsitaError, match="hot word 'жук' cannot be spelled"):
        decoder.decode(logits, SMALL_BEAM, {"жук": 2.0})


@pytest.mark.parametrize("hotwords", [None, {"gatti": 5.0, "zqxw": 5.0, "posta vocale": 3.0}])
def test_an_utterance_fed_in_pieces_is_searched_as_a_whole(
    decoder: BeamSearchDecoder, hotwords: dict[str, float] | None
) -> None:
    rng = np.random.default_rng(4)
    text = "il gatto dorme la pasta vocale il zqxw dorme"
    logits = spell(text, rng, second={7: "i", 19: "o"})
    whole_text, whole_path = decoder.decode_path(logits, SMALL_BEAM, hotwords)
    hot = decoder.hot_lexicon(hotwords, SMALL_BEAM) if hotwords else None
    search, at, partials = decoder.search(SMALL_BEAM, hot), 0, []
    while at < len(logits):
        size = int(rng.integers(1, 9))
        search.step(log_softmax(logits[at : at + size]))
        partials.append(search.best()[0])
        at += size
    text_out, path = search.end()
    assert (text_out, path.tolist()) == (whole_text, whole_path.tolist())
    # Partials hold finished words only (a phrase's first word shows alone until the phrase wins), and the
    # last of them is the whole text less its last word, which no space has ended yet.
    known = set(decoder.scorer.vocabulary()) | {"zqxw"}
    assert all(set(partial.split()) <= known for partial in partials)
    assert partials[-1] == whole_text.rsplit(" ", 1)[0]
    labels = [label for label, _ in itertools.groupby(path.tolist()) if label != ITALIAN.blank_index]
    assert " ".join(ITALIAN.decode(labels).split()) == whole_text


def test_the_beam_decoder_times_the_words_of_its_own_path(decoder: BeamSearchDecoder) -> None:
    logits = spell("la nonna prepara il pranzo", np.random.default_rng(5))
    beam = BeamDecoder(decoder, SMALL_BEAM, step_seconds=0.02)
    transcript = beam.decode(logits)
    assert transcript.text == "la nonna prepara il pranzo"
    # spell() gives every character two frames and a blank: "la" starts at 0 and ends after 5 frames.
    assert [(w.word, w.start, w.end) for w in transcript.words[:2]] == [
        ("la", 0.0, pytest.approx(0.10)),
        ("nonna", pytest.approx(0.18), pytest.approx(0.18 + 14 * 0.02)),
    ]
    assert all(0.9 < w.confidence <= 1 for w in transcript.words)
    hot = beam.with_hotwords({"pranzo": 2.0})
    assert hot.decode(logits) == transcript and beam.with_hotwords({}) is beam
    segment = beam.start()
    segment.feed(logits[:40])
    assert segment.transcript().text == "la nonna"
    segment.feed(logits[40:])
    assert segment.finish() == transcript
