"""Turn Italian text into a transcript the model can learn: alphabet characters and single spaces.

`normalize` runs small steps in order; each is a function below. Readings chosen:

* Numbers use num2words (Italian): `1984` -> "millenovecentottantaquattro" (num2words elides the o),
  `1.000` -> "mille" (a dot before three digits groups thousands), `3,5` -> "tre virgola cinque" (a decimal
  part of up to three digits is read as a number, longer ones digit by digit, leading zeros as "zero"),
  `3.5` -> "tre punto cinque", `-5` -> "meno cinque". num2words writes `2023` as "duemilaventitre": a final
  "tre" gets its accent. Numbers with a leading zero or more than 15 digits are read digit by digit.
* Times `10:30` / `10.30` -> "dieci e trenta" (Italian writes decimals with a comma).
* Money, with `€`/`$` before or after or the word "euro" after: `3,50 €` -> "tre euro e cinquanta
  centesimi", `1 €` -> "un euro", `1.000.000 €` -> "un milione di euro".
* Ordinals: `3º`/`3°` -> "terzo", `1ª` -> "prima". `°` is an ordinal only glued to a whole number;
  `20°C`, `20 °`, `-5°` and `3,5°` are "gradi". `2a` is not read as an ordinal (too ambiguous).
* Accents written as apostrophes are restored (see `restore_apostrophe_accents`).
* Letters outside the alphabet fold to the nearest one (`ñ` -> n, `ß` -> ss, `á` -> à); with the English
  alphabet every accent is dropped. Other letters and digits reject the text; symbols and emoji are removed.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from num2words import num2words

from dsita.text.alphabet import Alphabet


@dataclass(frozen=True)
class Rejection:
    """Why a text cannot become a transcript."""

    reason: str


# --- tables -----------------------------------------------------------------------------------------------

APOSTROPHES = "'’‘ʼ′´`"
_LETTER = r"[^\W\d_]"

# Vowel-final words whose apostrophe is a real truncation, not a missing accent ("un po'", "va' via").
# Single vowels other than "e" are kept too ("a'" = ai, "i'" = io).
TRUNCATIONS = frozenset(
    {"po", "mo", "va", "fa", "sta", "da", "di", "to", "be", "de", "ca", "fra", "pie", "ve", "vo", "que", "co",
     "pe", "mi", "tu", "su", "me", "fe", "tie", "vie", "gua"}
)  # fmt: skip
# Words that take an acute accent (perché, ventitré, né, sé); any other final vowel takes a grave one.
_ACUTE = re.compile(r"(?:che|(?:venti|nta|cento|mille|mila)tre)$|^(?:ne|se|merce|vicere|pote|scimpanze)$")
GRAVE = {"a": "à", "e": "è", "i": "ì", "o": "ò", "u": "ù"}

SYMBOLS = {
    "&": "e", "+": "più", "=": "uguale", "@": "chiocciola", "%": "per cento", "‰": "per mille",
    "€": "euro", "$": "dollari", "£": "sterline", "°": "gradi", "℃": "gradi", "#": "cancelletto",
    "×": "per", "§": "paragrafo",
}  # fmt: skip

CURRENCIES = {"€": ("euro", "euro"), "euro": ("euro", "euro"), "$": ("dollaro", "dollari"),
              "dollaro": ("dollaro", "dollari"), "dollari": ("dollaro", "dollari")}  # fmt: skip

# Letters with no Unicode decomposition to a base letter, and Italian preferences (á is not in the alphabet).
FOLDS = {
    "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "ħ": "h",
    "ŧ": "t", "ŋ": "n", "ª": "a", "º": "o", "á": "à",
}  # fmt: skip

MAX_CARDINAL_DIGITS = 15

_NUM = r"[0-9]{1,3}(?:\.[0-9]{3})+(?![0-9])|[0-9]+"  # thousands grouped with dots first
_AMOUNT = rf"(?P<int>{_NUM})(?:[.,](?P<dec>[0-9]+))?"
_CURRENCY_BEFORE = re.compile(rf"(?P<cur>[€$])\s*{_AMOUNT}")
_CURRENCY_AFTER = re.compile(rf"{_AMOUNT}\s*(?P<cur>[€$]|(?:euro|dollar[oi])(?!{_LETTER}))")
_TEMPERATURE = re.compile(rf"(?<=[0-9])\s*°\s*(?P<scale>[cf])(?!{_LETTER})")
_NUMERO = re.compile(rf"(?<!{_LETTER})n\s*[°º]\s*(?=[0-9])")
_ORDINAL = re.compile(r"(?<![-−0-9.,])(?P<n>[0-9]+)(?P<mark>[ºª°])")
_MINUS = re.compile(r"(?<![\w.,])[-−](?=[0-9])")  # "-5", "(-5)", not "10-20"
_TIME = re.compile(r"(?<![0-9.,])(?P<h>[01]?[0-9]|2[0-4])[:.](?P<m>[0-5][0-9])(?![0-9]|[.,][0-9])")
_NUMBER = re.compile(rf"(?P<int>{_NUM})(?:(?P<sep>[.,])(?P<dec>[0-9]+))?")
_MILLIONS = re.compile(r"(?:milion|miliard)[ei]$")


# --- accents written as apostrophes -----------------------------------------------------------------------


def _quote_apostrophes(text: str) -> set[int]:
    """Positions of apostrophes used as quotes: an opening one before a word and the next word-final one.

    `'ciao' disse` is a quote; so, alas, is `'perche' no`: the first candidate closes the quote.
    """
    quotes: set[int] = set()
    opening: int | None = None
    for i, char in enumerate(text):
        if char not in APOSTROPHES:
            continue
        before = text[i - 1] if i > 0 else " "
        after = i + 1 < len(text) and text[i + 1].isalpha()
        if after and not before.isalpha():
            opening = i
        elif not after and not before.isspace() and opening is not None:  # `ciao'` or `bene.'`
            quotes.update((opening, i))
            opening = None
    return quotes


def _is_truncation(word: str) -> bool:
    lower = word.lower()
    return lower in TRUNCATIONS or lower in ("a", "i", "o", "u")


def _accented(word: str) -> str | None:
    """The word with its final vowel accented, or None when it has no accent to restore."""
    lower = word.lower()
    if _is_truncation(lower) or lower[-1] not in GRAVE:
        return None
    accent = "é" if _ACUTE.search(lower) else GRAVE[lower[-1]]
    return word[:-1] + (accent.upper() if word[-1].isupper() else accent)


def restore_apostrophe_accents(text: str) -> str:
    """Restore accents written as apostrophes: `perche'` -> `perché`, `E'` -> `È`, `citta'` -> `città`.

    Real truncations (`po'`, `va'`), elisions (`l'uomo`, `c'e'` -> `c'è`) and quotes (`'ciao'`) are kept,
    and so are case, spacing and punctuation: it works on raw text.
    """
    quotes = _quote_apostrophes(text)

    def fix(match: re.Match[str]) -> str:
        if match.end() - 1 in quotes:
            return match.group(0)
        accented = _accented(match.group(1))
        return match.group(0) if accented is None else accented

    return re.sub(rf"({_LETTER}+)[{APOSTROPHES}](?!{_LETTER})", fix, text)


# --- characters -------------------------------------------------------------------------------------------


def _compatibility_fold(text: str) -> str:
    """Full-width, ligature and styled letters and digits to plain ones (NFKC), one character at a time.

    Superscripts and subscripts are set apart ("10²" must not read as 102); ª and º are ordinal marks.
    """
    out: list[str] = []
    for char in text:
        if char in "ªº" or unicodedata.category(char)[0] not in "LN":
            out.append(char)
            continue
        folded = unicodedata.normalize("NFKC", char)
        tag = unicodedata.decomposition(char).split(" ", 1)[0]
        out.append(f" {folded} " if tag in ("<super>", "<sub>") else folded)
    return unicodedata.normalize("NFC", "".join(out))


def _remove_quote_apostrophes(text: str) -> str:
    """Quote apostrophes and any apostrophe not after a letter ("'80") become spaces."""
    quotes = _quote_apostrophes(text)
    return "".join(
        " " if char in APOSTROPHES and (i in quotes or i == 0 or not text[i - 1].isalpha()) else char
        for i, char in enumerate(text)
    )


def _fold_letter(char: str, alphabet: Alphabet) -> str:
    """The nearest alphabet spelling of one character, or the character itself when there is none."""
    if char in alphabet:
        return char
    candidate = FOLDS.get(char, char)
    if all(c in alphabet for c in candidate):
        return candidate
    base = "".join(c for c in unicodedata.normalize("NFD", candidate) if not unicodedata.combining(c))
    return base if base and all(c in alphabet for c in base) else char


def _fold_and_clean(text: str, alphabet: Alphabet) -> str:
    """Fold letters into the alphabet; punctuation and symbols become spaces, stray marks vanish.

    Letters and digits that cannot be folded stay, so that the caller can reject the text.
    """
    out: list[str] = []
    for char in text:
        folded = _fold_letter(char, alphabet)
        category = unicodedata.category(folded[0])
        if folded != char or char in alphabet or category in ("Lu", "Ll", "Lt", "Lo", "Nd", "Nl", "No"):
            out.append(folded)
        elif category[0] == "M" or category == "Cf":
            continue  # combining marks, soft hyphens, joiners: part of the word around them
        else:
            out.append(" ")
    return "".join(out)


def _tidy_apostrophes(text: str) -> str:
    """Keep elisions (`l'uomo`, `l' uomo` joined) and truncations (`po'`); drop every other apostrophe."""
    text = re.sub(rf"(?<!{_LETTER})'", " ", text)
    text = re.sub(r"(?<=[^\W\d_aeiouàèéìíòóôùú])'\s+(?=[^\W\d_])", "'", text)

    def word_final(match: re.Match[str]) -> str:
        word = match.group(1)
        return match.group(0) if _is_truncation(word) else word

    return re.sub(rf"({_LETTER}+)'(?!{_LETTER})", word_final, text)


# --- numbers and symbols ----------------------------------------------------------------------------------


def _digits(digits: str) -> str:
    return " ".join(num2words(int(d), lang="it") for d in digits)


def _cardinal(digits: str) -> str:
    """A whole number in words; a leading zero or a very long number is read digit by digit."""
    digits = digits.replace(".", "")
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > MAX_CARDINAL_DIGITS:
        return _digits(digits)
    return re.sub(r"(?<=[a-z])tre\b", "tré", num2words(int(digits), lang="it"))


def _decimal_part(digits: str) -> str:
    if len(digits) > 3:
        return _digits(digits)
    zeros = len(digits) - len(digits.lstrip("0"))
    rest = digits.lstrip("0")
    return " ".join(["zero"] * zeros + ([_cardinal(rest)] if rest else []))


def _ordinal(number: str, feminine: bool) -> str:
    words: str = num2words(int(number), lang="it", to="ordinal")
    return words[:-1] + "a" if feminine and words.endswith("o") else words


def _units(value: int, singular: str, plural: str) -> str:
    if value == 1:
        return f"un {singular}"
    words = _cardinal(str(value))
    return f"{words} di {plural}" if _MILLIONS.search(words) else f"{words} {plural}"


def _amount(match: re.Match[str]) -> str:
    singular, plural = CURRENCIES[match["cur"]]
    whole, decimals = int(match["int"].replace(".", "")), match["dec"]
    if decimals and len(decimals) > 2:
        return f" {_cardinal(match['int'])} virgola {_decimal_part(decimals)} {plural} "
    cents = int(decimals.ljust(2, "0")) if decimals else 0
    if not cents:
        return f" {_units(whole, singular, plural)} "
    cents_words = _units(cents, "centesimo", "centesimi")
    return f" {cents_words} " if whole == 0 else f" {_units(whole, singular, plural)} e {cents_words} "


def _number(match: re.Match[str]) -> str:
    words = _cardinal(match["int"])
    if match["dec"] is not None:
        words += f" {'virgola' if match['sep'] == ',' else 'punto'} {_decimal_part(match['dec'])}"
    return f" {words} "


def _time(match: re.Match[str]) -> str:
    minutes = int(match["m"])
    hour = _cardinal(str(int(match["h"])))
    return f" {hour} e {_cardinal(str(minutes))} " if minutes else f" {hour} "


def _expand_numbers(text: str) -> str:
    """Every ASCII number to Italian words (text already lowercased)."""
    text = _TEMPERATURE.sub(lambda m: " gradi " if m["scale"] == "c" else " gradi fahrenheit ", text)
    text = _NUMERO.sub(" numero ", text)
    text = _ORDINAL.sub(lambda m: f" {_ordinal(m['n'], feminine=m['mark'] == 'ª')} ", text)
    text = _MINUS.sub("meno ", text)
    text = _CURRENCY_BEFORE.sub(_amount, text)
    text = _CURRENCY_AFTER.sub(_amount, text)
    text = _TIME.sub(_time, text)
    return _NUMBER.sub(_number, text)


def _expand_symbols(text: str) -> str:
    return "".join(f" {SYMBOLS[c]} " if c in SYMBOLS else c for c in text)


# --- the pipeline -----------------------------------------------------------------------------------------


def normalize(text: str, alphabet: Alphabet) -> str | Rejection:
    """The transcript of `text` in `alphabet`'s characters, or the reason it has none."""
    text = _compatibility_fold(unicodedata.normalize("NFC", text))
    text = restore_apostrophe_accents(text)
    text = _remove_quote_apostrophes(text)
    text = re.sub(f"[{APOSTROPHES}]", "'", text).lower()
    text = _expand_symbols(_expand_numbers(text))
    text = _fold_and_clean(text, alphabet)
    text = " ".join(_tidy_apostrophes(text).split())
    for char in text:
        if char != " " and char not in alphabet:
            return Rejection(f"character {char!r} not in alphabet")
    return text if text else Rejection("empty after normalization")
