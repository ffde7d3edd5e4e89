"""`dsita lm build` with the real KenLM binaries: corpus handling, the scorer folder, and every bad input."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import kenlm
import pytest

from dsita.data.csvs import read_csv
from dsita.errors import DsitaError
from dsita.lm.build import LmBuildOptions, build_scorer
from dsita.lm.corpus import evaluation_sentences, write_corpus
from dsita.lm.scorer import MANIFEST, load_scorer
from dsita.text.alphabet import Alphabet

REPO = Path(__file__).resolve().parents[2]
OPTIONS = LmBuildOptions(memory="5%", kenlm_bin=REPO / ".cache" / "kenlm" / "bin", workers=1)
ITALIAN = Alphabet.italian()
# Enough repeated text that some 5-grams survive `--prune 0 0 1` (they must be seen at least twice).
BASE_LINES = [
    "Il gatto dorme sul divano della nonna.",
    "La nonna prepara il pranzo per tutta la famiglia.",
    "Domani andiamo al mare se non piove.",
    "Il treno per Milano parte alle 10 dal binario tre.",
] * 3


def write(path: Path, lines: list[str]) -> Path:
    text = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    elif path.suffix == ".xz":
        path.write_bytes(lzma.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def assert_nothing_left(parent: Path) -> None:
    """No scorer and no hidden build folder after a failed build."""
    assert [p.name for p in parent.iterdir() if p.name.startswith(".") or p.name == "scorer"] == []


def test_default_corpus_scorer_excludes_dev_and_test(sample_corpus: Path, sample_scorer: Path) -> None:
    scorer = load_scorer(sample_scorer)
    assert (scorer.order, scorer.alpha, scorer.beta) == (5, 0.0, 0.0)
    assert scorer.alphabet() == ITALIAN
    assert len(scorer.build["ngrams"]) == 5 and all(n > 0 for n in scorer.build["ngrams"])
    assert scorer.build["discount_fallback"] is False and scorer.build["corpus"][0].startswith("fortunes-it")
    vocabulary = scorer.vocabulary()
    assert len(vocabulary) == scorer.vocabulary_size > 10_000
    assert vocabulary[0] == "di" and {"gatto", "perché", "è"} <= set(vocabulary)  # most frequent first
    assert sorted(p.name for p in sample_scorer.iterdir()) == sorted(p.name for p in scorer.files())
    # Every dev and test sentence comes from the default corpus; each is dropped from the LM text.
    held_out = evaluation_sentences([sample_corpus / "dev.csv", sample_corpus / "test.csv"])
    text = io.StringIO()
    stats, _ = write_corpus(None, text, ITALIAN, held_out, workers=2)
    assert stats.excluded >= len(held_out) > 0 and stats.excluded == scorer.build["lines_excluded"]
    assert not held_out & set(text.getvalue().splitlines())
    assert stats.kept + stats.excluded + stats.rejected == stats.lines == scorer.build["lines_read"]


def test_files_plain_gz_xz_are_normalized_and_top_k_filters(tmp_path: Path) -> None:
    files = [
        write(tmp_path / "a.txt", [*BASE_LINES, "Nel 1984 c’erano 3 gatti, perche' sì."]),
        write(tmp_path / "b.txt.gz", [*BASE_LINES, "Il PESCE rosso nuota."]),
        write(tmp_path / "c.txt.xz", [*BASE_LINES, "", "   ", "Zanzibar è lontana."]),
    ]
    out = tmp_path / "lm" / "scorer"
    report = build_scorer(out, ITALIAN, OPTIONS, files)
    vocabulary = set(report.scorer.vocabulary())
    assert {"millenovecentottantaquattro", "c'erano", "tre", "perché", "pesce", "zanzibar", "è"} <= vocabulary
    assert report.corpus.lines == 3 * len(BASE_LINES) + 3 and report.corpus.rejected == 0
    model = kenlm.Model(str(out / "lm.binary"))
    assert model.order == 5
    assert model.score("il gatto dorme sul divano") > model.score("divano sul dorme gatto il")

    small = build_scorer(tmp_path / "small", ITALIAN, replace(OPTIONS, top_k=5), files)
    assert len(small.scorer.vocabulary()) == 5
    assert small.ngrams[0] == 5 + 3  # filtered to the vocabulary, plus <s>, </s> and <unk>


def test_tiny_corpus_gets_discount_fallback(tmp_path: Path) -> None:
    report = build_scorer(tmp_path / "scorer", ITALIAN, OPTIONS, [write(tmp_path / "t.txt", BASE_LINES)])
    assert report.discount_fallback and report.scorer.build["discount_fallback"] is True
    assert report.ngrams[4] > 0


def test_rebuild_replaces_a_scorer_and_a_failed_one_keeps_it(tmp_path: Path) -> None:
    out = tmp_path / "scorer"
    build_scorer(out, ITALIAN, OPTIONS, [write(tmp_path / "one.txt", BASE_LINES)])
    build_scorer(out, ITALIAN, OPTIONS, [write(tmp_path / "two.txt", [*BASE_LINES, "Arriva il temporale."])])
    assert "temporale" in load_scorer(out).vocabulary()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DsitaError, match="too small"):
        build_scorer(out, ITALIAN, OPTIONS, [write(tmp_path / "tiny.txt", ["ciao"])])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, r"missing\.txt: corpus file not found"),
        ({"empty.txt": ["", "  "]}, r"empty\.txt: the corpus file is empty"),
        ({"empty.gz": []}, r"empty\.gz: the corpus file is empty"),
        (
            {"foreign.txt": ["Привет, мир", "你好世界"]},
            r"no usable line in .*foreign\.txt: 2 read, 2 rejected by the normalizer "
            r"\(first: .*foreign\.txt, line 1: character 'п' not in alphabet\)",
        ),
        ({"held_out.txt": ["Domani andiamo al mare."]}, r"1 excluded as dev/test sentences"),
        ({"tiny.txt": ["ciao"]}, r"corpus too small for a 5-gram model: 1 lines and 1 words"),
    ],
)
def test_bad_corpus_stops_with_one_error_and_no_scorer(
    tmp_path: Path, files: dict[str, list[str]], message: str
) -> None:
    paths = [write(tmp_path / name, lines) for name, lines in files.items()] or [tmp_path / "missing.txt"]
    (tmp_path / "out").mkdir()
    with pytest.raises(DsitaError, match=message):
        build_scorer(
            tmp_path / "out" / "scorer", ITALIAN, OPTIONS, paths, frozenset({"domani andiamo al mare"})
        )
    assert_nothing_left(tmp_path / "out")


def test_missing_kenlm_binaries_name_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    options = LmBuildOptions(kenlm_bin=tmp_path / "kenlm" / "bin")
    with pytest.raises(DsitaError) as error:
        build_scorer(tmp_path / "scorer", ITALIAN, options, [write(tmp_path / "t.txt", BASE_LINES)])
    assert f"lmplz not found in {tmp_path / 'kenlm' / 'bin'}" in str(error.value)
    assert f"bash tools/build_kenlm.sh {tmp_path / 'kenlm'} {sys.executable}" in str(error.value)
    assert not (tmp_path / "scorer").exists()


def test_an_unrelated_folder_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(DsitaError, match="exists and is not a scorer folder"):
        build_scorer(tmp_path / "docs", ITALIAN, OPTIONS, [write(tmp_path / "t.txt", BASE_LINES)])
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsita.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", "KENLM_BIN": str(OPTIONS.kenlm_bin), **(env or {})},
        timeout=120,
        check=False,
    )


def test_cli_build_excludes_the_extracted_dev_and_test_sets(tmp_path: Path, sample_corpus: Path) -> None:
    extracted = tmp_path / "data" / "extracted"
    extracted.mkdir(parents=True)
    for split in ("dev", "test"):
        (extracted / f"{split}.csv").write_text((sample_corpus / f"{split}.csv").read_text())
    held_out = read_csv(extracted / "dev.csv")[0].transcript
    corpus = write(tmp_path / "corpus.txt", [*BASE_LINES, held_out, held_out])
    env = {"DATA_DIR": str(tmp_path / "data"), "LM_ALPHA": "0.75", "LM_TOP_K": "20"}
    result = run_cli("lm", "build", str(corpus), "--memory", "5%", "--workers", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 excluded as sentences of" in result.stdout and str(extracted / "test.csv") in result.stdout
    manifest = json.loads((tmp_path / "data" / "lm" / "scorer" / MANIFEST).read_text())
    assert (manifest["alpha"], manifest["vocabulary_size"], manifest["build"]["lines_excluded"]) == (
        0.75,
        20,
        2,
    )

    bad = run_cli("lm", "build", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "s2"), env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.txt'}: corpus file not found"]
