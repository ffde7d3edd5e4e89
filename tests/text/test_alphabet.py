"""Alphabet: DeepSpeech's alphabet.txt format, the Italian and English label sets, encode and decode."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsita.errors import DsitaError
from dsita.settings import Settings
from dsita.settings.options import alphabet_for
from dsita.text.alphabet import Alphabet, UnencodableCharacter


def test_italian_has_the_38_labels_in_order() -> None:
    alphabet = Alphabet.italian()
    assert alphabet.labels == (" ", "'", *"abcdefghijklmnopqrstuvwxyz", *"àèéìíòóôùú")
    assert len(alphabet) == 38
    assert alphabet.blank_index == 38


def test_english_has_deepspeech_order_and_29_outputs() -> None:
    alphabet = Alphabet.english()
    assert alphabet.labels == (" ", *"abcdefghijklmnopqrstuvwxyz", "'")
    assert len(alphabet) == 28
    assert alphabet.blank_index + 1 == 29


def test_english_compatible_picks_the_english_alphabet() -> None:
    assert alphabet_for(Settings(english_compatible=True)) == Alphabet.english()
    assert alphabet_for(Settings(english_compatible=False)) == Alphabet.italian()


@pytest.mark.parametrize("alphabet", [Alphabet.italian(), Alphabet.english(), Alphabet(("#", "a", " "))])
def test_save_load_round_trip(tmp_path: Path, alphabet: Alphabet) -> None:
    path = tmp_path / "sub" / "alphabet.txt"
    alphabet.save(path)
    assert Alphabet.load(path) == alphabet
    assert not [p for p in path.parent.iterdir() if p.name != "alphabet.txt"]  # no temporary left behind


def test_load_reads_deepspeech_file_with_comments_space_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "alphabet.txt"
    path.write_bytes("# Each line is a label\r\n \r\na\r\n# comment in the middle\r\nè\r\n\\#\r\n".encode())
    assert Alphabet.load(path).labels == (" ", "a", "è", "#")


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("a\nb\na\n", 3, "duplicate label 'a'"),
        ("# c\nab\n", 2, "2 characters long"),
        ("a\n\nb\n", 2, "empty line"),
    ],
)
def test_bad_file_names_file_and_line(tmp_path: Path, content: str, line: int, words: str) -> None:
    path = tmp_path / "alphabet.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DsitaError) as caught:
        Alphabet.load(path)
    message = str(caught.value)
    assert str(path) in message and f"line {line}" in message and words in message
    assert "\n" not in message


@pytest.mark.parametrize("content", [b"", b"# only a comment\n", b"\xff\xfe\n"])
def test_empty_or_undecodable_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "alphabet.txt"
    path.write_bytes(content)
    with pytest.raises(DsitaError, match=r"alphabet file .*alphabet\.txt"):
        Alphabet.load(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DsitaError, match=r"nope\.txt not found"):
        Alphabet.load(tmp_path / "nope.txt")


def test_constructor_validates_labels() -> None:
    with pytest.raises(DsitaError, match="duplicate"):
        Alphabet(("a", "a"))
    with pytest.raises(DsitaError, match="exactly one"):
        Alphabet(("ab",))
    with pytest.raises(DsitaError, match="no labels"):
        Alphabet(())


def test_encode_decode() -> None:
    alphabet = Alphabet.italian()
    ids = alphabet.encode("l'uomo è qui")
    assert ids[:3] == [13, 1, 22]
    assert alphabet.decode(ids) == "l'uomo è qui"
    assert alphabet.decode([alphabet.blank_index, 2, alphabet.blank_index]) == "a"
    assert "è" in alphabet and "è" not in Alphabet.english() and "ab" not in alphabet
    with pytest.raises(DsitaError, match="out of range"):
        alphabet.decode([39])


def test_unencodable_character_has_char_and_position() -> None:
    with pytest.raises(UnencodableCharacter) as caught:
        Alphabet.english().encode("perché")
    assert (caught.value.char, caught.value.position) == ("é", 5)
    assert isinstance(caught.value, DsitaError)
    assert "'é'" in str(caught.value) and "position 5" in str(caught.value)
