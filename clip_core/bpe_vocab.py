"""CLIP's byte-level BPE vocabulary: the bundled OpenAI file, transformers' vocab.json/merges.txt, and the BPE itself.

Shared by the pure-Python tokenizer (tokenization.py) and the `tokenizers`-backed one (tokenization_fast.py).
"""

from __future__ import annotations

import functools
import gzip
import heapq
import json
import os
from collections.abc import Callable
from itertools import chain

from .files import atomic_write_text, read_json

OPENAI_BPE_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "data", "bpe_simple_vocab_16e6.txt.gz"
)

# CLIP uses the first 49152 - 256 - 2 merges of its merge list: 256 byte symbols, 256 end-of-word
# forms, 48894 merges and 2 special tokens make the 49408-entry vocabulary.
NUM_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
MERGES_HEADER = "#version: 0.2"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (bytes that print as themselves keep their code)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_UNICODE: dict[int, str] = _bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}
# bytes.translate-free fast path: for bytes -> str we index this list.
_BYTE_CHARS: list[str] = [BYTE_TO_UNICODE[b] for b in range(256)]


def byte_encode(word: str) -> str:
    """``word``'s UTF-8 bytes spelled with the byte-level alphabet (printable ASCII maps to itself)."""
    if word.isascii() and word.isprintable() and " " not in word:
        return word  # '!'..'~' are their own byte symbols
    return "".join([_BYTE_CHARS[b] for b in word.encode("utf-8")])


def byte_decode(text: str, errors: str = "replace") -> str:
    """Inverse of byte_encode over a concatenation of byte symbols."""
    return bytes([UNICODE_TO_BYTE[c] for c in text]).decode("utf-8", errors=errors)


@functools.lru_cache(maxsize=1)
def openai_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(token -> id, merges) from the bundled OpenAI file, laid out exactly as transformers' vocab.json."""
    with gzip.open(OPENAI_BPE_PATH, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : NUM_MERGES + 1])
    return _vocab_from_merges(merges), merges


def _vocab_from_merges(merges) -> dict[str, int]:
    symbols = list(BYTE_TO_UNICODE.values())
    tokens = (
        symbols + [s + END_OF_WORD for s in symbols] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    )
    return {t: i for i, t in enumerate(tokens)}


def read_vocab_files(vocab_file: str, merges_file: str) -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """transformers' vocab.json and merges.txt (header line, then one 'a b' merge per line)."""
    encoder = read_json(vocab_file)
    if not isinstance(encoder, dict):
        raise ValueError(f"{vocab_file} must hold a JSON object token -> id")
    with open(merges_file, encoding="utf-8") as f:
        lines = f.read().strip().split("\n")
    # Like the reference, read at most CLIP's merge count, skipping the '#version' header line.
    merges = []
    for number, line in enumerate(lines[1 : NUM_MERGES + 1], start=2):
        pair = tuple(line.split())
        if len(pair) != 2:
            raise ValueError(f"{merges_file} line {number} is not a merge of two symbols: {line!r}")
        merges.append(pair)
    return encoder, tuple(merges)


def write_vocab_files(
    folder: str, encoder: dict[str, int], merges, filename_prefix: str | None = None
) -> tuple[str, str]:
    """Write vocab.json and merges.txt the way transformers does (atomic writes)."""
    if not os.path.isdir(folder):
        raise ValueError(f"vocabulary folder {folder!r} does not exist")
    prefix = f"{filename_prefix}-" if filename_prefix else ""
    vocab_file = os.path.join(folder, prefix + "vocab.json")
    merges_file = os.path.join(folder, prefix + "merges.txt")
    atomic_write_text(vocab_file, json.dumps(encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    atomic_write_text(merges_file, MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return vocab_file, merges_file


LONG_WORD = 24  # symbols; longer words take the merge queue (the list rescan is quadratic in a word)


class BytePairEncoder:
    """CLIP's BPE on byte-encoded words (callers put a WordIdsCache in front: caption words repeat a lot).

    Both paths give the textbook result (OpenAI's loop: merge every occurrence of the lowest-ranked
    pair, left to right, until no pair is ranked): short words rescan a list of pair ranks, long words
    use a queue of ranks, so that a word of n characters costs about n log n, not n**2."""

    def __init__(self, encoder: dict[str, int], merges, unk_id: int):
        self.encoder = encoder
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._pairs = list(merges)
        self.unk_id = unk_id

    def ids(self, word: str) -> list[int]:
        get, unk = self.encoder.get, self.unk_id
        return [get(t, unk) for t in self._merge(word)]

    def _merge(self, word: str) -> tuple[str, ...]:
        """BPE pieces of one byte-encoded word; its last piece ends with '</w>'."""
        symbols = [*word[:-1], word[-1] + END_OF_WORD]
        return self._merge_long(symbols) if len(symbols) > LONG_WORD else self._merge_short(symbols)

    def _merge_short(self, symbols: list[str]) -> tuple[str, ...]:
        ranks, never = self.ranks, len(self.ranks)
        get = ranks.get
        # Rank of each adjacent pair; after a merge only the two pairs around it change.
        pair_ranks = [get(pair, never) for pair in zip(symbols, symbols[1:])]
        while pair_ranks:
            best = min(pair_ranks)
            if best == never:
                break
            # Merge the best pair at each occurrence, left to right. A merged symbol can never
            # re-form the same pair with a neighbour, so searching again from the left gives exactly
            # the non-overlapping left-to-right merges of the textbook formulation.
            i = pair_ranks.index(best)
            while True:
                symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
                del pair_ranks[i]
                if i > 0:
                    pair_ranks[i - 1] = get((symbols[i - 1], symbols[i]), never)
                if i < len(pair_ranks):
                    pair_ranks[i] = get((symbols[i], symbols[i + 1]), never)
                try:
                    i = pair_ranks.index(best, i)
                except ValueError:
                    break
        return tuple(symbols)

    def _merge_long(self, symbols: list[str]) -> tuple[str, ...]:
        """The same merges from a queue: ranks in a heap, each with the positions where its pair was
        seen (checked when their turn comes: a pair may have changed since), symbols in a linked list.

        A rank's positions are merged together, left to right, before any pair they create is queued:
        as in the textbook loop, where a merge may make a pair of a lower rank (merge lists that do not
        build on themselves), which is then merged next."""
        get, pairs = self.ranks.get, self._pairs
        seen: dict[int, list[int]] = {}  # rank -> positions (left symbol) where its pair was made
        for i, pair in enumerate(zip(symbols, symbols[1:])):
            rank = get(pair)
            if rank is not None:
                seen.setdefault(rank, []).append(i)
        queue = list(seen)
        heapq.heapify(queue)
        following = list(range(1, len(symbols) + 1))
        following[-1] = -1
        preceding = list(range(-1, len(symbols) - 1))

        def note(rank, position):
            if rank is not None:
                if rank in seen:
                    seen[rank].append(position)
                else:
                    seen[rank] = [position]
                    heapq.heappush(queue, rank)

        while queue:
            rank = heapq.heappop(queue)
            positions = sorted(seen.pop(rank))
            first, second = pairs[rank]
            merged = first + second
            for i in positions:
                j = following[i]
                if j == -1 or symbols[i] != first or symbols[j] != second:
                    continue  # merged away, or overlapping a merge just made
                symbols[i], symbols[j] = merged, None
                k = following[i] = following[j]
                if k != -1:
                    preceding[k] = i
                    note(get((merged, symbols[k])), i)
                if preceding[i] != -1:
                    note(get((symbols[preceding[i]], merged)), preceding[i])
        return tuple(s for s in symbols if s is not None)


class WordIdsCache:
    """word -> token ids for whole batches of texts, learning every unseen word of a batch in one go.

    Caption words repeat a lot, so looking a word up is the common case and BPE the rare one. A text
    arrives as its pieces: words (str) still to encode, and token ids (int) already known, such as
    special tokens cut out of the text; an id stands for itself, so one C-level pass over the pieces
    gives the text's ids. ``learn`` turns a list of words into their ids.
    """

    def __init__(self, learn: Callable[[list[str]], list[list[int]]], max_words: int = 1_000_000):
        self._learn = learn
        self._max_words = max_words
        self._ids: dict[str | int, list[int]] = {}

    def clear(self) -> None:
        self._ids.clear()

    def __len__(self) -> int:
        return len(self._ids)

    def rows(self, texts: list[list[str | int]], first: list[int], last: list[int]) -> list[list[int]]:
        """Each text's ids, between ``first`` and ``last``."""
        rows, missed = self._known_rows(texts, first, last)
        if missed:
            unknown = [texts[i] for i in missed]
            self._learn_unseen(unknown)
            for index, row in zip(missed, self._known_rows(unknown, first, last)[0]):
                rows[index] = row
        return rows

    def _known_rows(self, texts, first, last) -> tuple[list, list[int]]:
        """Rows of the texts whose pieces are all known (None for the others), and the others' indices."""
        lookup = self._ids.__getitem__
        rows, missed = [], []
        for index, pieces in enumerate(texts):
            row = first.copy()
            try:
                row.extend(chain.from_iterable(map(lookup, pieces)))  # one C-level pass per text
            except KeyError:
                missed.append(index)
                row = None
            else:
                row += last
            rows.append(row)
        return rows, missed

    def _learn_unseen(self, texts: list[list[str | int]]) -> None:
        pieces = set(chain.from_iterable(texts))
        unseen = pieces.difference(self._ids)
        if len(self._ids) + len(unseen) > self._max_words:
            # Bound the memory a stream of unique words can take: start afresh with these texts' words.
            self._ids.clear()
            unseen = pieces
        words = [p for p in unseen if isinstance(p, str)]
        self._ids.update(zip(words, self._learn(words)))
        self._ids.update((p, [p]) for p in unseen if not isinstance(p, str))
