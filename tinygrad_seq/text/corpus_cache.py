"""Corpora larger than memory: stream the text once into a file of token ids, then map it.

    cache = CorpusCache.open_or_build("big.txt.gz", cache_dir="runs/charlm/cache")
    cache.vocab                    # CharVocab of every character of the corpus (and --val file)
    cache.train_ids, cache.val_ids # np.memmap views, uint8 when the vocabulary has <= 256 symbols
    cache.fingerprints             # {"train": {length, crc32}, "val": ...} as training.fingerprint
    CorpusCache.open_or_build("big.txt", level="word", min_count=2, max_vocab=10000)
                                   # WordVocab of the training part; uint16 ids up to 65536 words

Building streams the corpus (plain or .gz) in chunks of a few MB.  Pass 1 finds the
vocabulary: the characters (sorted, exactly CharVocab.from_text of the whole text), or for
words the length in characters that places the split, then the word counts of the training
part (exactly WordVocab.from_text of it).  Pass 2 encodes each chunk (characters through a
code-point table; words a line at a time, a chunk's unfinished line waiting for the next) and
appends the ids, in the smallest unsigned integer type that holds the vocabulary, to a
temporary file that is renamed into place when complete.  Every pass prints progress and
throughput.  Memory stays at a few chunks (plus the word counts) whatever the corpus size;
reading batches touches only the pages of the rows a rank trains on.

The cache is keyed by each input file's absolute path, size, modification time and a
content fingerprint (CRC-32 of 16 blocks spread over the file), plus the level, the word
vocabulary's limits and the validation split: editing the corpus gives a new key and the
entries of the file's older version are deleted.
The ids equal `vocab.encode(text)` of the in-memory path, and the split equals
`training.split_corpus`: the last `val_fraction` of the characters, unless a validation file is given.
"""
import codecs
import contextlib
import gzip
import hashlib
import json
import os
import sys
import tempfile
import time
import zlib
from collections import Counter

import numpy as np

from ..checkpoint import write_atomically
from .corpus import CorpusError, gzip_error
from .vocab import CharVocab, VocabError, WordVocab, _preview, tokenize_words, vocab_from_dict

FORMAT_VERSION = 2  # 2: the vocabulary as vocab.to_dict(), char or word level
CHUNK_BYTES = 4 << 20
FINGERPRINT_BLOCKS = 16
FINGERPRINT_BLOCK_BYTES = 64 << 10


def smallest_uint(n_symbols):
    """The smallest unsigned integer dtype whose values cover ids 0..n_symbols-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_symbols - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def file_key(path):
    """{path, size, mtime_ns, sample_crc32}: what identifies a corpus file's content cheaply."""
    path = os.path.abspath(path)
    info = os.stat(path)
    crc = 0
    with open(path, "rb") as f:
        for i in range(FINGERPRINT_BLOCKS):
            f.seek(info.st_size * i // FINGERPRINT_BLOCKS)
            crc = zlib.crc32(f.read(FINGERPRINT_BLOCK_BYTES), crc)
        f.seek(max(0, info.st_size - FINGERPRINT_BLOCK_BYTES))
        crc = zlib.crc32(f.read(), crc)
    return {"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns, "sample_crc32": crc}


# ---------------------------------------------------------------------------- streaming the text
def _check_readable(path):
    if not os.path.exists(path):
        raise CorpusError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CorpusError(f"{path} is a directory; give a text file")
    if os.path.getsize(path) == 0:
        raise CorpusError(f"{path} is empty")


def text_chunks(path, encoding="utf-8", chunk_bytes=CHUNK_BYTES, progress=None):
    """The text of `path` (.gz decompressed) as str chunks, never splitting a character.
    `progress(bytes_read_of_the_file)` after each chunk.  Raises CorpusError (one line) as
    `corpus.read_text` does: missing, directory, empty, undecodable (with the byte offset),
    only whitespace."""
    path = os.fspath(path)
    _check_readable(path)
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, any_text, any_bytes = 0, False, False
    try:
        raw = open(path, "rb")
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        with raw, stream:
            while True:
                data = stream.read(chunk_bytes)
                final = not data
                try:
                    text = decoder.decode(data, final=final)
                except UnicodeDecodeError as exc:
                    # exc.object: the bytes held back from the previous chunk, then this one
                    start = offset - (len(exc.object) - len(data)) + exc.start
                    bad = exc.object[exc.start]
                    raise CorpusError(f"{path} is not valid {encoding} text: byte 0x{bad:02x} at offset {start} "
                                      f"cannot be decoded; convert the file to {encoding}") from None
                offset += len(data)
                any_bytes = any_bytes or bool(data)
                if text:
                    any_text = any_text or bool(text.strip())
                    yield text
                if progress is not None:
                    progress(raw.tell())
                if final:
                    break
    except (OSError, EOFError, zlib.error) as exc:
        if path.endswith(".gz") and isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
            raise gzip_error(path, exc) from None
        raise CorpusError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not any_bytes:
        raise CorpusError(f"{path} is empty")
    if not any_text:
        raise CorpusError(f"{path} holds only whitespace")


class ByteProgress:
    """'encoding big.txt: 312.4 of 1024.0 MB (85.1 MB/s)' redrawn on a terminal, or a line
    about every tenth of the way in a log; silent for files read within a second."""

    QUIET_SECONDS = 1.0

    def __init__(self, what, total_bytes, stream=None, enabled=True, unit="MB"):
        self.what, self.total, self.unit = what, max(total_bytes, 1), unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.next_line = 0.1
        self.done_bytes = 0
        self.drawn = False

    def __call__(self, done):
        self.done_bytes = done
        if not self.enabled or time.perf_counter() - self.start < self.QUIET_SECONDS:
            return
        self.drawn = True
        fraction = done / self.total
        if not self.tty and fraction < self.next_line and done < self.total:
            return
        self.next_line = (int(fraction * 10) + 1) / 10
        rate = done / max(time.perf_counter() - self.start, 1e-9) / 1e6
        line = (f"{self.what}: {done / 1e6:.1f} of {self.total / 1e6:.1f} {self.unit} ({rate:.2f} {self.unit}/s, "
                f"{100 * fraction:.0f}%)")
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------------------- text -> ids, a chunk at a time
class _CharCodes:
    """Characters -> ids through a code-point table; an unknown character is a VocabError
    (check=False: the vocabulary was read off this very text, nothing to check)."""

    def __init__(self, vocab, dtype, check=True):
        points = np.array([ord(s) for s in vocab.symbols], dtype=np.int64)
        self.table = np.zeros(0x110000, dtype=dtype)
        self.table[points] = np.arange(len(points), dtype=dtype)
        self.known = None
        if check:
            self.known = np.zeros(0x110000, dtype=bool)
            self.known[points] = True

    def feed(self, text):
        codes = _code_points(text)
        if self.known is not None and not self.known[codes].all():
            missing = sorted({chr(c) for c in np.unique(codes[~self.known[codes]])})
            raise VocabError(f"{len(missing)} character(s) not in the model's vocabulary: {_preview(missing)}")
        return self.table[codes]

    def end(self):
        return self.table[:0]


class _Lines:
    """The complete lines of text arriving in chunks.  tokenize_words splits a text at line
    ends, so tokenizing each piece up to a chunk's last newline, and the rest with the next
    chunk, gives the tokens of the whole text."""

    def __init__(self):
        self.waiting = []

    def feed(self, text):
        cut = text.rfind("\n") + 1
        if not cut:  # one long line so far
            self.waiting.append(text)
            return ""
        lines = "".join(self.waiting) + text[:cut]
        self.waiting = [text[cut:]]
        return lines

    def end(self):
        """The unfinished last line: the text ends here."""
        rest, self.waiting = "".join(self.waiting), []
        return rest


class _WordCodes:
    """Words -> ids (rare and unseen ones <UNK>), equal to vocab.encode of the whole text."""

    def __init__(self, vocab, dtype):
        self.vocab, self.dtype, self.lines = vocab, dtype, _Lines()

    def feed(self, text):
        return self._encode(self.lines.feed(text))

    def end(self):
        return self._encode(self.lines.end())

    def _encode(self, text):
        return self.vocab.encode(text).astype(self.dtype, copy=False)


def _codes(vocab, dtype, check=True):
    if isinstance(vocab, CharVocab):
        return _CharCodes(vocab, dtype, check)
    if isinstance(vocab, WordVocab):
        return _WordCodes(vocab, dtype)
    raise TypeError(f"streaming encodes character and word vocabularies, not {type(vocab).__name__}")


def _pieces(sources, train_chars, verb, progress, stream):
    """(part, text) over the sources in order: part "train" for the first `train_chars`
    characters, "val" after them; (part, None) closes each part, which the in-memory path
    encodes as a text of its own."""
    position, part = 0, "train"
    for path in sources:
        bar = ByteProgress(f"{verb} {path}", os.path.getsize(path), stream, progress)
        try:
            for text in text_chunks(path, progress=bar):
                head = max(0, min(len(text), train_chars - position))
                position += len(text)
                if head:
                    yield "train", text[:head]
                if head < len(text):
                    if part == "train":
                        yield "train", None
                        part = "val"
                    yield "val", text[head:]
        finally:
            bar.close()
    if part == "train":
        yield "train", None
    yield "val", None


# ---------------------------------------------------------------------------- the cache
class CorpusCache:
    """A built cache entry: the vocabulary, the split, fingerprints and the memory-mapped ids."""

    def __init__(self, ids_path, meta):
        self.ids_path, self.meta = ids_path, meta
        self.vocab = vocab_from_dict(meta["vocab"])
        self.dtype = np.dtype(meta["dtype"])
        self.ids = (np.memmap(ids_path, dtype=self.dtype, mode="r", shape=(meta["tokens"],)) if meta["tokens"]
                    else np.zeros(0, self.dtype))
        cut = meta["train_tokens"]
        self.train_ids, self.val_ids = self.ids[:cut], self.ids[cut:]
        self.fingerprints = meta["fingerprints"]

    @classmethod
    def open_or_build(cls, corpus, val_file=None, val_fraction=0.1, cache_dir=None, progress=True, stream=None,
                      level="char", min_count=1, max_vocab=None):
        """The cache entry for these inputs, building it if it is missing or stale.
        level "char": every character of the corpus and val_file; "word": WordVocab.from_text
        of the training part with `min_count` and `max_vocab` (the ids of rarer words are <UNK>)."""
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', not {level!r}")
        sources = [os.fspath(corpus)] + ([os.fspath(val_file)] if val_file is not None else [])
        for path in sources:
            _check_readable(path)
        key_data = {"version": FORMAT_VERSION, "level": level,
                    "inputs": [file_key(p) for p in sources],
                    "val_fraction": None if val_file is not None else float(val_fraction)}
        if level == "word":
            key_data.update(min_count=int(min_count), max_vocab=None if max_vocab is None else int(max_vocab))
        key = hashlib.sha1(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
        cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "tgs-corpus-cache")
        stem = os.path.join(cache_dir, f"{os.path.basename(sources[0])}.{key}")
        meta_path, ids_path = stem + ".json", stem + ".ids"
        meta = _read_meta(meta_path, ids_path)
        if meta is None:
            meta = _build(sources, key_data, val_file is not None, val_fraction, meta_path, ids_path,
                          progress, stream)
            _remove_stale(cache_dir, key_data["inputs"][0])
        return cls(ids_path, meta)


def _read_meta(meta_path, ids_path):
    """The entry's metadata when the entry is complete (else None: build it again)."""
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if meta["tokens"] and os.path.getsize(ids_path) != meta["tokens"] * np.dtype(meta["dtype"]).itemsize:
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale(cache_dir, current):
    """Entries made from an older version of the same corpus file (`current`: its file_key);
    entries of the current file (another level or vocabulary size) stay."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if not name.endswith(".json"):
            continue
        try:
            with open(path) as f:
                inputs = json.load(f)["key"]["inputs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if inputs and inputs[0].get("path") == current["path"] and inputs[0] != current:
            for leftover in (path, path[:-len(".json")] + ".ids"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass


def _count_chars(path, progress, stream):
    bar = ByteProgress(f"measuring {path}", os.path.getsize(path), stream, progress)
    try:
        return sum(len(text) for text in text_chunks(path, progress=bar))
    finally:
        bar.close()


def _char_vocab(sources, progress, stream):
    """(CharVocab of every character of the sources, characters of each source)."""
    seen = np.zeros(0x110000, dtype=bool)
    lengths = []
    for path in sources:
        bar = ByteProgress(f"scanning {path}", os.path.getsize(path), stream, progress)
        count = 0
        try:
            for text in text_chunks(path, progress=bar):
                seen[_code_points(text)] = True
                count += len(text)
        finally:
            bar.close()
        lengths.append(count)
    return CharVocab([chr(c) for c in np.flatnonzero(seen)]), lengths


def _word_counts(sources, train_chars, progress, stream):
    """The tokenize_words counts of the training part (the vocabulary's text, as in from_texts)."""
    counts, lines = Counter(), _Lines()
    for part, text in _pieces(sources, train_chars, "counting words of", progress, stream):
        if text is None:
            counts.update(tokenize_words(lines.end()))
            break
        counts.update(tokenize_words(lines.feed(text)))
    return counts


def _build(sources, key_data, has_val_file, val_fraction, meta_path, ids_path, progress, stream):
    cache_dir = os.path.dirname(meta_path)
    os.makedirs(cache_dir, exist_ok=True)
    began = time.perf_counter()
    # pass 1: the vocabulary, and the length in characters that places the split
    if key_data["level"] == "char":
        vocab, lengths = _char_vocab(sources, progress, stream)
        total_chars = sum(lengths)
    else:
        lengths = [_count_chars(sources[0], progress, stream)]
        total_chars = lengths[0] + (_count_chars(sources[1], progress, stream) if has_val_file else 0)
    # the split in characters, as split_corpus: the corpus' tail, or the whole validation file
    train_chars = lengths[0] if has_val_file else int(round(lengths[0] * (1 - val_fraction)))
    if key_data["level"] == "word":
        vocab = WordVocab.from_counts(_word_counts(sources, train_chars, progress, stream),
                                      key_data["min_count"], key_data["max_vocab"])
    dtype = smallest_uint(len(vocab))
    codes = _codes(vocab, dtype, check=False)

    # pass 2: encode and append, each part as the in-memory path encodes its text
    crcs, tokens = {"train": 0, "val": 0}, {"train": 0, "val": 0}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ids", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            for part, text in _pieces(sources, train_chars, "encoding", progress, stream):
                if text is not None:
                    crcs[part] = zlib.crc32(text.encode("utf-8"), crcs[part])
                ids = codes.end() if text is None else codes.feed(text)
                out.write(ids)  # through the buffer protocol: no copy
                tokens[part] += ids.size
                del ids, text  # not alive while the next chunk is read
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, ids_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    meta = {"key": key_data, "vocab": vocab.to_dict(), "dtype": dtype.name,
            "tokens": tokens["train"] + tokens["val"], "train_tokens": tokens["train"],
            "fingerprints": {"train": {"length": train_chars, "crc32": crcs["train"]},
                             "val": {"length": total_chars - train_chars, "crc32": crcs["val"]}},
            "build_seconds": round(time.perf_counter() - began, 3)}
    write_atomically(meta_path, json.dumps(meta).encode(), suffix=".json")  # last: a meta file means a complete entry
    return meta


def _code_points(text):
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


# ---------------------------------------------------------------------------- encoding with a given vocabulary
def encode_file(path, vocab, out_path, progress=True, stream=None):
    """Encode `path` with an existing CharVocab or WordVocab into `out_path` (ids in the
    smallest dtype); returns (np.memmap of the ids, characters read).  A character vocabulary
    raises VocabError naming unseen characters; a word vocabulary maps them to <UNK>."""
    dtype = smallest_uint(len(vocab))
    codes = _codes(vocab, dtype)
    chars = tokens = 0
    bar = ByteProgress(f"encoding {path}", os.path.getsize(path) if os.path.isfile(path) else 0, stream, progress)
    try:
        with open(out_path, "wb") as out:
            for text in text_chunks(path, progress=bar):
                ids = codes.feed(text)
                out.write(ids)
                chars, tokens = chars + len(text), tokens + ids.size
                del ids, text
            ids = codes.end()
            out.write(ids)
            tokens += ids.size
    finally:
        bar.close()
    return (np.memmap(out_path, dtype=dtype, mode="r", shape=(tokens,)) if tokens else np.zeros(0, dtype)), chars


@contextlib.contextmanager
def encoded_file(path, vocab, progress=True, stream=None):
    """`with encoded_file(path, vocab) as (ids, chars):` encode_file into a temporary folder,
    removed (ids and all) when the block ends: a file of any size, scored once."""
    with tempfile.TemporaryDirectory(prefix="tgs-eval-") as folder:
        yield encode_file(path, vocab, os.path.join(folder, "ids"), progress=progress, stream=stream)
