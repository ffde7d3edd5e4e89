"""Italian inverse text normalization: the normalizer's spellings come back as digits, word times are kept."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsita.decoding.transcript import Transcript, Word
from dsita.text.alphabet import Alphabet
from dsita.text.itn import itn_text, parse_number
from dsita.text.normalize import _cardinal, normalize

ITALIAN = Alphabet.italian()


def spoken(text: str) -> str:
    result = normalize(text, ITALIAN)
    assert isinstance(result, str), result
    return result


def test_every_integer_up_to_a_million_parses_back_from_the_normalizers_spelling() -> None:
    # Exhaustive over the normalizer's own number spelling (`_cardinal`, what `normalize` calls for digits):
    # `normalize` itself costs 40 µs a call, too slow for a million; the properties below go through it.
    wrong = [n for n in range(1_000_001) if parse_number(_cardinal(str(n)).split()) != n]
    assert wrong == []


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 1_000_000))
def test_integers_round_trip_through_normalize_and_itn(n: int) -> None:
    assert itn_text(spoken(str(n))) == str(n)


@settings(max_examples=200, deadline=None)
@given(st.integers(1_000_000, 10**15 - 1))
def test_large_integers_round_trip(n: int) -> None:
    assert itn_text(spoken(str(n))) == str(n)


def test_stratified_integers_round_trip_in_full() -> None:
    # Every integer below 2000, then every thousands head with the remainders whose spelling is special
    # (elisions, "tré", num2words' "dicotto"), through the whole rewrite rather than the parser alone.
    tails = [0, 1, 3, 6, 8, 11, 17, 18, 21, 23, 28, 31, 38, 80, 81, 88, 100, 101, 103, 108, 118, 180, 999]
    numbers = [*range(2000), *(head * 1000 + tail for head in range(2, 1000) for tail in tails)]
    wrong = [n for n in numbers if itn_text(_cardinal(str(n))) != str(n)]
    assert wrong == []


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 100_000), st.text("0123456789", min_size=1, max_size=6))
def test_decimals_round_trip(whole: int, decimals: str) -> None:
    written = f"{whole},{decimals}"
    assert itn_text(spoken(written)) == written


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2_000_000), st.integers(0, 99), st.sampled_from(["€", "$"]))
def test_money_round_trips(whole: int, cents: int, symbol: str) -> None:
    written = f"{whole},{cents:02d} {symbol}" if cents else f"{whole} {symbol}"
    assert itn_text(spoken(written)) == written


@pytest.mark.parametrize("hour", range(25))
def test_times_round_trip(hour: int) -> None:
    for minutes in range(1, 60):
        assert itn_text(spoken(f"alle {hour}:{minutes:02d}")) == f"alle {hour}:{minutes:02d}"


@settings(max_examples=300, deadline=None)
@given(st.integers(11, 999_999).filter(lambda n: n not in (100, 1000)), st.sampled_from("ºª"))
def test_ordinals_round_trip(n: int, mark: str) -> None:
    assert itn_text(spoken(f"il {n}{mark}")) == f"il {n}{mark}"


def test_ordinals_below_3000_and_thousands_round_trip() -> None:
    numbers = [n for n in [*range(11, 3000), *range(3000, 1_000_000, 1000)] if n not in (100, 1000)]
    wrong = [n for n in numbers if itn_text(spoken(f"{n}º")) != f"{n}º"]
    assert wrong == []


@pytest.mark.parametrize(
    ("said", "written"),
    [
        ("ventitré", "23"),
        ("il tre maggio duemilaventi", "il 3 maggio 2020"),
        ("dodici euro e cinquanta", "12,50 €"),
        ("dodici euro e cinquanta centesimi", "12,50 €"),
        ("un euro", "1 €"),
        ("un milione di euro", "1000000 €"),
        ("tre virgola cinque dollari", "3,5 $"),
        ("dieci per cento", "10%"),
        ("alle otto e trenta", "alle 8:30"),
        ("alle sei e mezza", "alle 6:30"),
        ("alle otto meno un quarto", "alle 7:45"),
        ("dalle nove e un quarto", "dalle 9:15"),
        ("all'una e venti", "all'1:20"),
        ("alle otto", "alle 8"),
        ("il primo maggio", "il 1º maggio"),
        ("il ventitreesimo giorno", "il 23º giorno"),
        ("la undicesima volta", "la 11ª volta"),
        ("meno cinque gradi", "-5 gradi"),
        ("centodiciotto", "118"),
        ("uno due tre", "1 2 3"),
        ("sei", "6"),
        ("sei anni fa", "6 anni fa"),
        ("il sei gennaio", "il 6 gennaio"),
        ("due milioni e trecentomila persone", "2300000 persone"),
        ("tre e quattro", "3 e 4"),
        ("cinquanta centesimi", "50 centesimi"),  # cents of which currency: a number only
    ],
)
def test_examples(said: str, written: str) -> None:
    assert itn_text(said) == written


@pytest.mark.parametrize(
    "kept",
    [
        "tu sei bravo",  # "sei": you are
        "ne voglio uno",  # "uno": the pronoun
        "un uomo",  # "un": the article
        "il primo ministro",  # small ordinals are everyday words
        "un ventesimo",  # a fraction
        "grazie mille",
        "a che punto siamo",
        "più o meno",
    ],
)
def test_everyday_words_stay_words(kept: str) -> None:
    assert itn_text(kept) == kept


def test_merged_words_span_their_times_with_the_lowest_confidence() -> None:
    said = ["ho", "pagato", "dodici", "euro", "e", "cinquanta", "alle", "otto", "e", "trenta"]
    words = [Word(w, i * 0.5, i * 0.5 + 0.4, 0.9 - 0.05 * i) for i, w in enumerate(said)]
    out = list(Transcript(" ".join(w.word for w in words), tuple(words)).itn().words)
    assert [w.word for w in out] == ["ho", "pagato", "12,50 €", "alle", "8:30"]
    assert out[:2] == words[:2] and out[3] == words[6]
    money, time = out[2], out[4]
    assert (money.start, money.end, money.confidence) == (words[2].start, words[5].end, words[5].confidence)
    assert (time.start, time.end, time.confidence) == (words[7].start, words[9].end, words[9].confidence)


def test_apply_itn_rewrites_text_and_words_together() -> None:
    said = ["il", "tre", "maggio", "duemilaventi"]
    words = tuple(Word(w, i, i + 0.5, 0.8) for i, w in enumerate(said))
    result = Transcript("il tre maggio duemilaventi", words).itn()
    assert result.text == "il 3 maggio 2020"
    assert [w.word for w in result.words] == ["il", "3", "maggio", "2020"]
    assert result.words[3].start == 3 and result.words[3].end == 3.5
    assert Transcript("alle otto e trenta").itn() == Transcript("alle 8:30")


POOL = ["e", "un", "uno", "sei", "tre", "venti", "mila", "milioni", "euro", "per", "cento", "virgola",
        "zero", "alle", "meno", "quarto", "mezza", "maggio", "primo", "ventesimo", "gradi", "di", "casa",
        "duemila"]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(POOL), max_size=12))
def test_any_words_give_ordered_words_covering_the_same_time(tokens: list[str]) -> None:
    words = [Word(t, float(i), i + 0.5, 0.5 + i / 100) for i, t in enumerate(tokens)]
    out = list(Transcript(" ".join(w.word for w in words), tuple(words)).itn().words)
    assert " ".join(w.word for w in out) == itn_text(" ".join(tokens))
    assert len(out) <= len(words)
    if words:
        assert out[0].start == words[0].start and out[-1].end == words[-1].end
    for before, after in itertools.pairwise(out):
        assert before.end <= after.start
