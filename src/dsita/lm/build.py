"""`dsita lm build`: corpus -> top-k vocabulary -> lmplz -> filter -> build_binary -> a scorer folder.

The recipe and its defaults are those of DeepSpeech's `generate_lm.py` as Mozilla Italia ran it: order 5,
`--prune 0 0 1`, a memory cap, vocabulary filtering, and a quantized trie (`-a 255 -q 8 trie`).
Everything is built in a hidden folder beside the target and renamed into place at the end, so a failed or
interrupted build leaves the previous scorer, if any, untouched and no partial one.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from dsita.data.sentences import default_sentences
from dsita.errors import DsitaError
from dsita.lm.corpus import CorpusStats, check_files, top_words, write_corpus
from dsita.lm.scorer import ALPHABET_FILE, LM_FILE, MANIFEST, VOCABULARY_FILE, Scorer, write_manifest
from dsita.progress import Progress, Task
from dsita.system import DISK_ERRNOS, ParentWatch, disk_errors
from dsita.text.alphabet import Alphabet

log = logging.getLogger(__name__)

TOOLS = ("lmplz", "filter", "build_binary")
# Measured on the default corpus (1.3 MB of text, order 5, prune 0 0 1): the build's temporary files and
# the scorer peak at 7.6 times the text's size.
DISK_PER_TEXT_BYTE = 8
COMPRESSION = {".gz": 4, ".xz": 5}  # how much larger Italian text is than its compressed file


@dataclass(frozen=True)
class LmBuildOptions:
    """How to build: n-gram order, vocabulary size, lmplz pruning and memory, trie quantization bits,
    the scorer's default alpha and beta, where the KenLM binaries are, and the workers.
    """

    order: int = 5
    top_k: int = 500_000
    prune: tuple[int, ...] = (0, 0, 1)
    memory: str = "85%"  # lmplz -S: sorting memory, a percentage of RAM or a size such as 2G
    a_bits: int = 255
    q_bits: int = 8
    alpha: float = 0.0
    beta: float = 0.0
    kenlm_bin: Path | None = None  # None: the binaries installed with dsita (see `kenlm_tool`), else PATH
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = False  # bars in a terminal; progress log lines every 30 s in any case


@dataclass(frozen=True)
class LmBuildReport:
    """What a build made: the scorer, the corpus statistics, the n-gram count of each order,
    whether lmplz needed `--discount_fallback`, and the seconds it took.
    """

    scorer: Scorer
    corpus: CorpusStats
    ngrams: tuple[int, ...]
    discount_fallback: bool
    seconds: float


def kenlm_folders(folder: Path | None) -> list[Path]:
    """Where KenLM's programs are looked for: KENLM_BIN when given; else beside this Python (the Makefile
    installs them into the venv), then the checkout's build cache (`.cache/kenlm/bin`)."""
    if folder is not None:
        return [folder]
    checkout = Path(__file__).resolve().parents[3]
    return [Path(sys.executable).parent, checkout / ".cache" / "kenlm" / "bin"]


def kenlm_tool(name: str, folder: Path | None = None) -> Path:
    """The path of a KenLM program: in `kenlm_folders(folder)`, else on PATH; else how to build it."""
    for candidate in (f / name for f in kenlm_folders(folder)):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    where = " or ".join(str(f) for f in kenlm_folders(folder))
    dest = folder.parent if folder is not None and folder.name == "bin" else Path(".cache/kenlm")
    raise DsitaError(
        f"KenLM's {name} not found in {where} or on PATH; build it with `make setup`, or with "
        f"bash tools/build_kenlm.sh {dest} {sys.executable} and set KENLM_BIN={dest / 'bin'}"
    )


def _run(
    tool: Path, args: list[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a KenLM program, which dies with this process (a killed build leaves no lmplz behind)."""
    result = subprocess.run(
        [str(tool), *args],
        input=stdin,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        preexec_fn=ParentWatch(),  # prctl only, already looked up: safe between fork and exec
    )
    if result.returncode != 0:
        _raise_disk_error(result.stderr)
    if check and result.returncode != 0:
        raise DsitaError(f"{tool.name} failed (exit {result.returncode}): {_last_message(result.stderr)}")
    return result


def _raise_disk_error(stderr: str) -> None:
    """KenLM reports a full or read-only disk in words: raise it as the OSError it was, for `disk_errors`."""
    for code in DISK_ERRNOS:
        if os.strerror(code) in stderr:
            raise OSError(code, os.strerror(code))


def _last_message(stderr: str) -> str:
    """The last line of KenLM's stderr that is not a progress bar."""
    lines = [line.strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not set(line) <= set("*-0123456789 ")]
    return lines[-1] if lines else "no message"


def _lmplz(tool: Path, corpus: Path, arpa: Path, options: LmBuildOptions, temp: Path) -> bool:
    """Run lmplz; returns whether `--discount_fallback` was needed (a corpus too small for Kneser-Ney)."""
    args = ["--order", str(options.order), "-S", options.memory, "-T", str(temp)]
    args += ["--text", str(corpus), "--arpa", str(arpa)]
    args += ["--prune", *(str(p) for p in options.prune[: options.order])]
    first = _run(tool, args, check=False)  # a full disk raises here
    if first.returncode == 0:
        return False
    if "--discount_fallback" not in first.stderr:
        raise DsitaError(f"lmplz failed (exit {first.returncode}): {_last_message(first.stderr)}")
    log.info("corpus too small for Kneser-Ney discounts: rerunning lmplz with --discount_fallback")
    _run(tool, [*args, "--discount_fallback"])
    return True


def arpa_counts(arpa: Path) -> tuple[int, ...]:
    """The n-gram counts of an ARPA file's header, by order."""
    counts: list[int] = []
    with open(arpa, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("ngram "):
                counts.append(int(line.split("=", 1)[1]))
            elif counts and not line.strip():
                break
    return tuple(counts)


def _check_target(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a scorer: the rename at the end would delete it."""
    if not out_dir.exists() or (out_dir / MANIFEST).is_file():
        return
    if not out_dir.is_dir() or any(out_dir.iterdir()):
        raise DsitaError(f"{out_dir}: exists and is not a scorer folder; choose another output folder")


def _move_into_place(built: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / "scorer")
    try:
        built.rename(out_dir)
    except OSError:
        if old is not None:
            (old / "scorer").rename(out_dir)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def build_disk_bytes(corpus: Sequence[Path] | None) -> int:
    """What a build writes at its peak: the normalized text, the ARPA files and the scorer, from the size of
    the corpus text (compressed files counted at their usual text ratio)."""
    if not corpus:
        text = sum(len(line.encode()) + 1 for line in default_sentences())
    else:
        text = sum(p.stat().st_size * COMPRESSION.get(p.suffix, 1) for p in corpus if p.is_file())
    return int(text * DISK_PER_TEXT_BYTE)


def build_scorer(
    out_dir: Path,
    alphabet: Alphabet,
    options: LmBuildOptions,
    corpus: list[Path] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> LmBuildReport:
    """Build a scorer folder from corpus files (default: the offline Italian corpus), minus `exclude`.

    A full or read-only disk is one DsitaError naming the folder and the space the build needs; the
    temporary folder goes in any case.
    """
    tools = {name: kenlm_tool(name, options.kenlm_bin) for name in TOOLS}
    check_files(corpus)
    _check_target(out_dir)
    with disk_errors(out_dir.parent, build_disk_bytes(corpus), "the LM build"):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return _build(out_dir, alphabet, options, corpus, exclude, tools)


def _kenlm_steps(
    tools: dict[str, Path],
    work: Path,
    lm: Path,
    vocabulary: list[str],
    options: LmBuildOptions,
    stats: CorpusStats,
    stages: Task,
) -> tuple[bool, tuple[int, ...]]:
    """lmplz, filter and build_binary from `work`/corpus.txt to `lm`; whether lmplz needed the discount
    fallback, and the n-gram counts. Each step logs a progress line every interval while it runs."""
    text_path, arpa, filtered = work / "corpus.txt", work / "lm.arpa", work / "filtered.arpa"
    with stages.ticking("lmplz running"):
        fallback = _lmplz(tools["lmplz"], text_path, arpa, options, work)
    stages.advance()
    text_path.unlink()
    ngrams = arpa_counts(arpa)
    if len(ngrams) < options.order or ngrams[options.order - 1] == 0:
        raise DsitaError(
            f"corpus too small for a {options.order}-gram model: {stats.kept} lines and {stats.words} "
            f"words give no {options.order}-gram that survives pruning; give more text"
        )
    log.info("filtering the model to the vocabulary")
    with stages.ticking("filter running"):
        _run(tools["filter"], ["single", f"model:{arpa}", str(filtered)], stdin="\n".join(vocabulary) + "\n")
    stages.advance()
    arpa.unlink()
    log.info("building the quantized trie")
    quantize = ["-a", str(options.a_bits), "-q", str(options.q_bits)]
    with stages.ticking("build_binary running"):
        _run(tools["build_binary"], [*quantize, "-v", "trie", str(filtered), str(lm)])
    stages.advance()
    return fallback, arpa_counts(filtered)


def _build(
    out_dir: Path,
    alphabet: Alphabet,
    options: LmBuildOptions,
    corpus: list[Path] | None,
    exclude: frozenset[str],
    tools: dict[str, Path],
) -> LmBuildReport:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        built = work / "scorer"
        built.mkdir()
        text_path = work / "corpus.txt"
        log.info("normalizing the corpus")
        progress = Progress(options.progress, log)
        lines = progress.task("LM build: normalizing the corpus", None, "lines")  # its log lines only:
        with open(text_path, "w", encoding="utf-8") as text:  # the workers fork before rich's bar thread
            stats, counts = write_corpus(corpus, text, alphabet, exclude, options.workers, lines)
        vocabulary = top_words(counts, options.top_k)
        log.info(
            f"{stats.kept} lines, {stats.words} words, {len(counts)} distinct; keeping {len(vocabulary)}"
        )
        with progress:
            stages = progress.task("LM build", len(TOOLS), "KenLM steps")
            fallback, ngrams = _kenlm_steps(tools, work, built / LM_FILE, vocabulary, options, stats, stages)

        (built / VOCABULARY_FILE).write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
        alphabet.save(built / ALPHABET_FILE)
        build_info = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "corpus": list(stats.sources),
            "lines_read": stats.lines,
            "lines_kept": stats.kept,
            "lines_rejected": stats.rejected,
            "lines_excluded": stats.excluded,
            "words": stats.words,
            "top_k": options.top_k,
            "prune": list(options.prune[: options.order]),
            "quantization": {"a_bits": options.a_bits, "q_bits": options.q_bits},
            "ngrams": list(ngrams),
            "discount_fallback": fallback,
        }
        scorer = Scorer(built, options.order, len(vocabulary), options.alpha, options.beta, build_info)
        write_manifest(scorer)
        _move_into_place(built, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return LmBuildReport(
        replace(scorer, folder=out_dir), stats, ngrams, fallback, time.perf_counter() - started
    )
