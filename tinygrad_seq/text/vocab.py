"""Vocabularies: the map between text and the integer ids a model reads.

    CharVocab.from_text(text)     one id per distinct Unicode character
    ByteVocab()                   one id per byte value (0..255) of the UTF-8 encoding
    WordVocab.from_text(text, min_count=2, max_size=10000)
                                  words and punctuation, rare ones mapped to <UNK>, and an
                                  <EOS> token closing every line

Every vocabulary has `encode(text) -> int64 array`, `decode(ids) -> str`, `len()`, and
`to_dict()` / `vocab_from_dict(d)` so that a checkpoint can carry it as plain JSON.
One-hot inputs are `tinygrad_seq.one_hot(ids, len(vocab))`; embeddings are `nn.Embedding`.
"""
import re
from collections import Counter

import numpy as np


class VocabError(ValueError):
    """Text that a vocabulary cannot encode; the message is one line."""


def _preview(symbols, limit=10):
    shown = ", ".join(repr(s) for s in symbols[:limit])
    return shown + (f" and {len(symbols) - limit} more" if len(symbols) > limit else "")


class CharVocab:
    """Characters <-> ids.  `symbols[i]` is the character with id i (sorted, so a corpus
    always gives the same ids)."""

    type = "char"

    def __init__(self, symbols):
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols) or any(len(s) != 1 for s in self.symbols):
            raise ValueError("CharVocab: symbols must be distinct single characters")
        self._table = None  # code point -> id (-1 = unknown), built on first encode

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.symbols)

    def __contains__(self, symbol):
        return symbol in self.index

    def unknown(self, text):
        """The characters of `text` that are not in the vocabulary (sorted, distinct)."""
        return sorted(set(text) - set(self.index))

    def encode(self, text):
        """str -> int64 ids;  raises VocabError naming the characters it has never seen."""
        # code points through a lookup table: a whole corpus encodes in one vectorised pass
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if self._table is None:
            points = np.array([ord(s) for s in self.symbols], dtype=np.int64)
            self._table = np.full(int(points.max(initial=0)) + 2, -1, dtype=np.int64)
            self._table[points] = np.arange(len(points))
        ids = self._table[np.minimum(codes, self._table.size - 1)]
        if ids.size and ids.min() < 0:
            missing = self.unknown(text)
            raise VocabError(f"{len(missing)} character(s) not in the model's vocabulary: "
                             f"{_preview(missing)}")
        return ids

    def decode(self, ids):
        return "".join(self.symbols[int(i)] for i in np.asarray(ids).reshape(-1))

    def to_dict(self):
        return {"type": self.type, "symbols": self.symbols}


class ByteVocab:
    """The 256 byte values of the UTF-8 encoding: never meets an unknown symbol, at the
    price of several ids per non-ASCII character."""

    type = "byte"

    def __len__(self):
        return 256

    def unknown(self, text):
        return []

    def encode(self, text):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def decode(self, ids):
        # a sample can stop in the middle of a multi-byte character: show it as U+FFFD
        return bytes(np.asarray(ids, dtype=np.uint8).reshape(-1).tolist()).decode("utf-8", errors="replace")

    def to_dict(self):
        return {"type": self.type}


_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[^\sA-Za-z0-9]")
_NO_SPACE_BEFORE = set(".,;:!?)'")


def tokenize_words(text, lower=False):
    """Words and single punctuation marks, line by line, each line closed by '<EOS>'."""
    tokens = []
    for line in text.splitlines():
        words = _WORD.findall(line.lower() if lower else line)
        if words:
            tokens.extend(words)
            tokens.append(WordVocab.EOS)
    return tokens


class WordVocab:
    """Words <-> ids with <UNK> for words seen fewer than `min_count` times (or beyond the
    `max_size` most frequent) and <EOS> for the end of a line.  Ids: 0 = <UNK>, 1 = <EOS>,
    then words by decreasing frequency (ties alphabetically)."""

    type = "word"
    UNK, EOS = "<UNK>", "<EOS>"

    def __init__(self, words, lower=False):
        specials = [self.UNK, self.EOS]
        self.symbols = specials + [w for w in words if w not in specials]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.lower = lower

    @classmethod
    def from_text(cls, text, min_count=1, max_size=None, lower=False):
        return cls.from_counts(Counter(tokenize_words(text, lower)), min_count, max_size, lower)

    @classmethod
    def from_counts(cls, counts, min_count=1, max_size=None, lower=False):
        """The vocabulary of a text whose tokenize_words counts are `counts` (a Counter, e.g.
        summed over the chunks of a corpus too large to hold)."""
        if min_count < 1:
            raise ValueError(f"WordVocab: min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size < 3:
            raise ValueError(f"WordVocab: max_size must be at least 3 (<UNK>, <EOS> and a word), got {max_size}")
        words = sorted((w for w, c in counts.items() if c >= min_count and w != cls.EOS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size - 2]
        return cls(words, lower)

    def __len__(self):
        return len(self.symbols)

    def __contains__(self, word):
        return word in self.index

    def unknown(self, text):
        return sorted({w for w in tokenize_words(text, self.lower) if w not in self.index})

    def encode(self, text):
        """str -> int64 ids; unknown words become <UNK> (id 0)."""
        return self.encode_tokens(tokenize_words(text, self.lower))

    def encode_tokens(self, tokens):
        return np.fromiter((self.index.get(t, 0) for t in tokens), dtype=np.int64, count=len(tokens))

    def decode(self, ids):
        """ids -> text: spaces between words, none before punctuation, <EOS> as a newline."""
        out = []
        for i in np.asarray(ids).reshape(-1):
            word = self.symbols[int(i)]
            if word == self.EOS:
                out.append("\n")
            elif not out or out[-1] == "\n" or word in _NO_SPACE_BEFORE:
                out.append(word)
            else:
                out.append(" " + word)
        return "".join(out)

    def to_dict(self):
        return {"type": self.type, "symbols": self.symbols[2:], "lower": self.lower}


def vocab_from_dict(d):
    """Rebuild a vocabulary saved with `to_dict()` (e.g. from a checkpoint)."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind == "char":
        return CharVocab(d["symbols"])
    if kind == "byte":
        return ByteVocab()
    if kind == "word":
        return WordVocab(d["symbols"], d.get("lower", False))
    raise ValueError(f"unknown vocabulary type {kind!r}")
