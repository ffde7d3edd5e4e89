"""The scorer: a folder holding the KenLM binary, its vocabulary, the alphabet and the default alpha and beta.

    scorer/
      manifest.json    format name and version, file names, order, vocabulary size, alpha, beta, provenance
      lm.binary        KenLM quantized trie (`build_binary -a 255 -q 8 trie`)
      vocabulary.txt   the LM's words, one a line, most frequent first; each is spelled in the alphabet
      alphabet.txt     the labels the words are spelled in (DeepSpeech format)
    scorer.optimize.sqlite3   beside the folder: the alpha/beta studies of `dsita lm optimize`

Evaluation, the optimizer and export read the manifest; only the optimizer rewrites it (new defaults).
The folder holds nothing else, so that it can be shipped as it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dsita.errors import DsitaError
from dsita.fileio import atomic_write_text
from dsita.text.alphabet import Alphabet

FORMAT = "dsita-scorer"
VERSION = 1
MANIFEST = "manifest.json"
LM_FILE = "lm.binary"
VOCABULARY_FILE = "vocabulary.txt"
ALPHABET_FILE = "alphabet.txt"
STUDY_SUFFIX = ".optimize.sqlite3"
KENLM_MAGIC = b"mmap lm http://kheafield.com/code format version"  # how every KenLM binary starts


@dataclass(frozen=True)
class Scorer:
    """A loaded manifest; the files live in `folder`."""

    folder: Path
    order: int
    vocabulary_size: int
    alpha: float
    beta: float
    build: dict[str, Any]
    tuning: dict[str, Any] | None = None

    @property
    def lm_path(self) -> Path:
        """The KenLM binary in the folder."""
        return self.folder / LM_FILE

    @property
    def vocabulary_path(self) -> Path:
        """The vocabulary file in the folder."""
        return self.folder / VOCABULARY_FILE

    @property
    def study_path(self) -> Path:
        """The optimizer's study database, beside the folder (`<folder>.optimize.sqlite3`)."""
        return self.folder.parent / f"{self.folder.name}{STUDY_SUFFIX}"

    def files(self) -> list[Path]:
        """The files that make the scorer: what export copies."""
        return [self.folder / name for name in (MANIFEST, LM_FILE, VOCABULARY_FILE, ALPHABET_FILE)]

    def alphabet(self) -> Alphabet:
        """The alphabet the vocabulary is spelled in, read from the folder."""
        return Alphabet.load(self.folder / ALPHABET_FILE)

    def vocabulary(self) -> list[str]:
        """The LM's words; a file that is not UTF-8 or holds no word is a DsitaError naming it."""
        path = self.vocabulary_path
        try:
            words = path.read_bytes().decode("utf-8").split()
        except UnicodeDecodeError as exc:
            raise DsitaError(f"{path}: not UTF-8 text (byte {exc.start}); rebuild the scorer") from None
        except OSError as exc:
            raise DsitaError(f"{path}: cannot be read ({exc.strerror})") from None
        if not words:
            raise DsitaError(f"{path}: the vocabulary is empty, so beam search could write no word")
        return words

    def size_bytes(self) -> int:
        """The total size of the scorer's files."""
        return sum(path.stat().st_size for path in self.files())


def manifest_dict(scorer: Scorer) -> dict[str, Any]:
    """The manifest's fields for `scorer`, as `write_manifest` stores them."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "lm": LM_FILE,
        "vocabulary": VOCABULARY_FILE,
        "alphabet": ALPHABET_FILE,
        "order": scorer.order,
        "vocabulary_size": scorer.vocabulary_size,
        "alpha": scorer.alpha,
        "beta": scorer.beta,
        "tuning": scorer.tuning,
        "build": scorer.build,
    }


def write_manifest(scorer: Scorer) -> None:
    """Write `scorer`'s manifest.json into its folder (atomically), replacing the old one."""
    text = json.dumps(manifest_dict(scorer), ensure_ascii=False, indent=1)
    atomic_write_text(scorer.folder / MANIFEST, text + "\n")


def load_scorer(folder: Path) -> Scorer:
    """Read and check a scorer folder; any problem is one DsitaError naming the folder."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise DsitaError(f"{folder}: scorer folder not found (build one with `dsita lm build`)")
    if not manifest_path.is_file():
        raise DsitaError(f"{folder}: not a scorer folder, {MANIFEST} is missing")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DsitaError(f"{manifest_path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DsitaError(f"{manifest_path}: not a {FORMAT} manifest")
    if data.get("version") != VERSION:
        raise DsitaError(
            f"{manifest_path}: version {data.get('version')!r}, this dsita reads version {VERSION}"
        )
    for key in ("lm", "vocabulary", "alphabet"):
        if not (folder / str(data.get(key))).is_file():
            raise DsitaError(f"{folder}: the manifest's {key} file {data.get(key)!r} is missing")
    _check_files(folder)
    try:
        scorer = Scorer(
            folder=folder,
            order=int(data["order"]),
            vocabulary_size=int(data["vocabulary_size"]),
            alpha=float(data["alpha"]),
            beta=float(data["beta"]),
            build=dict(data.get("build") or {}),
            tuning=data.get("tuning"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DsitaError(f"{manifest_path}: missing or malformed field ({exc})") from None
    if not all(math.isfinite(v) and v >= 0 for v in (scorer.alpha, scorer.beta)):
        raise DsitaError(f"{manifest_path}: alpha and beta must be non-negative numbers")
    return scorer


def _check_files(folder: Path) -> None:
    """Cheap checks that keep KenLM from reading what is not its binary (it would try it as ARPA text)."""
    lm, vocabulary = folder / LM_FILE, folder / VOCABULARY_FILE
    try:
        with open(lm, "rb") as f:
            head = f.read(len(KENLM_MAGIC))
        empty = vocabulary.stat().st_size == 0
    except OSError as exc:
        raise DsitaError(f"{exc.filename}: cannot be read ({exc.strerror})") from None
    if head != KENLM_MAGIC:
        raise DsitaError(f"{lm}: not a KenLM binary (damaged, or not built by `dsita lm build`)")
    if empty:
        raise DsitaError(f"{vocabulary}: the vocabulary is empty, so beam search could write no word")


def set_defaults(scorer: Scorer, alpha: float, beta: float, tuning: dict[str, Any]) -> Scorer:
    """Write new default alpha and beta (and how they were found) into the scorer's manifest."""
    updated = replace(scorer, alpha=alpha, beta=beta, tuning=tuning)
    write_manifest(updated)
    return updated
