"""Hot words in the lexicon search, with no rebuild of the scorer and no Python in the LM.

A boost is a score (natural-log units, like the acoustic scores and beta) added once per occurrence of a
hot word or phrase in a hypothesis. flashlight's lexicon search reaches the LM only at word ends, with the
C++ KenLM; calling a Python LM there instead costs 1.7x the decoding time before it does anything
(BENCHMARKS.md), so the boost goes in through the two inputs the search reads per call:

* the lexicon trie: a copy of the scorer's vocabulary trie that shares every node except those on the hot
  spellings' paths (copied, a few hundred nodes at most), so that building it takes milliseconds;
* the emissions: each hot spelling ends, instead of with the space label, with an extra output column whose
  log-probability is the space's plus the boost. The search leaves a word's last node through its ending
  label for one frame only (from the root, the next frames of silence are the space label again), so the
  boost is added exactly once per word. Hot words with the same boost share a column.

A word outside the vocabulary is spelled into the trie and scored as KenLM's `<unk>`, plus its boost. A
phrase is one trie spelling with its inner spaces: its words can only come out together, and KenLM scores
its last word in the sentence's context; the column adds what KenLM gives the words before it and the
last word's change of context, both read once without context, and beta for each extra word. The boost
also raises the trie's look-ahead along the spelling, growing letter by letter, so that a hot word's
beginning survives the beam's pruning; the look-ahead is given back when the word ends, so it changes no
final score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flashlight.lib.text.decoder import Trie, TrieNode

from dsita.decoding.hotwords import HotWord
from dsita.text.alphabet import Alphabet

MAX_COLUMNS = 16  # distinct boosts cost one extra output each; beyond this many they are rounded
_SHUT = -1e30  # a column's log-probability on frames where no word may end
_FIRST_STEP = 0.25  # the finest rounding tried when there are too many distinct boosts


@dataclass(frozen=True)
class HotScores:
    """What building a hot lexicon needs to know of the LM, as functions.

    `unigram(label)`: the trie's score of a vocabulary label (0 is `<unk>`); `phrase(words)`: KenLM's log10
    probability of the words in sequence from no context; `index`: vocabulary word -> label.
    """

    index: Mapping[str, int]
    unigram: Callable[[int], float]
    phrase: Callable[[list[str]], float]


class HotLexicon:
    """The vocabulary trie with the hot spellings merged in, and the extra output columns' boosts."""

    def __init__(self, trie: Trie, columns: np.ndarray, n_outputs: int, space: int) -> None:
        self.trie = trie
        self.columns = columns  # float32, one per extra output: added to the space's log-probability
        self.n_outputs = n_outputs
        self.space = space

    def extend(self, emissions: np.ndarray, token_beam: int) -> np.ndarray:
        """(T, n_outputs) log-probabilities -> (T, n_outputs + columns), C-contiguous.

        The search tries the `token_beam` likeliest labels of a frame, plus one per column: a column is
        open only on frames where the space is among those labels, where a plain word could end too, and
        shut (-1e30) elsewhere. So the boosts never change which real labels a frame tries.
        """
        space = emissions[:, [self.space]]
        if token_beam < emissions.shape[1]:
            kth = np.partition(emissions, -token_beam, axis=1)[:, [-token_beam]]
            space = np.where(space >= kth, space, _SHUT)
        extra = space + self.columns[None, :]
        return np.ascontiguousarray(np.concatenate([emissions, extra], axis=1), dtype=np.float32)


class _Copy:
    """A trie node copied from the vocabulary trie (or new), with its children as a Python dict until the
    copy is written."""

    def __init__(self, node: TrieNode, children: dict[int, TrieNode]) -> None:
        self.node = node
        self.children = children


class _Builder:
    """Path copying over the vocabulary trie: the nodes on hot spellings are copies, all others shared."""

    def __init__(self, base: Trie, root_label: int, n_outputs: int) -> None:
        self.trie = Trie(n_outputs + MAX_COLUMNS, root_label)
        root = self.trie.search([])  # not get_root(): its binding hands Python a second owner of the root
        self.root = _Copy(root, base.search([]).children)
        self._copies: dict[int, _Copy] = {id(root): self.root}

    def child(self, parent: _Copy, label: int) -> _Copy:
        """The copy of `parent`'s child through `label`, made on first use (a new node if there is none)."""
        node = parent.children.get(label)
        if node is not None and id(node) in self._copies:
            return self._copies[id(node)]
        copy = TrieNode(label)
        if node is None:
            copy.max_score = -math.inf
            entry = _Copy(copy, {})
        else:
            copy.labels, copy.scores, copy.max_score = node.labels, node.scores, node.max_score
            entry = _Copy(copy, node.children)
        parent.children[label] = copy
        self._copies[id(copy)] = entry
        return entry

    def write(self) -> Trie:
        for entry in self._copies.values():
            entry.node.children = entry.children
        return self.trie


def _columns(values: list[float]) -> tuple[np.ndarray, list[int]]:
    """Distinct values -> columns, rounded to ever coarser steps until at most MAX_COLUMNS remain."""
    step = 0.0
    while True:
        rounded = [round(v / step) * step if step else v for v in values]
        distinct = sorted(set(rounded))
        if len(distinct) <= MAX_COLUMNS:
            where = {value: i for i, value in enumerate(distinct)}
            return np.asarray(distinct, dtype=np.float32), [where[v] for v in rounded]
        step = step * 2 if step else _FIRST_STEP


def build_hot_lexicon(
    base: Trie,
    entries: Iterable[HotWord],
    alphabet: Alphabet,
    scores: HotScores,
    alpha: float,
    beta: float,
) -> HotLexicon:
    """The vocabulary trie `base` (spellings ending with the space label) with `entries` merged in."""
    space, n_outputs = alphabet.labels.index(" "), len(alphabet) + 1
    entries = sorted(entries, key=lambda e: " " in e.text)  # single words first: they drop plain endings
    values = []
    for entry in entries:
        words = entry.words
        value = entry.boost
        if len(words) > 1:
            last = scores.phrase(words[-1:])
            value += alpha * (scores.phrase(words) - last) + beta * (len(words) - 1)
        values.append(value)
    columns, column_of = _columns(values)
    builder = _Builder(base, space, n_outputs)
    for entry, column in zip(entries, column_of, strict=True):
        _insert(builder, entry, n_outputs + column, alphabet, scores, alpha)
    return HotLexicon(builder.write(), columns, n_outputs, space)


def _insert(
    builder: _Builder, entry: HotWord, column: int, alphabet: Alphabet, scores: HotScores, alpha: float
) -> None:
    """One spelling, ending with its column's label; a single word loses its plain ending."""
    spelling = alphabet.encode(entry.text)
    label = scores.index.get(entry.words[-1], 0)
    unigram = scores.unigram(label)
    lift = entry.boost / alpha if alpha > 0 else 0.0
    node = builder.root
    for depth, letter in enumerate(spelling, start=1):
        node = builder.child(node, letter)
        node.node.max_score = max(node.node.max_score, unigram + max(lift, 0.0) * depth / len(spelling))
    if " " not in entry.text and label:
        _drop_plain_ending(node, label, alphabet.labels.index(" "))
    end = TrieNode(column)
    end.labels, end.scores, end.max_score = [label], [unigram], unigram
    node.children[column] = end


def _drop_plain_ending(node: _Copy, label: int, space: int) -> None:
    """A hot word ends through its column only: without this, a negative boost would change nothing."""
    ending = node.children.get(space)
    if ending is None or label not in ending.labels:
        return
    keep = [i for i, known in enumerate(ending.labels) if known != label]
    if not keep and not ending.children:
        del node.children[space]
        return
    copy = TrieNode(space)
    copy.labels = [ending.labels[i] for i in keep]
    copy.scores = [ending.scores[i] for i in keep]
    copy.max_score, copy.children = ending.max_score, ending.children
    node.children[space] = copy
