"""DeepSpeech 0.9 scorer packages (`kenlm.scorer`), written and checked without DeepSpeech's tools.

The package is what DeepSpeech 0.9's `generate_scorer_package` writes and what its decoder (the `deepspeech`
clients, `ds-ctcdecoder`) and Coqui STT 1.x (`stt`, `coqui-stt-ctcdecoder`) load. All numbers little-endian:

    the KenLM binary, unchanged       built with `build_binary -v` (without the vocabulary's strings); the
                                      decoder finds the next part where KenLM's search data ends
    int32   magic                     0x54524945 (C++ 'TRIE'; the bytes "EIRT")
    int32   version                   6
    uint8   is_utf8_mode              0: words are spelled in the alphabet's labels (1: UTF-8 bytes mode)
    float64 alpha, beta               the default LM weight and word bonus in DeepSpeech's units (float32s)
    the vocabulary trie               an OpenFST ConstFst, written with FstWriteOptions.align:
      int32 magic 2125659606, string "const", string "standard" (each an int32 length and the bytes),
      int32 version 1 (the aligned format), int32 flags 4 (IS_ALIGNED; no symbol tables),
      uint64 properties, int64 start, int64 number of states, int64 number of arcs;
      zero bytes up to a file offset that is a multiple of 16;
      the states, 20 bytes each: float32 final weight (0 if final, +inf if not), uint32 index of the first
      arc, uint32 number of arcs, uint32 input and uint32 output epsilon arcs (0 here);
      zero bytes up to a multiple of 16; the arcs, 16 bytes each: int32 input label, int32 output label
      (equal), float32 weight 0, int32 next state.

The trie is built as DeepSpeech's `Scorer::fill_dictionary` builds it: each vocabulary word (but <s>, </s>
and <unk>), as its labels' ids + 1 then the space's id + 1, is a path from the start state to a final state;
the union is epsilon-removed, determinized and minimized by OpenFST, and copied into a ConstFst. The
minimal deterministic automaton of a set of words is unique up to the numbering of its states; the numbering
here is the one OpenFST 1.6.7 produces, so that the file is byte for byte what DeepSpeech writes:
  - determinizing numbers the states breadth-first from the start, arcs in label order; for a set of words
    that is the trie of their prefixes, a depth's prefixes in lexicographic order;
  - the acyclic (Revuz) minimization groups the states by height (the longest path to a final state),
    splits each height into equivalence classes and keeps one state per class: the highest-numbered state
    of that height for its own class, the lowest-numbered state for every other class; the states kept
    keep their relative order;
  - the properties are those OpenFST computes for the result (they depend on that numbering: arcs that
    point back to a lower state make it "not top-sorted").
"""

from __future__ import annotations

import bisect
import mmap
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kenlm
import numpy as np

from dsita.errors import DsitaError
from dsita.fileio import atomic_write
from dsita.lm.scorer import Scorer
from dsita.text.alphabet import Alphabet

TRIE_MAGIC = 0x54524945  # the C++ multi-character constant 'TRIE'
TRIE_VERSION = 6
FST_MAGIC = 2125659606
FST_TYPE = b"const"
ARC_TYPE = b"standard"
FST_ALIGNED_VERSION = 1
FST_IS_ALIGNED = 0x4
FST_ALIGNMENT = 16
SPECIAL_TOKENS = frozenset({"<s>", "</s>", "<unk>"})
# DeepSpeech's NUM_FLT_LOGE, a float32: log10(e). get_log_cond_prob divides KenLM's log10 scores by it.
NUM_FLT_LOGE = float(np.float32(0.4342944819))
_TRIE_HEADER = struct.Struct("<iiBdd")
_TRIE_MARK = struct.pack("<i", TRIE_MAGIC)
KENLM_MAGIC = b"mmap lm http://kheafield.com/code format version"
_KENLM_HAS_VOCABULARY = 100  # byte offset of FixedWidthParameters.has_vocabulary in a KenLM binary (x86-64)
CHECK_WORDS = 1000  # words of the trie that check_ds_scorer looks up in the LM
_KNOWN_WORDS = 0.9  # the share of them that must be LM words
_FST_COUNTS = struct.Struct("<iiQqqq")  # version, flags, properties, start, states, arcs
STATE_DTYPE = np.dtype(
    [("final", "<f4"), ("pos", "<u4"), ("narcs", "<u4"), ("nieps", "<u4"), ("noeps", "<u4")]
)
ARC_DTYPE = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("weight", "<f4"), ("next", "<i4")])

# OpenFST property bits (fst/properties.h) that this trie can have.
_EXPANDED = 0x1
_ALWAYS = (
    0x10000  # kAcceptor: input label == output label on every arc
    | 0x40000  # kIDeterministic
    | 0x100000  # kODeterministic
    | 0x800000  # kNoEpsilons (labels are ids + 1, never 0)
    | 0x2000000  # kNoIEpsilons
    | 0x8000000  # kNoOEpsilons
    | 0x10000000  # kILabelSorted
    | 0x40000000  # kOLabelSorted
    | 0x200000000  # kUnweighted
    | 0x800000000  # kAcyclic: a finite set of words
    | 0x2000000000  # kInitialAcyclic
    | 0x10000000000  # kAccessible: every state lies on a word's path
    | 0x40000000000  # kCoAccessible
    | 0x800000000000  # kUnweightedCycles (no cycles at all)
)
_TOP_SORTED, _NOT_TOP_SORTED = 0x4000000000, 0x8000000000
_STRING, _NOT_STRING = 0x100000000000, 0x200000000000


@dataclass(frozen=True)
class DictionaryFst:
    """The vocabulary trie as the ConstFst stores it: per-state records and one array of arcs."""

    start: int
    states: np.ndarray  # STATE_DTYPE
    arcs: np.ndarray  # ARC_DTYPE, each state's arcs together, in label order
    properties: int


@dataclass(frozen=True)
class DsScorerPackage:
    """What a scorer package holds besides the KenLM model: read by `read_ds_scorer`."""

    path: Path
    lm_size: int  # bytes of KenLM binary before the trie header
    is_utf8: bool
    alpha: float
    beta: float
    fst: DictionaryFst


def deepspeech_weights(alpha: float, beta: float) -> tuple[float, float]:
    """dsita's alpha and beta in the units of DeepSpeech's and Coqui STT's decoder.

    dsita's beam search (`dsita.decoding.beam`) adds, for every word w after history h, to the acoustic
    score (a sum of natural-log CTC probabilities)

        alpha * log10 P(w | h) + beta                                       (KenLM's scores are log10).

    DeepSpeech's `ctc_beam_search_decoder` adds, at the same word boundary (the space after the word, or the
    end of the utterance),

        alpha_ds * get_log_cond_prob(h, w) + beta_ds,   get_log_cond_prob = log10 P(w | h) / NUM_FLT_LOGE,

    where NUM_FLT_LOGE is float32 log10(e) = 0.434294492, so that the score is alpha_ds * ln P(w | h): the LM
    in natural log like the acoustic side. Equal scores for every word need
    alpha_ds * log10 P / NUM_FLT_LOGE = alpha * log10 P, that is

        alpha_ds = alpha * NUM_FLT_LOGE  (= alpha / ln 10),   beta_ds = beta

    (beta is a bonus per word in the acoustic score's natural-log units on both sides). What this does not
    make equal: dsita also scores the end of the sentence (alpha * log10 P(</s> | h)) and DeepSpeech does
    not; DeepSpeech sums the probabilities of the alignments of a prefix where flashlight keeps the best one;
    and their beam pruning differs. So the two pick the same words on most utterances, not all.
    """
    return alpha * NUM_FLT_LOGE, beta


def _spellings(vocabulary: list[str], alphabet: Alphabet) -> list[tuple[int, ...]]:
    """Each word as the trie's labels (label id + 1, then the space's id + 1), sorted, without repeats."""
    if " " not in alphabet:
        raise DsitaError("a DeepSpeech scorer needs the space label in the alphabet (the word separator)")
    end = alphabet.labels.index(" ") + 1
    spellings = set()
    for number, word in enumerate(vocabulary, start=1):
        if word in SPECIAL_TOKENS:
            continue
        if not word or any(char.isspace() for char in word):
            raise DsitaError(f"vocabulary entry {number} ({word!r}) is not one word")
        if not all(char in alphabet for char in word):
            raise DsitaError(
                f"vocabulary word {number} ({word!r}) has a character outside the alphabet: "
                "the vocabulary and the alphabet do not belong together"
            )
        spellings.add((*(label + 1 for label in alphabet.encode(word)), end))
    if not spellings:
        raise DsitaError("the vocabulary has no words: a scorer needs at least one")
    return sorted(spellings)


class _TrieClasses:
    """The trie of `spellings` walked depth first: its nodes' equivalence classes (minimal-automaton states).

    A class is a node's suffix language, identified by whether the node is final and its arcs (label,
    child's class). `depth_classes[d]` lists the class of each node at depth d in lexicographic order.
    """

    def __init__(self, spellings: list[tuple[int, ...]]) -> None:
        self._spellings = spellings
        self._ids: dict[tuple[bool, tuple[tuple[int, int], ...]], int] = {}
        self.final: list[bool] = []
        self.arcs: list[tuple[tuple[int, int], ...]] = []
        self.height: list[int] = []
        self.depth_classes: list[array[int]] = []
        self.root = self._visit(0, len(spellings), 0)

    def _visit(self, lo: int, hi: int, depth: int) -> int:
        """The class of the node whose words are spellings[lo:hi], all sharing their first `depth` labels."""
        if depth == len(self.depth_classes):
            self.depth_classes.append(array("q"))
        slot = len(self.depth_classes[depth])
        self.depth_classes[depth].append(-1)
        spellings = self._spellings
        final = len(spellings[lo]) == depth  # the node's own word sorts first
        arcs = []
        i = lo + 1 if final else lo
        while i < hi:
            label = spellings[i][depth]
            j = bisect.bisect_left(spellings, (*spellings[i][:depth], label + 1), i, hi)
            arcs.append((label, self._visit(i, j, depth + 1)))
            i = j
        key = (final, tuple(arcs))
        cls = self._ids.get(key)
        if cls is None:
            cls = self._ids[key] = len(self.final)
            self.final.append(final)
            self.arcs.append(key[1])
            self.height.append(max((self.height[c] + 1 for _, c in arcs), default=0))
        self.depth_classes[depth][slot] = cls
        return cls


def _representatives(classes: _TrieClasses) -> list[int]:
    """Each class's kept trie state (breadth-first number), by OpenFST's rule (see the module docstring)."""
    first: list[int] = [-1] * len(classes.final)
    last_of_height: dict[int, tuple[int, int]] = {}  # height -> (highest state, its class)
    state = 0
    for depth in classes.depth_classes:  # breadth-first order: depth by depth, lexicographic within
        for cls in depth:
            if first[cls] < 0:
                first[cls] = state
            last_of_height[classes.height[cls]] = (state, cls)
            state += 1
    kept = first
    for highest, cls in last_of_height.values():
        kept[cls] = highest
    return kept


def build_dictionary(vocabulary: list[str], alphabet: Alphabet) -> DictionaryFst:
    """The vocabulary trie DeepSpeech's `Scorer::fill_dictionary` builds for these words and alphabet."""
    classes = _TrieClasses(_spellings(vocabulary, alphabet))
    order = sorted(range(len(classes.final)), key=_representatives(classes).__getitem__)
    number = np.empty(len(order), dtype=np.int64)
    number[order] = np.arange(len(order))
    states = np.zeros(len(order), dtype=STATE_DTYPE)
    states["final"] = [0.0 if classes.final[cls] else np.inf for cls in order]
    states["narcs"] = [len(classes.arcs[cls]) for cls in order]
    states["pos"][1:] = np.cumsum(states["narcs"])[:-1]
    arcs = np.zeros(int(states["narcs"].sum()), dtype=ARC_DTYPE)
    flat = [(label, child) for cls in order for label, child in classes.arcs[cls]]
    if flat:
        labels, children = np.array(flat, dtype=np.int64).T
        arcs["ilabel"] = arcs["olabel"] = labels
        arcs["next"] = number[children]
    start = int(number[classes.root])
    return DictionaryFst(start, states, arcs, _properties(start, states, arcs))


def _properties(start: int, states: np.ndarray, arcs: np.ndarray) -> int:
    """OpenFST's properties of the trie (ComputeProperties), plus kExpanded, which a ConstFst always has."""
    source = np.repeat(np.arange(len(states)), states["narcs"])
    top_sorted = bool(np.all(arcs["next"] > source))
    finals = np.flatnonzero(states["final"] == 0.0)
    string = (
        start == 0
        and bool(np.all(arcs["next"] == source + 1))
        and len(finals) == 1
        and finals[0] == len(states) - 1
        and bool(np.all(states["narcs"][:-1] == 1))
    )
    return (
        _EXPANDED
        | _ALWAYS
        | (_TOP_SORTED if top_sorted else _NOT_TOP_SORTED)
        | (_STRING if string else _NOT_STRING)
    )


def _fst_string(value: bytes) -> bytes:
    return struct.pack("<i", len(value)) + value


def _padding(offset: int) -> bytes:
    return bytes(-offset % FST_ALIGNMENT)


def trie_bytes(fst: DictionaryFst, alpha: float, beta: float, offset: int) -> bytes:
    """The part after the KenLM binary, which ends at file offset `offset` (the FST aligns to the file)."""
    head = _TRIE_HEADER.pack(TRIE_MAGIC, TRIE_VERSION, 0, float(np.float32(alpha)), float(np.float32(beta)))
    head += struct.pack("<i", FST_MAGIC) + _fst_string(FST_TYPE) + _fst_string(ARC_TYPE)
    head += _FST_COUNTS.pack(
        FST_ALIGNED_VERSION, FST_IS_ALIGNED, fst.properties, fst.start, len(fst.states), len(fst.arcs)
    )
    head += _padding(offset + len(head))
    states = fst.states.tobytes()
    return head + states + _padding(offset + len(head) + len(states)) + fst.arcs.tobytes()


def write_ds_scorer(
    lm_binary: Path, vocabulary: list[str], alphabet: Alphabet, alpha: float, beta: float, path: Path
) -> DictionaryFst:
    """Write a DeepSpeech 0.9 scorer package: the KenLM binary, then the header and the vocabulary trie.

    `alpha` and `beta` are written as they are, in DeepSpeech's units (see `deepspeech_weights`).
    """
    _check_lm_binary(lm_binary)
    fst = build_dictionary(vocabulary, alphabet)
    size = lm_binary.stat().st_size
    with atomic_write(path, "wb") as out, open(lm_binary, "rb") as lm:
        while chunk := lm.read(1 << 22):
            out.write(chunk)
        out.write(trie_bytes(fst, alpha, beta, size))
    return fst


def _check_lm_binary(lm_binary: Path) -> None:
    """Refuse what generate_scorer_package refuses: no KenLM binary, or one with its vocabulary's strings."""
    try:
        with open(lm_binary, "rb") as f:
            head = f.read(_KENLM_HAS_VOCABULARY + 1)
    except OSError as exc:
        raise DsitaError(f"{lm_binary}: cannot read the KenLM binary ({exc.strerror})") from None
    if not head.startswith(KENLM_MAGIC) or len(head) <= _KENLM_HAS_VOCABULARY:
        raise DsitaError(f"{lm_binary}: not a KenLM binary (an ARPA file? build it with `dsita lm build`)")
    if head[_KENLM_HAS_VOCABULARY]:
        raise DsitaError(
            f"{lm_binary}: the KenLM binary holds its vocabulary, which leaves no place for the trie; "
            "build it with `build_binary -v`"
        )
    with open(lm_binary, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if _find_trie(data, lm_binary) is not None:
            raise DsitaError(f"{lm_binary}: already a scorer package; give the bare KenLM binary")


# --- reading and checking ---------------------------------------------------------------------------------


class _Malformed(Exception):
    """A trie header candidate that does not parse; the caller names the file."""


def _parse_trie(data: mmap.mmap, offset: int) -> tuple[bool, float, float, DictionaryFst]:
    """The header and trie at `offset`, which must run exactly to the end of the file."""
    end = len(data)
    if offset + _TRIE_HEADER.size + 4 > end:
        raise _Malformed("truncated trie header")
    _, version, utf8, alpha, beta = _TRIE_HEADER.unpack_from(data, offset)
    if version != TRIE_VERSION:
        raise _Malformed(
            f"scorer format version {version}, DeepSpeech 0.9 and Coqui STT 1.x read {TRIE_VERSION}"
        )
    pos = offset + _TRIE_HEADER.size
    fields: list[bytes] = []
    if struct.unpack_from("<i", data, pos)[0] != FST_MAGIC:
        raise _Malformed("no OpenFST header after the scorer header")
    pos += 4
    for _ in range(2):
        (size,) = struct.unpack_from("<i", data, pos)
        fields.append(bytes(data[pos + 4 : pos + 4 + min(max(size, 0), 64)]))
        pos += 4 + size
    if fields != [FST_TYPE, ARC_TYPE]:
        raise _Malformed(f"the trie is a {fields[0]!r} FST of {fields[1]!r} arcs, not const/standard")
    if pos + _FST_COUNTS.size > end:
        raise _Malformed("truncated FST header")
    version, flags, properties, start, n_states, n_arcs = _FST_COUNTS.unpack_from(data, pos)
    if flags & ~FST_IS_ALIGNED or not 0 <= start < max(n_states, 1) or n_states < 0 or n_arcs < 0:
        raise _Malformed(f"unsupported FST header (version {version}, flags {flags}, start {start})")
    aligned = version == FST_ALIGNED_VERSION or flags & FST_IS_ALIGNED
    pos += _FST_COUNTS.size
    pos += -pos % FST_ALIGNMENT if aligned else 0
    states_at = pos
    pos += n_states * STATE_DTYPE.itemsize
    pos += -pos % FST_ALIGNMENT if aligned else 0
    if pos + n_arcs * ARC_DTYPE.itemsize != end:
        raise _Malformed(f"the trie's {n_states} states and {n_arcs} arcs do not end where the file ends")
    states = np.frombuffer(data, STATE_DTYPE, n_states, states_at).copy()
    arcs = np.frombuffer(data, ARC_DTYPE, n_arcs, pos).copy()
    return bool(utf8), alpha, beta, DictionaryFst(start, states, arcs, properties)


def _find_trie(data: mmap.mmap, path: Path) -> tuple[int, tuple[bool, float, float, DictionaryFst]] | None:
    """Where the KenLM model ends and the trie starts, found by its magic and checked by parsing it.

    DeepSpeech asks KenLM where its search data ends; the magic followed by a trie that ends exactly at the
    end of the file is the same place, without having to size KenLM's structures.
    """
    problem = None
    offset = data.find(_TRIE_MARK, len(KENLM_MAGIC))
    while offset >= 0:
        try:
            return offset, _parse_trie(data, offset)
        except (_Malformed, struct.error) as exc:
            problem = problem or str(exc)
        offset = data.find(_TRIE_MARK, offset + 1)
    if problem and "version" in problem:
        raise DsitaError(f"{path}: {problem}")
    return None


def read_ds_scorer(path: Path) -> DsScorerPackage:
    """Read a scorer package's header and trie; any problem is one DsitaError naming the file."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if not data[: len(KENLM_MAGIC)] == KENLM_MAGIC:
                raise DsitaError(
                    f"{path}: not a DeepSpeech scorer package (it does not start with a KenLM model)"
                )
            found = _find_trie(data, path)
    except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        raise DsitaError(f"{path}: cannot read the scorer package ({exc})") from None
    if found is None:
        raise DsitaError(f"{path}: a KenLM model without a vocabulary trie, not a DeepSpeech scorer package")
    offset, (utf8, alpha, beta, fst) = found
    return DsScorerPackage(path, offset, utf8, alpha, beta, fst)


def trie_words(fst: DictionaryFst, limit: int | None = None) -> Iterator[list[int]]:
    """The label sequences the trie accepts (label ids + 1, the final space included), depth first."""
    stack: list[tuple[int, list[int]]] = [(fst.start, [])]
    produced = 0
    while stack and (limit is None or produced < limit):
        state, labels = stack.pop()
        record = fst.states[state]
        if record["final"] == 0.0:
            produced += 1
            yield labels
        first = int(record["pos"])
        for arc in reversed(fst.arcs[first : first + int(record["narcs"])]):
            stack.append((int(arc["next"]), [*labels, int(arc["ilabel"])]))


def check_ds_scorer(path: Path, alphabet: Alphabet) -> DsScorerPackage:
    """Check that a scorer package fits a model's alphabet; a mismatch is one DsitaError line.

    The package holds no alphabet: its trie spells words in label ids, so DeepSpeech loads a scorer built
    for another alphabet without complaint and then decodes nonsense. Checked here: the labels fall inside
    the alphabet, exactly the arcs into final states carry its space, and the first CHECK_WORDS words the
    trie spells in this alphabet are (nearly all) words of the package's own KenLM model.
    """
    package = read_ds_scorer(path)
    if package.is_utf8:
        raise DsitaError(f"{path}: a bytes output mode scorer (UTF-8 bytes, not an alphabet's labels)")
    if " " not in alphabet:
        raise DsitaError("a DeepSpeech scorer needs the space label in the alphabet (the word separator)")
    fst, space = package.fst, alphabet.labels.index(" ") + 1
    labels = fst.arcs["ilabel"]
    if len(labels) and (labels.min() < 1 or labels.max() > len(alphabet)):
        raise DsitaError(
            f"{path}: built for another alphabet: its trie uses label {int(labels.max()) - 1}, "
            f"this alphabet has labels 0..{len(alphabet) - 1}"
        )
    if np.any((fst.states["final"][fst.arcs["next"]] == 0.0) != (labels == space)):
        raise DsitaError(
            f"{path}: built for another alphabet: its words do not end with this alphabet's space "
            f"(label {space - 1})"
        )
    words = [
        alphabet.decode([label - 1 for label in spelled[:-1]]) for spelled in trie_words(fst, CHECK_WORDS)
    ]
    config = kenlm.Config()
    config.load_method = kenlm.LoadMethod.LAZY  # only the vocabulary is looked at
    model = kenlm.Model(str(path), config)
    unknown = [word for word in words if word not in model]
    if len(unknown) > (1 - _KNOWN_WORDS) * len(words):
        raise DsitaError(
            f"{path}: built for another alphabet: {len(unknown)} of the {len(words)} words its trie spells "
            f"in this alphabet are not in its language model (such as {max(unknown[:20], key=len)!r})"
        )
    return package


def export_ds_scorer(scorer: Scorer, alphabet: Alphabet, path: Path) -> DictionaryFst:
    """Write `kenlm.scorer` from a dsita scorer folder for a model of `alphabet`, with its alpha and beta
    converted to DeepSpeech's units (`deepspeech_weights`)."""
    if scorer.alphabet() != alphabet:
        raise DsitaError(
            f"{scorer.folder}: the scorer was built for another alphabet than the model's; "
            "build one with the model's alphabet"
        )
    alpha, beta = deepspeech_weights(scorer.alpha, scorer.beta)
    return write_ds_scorer(scorer.lm_path, scorer.vocabulary(), alphabet, alpha, beta, path)
