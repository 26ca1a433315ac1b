"""Corpora larger than memory: stream the text once into a file of token ids, then map it.

    cache = CorpusCache.open_or_build("big.txt.gz", cache_dir="runs/charlm/cache")
    cache.vocab                    # CharVocab of every character of the corpus (and --val file)
    cache.train_ids, cache.val_ids # np.memmap views, uint8 when the vocabulary has <= 256 symbols
    cache.fingerprints             # {"train": {length, crc32}, "val": ...} as training.fingerprint

Building streams the corpus (plain or .gz) in chunks of a few MB, twice: the first pass
collects the characters (the vocabulary, sorted, exactly CharVocab.from_text of the whole
text) and counts them; the second encodes each chunk through a code-point table and appends
the ids, in the smallest unsigned integer type that holds the vocabulary, to a temporary
file that is renamed into place when complete.  Both passes print progress and throughput.
Memory stays at a few chunks whatever the corpus size; reading batches touches only the
pages of the rows a rank trains on.

The cache is keyed by each input file's absolute path, size, modification time and a
content fingerprint (CRC-32 of 16 blocks spread over the file), plus the validation split:
editing the corpus gives a new key and the stale entry for that file is deleted.
The ids equal `vocab.encode(text)` of the in-memory path, and the split equals
`training.split_corpus`: the last `val_fraction` of the characters, unless a validation file is given.
"""
import codecs
import gzip
import hashlib
import json
import os
import sys
import tempfile
import time
import zlib

import numpy as np

from ..checkpoint import write_atomically
from .corpus import CorpusError, gzip_error
from .vocab import CharVocab, VocabError, _preview

FORMAT_VERSION = 1
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


# ---------------------------------------------------------------------------- the cache
class CorpusCache:
    """A built cache entry: the vocabulary, the split, fingerprints and the memory-mapped ids."""

    def __init__(self, ids_path, meta):
        self.ids_path, self.meta = ids_path, meta
        self.vocab = CharVocab(meta["symbols"])
        self.dtype = np.dtype(meta["dtype"])
        self.ids = np.memmap(ids_path, dtype=self.dtype, mode="r", shape=(meta["tokens"],))
        cut = meta["train_tokens"]
        self.train_ids, self.val_ids = self.ids[:cut], self.ids[cut:]
        self.fingerprints = meta["fingerprints"]

    @classmethod
    def open_or_build(cls, corpus, val_file=None, val_fraction=0.1, cache_dir=None, progress=True, stream=None):
        """The cache entry for these inputs, building it if it is missing or stale."""
        sources = [os.fspath(corpus)] + ([os.fspath(val_file)] if val_file is not None else [])
        for path in sources:
            _check_readable(path)
        key_data = {"version": FORMAT_VERSION, "level": "char",
                    "inputs": [file_key(p) for p in sources],
                    "val_fraction": None if val_file is not None else float(val_fraction)}
        key = hashlib.sha1(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:16]
        cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "tgs-corpus-cache")
        stem = os.path.join(cache_dir, f"{os.path.basename(sources[0])}.{key}")
        meta_path, ids_path = stem + ".json", stem + ".ids"
        meta = _read_meta(meta_path, ids_path)
        if meta is None:
            meta = _build(sources, key_data, val_file is not None, val_fraction, meta_path, ids_path,
                          progress, stream)
            _remove_stale(cache_dir, sources[0], meta_path)
        return cls(ids_path, meta)


def _read_meta(meta_path, ids_path):
    """The entry's metadata when the entry is complete (else None: build it again)."""
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if os.path.getsize(ids_path) != meta["tokens"] * np.dtype(meta["dtype"]).itemsize:
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale(cache_dir, corpus, keep):
    """Other entries made from the same corpus path (an older version of the file, say)."""
    corpus = os.path.abspath(corpus)
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        if not name.endswith(".json") or path == keep:
            continue
        try:
            with open(path) as f:
                inputs = json.load(f)["key"]["inputs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if inputs and inputs[0].get("path") == corpus:
            for leftover in (path, path[:-len(".json")] + ".ids"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass


def _build(sources, key_data, has_val_file, val_fraction, meta_path, ids_path, progress, stream):
    cache_dir = os.path.dirname(meta_path)
    os.makedirs(cache_dir, exist_ok=True)
    seen = np.zeros(0x110000, dtype=bool)
    lengths = []
    began = time.perf_counter()
    for path in sources:  # pass 1: the characters and how many there are
        bar = ByteProgress(f"scanning {path}", os.path.getsize(path), stream, progress)
        count = 0
        for text in text_chunks(path, progress=bar):
            seen[_code_points(text)] = True
            count += len(text)
        bar.close()
        lengths.append(count)
    symbols = [chr(c) for c in np.flatnonzero(seen)]
    dtype = smallest_uint(len(symbols))
    table = np.zeros(0x110000, dtype=dtype)
    table[np.flatnonzero(seen)] = np.arange(len(symbols), dtype=dtype)
    del seen

    # the split in characters, as split_corpus: the corpus' tail, or the whole validation file
    train_chars = lengths[0] if has_val_file else int(round(lengths[0] * (1 - val_fraction)))
    crcs = {"train": 0, "val": 0}
    position = 0  # characters written so far, over all sources
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ids", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            for path in sources:  # pass 2: encode and append
                bar = ByteProgress(f"encoding {path}", os.path.getsize(path), stream, progress)
                for text in text_chunks(path, progress=bar):
                    head = max(0, min(len(text), train_chars - position))
                    if head:
                        crcs["train"] = zlib.crc32(text[:head].encode("utf-8"), crcs["train"])
                    if head < len(text):
                        crcs["val"] = zlib.crc32(text[head:].encode("utf-8"), crcs["val"])
                    out.write(table[_code_points(text)].tobytes())
                    position += len(text)
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, ids_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    total = sum(lengths)
    meta = {"key": key_data, "symbols": symbols, "dtype": dtype.name, "tokens": total,
            "train_tokens": train_chars,
            "fingerprints": {"train": {"length": train_chars, "crc32": crcs["train"]},
                             "val": {"length": total - train_chars, "crc32": crcs["val"]}},
            "build_seconds": round(time.perf_counter() - began, 3)}
    write_atomically(meta_path, json.dumps(meta).encode(), suffix=".json")  # last: a meta file means a complete entry
    return meta


def _code_points(text):
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


# ---------------------------------------------------------------------------- encoding with a given vocabulary
def encode_file(path, vocab, out_path, progress=True, stream=None):
    """Encode `path` with an existing CharVocab into `out_path` (ids in the smallest dtype);
    returns (np.memmap of the ids, characters).  Raises VocabError naming unseen characters."""
    if not isinstance(vocab, CharVocab):
        raise TypeError("encode_file: streaming encodes character vocabularies only")
    points = np.array([ord(s) for s in vocab.symbols], dtype=np.int64)
    dtype = smallest_uint(len(vocab))
    table = np.zeros(0x110000, dtype=dtype)
    known = np.zeros(0x110000, dtype=bool)
    table[points] = np.arange(len(points), dtype=dtype)
    known[points] = True
    count = 0
    bar = ByteProgress(f"encoding {path}", os.path.getsize(path) if os.path.isfile(path) else 0, stream, progress)
    with open(out_path, "wb") as out:
        for text in text_chunks(path, progress=bar):
            codes = _code_points(text)
            if not known[codes].all():
                missing = sorted({chr(c) for c in np.unique(codes[~known[codes]])})
                raise VocabError(f"{len(missing)} character(s) not in the model's vocabulary: {_preview(missing)}")
            out.write(table[codes].tobytes())
            count += len(text)
    bar.close()
    return np.memmap(out_path, dtype=dtype, mode="r", shape=(count,)), count
