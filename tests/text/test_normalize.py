"""The transcript normalizer: one table of readings, rejections, properties, and the CLI command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsita.settings import Settings
from dsita.text.alphabet import Alphabet
from dsita.text.normalize import Rejection, normalize, restore_apostrophe_accents

ITALIAN = Alphabet.italian()
ENGLISH = Alphabet.english()

CASES = [
    # Case, spacing, NFC.
    ("Ciao, come stai?", "ciao come stai"),
    ("  Più   spazi\tqui\n", "più spazi qui"),
    ("perche\u0301 citta\u0300", "perché città"),
    ("ＴＥＳＴＯ ﬁne", "testo fine"),
    # Apostrophes: typographic ones, elisions, truncations, quotes.
    ("L’uomo è qui", "l'uomo è qui"),
    ("dell‘anno, un`altra, quest´anno", "dell'anno un'altra quest'anno"),
    ("Aspetta un po'.", "aspetta un po'"),
    ("un po’ di pane", "un po' di pane"),
    ("'ciao' disse", "ciao disse"),
    ("il cosiddetto 'effetto serra'.", "il cosiddetto effetto serra"),
    ("l' uomo, quest' anno, un' altra", "l'uomo quest'anno un'altra"),
    ("gli anni '80", "gli anni ottanta"),
    ("l'8 marzo", "l'otto marzo"),
    # Quotes, guillemets, punctuation, hyphens and dashes.
    ('«Ciao» “tu” „lei” "noi"', "ciao tu lei noi"),
    ("sì… (forse) [boh] {mah}; ok: no!", "sì forse boh mah ok no"),
    ("Bene.Poi,così", "bene poi così"),
    ("italo-americano", "italo americano"),
    ("Roma–Milano — andata", "roma milano andata"),
    ("pagine 10-20", "pagine dieci venti"),
    ("a/b * c", "a b c"),
    # Cardinals, years, thousands, decimals, negatives, times.
    ("Ho 42 anni", "ho quarantadue anni"),
    ("0", "zero"),
    ("23 e 33", "ventitré e trentatré"),
    ("Nel 1984", "nel millenovecentottantaquattro"),
    ("Nel 2023", "nel duemilaventitré"),
    ("1.000 persone", "mille persone"),
    ("2.500.000 abitanti", "due milioni e cinquecentomila abitanti"),
    ("3,5 kg", "tre virgola cinque kg"),
    ("3,05", "tre virgola zero cinque"),
    ("3,14159", "tre virgola uno quattro uno cinque nove"),
    ("1.234,5", "milleduecentotrentaquattro virgola cinque"),
    ("versione 2.5", "versione due punto cinque"),
    ("agente 007", "agente zero zero sette"),
    ("-5 gradi (-3)", "meno cinque gradi meno tre"),
    ("alle 24:00", "alle ventiquattro"),
    ("alle 10:30", "alle dieci e trenta"),
    ("alle 8.00", "alle otto"),
    ("10² e 3D", "dieci due e tre d"),
    # Ordinals and degrees.
    ("il 3º posto", "il terzo posto"),
    ("il 3° piano", "il terzo piano"),
    ("la 1ª classe", "la prima classe"),
    ("la 23ª volta", "la ventitreesima volta"),
    ("20°C oggi", "venti gradi oggi"),
    ("20 °C", "venti gradi"),
    ("100 °F", "cento gradi fahrenheit"),
    ("-5°", "meno cinque gradi"),
    ("36,6°", "trentasei virgola sei gradi"),
    ("n° 5", "numero cinque"),
    # Percentages and money.
    ("50% di sconto", "cinquanta per cento di sconto"),
    ("3,5 %", "tre virgola cinque per cento"),
    ("10€", "dieci euro"),
    ("€ 10", "dieci euro"),
    ("10 euro", "dieci euro"),
    ("3,50 €", "tre euro e cinquanta centesimi"),
    ("€3,5", "tre euro e cinquanta centesimi"),
    ("1 €", "un euro"),
    ("0,01€", "un centesimo"),
    ("5,00 €", "cinque euro"),
    ("1.000.000 €", "un milione di euro"),
    ("$5", "cinque dollari"),
    ("1 $", "un dollaro"),
    # Symbols.
    ("Rossi & figli", "rossi e figli"),
    ("2+2=4", "due più due uguale quattro"),
    ("mario@example.com", "mario chiocciola example com"),
    ("costa € tanto", "costa euro tanto"),
    ("#tag", "cancelletto tag"),
    ("ciao 😀!", "ciao"),
    # Accents written as apostrophes; real truncations and elisions stay.
    ("Perche' no?", "perché no"),
    ("E' vero", "è vero"),
    ("c'e' chi dice", "c'è chi dice"),
    ("dov'e' andato? com'e'", "dov'è andato com'è"),
    ("citta' piu' bella, pero', cosi'", "città più bella però così"),
    ("puo' gia' essere", "può già essere"),
    ("poiche' affinche' benche' finche'", "poiché affinché benché finché"),
    ("ne' carne ne' pesce", "né carne né pesce"),
    ("ventitre' anni", "ventitré anni"),
    ("lunedi', virtu', caffe'", "lunedì virtù caffè"),
    ("va' via, di' qualcosa, fa' presto", "va' via di' qualcosa fa' presto"),
    ("sta' zitto, to', be', mo' basta", "sta' zitto to' be' mo' basta"),
    ("Lorenzo de' Medici", "lorenzo de' medici"),
    ("Ca' Foscari", "ca' foscari"),
    # Foreign letters fold; Italian accented letters stay.
    ("Ñandú façade", "nandú facade"),
    ("Müller Straße Øre Åse", "muller strasse ore ase"),
    ("Æsir Œuvre", "aesir oeuvre"),
    ("São Ýr ÿ", "sao yr y"),
    ("Čapek Ćwik Škoda Žižek Łukasz", "capek cwik skoda zizek lukasz"),
    ("âêëîïû", "aeeiiu"),
    ("há", "hà"),
    ("àèéìíòóôùú", "àèéìíòóôùú"),
]

ENGLISH_CASES = [
    ("Perché è così", "perche e cosi"),
    ("E' la città più bella", "e la citta piu bella"),
    ("l'uomo, un po'", "l'uomo un po'"),
    ("Nel 2023", "nel duemilaventitre"),
    ("2+2", "due piu due"),
    ("Ñandú", "nandu"),
]

REJECTIONS = [
    ("привет", "п"),
    ("ciao 你好", "你"),
    ("Ελλάδα", "Ε".lower()),
    ("il numero ٣", "٣"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_italian(text: str, expected: str) -> None:
    assert normalize(text, ITALIAN) == expected


@pytest.mark.parametrize(("text", "expected"), ENGLISH_CASES)
def test_english_transliterates_accents(text: str, expected: str) -> None:
    assert normalize(text, ENGLISH) == expected


@pytest.mark.parametrize(("text", "char"), REJECTIONS)
def test_foreign_letters_reject_naming_the_character(text: str, char: str) -> None:
    result = normalize(text, ITALIAN)
    assert isinstance(result, Rejection)
    assert repr(char) in result.reason


@pytest.mark.parametrize("text", ["", "   ", "...!?", "😀🎉", "«»", "'"])
def test_empty_after_normalization(text: str) -> None:
    assert normalize(text, ITALIAN) == Rejection("empty after normalization")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "La pigrizia non e' altro che l'abitudine di riposarsi prima di essere stanchi.",
            "La pigrizia non è altro che l'abitudine di riposarsi prima di essere stanchi.",
        ),
        ("Siccita'?  Un albero", "Siccità?  Un albero"),
        ("E' un posto dove un uomo ...", "È un posto dove un uomo ..."),
        ("PERCHE' NO?", "PERCHÉ NO?"),
        (
            "Un po' di pazienza, c'e' tempo: pero' non troppo.",
            "Un po' di pazienza, c'è tempo: però non troppo.",
        ),
        ("'Ciao', disse. Poi se ne ando'.", "'Ciao', disse. Poi se ne andò."),
        ("perche’ c’e’", "perché c’è"),
        ("Nessun apostrofo qui.", "Nessun apostrofo qui."),
    ],
)
def test_restore_apostrophe_accents_on_fortunes_lines(line: str, expected: str) -> None:
    assert restore_apostrophe_accents(line) == expected


# Text rich in what the normalizer treats specially, plus arbitrary Unicode.
_TRICKY = st.text(
    alphabet=st.sampled_from(
        list("aeiouàèéìíòóôùú lcprE'’`´0123456789.,-°ºª€$%&+=@«»\"?!áñßİ²½ﬁжŉ:\u0301\u00ad")
    ),
    max_size=40,
)
_ANY_TEXT = st.one_of(_TRICKY, st.text(max_size=40))
_PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY_SETTINGS
@given(_ANY_TEXT, st.sampled_from([ITALIAN, ENGLISH]))
def test_output_is_encodable_and_tidy(text: str, alphabet: Alphabet) -> None:
    result = normalize(text, alphabet)
    if isinstance(result, Rejection):
        assert result.reason
        return
    alphabet.encode(result)
    assert result and result == result.strip() and "  " not in result


@_PROPERTY_SETTINGS
@given(_ANY_TEXT, st.sampled_from([ITALIAN, ENGLISH]))
def test_idempotent(text: str, alphabet: Alphabet) -> None:
    result = normalize(text, alphabet)
    if not isinstance(result, Rejection):
        assert normalize(result, alphabet) == result


@_PROPERTY_SETTINGS
@given(st.text(max_size=60))
def test_restore_never_raises_and_only_touches_apostrophes(text: str) -> None:
    restored = restore_apostrophe_accents(text)
    assert len(restored) <= len(text)
    if not any(c in text for c in "'’‘ʼ′´`"):
        assert restored == text


def _cli_environment(**extra: str) -> dict[str, str]:
    names = {name for field in Settings.model_fields for name in Settings.field_env_names(field)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    return env | extra


@pytest.mark.parametrize(
    ("extra", "first_line"), [({}, "perché è così"), ({"ENGLISH_COMPATIBLE": "1"}, "perche e cosi")]
)
def test_cli_text_normalize(extra: dict[str, str], first_line: str) -> None:
    lines = ["Perche' e' cosi'?", "привет", "Ho 3 gatti", "😀"]
    completed = subprocess.run(
        [sys.executable, "-m", "dsita.cli", "text", "normalize"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_cli_environment(PYTHONIOENCODING="utf-8", **extra),
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split("\n") == [first_line, "", "ho tre gatti", "", ""]
    assert "line 2: rejected: character 'п' not in alphabet" in completed.stderr
    assert "line 4: rejected: empty after normalization" in completed.stderr
