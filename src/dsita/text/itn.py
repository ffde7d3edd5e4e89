"""Italian inverse text normalization: spoken numbers, dates, times, money and percentages as digits.

The inverse of `dsita.text.normalize`'s number spelling (num2words, Italian): every integer the normalizer
spells comes back as the same digits, without thousands separators, as years are written ("duemilaventi"
-> "2020", "un milione" -> "1000000"). `itn_words` works on a transcript's words and keeps their times: a
phrase that becomes one token ("dodici euro e cinquanta" -> "12,50 €") is one word, from the first word's
start to the last word's end, with the lowest confidence among them. Rules, tried at each word in order:

* Times, after "alle", "le", "ore", "dalle" or "delle": "alle otto e trenta" -> "alle 8:30", "e mezza" (30),
  "e un quarto" (15), "e tre quarti" (45), "meno un quarto" / "meno dieci" (the hour before);
  "all'una e venti" -> "all'1:20". A lone hour stays a number ("alle otto" -> "alle 8").
* Money: "dodici euro e cinquanta (centesimi)" -> "12,50 €", "un euro" -> "1 €", "un milione di euro" ->
  "1000000 €", "tre virgola cinque dollari" -> "3,5 $", sterline -> "£". Cents alone stay words.
* Percentages: "dieci per cento" -> "10%".
* Decimals: "tre virgola zero cinque" -> "3,05", "tre punto cinque" -> "3.5" (the normalizer's readings).
* Below zero only before "gradi": "meno cinque gradi" -> "-5 gradi" ("più o meno cinque" keeps its "meno").
* Dates: "il primo maggio" -> "il 1º maggio"; days and years are cardinals ("il 3 maggio 2020").
* Ordinals from 11 on, singular: "ventitreesimo" -> "23º", "undicesima" -> "11ª". "primo" to "decimo" are
  everyday words ("il primo ministro"), "centesimo" and "millesimo" are also cents and fractions, and after
  a number or "un" an ordinal is a fraction ("un ventesimo"): those stay words.
* Cardinals: "ventitré" -> "23". Two number words are also everyday words, "sei" (you are) and "uno" (one,
  the pronoun): they become digits only next to a number, a month, a unit ("anni", "euro", ...) or after a
  word that announces a number ("alle", "numero", ...), or when the whole transcript is numbers (a number
  said on its own). "un" is an article unless a scale ("un milione") or a currency follows, and "grazie
  mille" keeps its words.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from num2words import num2words

DIGIT_WORDS = {"zero": 0, "uno": 1, "due": 2, "tre": 3, "quattro": 4, "cinque": 5, "sei": 6, "sette": 7,
               "otto": 8, "nove": 9}  # fmt: skip
SCALES = {"milione": 6, "milioni": 6, "miliardo": 9, "miliardi": 9, "bilione": 12, "bilioni": 12}
CURRENCIES = {"euro": "€", "dollaro": "$", "dollari": "$", "sterlina": "£", "sterline": "£"}
MONTHS = frozenset({"gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
                    "settembre", "ottobre", "novembre", "dicembre"})  # fmt: skip
TIME_CUES = frozenset({"alle", "le", "ore", "dalle", "delle"})
ONE_O_CLOCK = frozenset({"l'una", "all'una", "dall'una", "dell'una"})
AMBIGUOUS = frozenset({"sei", "uno"})
# Words after which "sei" or "uno" is a number, and words that a number precedes.
NUMBER_BEFORE = TIME_CUES | {"numero", "pagina", "pagine", "capitolo", "articolo", "comma", "binario",
                             "anno", "linea", "canale", "livello", "fila", "taglia"}  # fmt: skip
NUMBER_AFTER = MONTHS | CURRENCIES.keys() | SCALES.keys() | {
    "anni", "mesi", "giorni", "settimane", "ore", "minuti", "secondi", "volte", "gradi", "metri",
    "chilometri", "centimetri", "millimetri", "chili", "chilogrammi", "grammi", "litri", "persone",
    "centesimi", "virgola", "punto",
}  # fmt: skip
FRACTION_BEFORE = frozenset({"un", "una"})
NOT_ORDINALS = frozenset({100, 1000})


@functools.cache
def _below_thousand() -> dict[str, int]:
    """Every spelling of 1-999: num2words' (with the normalizer's accent on a final "tre"), and the forms
    people write: "ventitre" unaccented, "centodiciotto" (num2words writes "centodicotto"), "ventun"."""
    table: dict[str, int] = {}
    for n in range(1, 1000):
        spelled = num2words(n, lang="it")
        accented = re.sub(r"(?<=[a-z])tre$", "tré", spelled)
        variants = {spelled, accented, accented.replace("tré", "tre"), spelled.replace("dicotto", "diciotto")}
        if n == 3:
            variants.add("tré")  # after "mille"/"mila" the normalizer accents it: "duemilatré"
        if n % 10 == 1 and n % 100 != 11 and n > 20:
            variants.add(spelled.removesuffix("o"))  # "ventun anni"
        for variant in variants:
            table[variant] = n
    return table


def token_value(token: str) -> int | None:
    """The number one word spells (0 to 999 999), or None: "ventitré" -> 23, "duemilaventi" -> 2020."""
    if token == "zero":
        return 0
    table = _below_thousand()
    if token in table:
        return table[token]
    if token.startswith("mille"):
        rest = token[5:]
        return 1000 + table[rest] if rest in table else (1000 if not rest else None)
    head, mila, rest = token.partition("mila")
    if not mila or table.get(head, 0) < 2 or (rest and rest not in table):
        return None
    return table[head] * 1000 + (table[rest] if rest else 0)


@dataclass(frozen=True)
class Number:
    """A number spelled by words [start, end) of a transcript."""

    start: int
    end: int
    value: int
    scaled: bool  # its last word is a scale ("milioni"): money takes "di" ("un milione di euro")


def _scaled_group(tokens: Sequence[str], i: int, below: int) -> tuple[int, int] | None:
    """`(un | N) milione/i...` at i with a scale under 10**below: (value, exponent)."""
    if i + 1 >= len(tokens) or tokens[i + 1] not in SCALES:
        return None
    exponent = SCALES[tokens[i + 1]]
    head = 1 if tokens[i] == "un" else token_value(tokens[i])
    if head is None or not 1 <= head < 1000 or exponent >= below:
        return None
    return head * 10**exponent, exponent


def number_at(tokens: Sequence[str], i: int) -> Number | None:
    """The longest number spelled from word i: one word, or scale groups ("due milioni e trecentomila")."""
    value, j, below, scaled = 0, i, 99, False
    while j < len(tokens):
        group = _scaled_group(tokens, j, below)
        if group is not None:
            value, below, j, scaled = value + group[0], group[1], j + 2, True
            # "e" joins the last part: taken only when a number part follows it
            if j + 1 < len(tokens) and tokens[j] == "e" and _continues(tokens, j + 1, below):
                j += 1
            continue
        small = token_value(tokens[j])
        if small is not None and (j == i or (small > 0 and small < 10**below)):
            value, j, scaled = value + small, j + 1, False
        break
    return None if j == i else Number(i, j, value, scaled)


def _continues(tokens: Sequence[str], j: int, below: int) -> bool:
    small = token_value(tokens[j])
    return _scaled_group(tokens, j, below) is not None or (small is not None and 0 < small < 10**below)


def parse_number(tokens: Sequence[str]) -> int | None:
    """The number that all of `tokens` spell together, or None (the inverse of the normalizer's spelling)."""
    tokens = [t.lower() for t in tokens]
    if len(tokens) == 1:  # the common case, without the scale machinery
        return token_value(tokens[0])
    number = number_at(tokens, 0) if tokens else None
    return number.value if number is not None and number.end == len(tokens) else None


@dataclass(frozen=True)
class Span:
    """Words [start, end) of a transcript rewritten as `text`."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Amount:
    """A cardinal or a decimal at words [start, end), in digits."""

    start: int
    end: int
    text: str
    number: Number
    decimal: bool


def _decimal_digits(tokens: Sequence[str], k: int) -> tuple[int, str] | None:
    """The decimal part after "virgola": zeros and one number up to 999, or four or more digits one by one."""
    run = k
    while run < len(tokens) and tokens[run] in DIGIT_WORDS:
        run += 1
    if run - k >= 4:
        return run, "".join(str(DIGIT_WORDS[t]) for t in tokens[k:run])
    zeros = k
    while zeros < len(tokens) and tokens[zeros] == "zero":
        zeros += 1
    value = token_value(tokens[zeros]) if zeros < len(tokens) else None
    if value is not None and 0 < value < 1000:
        return zeros + 1, "0" * (zeros - k) + str(value)
    return (zeros, "0" * (zeros - k)) if zeros > k else None


def amount_at(tokens: Sequence[str], i: int) -> Amount | None:
    """A number at word i, with its decimal part if "virgola" (",") or "punto" (".") and digits follow."""
    number = number_at(tokens, i)
    if number is None:
        return None
    end = number.end
    if end + 1 < len(tokens) and tokens[end] in ("virgola", "punto"):
        decimals = _decimal_digits(tokens, end + 1)
        if decimals is not None:
            separator = "," if tokens[end] == "virgola" else "."
            return Amount(i, decimals[0], f"{number.value}{separator}{decimals[1]}", number, True)
    return Amount(i, end, str(number.value), number, False)


class _Transcript:
    """The lowercased words of one transcript and what the rules ask about them."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = [t.lower() for t in tokens]
        # A transcript of numbers only is a number said on its own: even "sei" is six.
        self.all_numbers = bool(self.tokens) and all(
            t == "e" or t == "un" or t in SCALES or token_value(t) is not None for t in self.tokens
        )

    def get(self, i: int) -> str:
        return self.tokens[i] if 0 <= i < len(self.tokens) else ""

    def is_number_word(self, i: int) -> bool:
        token = self.get(i)
        return token not in AMBIGUOUS and (token_value(token) is not None or token in SCALES)

    def number_context(self, i: int) -> bool:
        """Whether an ambiguous number word at i ("sei", "uno") is meant as a number."""
        return (
            self.all_numbers
            or self.is_number_word(i - 1)
            or self.is_number_word(i + 1)
            or self.get(i - 1) in NUMBER_BEFORE
            or self.get(i + 1) in NUMBER_AFTER
        )


def _minutes(words: _Transcript, k: int) -> tuple[int, int] | None:
    """Minutes after the hour from word k ("e trenta", "e un quarto", "meno dieci"): (end, signed minutes)."""
    link, first, second = words.get(k), words.get(k + 1), words.get(k + 2)
    if link not in ("e", "meno"):
        return None
    sign = 1 if link == "e" else -1
    if first == "un" and second == "quarto":
        return k + 3, 15 * sign
    if link == "e" and first == "tre" and second == "quarti":
        return k + 3, 45
    if link == "e" and first in ("mezza", "mezzo"):
        return k + 2, 30
    value = token_value(first)
    if value is None or not 1 <= value <= (59 if link == "e" else 30):
        return None
    return k + 2, value * sign


def _clock(hour: int, minutes: int) -> str:
    if minutes < 0:
        hour, minutes = (hour - 1) % 24, 60 + minutes
    return f"{hour}:{minutes:02d}"


def _time(words: _Transcript, i: int, amount: Amount | None) -> Span | None:
    token = words.get(i)
    if token in ONE_O_CLOCK:
        minutes = _minutes(words, i + 1)
        return None if minutes is None else Span(i, minutes[0], token[:-3] + _clock(1, minutes[1]))
    if amount is None or amount.decimal or amount.end != i + 1 or words.get(i - 1) not in TIME_CUES:
        return None
    if amount.number.value > 24:
        return None
    minutes = _minutes(words, amount.end)
    return None if minutes is None else Span(i, minutes[0], _clock(amount.number.value, minutes[1]))


def _money(words: _Transcript, i: int, amount: Amount | None) -> Span | None:
    if amount is not None:
        whole, j, whole_only = amount.text, amount.end, amount.decimal
        if words.get(j) == "di" and amount.number.scaled and not amount.decimal:
            j += 1  # "un milione di euro"
    elif words.get(i) == "un" and words.get(i + 1) in ("euro", "dollaro", "sterlina"):
        whole, j, whole_only = "1", i + 1, False
    else:
        return None
    symbol = CURRENCIES.get(words.get(j))
    if symbol is None:
        return None
    cents, end = _cents(words, j + 1) if not whole_only else (None, j + 1)
    return Span(i, end, f"{whole},{cents:02d} {symbol}" if cents else f"{whole} {symbol}")


def _cents(words: _Transcript, k: int) -> tuple[int | None, int]:
    """From word k, "e cinquanta (centesimi)" or "e un centesimo": (cents or None, the end of the amount)."""
    if words.get(k) != "e":
        return None, k
    if words.get(k + 1) == "un" and words.get(k + 2) == "centesimo":
        return 1, k + 3
    cents = token_value(words.get(k + 1))
    if cents is None or not 1 <= cents <= 99:
        return None, k
    return cents, k + 3 if words.get(k + 2) in ("centesimi", "centesimo") else k + 2


def _ordinal_value(token: str) -> tuple[int, str] | None:
    """Ordinals num2words writes, from 11 on: "ventitreesimo" -> (23, "º"), "undicesima" -> (11, "ª")."""
    if len(token) < 7 or token[-5:] not in ("esimo", "esima"):
        return None
    stem = token[:-5]
    # The stem lost its last vowel ("undic-esimo"), or kept it ("ventitre-esimo", "sei"); "mila" is "mill-".
    thousands = (stem[:-4] + "mila",) if stem.endswith("mill") else ()
    for candidate in (stem, *(stem + vowel for vowel in "aeio"), *thousands):
        value = token_value(candidate)
        if value is None or value < 11 or value in NOT_ORDINALS:
            continue
        masculine = num2words(value, lang="it", to="ordinal")
        if masculine[:-1] == token[:-1]:
            return value, "º" if token.endswith("o") else "ª"
    return None


def _ordinal(words: _Transcript, i: int) -> Span | None:
    token = words.get(i)
    if token in ("primo", "prima") and words.get(i + 1) in MONTHS:
        return Span(i, i + 1, "1º")
    ordinal = _ordinal_value(token)
    previous = words.get(i - 1)
    if ordinal is None or previous in FRACTION_BEFORE or token_value(previous) is not None:
        return None
    return Span(i, i + 1, f"{ordinal[0]}{ordinal[1]}")


def _number(words: _Transcript, i: int, amount: Amount | None) -> Span | None:
    if words.get(i) == "meno" and words.get(i - 1) not in ("più", "o"):
        below_zero = amount_at(words.tokens, i + 1)
        if below_zero is not None and words.get(below_zero.end) == "gradi":
            return Span(i, below_zero.end, f"-{below_zero.text}")
    if amount is None:
        return None
    if words.get(amount.end) == "per" and words.get(amount.end + 1) == "cento":
        return Span(i, amount.end + 2, f"{amount.text}%")
    if amount.end == i + 1 and words.get(i) in AMBIGUOUS and not words.number_context(i):
        return None
    if amount.end == i + 1 and words.get(i) == "mille" and "grazie" in (words.get(i - 1), words.get(i + 1)):
        return None  # "grazie mille"
    return Span(i, amount.end, amount.text)


def spans(tokens: Sequence[str]) -> list[Span]:
    """The rewrites of a transcript's words, left to right, none overlapping."""
    words = _Transcript(tokens)
    found: list[Span] = []
    i = 0
    while i < len(words.tokens):
        amount = amount_at(words.tokens, i)
        span = (
            _time(words, i, amount)
            or _money(words, i, amount)
            or _ordinal(words, i)
            or _number(words, i, amount)
        )
        if span is None:
            i += 1
            continue
        found.append(span)
        i = span.end
    return found


def itn_text(text: str) -> str:
    """A transcript's text with spoken numbers rewritten."""
    tokens = text.split()
    out: list[str] = []
    i = 0
    for span in spans(tokens):
        out.extend(tokens[i : span.start])
        out.append(span.text)
        i = span.end
    out.extend(tokens[i:])
    return " ".join(out)
