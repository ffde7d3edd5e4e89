"""DeepSpeech 0.9 scorer packages (`kenlm.scorer`) written by dsita: DeepSpeech's bytes, the trie's words,
the alphabet checks, alpha/beta units, bad input.

fixtures/ds_scorer/ holds packages that DeepSpeech 0.9.3's own compiled code (the ds-ctcdecoder wheel's
Scorer::fill_dictionary and save_dictionary) wrote from a dsita scorer's files
(tools/make_ds_scorer_fixture.py).
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import kenlm
import numpy as np
import pytest

from dsita.errors import DsitaError
from dsita.export.ds_scorer import (
    NUM_FLT_LOGE,
    check_ds_scorer,
    deepspeech_weights,
    export_ds_scorer,
    read_ds_scorer,
    trie_words,
    write_ds_scorer,
)
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.lm.scorer import load_scorer
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "ds_scorer"
KENLM_BIN = REPO / ".cache" / "kenlm" / "bin"
# The weights tools/make_ds_scorer_fixture.py gave DeepSpeech's code (its English defaults: no exact float32).
FIXTURE_WEIGHTS = {"kenlm.scorer": (0.931289039105002, 1.1834137581510284), "one_word.scorer": (0.5, 0.25)}
FIXTURE_VOCABULARY = {"kenlm.scorer": "vocabulary.txt", "one_word.scorer": "one_word.txt"}


def one_line(exc: pytest.ExceptionInfo[DsitaError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def package(sample_scorer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample scorer as a package, with tuned-looking weights."""
    scorer = load_scorer(sample_scorer)
    path = tmp_path_factory.mktemp("ds_scorer") / "kenlm.scorer"
    alpha, beta = deepspeech_weights(0.75, 1.85)
    write_ds_scorer(scorer.lm_path, scorer.vocabulary(), scorer.alphabet(), alpha, beta, path)
    return path


# --- DeepSpeech's bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kenlm.scorer", "one_word.scorer"])
def test_package_is_byte_for_byte_what_deepspeech_writes(tmp_path: Path, name: str) -> None:
    vocabulary = (FIXTURE / FIXTURE_VOCABULARY[name]).read_text(encoding="utf-8").split()
    alphabet = Alphabet.load(FIXTURE / "alphabet.txt")
    out = tmp_path / name
    write_ds_scorer(FIXTURE / "lm.binary", vocabulary, alphabet, *FIXTURE_WEIGHTS[name], out)
    assert out.read_bytes() == (FIXTURE / name).read_bytes()


def test_fixture_covers_both_numberings_and_the_single_path() -> None:
    """The two fixtures differ where OpenFST's properties depend on the states' numbering."""
    top_sorted, string = 0x4000000000, 0x100000000000
    many = read_ds_scorer(FIXTURE / "kenlm.scorer").fst
    single = read_ds_scorer(FIXTURE / "one_word.scorer").fst
    assert not many.properties & top_sorted and not many.properties & string
    assert single.properties & top_sorted and single.properties & string
    assert len(single.states) == len("perché") + 2  # one state per label, the space, and the start


# --- the package's content ------------------------------------------------------------------------------


def test_package_is_the_lm_then_a_header_then_the_minimal_trie_of_the_vocabulary(
    package: Path, sample_scorer: Path
) -> None:
    scorer = load_scorer(sample_scorer)
    lm = scorer.lm_path.read_bytes()
    data = package.read_bytes()
    assert data[: len(lm)] == lm
    read = read_ds_scorer(package)
    assert read.lm_size == len(lm) and not read.is_utf8
    assert (read.alpha, read.beta) == tuple(float(np.float32(w)) for w in deepspeech_weights(0.75, 1.85))
    fst, alphabet = read.fst, scorer.alphabet()
    space = alphabet.labels.index(" ") + 1
    spelled = [alphabet.decode([label - 1 for label in labels[:-1]]) for labels in trie_words(fst)]
    assert all(labels[-1] == space for labels in trie_words(fst))
    assert sorted(spelled) == sorted(scorer.vocabulary())
    signatures = set()
    for record in fst.states:
        arcs = fst.arcs[record["pos"] : record["pos"] + record["narcs"]]
        assert np.all(np.diff(arcs["ilabel"]) > 0)  # deterministic, sorted for DeepSpeech's SortedMatcher
        signatures.add((float(record["final"]), arcs["ilabel"].tobytes(), arcs["next"].tobytes()))
    assert len(signatures) == len(fst.states)  # no two states with the same future: minimal
    assert (len(data) - len(fst.arcs) * 16) % 16 == 0  # the arcs start 16-aligned in the file, as mapped


def test_check_accepts_the_scorer_for_its_alphabet(package: Path, sample_scorer: Path) -> None:
    assert check_ds_scorer(package, load_scorer(sample_scorer).alphabet()).lm_size > 0


# --- another alphabet -----------------------------------------------------------------------------------


def test_a_scorer_for_a_smaller_alphabet_is_refused(package: Path) -> None:
    with pytest.raises(DsitaError) as exc:
        check_ds_scorer(package, Alphabet.english())
    found = re.search(
        r"built for another alphabet: its trie uses label (\d+), this alphabet has labels 0\.\.27$",
        one_line(exc),
    )
    assert found and int(found[1]) > 27  # an accented vowel of the Italian alphabet


def test_a_scorer_whose_words_end_in_another_label_is_refused(package: Path) -> None:
    labels = Alphabet.italian().labels
    rotated = Alphabet((*labels[1:], labels[0]))  # the space last: same size, every id shifted
    with pytest.raises(DsitaError) as exc:
        check_ds_scorer(package, rotated)
    assert "do not end with this alphabet's space (label 37)" in one_line(exc)


def test_a_scorer_built_for_english_is_refused_for_an_italian_model(
    sample_corpus: Path, tmp_path: Path
) -> None:
    """Same space label and fewer labels: only the words the trie spells give the mismatch away."""
    sentences = tmp_path / "sentences.txt"
    lines = (sample_corpus / "train.csv").read_text(encoding="utf-8").splitlines()[1:]
    sentences.write_text("\n".join(line.rsplit(",", 1)[-1] for line in lines) + "\n", encoding="utf-8")
    options = LmBuildOptions(order=3, prune=(0,), memory="5%", kenlm_bin=KENLM_BIN, workers=1)
    english = build_scorer(tmp_path / "english", Alphabet.english(), options, corpus=[sentences]).scorer
    path = tmp_path / "english.scorer"
    export_ds_scorer(english, Alphabet.english(), path)
    check_ds_scorer(path, Alphabet.english())
    with pytest.raises(DsitaError) as exc:
        check_ds_scorer(path, Alphabet.italian())
    assert "built for another alphabet: " in one_line(exc)
    assert "words its trie spells in this alphabet are not in its language model" in one_line(exc)
    with pytest.raises(DsitaError) as exc:
        export_ds_scorer(english, Alphabet.italian(), tmp_path / "never.scorer")
    assert "the scorer was built for another alphabet than the model's" in one_line(exc)
    assert not (tmp_path / "never.scorer").exists()


# --- units ----------------------------------------------------------------------------------------------


def test_deepspeech_weights_give_the_same_word_scores_in_natural_log(sample_scorer: Path) -> None:
    """DeepSpeech scores a word alpha_ds * log10 P / NUM_FLT_LOGE + beta_ds; dsita alpha * log10 P + beta."""
    assert abs(NUM_FLT_LOGE * math.log(10) - 1) < 1e-7
    model = kenlm.Model(str(load_scorer(sample_scorer).lm_path))
    alpha, beta = 0.8, 2.5
    alpha_ds, beta_ds = deepspeech_weights(alpha, beta)
    state = kenlm.State()
    model.BeginSentenceWrite(state)
    for word in ["il", "gatto", "dorme", "sul", "divano"]:
        out = kenlm.State()
        log10 = model.BaseScore(state, word, out)
        state = out
        assert alpha_ds * log10 / NUM_FLT_LOGE + beta_ds == pytest.approx(alpha * log10 + beta, rel=1e-12)


# --- bad input ------------------------------------------------------------------------------------------


def test_vocabulary_problems_are_refused(tmp_path: Path) -> None:
    italian = Alphabet.italian()
    with pytest.raises(DsitaError) as exc:
        write_ds_scorer(FIXTURE / "lm.binary", ["casa", "naïve"], italian, 1.0, 1.0, tmp_path / "x.scorer")
    assert "vocabulary word 2 ('naïve') has a character outside the alphabet" in one_line(exc)
    with pytest.raises(DsitaError, match="the vocabulary has no words"):
        write_ds_scorer(FIXTURE / "lm.binary", ["<s>", "</s>"], italian, 1.0, 1.0, tmp_path / "x.scorer")
    assert not (tmp_path / "x.scorer").exists()


def test_lm_files_that_cannot_take_a_trie_are_refused(tmp_path: Path) -> None:
    italian, vocabulary = Alphabet.italian(), ["casa"]
    text = tmp_path / "text.txt"
    text.write_text("la casa è bella\nla casa è grande\n", encoding="utf-8")
    arpa, with_vocabulary = tmp_path / "lm.arpa", tmp_path / "with_vocabulary.binary"
    lmplz = [str(KENLM_BIN / "lmplz"), "-o", "2", "--discount_fallback", "-S", "5%", "--text", str(text)]
    subprocess.run([*lmplz, "--arpa", str(arpa)], check=True, capture_output=True)
    build = [str(KENLM_BIN / "build_binary"), "trie", str(arpa), str(with_vocabulary)]
    subprocess.run(build, check=True, capture_output=True)  # without -v: the word strings are in the file
    out = tmp_path / "x.scorer"
    for lm, message in (
        (arpa, "not a KenLM binary"),
        (with_vocabulary, "the KenLM binary holds its vocabulary, which leaves no place for the trie"),
        (FIXTURE / "kenlm.scorer", "already a scorer package; give the bare KenLM binary"),
    ):
        with pytest.raises(DsitaError) as exc:
            write_ds_scorer(lm, vocabulary, italian, 1.0, 1.0, out)
        assert message in one_line(exc)
    assert not out.exists()


def test_damaged_packages_are_refused_in_one_line(tmp_path: Path) -> None:
    data = (FIXTURE / "kenlm.scorer").read_bytes()
    lm_size = (FIXTURE / "lm.binary").stat().st_size
    newer = bytearray(data)
    newer[lm_size + 4 : lm_size + 8] = struct.pack("<i", 7)
    cases = {
        "truncated": (data[:-5], "a KenLM model without a vocabulary trie"),
        "bare": ((FIXTURE / "lm.binary").read_bytes(), "a KenLM model without a vocabulary trie"),
        "newer": (bytes(newer), "scorer format version 7, DeepSpeech 0.9 and Coqui STT 1.x read 6"),
        "not_kenlm": (b"TRIE" + data[lm_size:], "does not start with a KenLM model"),
        "empty": (b"", "cannot read the scorer package"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.scorer"
        path.write_bytes(content)
        with pytest.raises(DsitaError) as exc:
            read_ds_scorer(path)
        assert message in one_line(exc), name
    shutil.copy(FIXTURE / "kenlm.scorer", tmp_path / "good.scorer")
    assert read_ds_scorer(tmp_path / "good.scorer").lm_size == lm_size
